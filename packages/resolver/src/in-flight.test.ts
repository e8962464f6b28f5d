import assert from "node:assert/strict";
import { test } from "node:test";
import { status } from "@grpc/grpc-js";
import { DiscoveryError } from "@mimi/core";
import { AdaptiveGate, DEFAULT_GATE } from "./adaptive-gate.js";
import { callerGone } from "./call-bounds.js";
import { type Flight, InFlight } from "./in-flight.js";

/** A lookup the test settles. */
function held() {
  let settle: { resolve: (v: string) => void; reject: (e: unknown) => void } | undefined;
  const p = new Promise<string>((resolve, reject) => {
    settle = { resolve, reject };
  });
  return { p, settle: settle as NonNullable<typeof settle> };
}

/** A DP's refusal of the caller's rate-limit context, as upstream.ts passes it on. */
const contextRefusal = () =>
  new DiscoveryError("resource_exhausted", 'DP "eu" refused the lookup (DP_CONTEXT_LIMIT)', {
    remoteStatus: status.RESOURCE_EXHAUSTED,
    details: { reason: "DP_CONTEXT_LIMIT", retryAfterMs: 60_000 },
  });

/** A start or retry that must not run. */
const unasked = (): Promise<string> => assert.fail("not asked");

const A = { caller: "msp-a", background: false };
const B = { caller: "msp-b", background: false };

test("asks of one key share one lookup until it settles; then the next starts its own", async () => {
  const inflight = new InFlight<string>();
  const lookup = held();
  let started = 0;
  const flights: Flight[] = [];
  const start = (f: Flight) => {
    started++;
    flights.push(f);
    return lookup.p;
  };
  const first = inflight.run("k", A, start, unasked);
  assert.equal(flights[0]?.joined, false);
  const same = inflight.run("k", A, start, unasked);
  const other = inflight.run("k", B, start, unasked);
  assert.equal(started, 1);
  assert.equal(flights[0]?.joined, true, "joined: its first caller leaving no longer drops it");
  assert.ok(inflight.has("k"));
  lookup.settle.resolve("answer");
  assert.deepEqual(await Promise.all([first, same, other]), ["answer", "answer", "answer"]);
  assert.equal(inflight.has("k"), false);
  const next = inflight.run("k", A, () => Promise.resolve("again"), unasked);
  assert.equal(started, 1);
  assert.equal(await next, "again");
});

test("a joiner is asked for again when the lookup failed for its first caller alone", async () => {
  for (const [why, failure, sameAskedAgain] of [
    ["the DP refused the first caller's context", contextRefusal(), false],
    ["the first caller left and the lookup was dropped", callerGone(false), true],
  ] as const) {
    const inflight = new InFlight<string>();
    const lookup = held();
    const asked: string[] = [];
    const againFor = (who: string) => async () => {
      asked.push(who);
      return `${who}'s own answer`;
    };
    const first = inflight.run("k", A, () => lookup.p, unasked);
    const sameCaller = inflight.run("k", A, unasked, againFor("a"));
    const other = inflight.run("k", B, unasked, againFor("b"));
    lookup.settle.reject(failure);
    await assert.rejects(first, failure, why);
    if (sameAskedAgain) assert.equal(await sameCaller, "a's own answer", `${why}: whoever joined`);
    else await assert.rejects(sameCaller, failure, `${why}: the caller's own refusal`);
    assert.equal(await other, "b's own answer", why);
    assert.deepEqual(asked.sort(), sameAskedAgain ? ["a", "b"] : ["b"], why);
  }
});

