// Bad input from outside, every method: messages made from the proto's own descriptors with
// random, extreme and out-of-range values (strings of odd Unicode and long ones, empty and
// oversized bytes, integer bounds, unknown enum numbers, long repeated fields, each oneof case),
// sent to every method of every service of a real network (separate processes, mutual TLS) as
// several identities, unary and streaming. Every call must end with a status a client can act
// on, never INTERNAL, UNKNOWN, UNIMPLEMENTED or DATA_LOSS, a unary call must be answered before
// its deadline (a handler that never answers is a fault too), no server may log an error, and
// every server must still be serving after. Half the messages to the methods that do the most
// with their input are valid requests with one or two fields made random (TEMPLATES). Seeded: a failure prints the seed, the method, the identity and the message's
// bytes; MIMI_FUZZ_SEED=<n> makes the same messages again (the admin and DP callers change the
// servers' state, and calls interleave, so a run is repeated only as nearly as that allows).
import assert from "node:assert/strict";
import type { DescField, DescMessage, DescMethod, DescService } from "@bufbuild/protobuf";
import { create, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { pb } from "@mimi/core";
import { devTlsPaths } from "@mimi/devnet";
import { channelCredentials, loadTls } from "@mimi/rpc";
import { scenario, useNetwork } from "../harness.js";

const SEED = Number(process.env.MIMI_FUZZ_SEED ?? Date.now() % 2 ** 31);
/** Messages per method and identity. */
const MESSAGES = 12;
/** Deepest nesting of generated messages. */
const MAX_DEPTH = 3;
/** Largest message sent: past every method's request limit (64 KiB at most), so those are tried too. */
const MAX_MESSAGE_BYTES = 256 * 1024;
/** A unary call's deadline; a stream's is shorter, since a watch may wait for a change that never comes. */
const CALL_DEADLINE_MS = 10_000;
const STREAM_DEADLINE_MS = 3_000;
/** Calls in flight at once. */
const CONCURRENCY = 8;
/** Statuses that say the server failed rather than refused: never acceptable. */
const BROKEN = new Set([
  grpc.status.INTERNAL,
  grpc.status.UNKNOWN,
  grpc.status.UNIMPLEMENTED,
  grpc.status.DATA_LOSS,
]);
/** Callers of each role: most methods refuse all but one, so each method's handler is reached. */
const IDENTITIES = ["cli", "admin", "msp-bluebird", "dp-us", "resolver"] as const;

/** mulberry32: a small seeded generator, so a failing run can be repeated. */
function generator(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

const random = generator(SEED);
const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)] as T;
const chance = (p: number) => random() < p;

const STRINGS = [
  "",
  " ",
  "tel:+447700900123",
  "tel:+",
  "mailto:a@b",
  "mailto:%ff@example.org",
  "e164:44",
  "\u0000",
  "\uFFFD",
  "\u202E\u0301",
  "😀".repeat(40),
  "x".repeat(300),
  "y".repeat(70_000),
  "../../etc/passwd",
  "eu",
  "us",
  "bluebird.example",
  "' OR 1=1 --",
];

function randomString(): string {
  if (chance(0.6)) return pick(STRINGS);
  const n = Math.floor(random() * 40);
  return Array.from({ length: n }, () => String.fromCodePoint(Math.floor(random() * 0x2ffff))).join("");
}

function randomBytes(): Uint8Array {
  const n = pick([0, 1, 16, 32, 33, 64, 65, 300, 70_000]);
  return Uint8Array.from({ length: n }, () => Math.floor(random() * 256));
}

const INT32 = [0, 1, -1, 2 ** 31 - 1, -(2 ** 31), 7, 65_536];
const UINT32 = [0, 1, 2 ** 32 - 1, 256, 4096];
const INT64 = [0n, 1n, -1n, 2n ** 63n - 1n, -(2n ** 63n), 1_700_000_000_000n, 10n ** 15n];
const UINT64 = [0n, 1n, 2n ** 64n - 1n, 2n ** 53n + 1n, 1_700_000_000_000n];

/** A random value of a scalar type (protobuf-es ScalarType numbers). */
function scalar(type: number): unknown {
  switch (type) {
    case 9: // string
      return randomString();
    case 12: // bytes
      return randomBytes();
    case 8: // bool
      return chance(0.5);
    case 1: // double
    case 2: // float
      return pick([0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, 1e308]);
    case 3: // int64
    case 16: // sfixed64
    case 18: // sint64
      return pick(INT64);
    case 4: // uint64
    case 6: // fixed64
      return pick(UINT64);
    case 13: // uint32
    case 7: // fixed32
      return pick(UINT32);
    default: // int32, sint32, sfixed32
      return pick(INT32);
  }
}

