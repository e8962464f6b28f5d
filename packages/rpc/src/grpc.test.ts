// The adapter between grpc-js and protobuf-es, over a real grpc-js server on a free port in
// this process: typed handlers of every kind, errors as statuses, backpressure in both
// directions, and cancellation, which must release a handler and a client's request pump.
import assert from "node:assert/strict";
import { after, test } from "node:test";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import type { GenService, GenServiceMethods } from "@bufbuild/protobuf/codegenv2";
import * as grpc from "@grpc/grpc-js";
import { createLogger, DiscoveryError, INVALID_REQUEST, invalidArgument } from "@mimi/core";
import {
  AuthoritativeAdminService,
  AuthoritativeService,
  LookupRequestSchema,
  LookupResponseSchema,
  LookupStreamRequestSchema,
  LookupStreamResponseSchema,
  RootService,
} from "@mimi/core/pb";
import { getterOnPrototype, until, untilCollected } from "@mimi/core/testing";
import { type Channel, openChannel } from "./channel.js";
import type { FastCall } from "./fast-path.js";
import { addService, type CallContext, type ServiceHandlers } from "./grpc.js";
import { createGrpcServer, listen } from "./listen.js";

const log = createLogger({ name: "test", level: "silent" });
const servers: grpc.Server[] = [];
const channels: Channel[] = [];
after(() => {
  for (const c of channels) c.close();
  for (const s of servers) s.forceShutdown();
});

/**
 * Waits until `count()` stops moving for many turns of the event loop. A writer that is not
 * back-pressured never awaits I/O, so it moves on every turn; one that stopped is waiting.
 */
async function stalled(count: () => number, what: string): Promise<number> {
  let last = -1;
  let still = 0;
  await until(() => {
    const n = count();
    still = n === last ? still + 1 : 0;
    last = n;
    return still >= 50;
  }, what);
  return last;
}