test("a joiner allowing a longer wait than the first caller is asked for again when the gate refused the lookup unsent", async () => {
  // The gate's refusal of a lookup that may not wait while its window is full.
  const clock = { now: 0 };
  const gate = new AdaptiveGate("eu", {
    ...DEFAULT_GATE,
    initialWindow: 1,
    minWindow: 1,
    maxWindow: 1,
    decreaseEveryMs: 1_000,
    now: () => clock.now,
  });
  gate.run(
    () => new Promise<never>(() => {}),
    () => false,
  );
  const refused = await gate
    .run(
      async () => "sent",
      () => false,
      0,
    )
    .catch((e: unknown) => e);
  assert.ok(refused instanceof DiscoveryError);
  for (const [why, first, joiner, askedAgain] of [
    ["a later bound", 10, 20, true],
    ["no bound (the gate's default of its own)", 10, undefined, true],
    ["the same bound", 10, 10, false],
    ["an earlier bound", 10, 5, false],
    ["a first caller with no bound", undefined, 20, false],
    ["neither with a bound", undefined, undefined, false],
  ] as const) {
    const inflight = new InFlight<string>();
    const lookup = held();
    inflight.run("k", { ...A, waitUntilMs: first }, () => lookup.p, unasked).catch(() => {});
    const asked: string[] = [];
    const joined = inflight.run("k", { ...B, waitUntilMs: joiner }, unasked, async () => {
      asked.push("b");
      return "b's own answer";
    });
    lookup.settle.reject(refused);
    if (askedAgain) assert.equal(await joined, "b's own answer", why);
    else await assert.rejects(joined, refused, why);
    assert.equal(asked.length, askedAgain ? 1 : 0, why);
  }
  // A failure at the DP is shared, whatever the joiner's bound.
  const inflight = new InFlight<string>();
  const lookup = held();
  inflight.run("k", { ...A, waitUntilMs: 10 }, () => lookup.p, unasked).catch(() => {});
  const joined = inflight.run("k", { ...B, waitUntilMs: 20 }, unasked, unasked);
  const down = new DiscoveryError("upstream_unavailable", "down");
  lookup.settle.reject(down);
  await assert.rejects(joined, down);
});

test("any other failure is shared, or given to `failed` with the flight that was joined", async () => {
  const inflight = new InFlight<string>();
  const lookup = held();
  const down = new DiscoveryError("upstream_unavailable", "down");
  // A refusal of the resolver as a whole (not a caller's context) is every joiner's too.
  const capacity = new DiscoveryError("resource_exhausted", "full", {
    remoteStatus: status.RESOURCE_EXHAUSTED,
    details: { reason: "DP_CAPACITY" },
  });
  const refresh = { caller: "", background: true };
  inflight.run("k", refresh, () => lookup.p, unasked).catch(() => {});
  const plain = inflight.run("k", B, unasked, unasked);
  const seen: [unknown, Flight][] = [];
  const handled = inflight.run("k", A, unasked, unasked, async (err, flight) => {
    seen.push([err, flight]);
    return "stale";
  });
  lookup.settle.reject(down);
  await assert.rejects(plain, down);
  assert.equal(await handled, "stale");
  assert.equal(seen[0]?.[0], down);
  assert.equal(seen[0]?.[1].background, true, "the flight joined: the resolver's own refresh");

  const second = held();
  inflight.run("k", A, () => second.p, unasked).catch(() => {});
  const joiner = inflight.run("k", B, unasked, unasked);
  second.settle.reject(capacity);
  await assert.rejects(joiner, capacity);
});

test("a plain ask never joins a private lookup; a private ask joins a plain one in flight", () => {
  const uri = "tel:+447700900123";
  const inflight = new InFlight<string>();
  let started = 0;
  const start = () => {
    started++;
    return new Promise<string>(() => {});
  };
  const privateKey = inflight.keyOf(uri, true);
  assert.notEqual(privateKey, uri, "no plain lookup in flight: a private one of its own");
  inflight.run(privateKey, A, start, unasked);
  assert.equal(inflight.keyOf(uri, false), uri);
  inflight.run(inflight.keyOf(uri, false), B, start, unasked);
  assert.equal(started, 2, "the plain ask did not join the private lookup");
  assert.equal(inflight.keyOf(uri, true), uri, "a plain lookup is in flight: a private ask joins it");
  inflight.run(inflight.keyOf(uri, true), A, start, unasked);
  assert.equal(started, 2);
});
