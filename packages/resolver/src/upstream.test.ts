// The upstream pool against two endpoints of one DP, each an in-process gRPC server: lookups
// spread over both; an endpoint's own capacity refusal fails over, the caller's own budget does
// not; an endpoint that times out while the other answers is held down, one whose peers are
// all slow is not; a lookup whose stream ended under it is asked once more on a new one; an endpoint the registry no longer lists is let go; a lookup that timed out is tried again once the DP has answered it late,
// three times at most, and not past its caller's bound.
import assert from "node:assert/strict";
import { after, test } from "node:test";
import { status } from "@grpc/grpc-js";
import { createLogger, type DiscoveryError, type DpInfo, type Logger, pb } from "@mimi/core";
import { until } from "@mimi/core/testing";
import { type InProcessServer, startLookupStreamDp } from "@mimi/devnet/in-process";
import { HOLD_DOWN_MS } from "./endpoint-picker.js";
import { createUpstream } from "./upstream.js";

const log = createLogger({ name: "test", level: "silent" });
const servers: InProcessServer[] = [];
after(async () => {
  for (const s of servers) await s.close();
});

/**
 * How an endpoint treats an item: answer it, refuse it with a reason, say nothing, hold it for
 * the test to answer (`held`), or end its stream.
 */
type Behaviour = "answer" | "silent" | "hold" | "end" | { refuse: string };

/** An endpoint of DP eu whose LookupStream items get `behaviour()`; counts the items it saw. */
async function endpoint(behaviour: (csi: string) => Behaviour) {
  const seen = { items: 0, held: [] as (() => Promise<void>)[] };
  const server = await startLookupStreamDp((item, reply, end) => {
    seen.items++;
    const b = behaviour(item.csi);
    if (b === "silent") return;
    if (b === "end") return end();
    if (b === "hold") {
      seen.held.push(() => reply(notFound(item.requestId)));
      return;
    }
    void reply(
      b === "answer"
        ? notFound(item.requestId)
        : {
            requestId: item.requestId,
            result: {
              case: "error",
              value: {
                code: status.RESOURCE_EXHAUSTED,
                message: "busy",
                reason: b.refuse,
                retryAfterMs: 1_000n,
              },
            },
          },
    );
  });
  servers.push(server);
  return { server, seen };
}

const notFound = (requestId: bigint) => ({
  requestId,
  result: {
    case: "response" as const,
    value: { answer: { status: pb.LookupStatus.NOT_FOUND, ttlSeconds: 60 } },
  },
});

async function setup(
  a: (csi: string) => Behaviour,
  b: (csi: string) => Behaviour,
  o: {
    observe?: (dpId: string, seconds: number, failed: boolean) => void;
    attemptTimeoutMs?: number;
    lateAnswerMs?: number;
    log?: Logger;
    /** The registry's DPs (upstream's `registry`); unset: every endpoint a lookup names is listed. */
    registry?: Map<string, DpInfo>;
  } = {},
) {
  const [ea, eb] = await Promise.all([endpoint(a), endpoint(b)]);
  let now = 0;
  const channels = ea.server.pool();
  const upstream = createUpstream({
    channels,
    log: o.log ?? log,
    attemptTimeoutMs: o.attemptTimeoutMs ?? 1_000,
    ...(o.lateAnswerMs !== undefined && { lateAnswerMs: o.lateAnswerMs }),
    now: () => now,
    ...(o.observe && { observe: o.observe }),
    ...(o.registry && { registry: { dp: (id: string) => o.registry?.get(id) } }),
  });
  const dp: DpInfo = {
    id: "eu",
    endpoints: [ea.server.address, eb.server.address],
    tlsIdentity: "dp-eu",
    jurisdiction: "EU",
    signingPublicKey: new Uint8Array(0),
  };
  return {
    upstream,
    dp,
    a: ea.seen,
    b: eb.seen,
    bServer: eb.server,
    tick: (ms: number) => {
      now += ms;
    },
    clock: () => now,
  };
}

const context = new Uint8Array(16).fill(1);

test("lookups are spread over a DP's endpoints, call by call", async () => {
  const t = await setup(
    () => "answer",
    () => "answer",
  );
  for (let i = 0; i < 40; i++)
    assert.equal((await t.upstream.lookup(t.dp, `tel:+4477009${i}`)).kind, "not_found");
  assert.ok(t.a.items >= 5 && t.b.items >= 5, `split ${t.a.items}/${t.b.items}`);
  t.upstream.close();
});

