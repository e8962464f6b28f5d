import assert from "node:assert/strict";
import { performance } from "node:perf_hooks";
import { test } from "node:test";
import { status } from "@grpc/grpc-js";
import { DiscoveryError } from "@mimi/core";
import { until } from "@mimi/core/testing";
import type { AdaptiveGate } from "./adaptive-gate.js";
import { callerGone, TOO_LATE } from "./call-bounds.js";
import { notSentForBound, refusedForBound, refusedUnsent } from "./gate-refusals.js";
import { type Flight, InFlight } from "./in-flight.js";
import { heldWindow } from "./testing.js";

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

/** The gate's refusals of a lookup when its window of one is full: for its bound, and for a full queue. */
async function gateRefusals() {
  const gate = (maxQueue: number) => heldWindow({ maxQueue }).gate;
  const refusal = (g: AdaptiveGate, waitUntilMs: number) =>
    g
      .run(
        async () => "sent",
        () => false,
        waitUntilMs,
      )
      .then(
        () => assert.fail("sent"),
        (e: unknown) => e as DiscoveryError,
      );
  // No time left to wait; a queue that holds nobody, whatever the bound.
  const noTime = await refusal(gate(10), 0);
  const queueFull = await refusal(gate(0), 60_000);
  assert.ok(refusedForBound(noTime));
  assert.equal(refusedForBound(queueFull), false);
  assert.ok(refusedUnsent(queueFull));
  return { noTime, queueFull };
}

test("a joiner allowing a longer wait than the first caller is asked for again when the gate failed the lookup for the first's bound", async () => {
  const { noTime, queueFull } = await gateRefusals();
  // Bounds on performance.now()'s clock; none: the gate's default (10 s) from the ask.
  const now = performance.now();
  const at = (ms: number) => now + ms;
  for (const [why, first, joiner, askedAgain] of [
    ["a later bound", at(10), at(20), true],
    ["no bound: 10 s from now", at(10), undefined, true],
    ["no bound, against a first caller allowing a minute", at(60_000), undefined, false],
    ["the same bound", at(10), at(10), false],
    ["an earlier bound", at(10), at(5), false],
    ["a first caller with no bound (10 s), against 20 ms", undefined, at(20), false],
    ["a first caller with no bound (10 s), against a minute", undefined, at(60_000), true],
    ["neither with a bound (the later only by the moments between them)", undefined, undefined, false],
  ] as const) {
    const inflight = new InFlight<string>();
    const lookup = held();
    inflight.run("k", { ...A, waitUntilMs: first }, () => lookup.p, unasked).catch(() => {});
    const asked: string[] = [];
    const joined = inflight.run("k", { ...B, waitUntilMs: joiner }, unasked, async () => {
      asked.push("b");
      return "b's own answer";
    });
    lookup.settle.reject(noTime);
    if (askedAgain) assert.equal(await joined, "b's own answer", why);
    else await assert.rejects(joined, (e) => e === noTime, why);
    assert.equal(asked.length, askedAgain ? 1 : 0, why);
  }
  // A failure the bound did not decide is shared, whatever the joiner's bound: the DP's, or the
  // gate's full queue (asking again would only be refused again).
  for (const failure of [new DiscoveryError("upstream_unavailable", "down"), queueFull]) {
    const inflight = new InFlight<string>();
    const lookup = held();
    inflight.run("k", { ...A, waitUntilMs: 10 }, () => lookup.p, unasked).catch(() => {});
    const joined = inflight.run("k", { ...B, waitUntilMs: 20 }, unasked, unasked);
    lookup.settle.reject(failure);
    await assert.rejects(joined, failure);
  }
});

test("joiners outwaiting a failed first caller ask once, under the longest wait; a retry failed for its own bound gives the first failure", async () => {
  const { noTime } = await gateRefusals();
  const inflight = new InFlight<string>();
  const first = held();
  const retried = held();
  const starts: (number | undefined)[] = [];
  // Asked again as service.ts asks: the same key, under the joiner's own bound.
  const ask = (caller: string, waitUntilMs: number): Promise<string> =>
    inflight.run(
      "k",
      { caller, background: false, waitUntilMs },
      (f) => {
        starts.push(f.waitUntilMs);
        return retried.p;
      },
      () => ask(caller, waitUntilMs),
    );
  inflight.run("k", { ...A, waitUntilMs: 10 }, () => first.p, unasked).catch(() => {});
  // Bounds rising in the order they joined: asked again in that order, each would start a
  // lookup the next outwaits, a round per joiner.
  const joiners = Array.from({ length: 50 }, (_, i) => ask(`msp-${i}`, 11 + i));
  first.settle.reject(noTime);
  await until(() => starts.length > 0);
  assert.deepEqual(starts, [60], "one lookup, under the longest wait");
  retried.settle.resolve("answer");
  assert.deepEqual(new Set(await Promise.all(joiners)), new Set(["answer"]));
  assert.equal(starts.length, 1);

  // Failed for its own bound in turn, a joiner is not charged for it where the failure it
  // joined was refunded (TOO_LATE is charged: call-bounds.ts chargedAnyway).
  const tooLate = notSentForBound(
    new DiscoveryError("upstream_unavailable", "answers no faster than", { details: { reason: TOO_LATE } }),
  );
  const { noTime: ownNoTime } = await gateRefusals();
  for (const [why, joinedFailure, retryFailure, heard] of [
    ["a refunded failure joined, a charged one of its own", noTime, tooLate, noTime],
    ["a charged failure joined, a refunded one of its own", tooLate, ownNoTime, ownNoTime],
    ["both refunded: its own", noTime, ownNoTime, ownNoTime],
  ] as const) {
    const inflight = new InFlight<string>();
    const lookup = held();
    inflight.run("k", { ...A, waitUntilMs: 10 }, () => lookup.p, unasked).catch(() => {});
    const joined = inflight.run("k", { ...B, waitUntilMs: 20 }, unasked, () => Promise.reject(retryFailure));
    lookup.settle.reject(joinedFailure);
    await assert.rejects(joined, (e) => e === heard, why);
  }
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