function fieldValue(f: DescField, depth: number): unknown {
  switch (f.fieldKind) {
    case "scalar":
      return scalar(f.scalar);
    case "enum":
      // Sometimes a number the enum does not define.
      return chance(0.2) ? pick([99, -1, 2 ** 31 - 1]) : pick(f.enum.values).number;
    case "message":
      return depth < MAX_DEPTH ? messageInit(f.message, depth + 1) : {};
    case "list": {
      // Long lists at the top only, so that nested ones cannot multiply into megabytes.
      const n = depth === 0 ? pick([0, 1, 2, 3, 40, 300]) : pick([0, 1, 2, 3]);
      const one = () =>
        f.listKind === "scalar"
          ? scalar(f.scalar)
          : f.listKind === "enum"
            ? pick(f.enum.values).number
            : depth < MAX_DEPTH
              ? messageInit(f.message, depth + 1)
              : {};
      return Array.from({ length: n }, one);
    }
    case "map": {
      const out: Record<string, unknown> = {};
      for (let i = 0; i < pick([0, 1, 3]); i++)
        out[randomString()] = f.mapKind === "scalar" ? scalar(f.scalar) : {};
      return out;
    }
  }
}

/** The init object of a random message: each field set or not, one case of each oneof. */
function messageInit(desc: DescMessage, depth = 0): Record<string, unknown> {
  const init: Record<string, unknown> = {};
  for (const f of desc.fields) {
    if (f.oneof || !chance(0.7)) continue;
    init[f.localName] = fieldValue(f, depth);
  }
  for (const o of desc.oneofs) {
    if (!chance(0.8)) continue;
    const f = pick(o.fields);
    init[o.localName] = { case: f.localName, value: fieldValue(f, depth) };
  }
  return init;
}

/**
 * Valid requests of the methods that do the most with their input: half the messages sent to
 * them are one of these with one or two fields replaced by random values, so that they get past
 * the first check and reach the handler's later ones.
 */
const KEY32 = new Uint8Array(32).fill(7);
const TEMPLATES: Record<string, Record<string, unknown>> = {
  "mimi.discovery.v1.ResolverService/Resolve": { csi: "tel:+447700900123" },
  "mimi.discovery.v1.ResolverService/ResolveStream": { requestId: 1n, csi: "tel:+12025550142" },
  "mimi.discovery.v1.AuthoritativeService/Lookup": { csi: "tel:+447700900123" },
  "mimi.discovery.v1.AuthoritativeService/LookupStream": { requestId: 1n, csi: "tel:+447700900123" },
  "mimi.discovery.v1.RootService/Refer": { csi: "tel:+447700900123" },
  "mimi.discovery.v1.ClaimService/StartChallenge": {
    csi: "tel:+447700900777",
    action: { case: "claim", value: { ssi: "fuzz", userPublicKey: KEY32 } },
  },
  "mimi.discovery.v1.ClaimService/BulkRegister": { message: { case: "start", value: { sessionId: "fuzz" } } },
  "mimi.discovery.v1.ResolverAdminService/Flush": { scope: { case: "csi", value: "tel:+447700900123" } },
};

/** A template with one or two of its message's fields (any of them) set to random values. */
function mutated(desc: DescMessage, template: Record<string, unknown>): Record<string, unknown> {
  const init = { ...template };
  for (let i = 0; i < 1 + Math.floor(random() * 2); i++) {
    const f = pick(desc.fields);
    if (f.oneof) init[f.oneof.localName] = { case: f.localName, value: fieldValue(f, 1) };
    else init[f.localName] = fieldValue(f, 1);
  }
  return init;
}

function randomMessage(desc: DescMessage, template?: Record<string, unknown>): Buffer {
  try {
    const init = template && chance(0.5) ? mutated(desc, template) : messageInit(desc);
    const bytes = Buffer.from(toBinary(desc, create(desc, init as never)));
    // Cut short, a message is malformed bytes: one more kind of bad input.
    return bytes.length > MAX_MESSAGE_BYTES ? bytes.subarray(0, MAX_MESSAGE_BYTES) : bytes;
  } catch {
    // A value protobuf-es will not encode (an out-of-range number in a packed field): send none.
    return Buffer.alloc(0);
  }
}

const same = (b: Buffer) => b;

/** One call of `method` with `messages`; resolves with its final status. */
function call(
  client: grpc.Client,
  service: DescService,
  method: DescMethod,
  messages: Buffer[],
): Promise<grpc.StatusObject> {
  const path = `/${service.typeName}/${method.name}`;
  const deadline = Date.now() + (method.methodKind === "unary" ? CALL_DEADLINE_MS : STREAM_DEADLINE_MS);
  return new Promise((done) => {
    const onStatus = (s: grpc.StatusObject) => done(s);
    const first = messages[0] ?? Buffer.alloc(0);
    switch (method.methodKind) {
      case "unary": {
        const c = client.makeUnaryRequest(path, same, same, first, { deadline }, () => {});
        c.on("status", onStatus);
        break;
      }
      case "server_streaming": {
        const c = client.makeServerStreamRequest(path, same, same, first, { deadline });
        c.on("status", onStatus);
        c.on("error", () => {});
        // A watch never ends by itself: its first message (or its refusal) is enough.
        c.on("data", () => c.cancel());
        break;
      }
      case "client_streaming": {
        const c = client.makeClientStreamRequest(path, same, same, { deadline }, () => {});
        c.on("status", onStatus);
        for (const m of messages) c.write(m);
        c.end();
        break;
      }
      case "bidi_streaming": {
        const c = client.makeBidiStreamRequest(path, same, same, { deadline });
        c.on("status", onStatus);
        c.on("error", () => {});
        let read = 0;
        // Streams that answer each item end when asked to; watch-like ones are cut after a few.
        c.on("data", () => {
          if (++read >= messages.length + 2) c.cancel();
        });
        for (const m of messages) c.write(m);
        c.end();
        break;
      }
    }
  });
}