test("an endpoint's capacity refusal is asked of the next endpoint; the caller's own budget is not", async () => {
  let reason = "DP_CAPACITY";
  const t = await setup(
    () => ({ refuse: reason }),
    () => ({ refuse: reason }),
  );
  // Both full: the refusal is the caller's to see, after both were asked.
  await assert.rejects(
    t.upstream.lookup(t.dp, "tel:+447700900001", { rateContext: context }),
    (e: DiscoveryError) => {
      return e.code === "resource_exhausted" && e.details?.reason === "DP_CAPACITY";
    },
  );
  assert.equal(t.a.items + t.b.items, 2, "both endpoints were asked");
  reason = "DP_CONTEXT_LIMIT";
  await assert.rejects(
    t.upstream.lookup(t.dp, "tel:+447700900002", { rateContext: context }),
    (e: DiscoveryError) => {
      return e.code === "resource_exhausted" && e.details?.reason === "DP_CONTEXT_LIMIT";
    },
  );
  assert.equal(t.a.items + t.b.items, 3, "one endpoint only: the caller's budget is one at the DP");
  t.upstream.close();
});

test("an endpoint out of capacity is left alone until its retry-after; a reason not known is final", async () => {
  let aSays: Behaviour = { refuse: "DP_RESOLVER_LIMIT" };
  const t = await setup(
    () => aSays,
    () => "answer",
  );
  // Until a lookup lands on a first: it is refused there and answered by b.
  for (let i = 0; t.a.items === 0 && i < 50; i++) {
    assert.equal(
      (await t.upstream.lookup(t.dp, `tel:+4477009005${i}`, { rateContext: context })).kind,
      "not_found",
    );
  }
  assert.equal(t.a.items, 1);
  for (let i = 0; i < 20; i++) await t.upstream.lookup(t.dp, `tel:+4477009006${i}`, { rateContext: context });
  assert.equal(t.a.items, 1, "left alone for its retry-after while the clock does not move");
  t.tick(1_000);
  aSays = { refuse: "LOOKUP_LIMIT_MINUTE" }; // not a reason this resolver knows: final
  const b = t.b.items;
  let refusedAtA = false;
  let answeredByB = 0;
  for (let i = 0; !refusedAtA && i < 50; i++) {
    refusedAtA = await t.upstream
      .lookup(t.dp, `tel:+4477009007${i}`, { rateContext: context })
      .then(() => {
        answeredByB++;
        return false;
      })
      .catch((e: DiscoveryError) => e.details?.reason === "DP_LIMIT");
  }
  assert.equal(refusedAtA, true);
  assert.equal(t.b.items - b, answeredByB, "the refused lookup did not go on to b");
  t.upstream.close();
});

test("an endpoint that times out while another answers is held down; all slow, none is", async () => {
  let bAnswers = true;
  const t = await setup(
    () => "silent",
    () => (bAnswers ? "answer" : "silent"),
  );
  // Until a lookup lands on a first, then fails over to b.
  for (let i = 0; t.a.items === 0 && i < 50; i++) await t.upstream.lookup(t.dp, `tel:+4477009001${i}`);
  assert.equal(t.a.items, 1);
  for (let i = 0; i < 20; i++) await t.upstream.lookup(t.dp, `tel:+4477009002${i}`);
  assert.equal(t.a.items, 1, "held down: b goes first while the clock does not move");
  t.tick(HOLD_DOWN_MS.min);
  // Both silent now: lookups fail, and neither endpoint is held down for it.
  bAnswers = false;
  // (With time for one attempt only: another would find both as slow.)
  await assert.rejects(
    t.upstream.lookup(t.dp, "tel:+447700900301", { waitUntilMs: t.clock() + 999 }),
    (e: DiscoveryError) => e.code === "upstream_unavailable",
  );
  const [a, b] = [t.a.items, t.b.items];
  bAnswers = true;
  for (let i = 0; t.a.items === a && i < 50; i++) await t.upstream.lookup(t.dp, `tel:+4477009004${i}`);
  assert.equal(t.a.items, a + 1, "a is asked again: the all-slow lookup held nobody down");
  assert.ok(t.b.items > b);
  t.upstream.close();
});

test("a lookup whose stream ended under it is asked once more on a new stream, and only once", async () => {
  let says: Behaviour = "end";
  const t = await setup(
    () => {
      const now = says;
      says = "answer";
      return now;
    },
    () => "answer",
  );
  const one = { ...t.dp, endpoints: t.dp.endpoints.slice(0, 1) };
  // The first stream ends with the lookup on it (as at its connection's age); a new one answers.
  assert.equal((await t.upstream.lookup(one, "tel:+447700900401")).kind, "not_found");
  assert.equal(t.a.items, 2);
  // A DP that ends every stream is asked twice, then the lookup fails.
  const always = await setup(
    () => "end",
    () => "answer",
  );
  const only = { ...always.dp, endpoints: always.dp.endpoints.slice(0, 1) };
  await assert.rejects(always.upstream.lookup(only, "tel:+447700900402"), (e: DiscoveryError) => {
    return e.code === "upstream_unavailable" && e.details?.reason === undefined;
  });
  assert.equal(always.a.items, 2);
  t.upstream.close();
  always.upstream.close();
});