async function serve<S extends GenServiceMethods>(
  service: GenService<S>,
  handlers: Partial<ServiceHandlers<S>>,
): Promise<Channel> {
  const server = createGrpcServer();
  servers.push(server);
  const missing = async () => {
    throw new DiscoveryError("failed_precondition", "not in this test");
  };
  const all = Object.fromEntries(
    service.methods.map((m) => [m.localName, (handlers as Record<string, unknown>)[m.localName] ?? missing]),
  ) as ServiceHandlers<S>;
  addService(server, service, all, { log });
  const port = await listen(server, "127.0.0.1", 0, grpc.ServerCredentials.createInsecure());
  const ch = openChannel(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  channels.push(ch);
  return ch;
}

test("unary: the typed handler answers; a DiscoveryError is its status; anything else is a fixed INTERNAL", async () => {
  const contexts: CallContext[] = [];
  const abortedDuring: boolean[] = [];
  const ch = await serve(RootService, {
    async refer(req, ctx) {
      contexts.push(ctx);
      abortedDuring.push(ctx.signal.aborted);
      if (req.csi === "bad") throw new DiscoveryError("invalid_argument", "csi is bad");
      if (req.csi === "field") throw invalidArgument("csi is not a number", "csi", "INVALID_CSI");
      // A message echoing input cut inside a surrogate pair (grpc-js's encodeURI threw on it,
      // uncaught, and the process ended).
      if (req.csi === "cut") throw invalidArgument(`"${"😀".slice(0, 1)}" is not a CSI`);
      if (req.csi === "boom") throw new Error("secret database detail");
      return { serial: 7n };
    },
  });
  const root = ch.client(RootService);
  assert.equal((await root.refer({ csi: "tel:+1" })).serial, 7n);
  await assert.rejects(root.refer({ csi: "bad" }), (err: unknown) => {
    assert.ok(err instanceof DiscoveryError);
    assert.equal(err.code, "invalid_argument");
    assert.equal(err.remoteStatus, grpc.status.INVALID_ARGUMENT);
    assert.match(err.message, /csi is bad/);
    // An INVALID_ARGUMENT that names no field still says, in machine-readable form, that the
    // request is to be fixed.
    assert.equal(err.details?.reason, INVALID_REQUEST);
    assert.equal(err.details?.fields, undefined);
    return true;
  });
  await assert.rejects(root.refer({ csi: "field" }), (err: unknown) => {
    assert.ok(err instanceof DiscoveryError);
    assert.equal(err.remoteStatus, grpc.status.INVALID_ARGUMENT);
    assert.equal(err.details?.reason, "INVALID_CSI");
    assert.deepEqual(err.details?.fields, [{ field: "csi", description: "csi is not a number" }]);
    return true;
  });
  // (A deadline, since the server that failed to send the status never answered.)
  await assert.rejects(root.refer({ csi: "cut" }, { timeoutMs: 10_000 }), (err: unknown) => {
    assert.ok(err instanceof DiscoveryError);
    assert.equal(err.remoteStatus, grpc.status.INVALID_ARGUMENT);
    assert.match(err.message, /"\uFFFD" is not a CSI/);
    return true;
  });
  await assert.rejects(root.refer({ csi: "boom" }), (err: unknown) => {
    assert.ok(err instanceof DiscoveryError);
    assert.equal(err.remoteStatus, grpc.status.INTERNAL);
    assert.doesNotMatch(err.message, /secret/);
    return true;
  });
  // The context each handler got: its getters on the prototype, and they work.
  const ctx = contexts[0];
  assert.ok(ctx);
  for (const name of ["peer", "peerName", "signal", "deadlineMs"]) {
    assert.ok(getterOnPrototype(ctx, name), `ctx.${name} is a prototype getter`);
  }
  assert.equal(ctx.method, "/mimi.discovery.v1.RootService/Refer");
  // No TLS here, so no certificate to name the caller.
  assert.equal(ctx.peerName, "(no common name)");
  assert.equal(ctx.deadlineMs, Number.POSITIVE_INFINITY);
  assert.equal(abortedDuring[0], false, "not aborted while the call ran");
});

test("a server stream waits for a reader that stops reading, and cancelling it releases the handler", async () => {
  let sent = 0;
  let handlerDone = false;
  let sendError: unknown;
  const ch = await serve(RootService, {
    async watchRegistry(_req, _ctx, send) {
      try {
        for (;;) {
          await send({ event: { case: "caughtUp", value: { serial: BigInt(sent) } } });
          sent++;
        }
      } catch (err) {
        sendError = err;
      } finally {
        handlerDone = true;
      }
    },
  });
  const abort = new AbortController();
  const it = ch.client(RootService).watchRegistry({}, { signal: abort.signal })[Symbol.asyncIterator]();
  await it.next(); // the call is open; from here on nobody reads
  const at = await stalled(() => sent, "the handler stops sending to a reader that does not read");
  assert.ok(at >= 1_000, `the handler waited only after its own buffer filled (${at} sent)`);
  abort.abort();
  await until(() => handlerDone, "the cancelled handler returns");
  assert.ok(sendError instanceof DiscoveryError, "the waiting send was refused when the call was cancelled");
  // The client side ends too: after what was already received, the cancellation.
  await assert.rejects(async () => {
    for (let r = await it.next(); !r.done; r = await it.next());
  }, DiscoveryError);
});

test("a stream's request pump stops when the call ends, even while it waits for the peer to read", async () => {
  // Regression: pump() waited for "drain" with no way out, so a cancelled call kept its request
  // iterable (and what that holds) suspended for good. The server here never reads.
  const ch = await serve(AuthoritativeService, {
    async lookupStream(_reqs, ctx) {
      await new Promise<void>((r) => ctx.signal.addEventListener("abort", () => r(), { once: true }));
    },
  });
  let produced = 0;
  let released = false;
  async function* requests() {
    try {
      for (;;) {
        produced++;
        yield { requestId: BigInt(produced), csi: "x".repeat(4_096) };
      }
    } finally {
      released = true;
    }
  }
  const abort = new AbortController();
  const responses = ch.client(AuthoritativeService).lookupStream(requests(), { signal: abort.signal });
  const reading = (async () => {
    try {
      for await (const r of responses) void r;
    } catch {
      // Cancelled below.
    }
  })();
  const at = await stalled(() => produced, "the pump waits once the peer stops reading");
  assert.ok(at >= 1_000, `the pump waited only after its own buffer filled (${at} produced)`);
  abort.abort();
  await reading;
  await until(() => released, "the request iterable is closed once the call ends");
});

test("a stream's request pump keeps no message it has sent while the call stays open", async () => {
  // Regression: each wait raced one promise of the call's end, which left a reaction on it per
  // message, each holding the request, until the call ended (a resolver's stream to a DP stays
  // open for days).
  let read = 0;
  const ch = await serve(AuthoritativeService, {
    async lookupStream(reqs) {
      for await (const _ of reqs) read++;
    },
  });
  const sent: WeakRef<object>[] = [];
  let finish: () => void = () => {};
  const finished = new Promise<void>((r) => {
    finish = r;
  });
  async function* requests() {
    for (let i = 1; i <= 2_000; i++) {
      const msg = { requestId: BigInt(i), csi: `tel:+1555${i}` };
      sent.push(new WeakRef(msg));
      yield msg;
    }
    await finished;
  }
  const reading = (async () => {
    for await (const r of ch.client(AuthoritativeService).lookupStream(requests())) void r;
  })();
  try {
    await until(() => read === 2_000, "the server read every message");
    // The call is still open: what it sent is garbage now.
    await untilCollected(sent, 10, "the messages sent were collected while the call is open");
  } finally {
    finish();
    await reading;
  }
});

test("client streaming: every message reaches the handler in order, and its one reply comes back", async () => {
  let seen: string[] = [];
  const ch = await serve(AuthoritativeAdminService, {
    async ingestProviderFeed(reqs) {
      seen = [];
      for await (const r of reqs) for (const e of r.entries) seen.push(e.csi);
      return { entries: BigInt(seen.length), mappingsRemoved: 0n };
    },
  });
  async function* reqs() {
    for (let i = 0; i < 2_000; i++) yield { entries: [{ csi: `tel:+44${i}` }] };
  }
  const r = await ch.client(AuthoritativeAdminService).ingestProviderFeed(reqs());
  assert.equal(r.entries, 2_000n);
  assert.deepEqual(
    seen,
    Array.from({ length: 2_000 }, (_, i) => `tel:+44${i}`),
  );
});

test("a fast path answers from the request's bytes; what it declines is decoded and handled as usual", async () => {
  const server = createGrpcServer();
  servers.push(server);
  const seen: string[] = [];
  const fastSaw: number[] = [];
  // The fast path answers "tel:+1fast" and refuses "tel:+1refuse"; everything else reaches the
  // handlers decoded.
  const refusal = new DiscoveryError("resource_exhausted", "too busy for tel:+1refuse", {
    details: { retryAfterMs: 1_500, reason: "BUSY" },
  });
  const refusedBy: number[] = [];
  const fastCalls: FastCall[] = [];
  const fastLookup = toBinary(
    LookupResponseSchema,
    create(LookupResponseSchema, { answer: { dpIds: ["fast"] } }),
  );
  const handlers: Partial<ServiceHandlers<typeof AuthoritativeService.method>> = {
    lookup: async (req) => {
      seen.push(req.csi);
      return { answer: { dpIds: ["slow"] } };
    },
    async lookupStream(reqs, _ctx, send) {
      for await (const r of reqs) {
        seen.push(r.csi);
        await send(
          create(LookupStreamResponseSchema, {
            requestId: r.requestId,
            result: { case: "response", value: { answer: { dpIds: ["slow"] } } },
          }),
        );
      }
    },
  };
  addService(server, AuthoritativeService, handlers as ServiceHandlers<typeof AuthoritativeService.method>, {
    log,
    maxRequestBytes: { lookup: 2_048 },
    fast: {
      lookup: (bytes, call) => {
        fastSaw.push(bytes.length);
        const csi = fromBinary(LookupRequestSchema, bytes).csi;
        if (csi === "tel:+1throw") throw new Error("a fast path that fails");
        // Without TLS there is no certificate to name the caller: reading it throws, a decline.
        if (csi === "tel:+1peer") return call?.peer.name === undefined ? undefined : refusal;
        if (csi === "tel:+1refuse") {
          if (call) fastCalls.push(call);
          refusedBy.push(call?.deadlineMs ?? Number.NaN);
          return refusal;
        }
        return csi === "tel:+1fast" ? fastLookup : undefined;
      },
      lookupStream: (bytes) => {
        const r = fromBinary(LookupStreamRequestSchema, bytes);
        // A stream's item is given no call: an error returned for it is a decline.
        if (r.csi === "tel:+1refuse") return refusal;
        return r.csi === "tel:+1fast"
          ? toBinary(
              LookupStreamResponseSchema,
              create(LookupStreamResponseSchema, {
                requestId: r.requestId,
                result: { case: "response", value: { answer: { dpIds: ["fast"] } } },
              }),
            )
          : undefined;
      },
    },
  });
  const port = await listen(server, "127.0.0.1", 0, grpc.ServerCredentials.createInsecure());
  const ch = openChannel(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  channels.push(ch);
  const dp = ch.client(AuthoritativeService);
  assert.equal((await dp.lookup({ csi: "tel:+1fast" })).answer?.dpIds[0], "fast");
  assert.equal((await dp.lookup({ csi: "tel:+1slow" })).answer?.dpIds[0], "slow");
  // A fast path that throws is a decline: the full path answers.
  assert.equal((await dp.lookup({ csi: "tel:+1throw" })).answer?.dpIds[0], "slow");
  assert.equal((await dp.lookup({ csi: "tel:+1peer" })).answer?.dpIds[0], "slow");
  assert.deepEqual(
    seen,
    ["tel:+1slow", "tel:+1throw", "tel:+1peer"],
    "the handler saw only what the fast path declined",
  );
  // A refusal is sent as the handler's would be, details and all; the fast path saw the deadline.
  const sentAt = Date.now();
  await assert.rejects(dp.lookup({ csi: "tel:+1refuse" }, { timeoutMs: 60_000 }), (err: unknown) => {
    assert.ok(err instanceof DiscoveryError);
    assert.equal(err.remoteStatus, grpc.status.RESOURCE_EXHAUSTED);
    assert.match(err.message, /too busy for tel:\+1refuse/);
    assert.deepEqual(err.details, { retryAfterMs: 1_500, reason: "BUSY", metadata: {} });
    return true;
  });
  const deadline = refusedBy[0] ?? Number.NaN;
  assert.ok(deadline >= sentAt + 60_000 && deadline <= Date.now() + 60_000, `deadline ${deadline}`);
  assert.equal(seen.length, 3, "the handler did not see the refused call");
  // The call a fast path reads keeps its getters on a prototype too.
  assert.ok(
    fastCalls[0] && getterOnPrototype(fastCalls[0], "deadlineMs") && getterOnPrototype(fastCalls[0], "peer"),
  );
  // Too large for the method: refused before the fast path sees it.
  const before = fastSaw.length;
  await assert.rejects(dp.lookup({ csi: "x".repeat(4_096) }), (err: unknown) => {
    assert.ok(err instanceof DiscoveryError);
    assert.equal(err.remoteStatus, grpc.status.RESOURCE_EXHAUSTED);
    return true;
  });
  assert.equal(fastSaw.length, before);
  // A stream mixes both: every item is answered once, in whichever way.
  seen.length = 0;
  async function* items() {
    for (let i = 1; i <= 200; i++) yield { requestId: BigInt(i), csi: i % 2 ? "tel:+1fast" : `tel:+1${i}` };
    yield { requestId: 201n, csi: "tel:+1refuse" };
  }
  const got = new Map<bigint, string>();
  for await (const r of dp.lookupStream(items())) {
    assert.equal(r.result.case, "response");
    got.set(r.requestId, r.result.case === "response" ? (r.result.value.answer?.dpIds[0] ?? "") : "");
  }
  assert.equal(got.size, 201);
  for (const [id, by] of got) assert.equal(by, id % 2n && id !== 201n ? "fast" : "slow");
  assert.equal(seen.length, 101);
  assert.equal(
    seen.at(-1),
    "tel:+1refuse",
    "the item the fast path returned an error for took the full path",
  );
});

test("a fast path is refused on a service with role checks, which it would skip", () => {
  assert.throws(
    () =>
      addService(createGrpcServer(), RootService, {} as ServiceHandlers<typeof RootService.method>, {
        log,
        roles: ["admin"],
        fast: { refer: () => undefined },
      }),
    /role checks/,
  );
});