const t = useNetwork();

scenario(
  t,
  "random and extreme messages to every method get a status a client can act on, and every server keeps serving",
  async () => {
    process.stderr.write(`fuzz seed ${SEED} (MIMI_FUZZ_SEED=${SEED} repeats this run)\n`);
    const n = t.net;
    const servers: Record<string, string> = {
      root: n.root.address,
      eu: n.dps.eu.address,
      resolver: n.resolver.address,
    };
    const hostOf: Record<string, readonly string[]> = {
      "mimi.discovery.v1.RootService": ["root"],
      "mimi.discovery.v1.RegistryAdminService": ["root"],
      "mimi.discovery.v1.ResolverService": ["resolver"],
      "mimi.discovery.v1.ResolverAdminService": ["resolver"],
      "grpc.health.v1.Health": ["root", "eu", "resolver"],
    };
    const services = (Object.values(pb) as unknown[]).filter(
      (x): x is DescService => typeof x === "object" && x !== null && (x as DescService).kind === "service",
    );
    assert.ok(services.length >= 10, `found ${services.length} services in the descriptors`);
    const clients = new Map<string, grpc.Client>();
    const clientFor = (server: string, identity: string) => {
      const key = `${server}/${identity}`;
      let c = clients.get(key);
      if (!c) {
        c = new grpc.Client(
          servers[server] as string,
          channelCredentials(loadTls(devTlsPaths(n.pkiDir, identity))),
        );
        clients.set(key, c);
      }
      return c;
    };
    const broken: string[] = [];
    const seen = new Map<number, number>();
    const jobs: (() => Promise<void>)[] = [];
    for (const service of services) {
      for (const server of hostOf[service.typeName] ?? ["eu"]) {
        for (const method of service.methods) {
          for (const identity of IDENTITIES) {
            for (let i = 0; i < MESSAGES; i++) {
              jobs.push(async () => {
                // Made when the job starts (jobs start in order, each making its messages at
                // once), so a seed makes the same messages and only CONCURRENCY jobs' are held.
                const template = TEMPLATES[`${service.typeName}/${method.name}`];
                const messages = Array.from({ length: 1 + Math.floor(random() * 3) }, () =>
                  randomMessage(method.input, template),
                );
                const s = await call(clientFor(server, identity), service, method, messages);
                seen.set(s.code, (seen.get(s.code) ?? 0) + 1);
                const hung = method.methodKind === "unary" && s.code === grpc.status.DEADLINE_EXCEEDED;
                if (BROKEN.has(s.code) || hung) {
                  broken.push(
                    `${server} ${service.typeName}/${method.name} as ${identity}: ${grpc.status[s.code]} ` +
                      `"${s.details}" for ${messages.map((m) => m.subarray(0, 120).toString("hex")).join(", ")}`,
                  );
                }
              });
            }
          }
        }
      }
    }
    try {
      let next = 0;
      const worker = async () => {
        while (next < jobs.length) await (jobs[next++] as () => Promise<void>)();
      };
      await Promise.all(Array.from({ length: CONCURRENCY }, worker));
      const calls = jobs.length;
      const summary = [...seen].map(([code, k]) => `${grpc.status[code]} ${k}`).join(", ");
      process.stderr.write(`fuzz: ${calls} calls: ${summary}\n`);
      // Bad input is the caller's fault: no server logged an error of its own over it.
      const errors = t
        .logs()
        .split("\n")
        .filter((l) => /"level":(50|60)\b/.test(l));
      assert.deepEqual(errors.slice(0, 10), [], `seed ${SEED}: servers logged ${errors.length} errors`);
      assert.deepEqual(
        broken.slice(0, 20),
        [],
        `seed ${SEED}: ${broken.length} calls failed inside a server`,
      );
      // Every server is still up and serving.
      for (const proc of [n.root, n.dps.eu, n.dps.us, n.resolver])
        assert.ok(proc.running, `${proc.name} exited`);
      for (const [name, address] of Object.entries(servers)) {
        const health = n.channel(address, "cli").client(pb.Health);
        const r = await health.check({ service: "" });
        assert.equal(r.status, pb.HealthCheckResponse_ServingStatus.SERVING, `${name} still serving`);
      }
    } finally {
      for (const c of clients.values()) c.close();
    }
  },
  { timeoutMs: 900_000 },
);