test("an endpoint the registry no longer lists: its stream ends once answered, its channel closes, lookups go elsewhere", async () => {
  const registry = new Map<string, DpInfo>();
  const t = await setup(
    () => "answer",
    () => "hold",
    { registry },
  );
  registry.set("eu", t.dp);
  const [a, b] = t.dp.endpoints as [string, string];
  // A lookup waits at B when the registry moves the DP to A alone.
  const waiting = t.upstream.lookup(t.dp, "tel:+447700900501", { prefer: b });
  await until(() => t.b.held.length === 1, "B holds the lookup");
  assert.equal(t.bServer.openStreams, 1);
  registry.set("eu", { ...t.dp, endpoints: [a] });
  assert.equal(t.upstream.retain([...registry.values()]), 1, "B's channel is closed");
  // What B was sent is still B's to answer, and then its stream ends.
  await (t.b.held[0] as () => Promise<void>)();
  assert.equal((await waiting).kind, "not_found");
  await until(() => t.bServer.openStreams === 0, "B's stream ends");
  // No channel is opened to B again, whoever asks (change and filter streams, private lookups,
  // a retry on a new stream).
  assert.throws(
    () => t.upstream.channel(t.dp, b),
    (e: DiscoveryError) => e.code === "upstream_unavailable",
  );
  // Lookups that began before the change (they still name B, and prefer it) go to A, and open
  // nothing to B again.
  for (let i = 0; i < 10; i++) await t.upstream.lookup(t.dp, `tel:+44770090051${i}`, { prefer: b });
  assert.equal(t.b.items, 1);
  assert.equal(t.a.items, 10);
  assert.equal(t.bServer.openStreams, 0);
  // A DP that left the registry: its channel closes, and its idle window goes.
  assert.deepEqual(
    t.upstream.windows().map((w) => w.dpId),
    ["eu"],
  );
  registry.clear();
  assert.equal(t.upstream.retain([]), 1, "A's channel is closed");
  assert.deepEqual(t.upstream.windows(), []);
  // A lookup that began before it left fails at once, and opens no channel to it again.
  await assert.rejects(
    t.upstream.lookup(t.dp, "tel:+447700900520"),
    (e: DiscoveryError) => e.code === "upstream_unavailable",
  );
  assert.equal(t.a.items, 10);
  assert.equal(t.b.items, 1);
  t.upstream.close();
});

test("a lookup the gate refuses as too late is not sent, and is not counted as the DP's failure", async () => {
  const observed: boolean[] = [];
  // The DP answers its first lookup in 5 ms (the base) and the rest in 25, on the
  // test's clock.
  let answered = 0;
  let tick: (ms: number) => void = () => {};
  const answer = (): Behaviour => {
    tick(answered++ === 0 ? 5 : 25);
    return "answer";
  };
  const t = await setup(answer, answer, { observe: (_dp, _s, failed) => observed.push(failed) });
  tick = t.tick;
  // A DP not asked yet has no gate, so no rate to judge by: nothing is refused before it is asked.
  assert.equal(t.upstream.refusalNow(t.dp.id, 6), undefined);
  // An answer, and a second later 30 more, each in 25 ms.
  for (let i = 0; i < 31; i++) {
    await t.upstream.lookup(t.dp, `tel:+4477009008${i}`);
    if (i === 0) t.tick(1_000);
  }
  assert.deepEqual(new Set(observed), new Set([false]));
  const asked = t.a.items + t.b.items;
  // A caller with 6 ms to wait (1 over the base) cannot be answered in time at that rate.
  const waitUntilMs = t.clock() + 6;
  await assert.rejects(
    t.upstream.lookup(t.dp, "tel:+447700900901", { waitUntilMs }),
    (e: DiscoveryError) => e.code === "resource_exhausted" && e.details?.reason === "UPSTREAM_SATURATED",
  );
  assert.equal(t.a.items + t.b.items, asked, "not sent");
  assert.equal(observed.length, 31, "not observed as a lookup at the DP");
  // The same verdict without a lookup, at that DP's gate and no other.
  assert.equal(t.upstream.refusalNow(t.dp.id, waitUntilMs)?.details?.reason, "UPSTREAM_SATURATED");
  assert.equal(t.upstream.refusalNow("elsewhere", waitUntilMs), undefined);
  assert.deepEqual(
    t.upstream.windows().map((w) => [w.dpId, w.refused]),
    [[t.dp.id, 2]],
    "both refusals counted at the gate",
  );
  // A private lookup is not judged by that rule (this resolver has none: it fails its own way).
  await assert.rejects(
    t.upstream.lookup(t.dp, "tel:+447700900902", { waitUntilMs, privately: true }),
    (e: DiscoveryError) => e.code === "failed_precondition",
  );
  t.upstream.close();
});

/**
 * A logger that keeps the `err` of each warning (the upstream warns once per failed attempt);
 * `count(n)` settles once there are `n`.
 */
function warnings(): { log: Logger; errs: string[]; count: (n: number) => Promise<void> } {
  const errs: string[] = [];
  const waiting: { n: number; done: () => void }[] = [];
  const spy = {
    child: () => spy,
    warn: (o: { err?: string }) => {
      errs.push(o.err ?? "");
      for (const w of waiting.filter((w) => w.n <= errs.length)) w.done();
    },
    info: () => {},
    debug: () => {},
    error: () => {},
  };
  const count = (n: number) =>
    errs.length >= n ? Promise.resolve() : new Promise<void>((done) => waiting.push({ n, done }));
  return { log: spy as unknown as Logger, errs, count };
}

test("a lookup that timed out takes the DP's late answer instead of asking again, and keeps its place until then", async () => {
  const w = warnings();
  // A slow DP, not a silent one: it answers what ends in 999 at once and holds the rest.
  const t = await setup(
    (csi) => (csi.endsWith("999") ? "answer" : "hold"),
    () => "answer",
    { attemptTimeoutMs: 1_000, lateAnswerMs: 60_000, log: w.log },
  );
  const one = { ...t.dp, endpoints: t.dp.endpoints.slice(0, 1) };
  const from: string[] = [];
  const held = [1, 2, 3].map((i) =>
    t.upstream.lookup(one, `tel:+44770090010${i}`, { answeredBy: (e) => from.push(e) }),
  );
  assert.equal((await t.upstream.lookup(one, "tel:+447700900999")).kind, "not_found");
  await w.count(3); // the three timed out
  assert.equal(w.errs.length, 3);
  assert.ok(w.errs.every((e) => /no answer within 1000 ms/.test(e)));
  const eu = () => t.upstream.windows()[0];
  assert.equal(eu()?.inflight, 3, "still the DP's work: they keep their places");
  // The DP gets to them: their late answers are the lookups' answers.
  for (const late of t.a.held) await late();
  for (const l of await Promise.all(held)) assert.equal(l.kind, "not_found");
  assert.equal(t.a.items, 4, "none was asked twice");
  assert.deepEqual(from, [one.endpoints[0], one.endpoints[0], one.endpoints[0]]);
  // Their places went back as the late answers came (settled before the next turn of the loop).
  await new Promise((r) => setImmediate(r));
  assert.equal(eu()?.inflight, 0);
  t.upstream.close();
});

test("a lookup whose late answer does not come is asked again: three attempts at most, none past its caller's bound", async () => {
  let items = 0;
  const t = await setup(
    () => (++items === 1 ? "silent" : "answer"),
    () => "silent",
    { attemptTimeoutMs: 100, lateAnswerMs: 60_000 },
  );
  const one = { ...t.dp, endpoints: t.dp.endpoints.slice(0, 1) };
  // Its stream said nothing while it waited: dropped as stalled, and the lookup asked again on
  // a new stream (no late answer will come on the old one), where it is answered.
  assert.equal((await t.upstream.lookup(one, "tel:+447700900200")).kind, "not_found");
  assert.equal(t.a.items, 2);

  // Never answered (the bound passes): three attempts, then the timeout.
  const silent = await setup(
    () => "silent",
    () => "silent",
    { attemptTimeoutMs: 100, lateAnswerMs: 10 },
  );
  const only = { ...silent.dp, endpoints: silent.dp.endpoints.slice(0, 1) };
  await assert.rejects(silent.upstream.lookup(only, "tel:+447700900201"), (e: DiscoveryError) => {
    return e.code === "upstream_unavailable" && e.details?.reason === "UPSTREAM_TIMEOUT";
  });
  assert.equal(silent.a.items, 3);
  // The upstream's clock stands at 0: a caller that may wait until 99 ms has no room for another attempt.
  await assert.rejects(
    silent.upstream.lookup(only, "tel:+447700900202", { waitUntilMs: 99 }),
    (e: DiscoveryError) => e.code === "upstream_unavailable",
  );
  assert.equal(silent.a.items, 4);
  t.upstream.close();
  silent.upstream.close();
});
