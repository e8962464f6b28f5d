import assert from "node:assert/strict";
import { test } from "node:test";
import { DiscoveryError } from "@mimi/core";
import { until } from "@mimi/core/testing";
import { AdaptiveGate, DEFAULT_GATE, type GateOptions } from "./adaptive-gate.js";
import { TOO_LATE } from "./call-bounds.js";

const timeout = () => new DiscoveryError("upstream_unavailable", "deadline");
const isTimeout = (e: unknown) => e instanceof DiscoveryError && e.code === "upstream_unavailable";

/** A gate whose window stays at `w`, on a clock the test moves. */
const fixedGate = (w: number, clock: { now: number }) =>
  new AdaptiveGate("eu", {
    ...DEFAULT_GATE,
    initialWindow: w,
    minWindow: w,
    maxWindow: w,
    decreaseEveryMs: 1_000,
    now: () => clock.now,
  });

/** A lookup the test settles by hand. */
function pending() {
  let settle: (ok: boolean) => void = () => {};
  const p = new Promise<string>((resolve, reject) => {
    settle = (ok) => (ok ? resolve("answer") : reject(timeout()));
  });
  return { p, settle };
}

/** `n` lookups through `gate`, one at a time, each answered `everyMs` after it went on `clock`. */
async function answerInTurn(gate: AdaptiveGate, clock: { now: number }, n: number, everyMs: number) {
  for (let i = 0; i < n; i++) {
    const c = pending();
    const run = gate.run(() => c.p, isTimeout);
    clock.now += everyMs;
    c.settle(true);
    await run;
  }
}

/**
 * Until `untilMs` on `clock`, `atOnce` lookups through `gate` every `everyMs`, answered 5 ms
 * after they went: light traffic, at one a time 1,000 / `everyMs` answers a second.
 */
async function lightTraffic(
  gate: AdaptiveGate,
  clock: { now: number },
  untilMs: number,
  everyMs = 20,
  atOnce = 1,
) {
  while (clock.now < untilMs) {
    if (atOnce === 1) await answerInTurn(gate, clock, 1, 5);
    else await inRounds(gate, clock, atOnce, 5);
    clock.now += everyMs - 5;
  }
}

/**
 * A gate in slow start on a clock the test moves: an answer in 5 ms (the base), and a second
 * later 40 lookups answered one after another, each in 25 ms (about 80 a second, as the drain
 * rate reads them).
 */
async function measuredGate(o: Partial<GateOptions> = {}) {
  const clock = { now: 0 };
  const gate = new AdaptiveGate("eu", {
    ...DEFAULT_GATE,
    decreaseEveryMs: 1_000,
    now: () => clock.now,
    ...o,
  });
  await answerInTurn(gate, clock, 1, 5);
  clock.now += 1_000;
  await answerInTurn(gate, clock, 40, 25);
  return { gate, clock };
}

/** A lookup answered at once if `gate` sends it: "sent", or the gate's failure. */
const tryLookup = (gate: AdaptiveGate, waitUntilMs: number, judged = true) =>
  gate
    .run(() => Promise.resolve("sent"), isTimeout, waitUntilMs, undefined, judged)
    .catch((e: DiscoveryError) => e);

/** The reason of a failure, or what was answered. */
const reasonOf = (r: string | DiscoveryError) => (r instanceof DiscoveryError ? r.details?.reason : r);

/** Lookups sent through a gate and answered when the clock reaches `due`. */
type Outstanding = { c: ReturnType<typeof pending>; due: number; run: Promise<string> }[];

/**
 * A lookup every 10 ms until `untilMs`, each answered `answerMs` after it went (a DP that keeps
 * up, at 100 a second), with `each` run once in every second from `eachFromMs`.
 */
async function steadyLoad(
  gate: AdaptiveGate,
  clock: { now: number },
  out: Outstanding,
  o: { untilMs: number; answerMs: number; each?: () => Promise<void>; eachFromMs?: number },
) {
  for (; clock.now < o.untilMs; clock.now += 10) {
    while (out.length > 0 && (out[0]?.due ?? Number.POSITIVE_INFINITY) <= clock.now) {
      const x = out.shift();
      x?.c.settle(true);
      await x?.run;
    }
    if (o.each && clock.now % 1_000 < 10 && clock.now >= (o.eachFromMs ?? 0)) await o.each();
    const c = pending();
    out.push({ c, due: clock.now + o.answerMs, run: gate.run(() => c.p, isTimeout, clock.now + 10_000) });
  }
}

/**
 * `n` lookups at once through `gate` with `leftMs` to wait (`sent(queued)` is told how many
 * wait at first), answered in rounds: each round, every lookup out is answered `ms` later on `clock`.
 * What each got: "answer", or the gate's failure.
 */
async function inRounds(
  gate: AdaptiveGate,
  clock: { now: number },
  n: number,
  ms: number,
  sent: (queued: number) => void = () => {},
  leftMs = 10_000,
): Promise<(string | DiscoveryError)[]> {
  const out: ReturnType<typeof pending>[] = [];
  const runs = Array.from({ length: n }, () =>
    gate
      .run(
        () => {
          const c = pending();
          out.push(c);
          return c.p;
        },
        isTimeout,
        clock.now + leftMs,
      )
      .catch((e: DiscoveryError) => e),
  );
  sent(gate.state.queued);
  while (out.length > 0) {
    await until(() => gate.state.inflight === out.length);
    clock.now += ms;
    for (const c of out.splice(0)) c.settle(true);
    await until(() => out.length > 0 || gate.state.inflight === 0);
  }
  return Promise.all(runs);
}

/** `n` lookups through `gate`, settled by hand, and the order in which the gate started them. */
function lookupsThrough(gate: AdaptiveGate, n: number) {
  const calls = Array.from({ length: n }, () => pending());
  const started: number[] = [];
  const runs = calls.map((c, i) =>
    gate.run(() => {
      started.push(i);
      return c.p;
    }, isTimeout),
  );
  return { calls, started, runs };
}

test("lookups over the window wait, in order, and start as others finish", async () => {
  const gate = new AdaptiveGate("eu", {
    ...DEFAULT_GATE,
    initialWindow: 2,
    minWindow: 1,
    decreaseEveryMs: 1_000,
    now: () => 0,
  });
  const { calls, started, runs } = lookupsThrough(gate, 5);
  await until(() => started.length === 2);
  assert.deepEqual(gate.state, { inflight: 2, window: 2, queued: 3 });
  // An answer in slow start widens the window by one: two more start.
  calls[0]?.settle(true);
  await until(() => started.length === 4);
  assert.deepEqual(started, [0, 1, 2, 3]);
  // Timeouts halve it (once per deadline): the last waits until the in-flight ones are down to it.
  calls[1]?.settle(false);
  calls[2]?.settle(false);
  await assert.rejects(runs[1] as Promise<string>);
  await assert.rejects(runs[2] as Promise<string>);
  assert.deepEqual(gate.state, { inflight: 1, window: 1, queued: 1 });
  calls[3]?.settle(true);
  await until(() => started.length === 5);
  calls[4]?.settle(true);
  assert.deepEqual(await Promise.all(runs.slice(3)), ["answer", "answer"]);
  // The queue, emptied, holds none of the waiters gone by.
  assert.equal((gate as unknown as { queue: unknown[] }).queue.length, 0);
});

test("a lookup that timed out keeps its place until the DP is done with it; other failures give it back at once", async () => {
  // The DP's late answers, by the timeout that each one ends.
  const late = new Map<unknown, (answered: boolean) => void>();
  const gate = new AdaptiveGate("eu", {
    ...DEFAULT_GATE,
    initialWindow: 2,
    minWindow: 2,
    decreaseEveryMs: 1_000,
    stillBusy: (err) => {
      if (!isTimeout(err)) return undefined;
      let done: (answered: boolean) => void = () => {};
      const p = new Promise<boolean>((resolve) => {
        done = resolve;
      });
      late.set(err, done);
      return p;
    },
    now: () => 0,
  });
  const { calls, started, runs } = lookupsThrough(gate, 4);
  await until(() => started.length === 2);
  calls[0]?.settle(false);
  await assert.rejects(runs[0] as Promise<string>);
  // Failed for its caller, still at the DP: the next waits.
  assert.deepEqual(gate.state, { inflight: 2, window: 2, queued: 2 });
  assert.deepEqual(started, [0, 1]);
  for (const done of late.values()) done(true);
  await until(() => started.length === 3);
  assert.deepEqual(gate.state, { inflight: 2, window: 2, queued: 1 });
  for (const c of calls.slice(1)) c.settle(true);
  assert.deepEqual(await Promise.all(runs.slice(1)), ["answer", "answer", "answer"]);
  assert.equal(gate.state.inflight, 0);
  // A failure that is not a timeout (a refusal, a cut stream) holds nothing at the DP.
  const refused = new DiscoveryError("resource_exhausted", "not a timeout");
  await assert.rejects(gate.run(() => Promise.reject(refused), isTimeout));
  assert.equal(gate.state.inflight, 0);
});

/** A round of `n` lookups sent at once through `gate`, then all answered. */
async function round(gate: AdaptiveGate, n: number) {
  const calls = Array.from({ length: n }, () => pending());
  const runs = calls.map((c) => gate.run(() => c.p, isTimeout));
  await until(() => gate.state.inflight + gate.state.queued === n);
  for (const c of calls) c.settle(true);
  await Promise.all(runs);
}

test("slow start doubles the window per round until a timeout; then one per window; timeouts halve it", async () => {
  let now = 0;
  const gate = new AdaptiveGate("eu", {
    ...DEFAULT_GATE,
    initialWindow: 8,
    minWindow: 4,
    decreaseEveryMs: 1_000,
    now: () => now,
  });
  await round(gate, 8);
  assert.equal(gate.state.window, 16, "a window of answers doubles it");
  const fail = () =>
    gate.run(async () => {
      throw timeout();
    }, isTimeout);
  await assert.rejects(fail());
  await assert.rejects(fail());
  assert.equal(gate.state.window, 8, "halved once within one deadline");
  assert.equal(gate.shrank, true);
  await round(gate, 8);
  assert.equal(gate.state.window, 8, "after a timeout, eight answers are not yet a whole step");
  await round(gate, 8);
  assert.equal(gate.state.window, 9);
  now += 1_000;
  await assert.rejects(fail());
  now += 1_000;
  await assert.rejects(fail());
  assert.equal(gate.state.window, 4, "never below the minimum");
  // Past slow start every answer in time grows it, even to lookups sent one at a time.
  for (let i = 0; i < 8; i++) await gate.run(async () => "ok", isTimeout);
  assert.equal(gate.state.window, 5);
  now += 10_000;
  assert.equal(gate.shrank, false);
});

test("only a window that is the limit grows: lookups one at a time leave it as it is, for a later burst", async () => {
  const gate = new AdaptiveGate("eu", {
    ...DEFAULT_GATE,
    initialWindow: 8,
    minWindow: 4,
    decreaseEveryMs: 1_000,
    now: () => 0,
  });
  // In slow start it grows while the most out at once is over half of it: two at a time, never.
  for (let i = 0; i < 50; i++) await round(gate, 2);
  assert.equal(gate.state.window, 8);
  // Five at once fill more than half of it: it grows, to twice that and no further.
  for (let i = 0; i < 10; i++) await round(gate, 5);
  assert.equal(gate.state.window, 10);
  // A burst over the window waits for it and grows it, as before.
  await round(gate, 40);
  assert.ok(gate.state.window > 20, `grown by the burst to ${gate.state.window}`);
  // A burst of 12 into a fresh window of 10 doubles it, about; lookups two at a time after it
  // leave it as it is (slow start doubles a window for what it sent, not more).
  const fresh = new AdaptiveGate("eu", {
    ...DEFAULT_GATE,
    initialWindow: 10,
    decreaseEveryMs: 1_000,
    now: () => 0,
  });
  await round(fresh, 12);
  const grown = fresh.state.window;
  assert.ok(grown < 24, `${grown}`);
  for (let i = 0; i < 20; i++) await round(fresh, 2);
  assert.equal(fresh.state.window, grown);
});

test("a full queue is refused at once, and a lookup that waits too long gives up", async () => {
  const gate = new AdaptiveGate("eu", {
    ...DEFAULT_GATE,
    initialWindow: 1,
    minWindow: 1,
    maxQueue: 1,
    maxWaitMs: 50,
    decreaseEveryMs: 1_000,
    now: () => 0,
  });
  const first = pending();
  const running = gate.run(() => first.p, isTimeout);
  const waiting = gate.run(async () => "late", isTimeout);
  await assert.rejects(
    gate.run(async () => "x", isTimeout),
    (e: DiscoveryError) => {
      assert.equal(e.code, "resource_exhausted");
      assert.match(e.message, /DP "eu" answers slower than lookups arrive: 1 are waiting/);
      return true;
    },
  );
  await assert.rejects(waiting, /DP "eu" is overloaded: the lookup waited 50 ms/);
  first.settle(true);
  assert.equal(await running, "answer");
  assert.deepEqual(gate.state, { inflight: 0, window: 2, queued: 0 }, "its answer widened the window");
  assert.equal(await gate.run(async () => "next", isTimeout), "next", "a gone waiter's turn passes on");
});

test("a published rate paces lookups out of the gate and refuses at once what could not leave in time", async (t) => {
  t.mock.timers.enable({ apis: ["setTimeout"] });
  let now = 0;
  const gate = new AdaptiveGate("eu", {
    ...DEFAULT_GATE,
    initialWindow: 100,
    maxWaitMs: 1_000,
    decreaseEveryMs: 1_000,
    now: () => now,
  });
  // 10 a second with a burst of one: one every 100 ms.
  gate.setRate(10);
  const started: number[] = [];
  const runs = Array.from({ length: 5 }, (_, _i) =>
    gate.run(async () => {
      started.push(now);
      return "answer";
    }, isTimeout),
  );
  await until(() => started.length === 1);
  // Those four wait for the rate, not the window, which does not grow for them.
  assert.deepEqual(gate.state, { inflight: 0, window: 100, queued: 4 });
  for (let step = 1; step <= 4; step++) {
    now += 100;
    t.mock.timers.tick(100);
    await until(() => started.length === step + 1);
  }
  assert.deepEqual(started, [0, 100, 200, 300, 400]);
  assert.deepEqual(await Promise.all(runs), Array(5).fill("answer"));

  // A moment later twelve arrive together: one goes, nine wait (the ninth leaves after 900 ms),
  // and the rest, which would not leave before the 1 s bound, are refused now with when to retry.
  now += 100;
  t.mock.timers.tick(100);
  const more = Array.from({ length: 12 }, () => gate.run(async () => "answer", isTimeout));
  for (const refused of more.slice(10)) {
    await assert.rejects(refused, (e: DiscoveryError) => {
      assert.equal(e.code, "resource_exhausted");
      assert.equal(e.details?.reason, "DP_CAPACITY");
      assert.equal(e.details?.retryAfterMs, 1_000);
      assert.match(e.message, /takes 10 lookups per second and 9 are waiting/);
      return true;
    });
  }
  for (let i = 0; i < 9; i++) {
    now += 100;
    t.mock.timers.tick(100);
  }
  assert.equal((await Promise.all(more.slice(0, 10))).length, 10);
  // Without a rate, nothing waits for one.
  gate.setRate(0);
  assert.equal(await gate.run(async () => "answer", isTimeout), "answer");
});

test("a lookup waits for the window until its caller's deadline, not the default; none left fails at once", async (t) => {
  t.mock.timers.enable({ apis: ["setTimeout"] });
  const gate = new AdaptiveGate("eu", {
    ...DEFAULT_GATE,
    initialWindow: 1,
    minWindow: 1,
    maxWaitMs: 1_000,
    decreaseEveryMs: 1_000,
    now: () => 0,
  });
  const busy = pending();
  const first = gate.run(() => busy.p, isTimeout);
  const hurried = gate.run(async () => "answer", isTimeout, 100);
  const patient = gate.run(async () => "answer", isTimeout, 5_000);
  t.mock.timers.tick(100);
  await assert.rejects(hurried, /waited 100 ms/);
  t.mock.timers.tick(2_000);
  assert.deepEqual(gate.state, { inflight: 1, window: 1, queued: 1 }, "still waiting past the default");
  await assert.rejects(
    gate.run(async () => "answer", isTimeout, 0),
    /leaves no time to wait/,
  );
  busy.settle(true);
  assert.equal(await first, "answer");
  assert.equal(await patient, "answer");
});

test("a waiter nobody waits for any more leaves at its turn: never sent, and the next one goes", async () => {
  const gate = new AdaptiveGate("eu", {
    ...DEFAULT_GATE,
    initialWindow: 1,
    minWindow: 1,
    decreaseEveryMs: 1_000,
    now: () => 0,
  });
  const first = pending();
  const started: string[] = [];
  const running = gate.run(() => {
    started.push("first");
    return first.p;
  }, isTimeout);
  let gone = false;
  const dropped = gate.run(
    () => {
      started.push("gone");
      return Promise.resolve("answer");
    },
    isTimeout,
    undefined,
    () => gone,
  );
  const next = gate.run(() => {
    started.push("next");
    return Promise.resolve("answer");
  }, isTimeout);
  await until(() => gate.state.queued === 2);
  gone = true; // its caller left while it waited
  first.settle(true);
  await running;
  await assert.rejects(dropped, /nobody was waiting/);
  assert.equal(await next, "answer");
  assert.deepEqual(started, ["first", "next"], "the dropped lookup was never sent");
  assert.deepEqual(
    gate.state,
    { inflight: 0, window: 2, queued: 0 },
    "the answer while two waited widened it; the next, out alone, did not",
  );
});

/**
 * A gate of window 2 past slow start (a timeout ended it: before, the window sets the rate, not
 * the DP) on a clock the test moves, with a base answer time of 5 ms, and `answers(n, everyMs)`:
 * n lookups answered in turn.
 */
async function drainingGate() {
  const clock = { now: 0 };
  const gate = fixedGate(2, clock);
  const lost = pending();
  const lostRun = gate.run(() => lost.p, isTimeout);
  lost.settle(false);
  await assert.rejects(lostRun);
  // An answer in 5 ms: the base, against which later answers show the DP's queue.
  await answerInTurn(gate, clock, 1, 5);
  const answers = (n: number, everyMs: number) => answerInTurn(gate, clock, n, everyMs);
  return { gate, answers, clock };
}

test("a lookup that would be answered too late, at the rate answers come back, is refused at once", async () => {
  const { gate, answers, clock } = await drainingGate();
  // 40 answers in the last second, each in 25 ms (the base is 5): the DP drains about 40
  // lookups a second through this gate.
  await answers(40, 25);
  const now = clock.now;
  // The window full, three wait.
  const hold = [pending(), pending()];
  const held = hold.map((c) => gate.run(() => c.p, isTimeout, now + 10_000));
  const waiters = [pending(), pending(), pending()];
  const waiting = waiters.map((c) => gate.run(() => c.p, isTimeout, now + 10_000));
  await until(() => gate.state.queued === 3);
  // One with 80 ms left would be answered in about 150 ms (sixth in line at 40 a second, the two
  // sent counted): refused now, with that as retry-after.
  const refused = await tryLookup(gate, now + 80);
  assert.ok(refused instanceof DiscoveryError, "refused");
  assert.equal(refused.code, "resource_exhausted");
  assert.equal(refused.details?.reason, "UPSTREAM_SATURATED");
  const retryAfter = Number(refused.details?.retryAfterMs);
  assert.ok(
    retryAfter >= 140 && retryAfter <= 320,
    `retry after ${retryAfter} ms: the time to an answer, spread up to twice that`,
  );
  assert.match(
    refused?.message ?? "",
    /answers about 4[0-2] lookups per second here and 2 are sent and 3 waiting/,
  );
  // Those 150 ms must fit in the base answer time (5 ms) and half of the rest of what is left:
  // with 250 ms left, refused too; with a second, it waits its turn.
  const short = await tryLookup(gate, now + 250);
  assert.equal(reasonOf(short), "UPSTREAM_SATURATED");
  assert.equal(gate.refused, 2, "both refusals counted (mimi_resolver_upstream_refusals_total)");
  // The same verdict without a lookup (the resolver refusing a miss before decoding it): refused
  // and counted alike. With a second left it would wait; with less time than the base, run()
  // refuses it for the caller's short deadline (its caller stays charged), so refusalNow leaves it to run().
  assert.equal(reasonOf(gate.refusalNow(now + 250) ?? "none"), "UPSTREAM_SATURATED");
  assert.equal(gate.refusalNow(now + 1_000), undefined);
  assert.equal(gate.refusalNow(now + 4), undefined);
  assert.equal(reasonOf(await tryLookup(gate, now + 4)), TOO_LATE);
  assert.equal(gate.refused, 3, "the verdict without a lookup counted too; the short deadline not");
  assert.equal(gate.state.queued, 3, "a verdict queues nothing");
  const patient = pending();
  const last = gate.run(() => patient.p, isTimeout, now + 1_000);
  await until(() => gate.state.queued === 4);
  for (const c of [...hold, ...waiters, patient]) c.settle(true);
  await Promise.all([...held, ...waiting, last]);
});

test("lookups already sent count: one the window has room for is refused when they would make it late", async () => {
  // Answers came back at about 84 a second (20 and 20 over 475 ms), and 60 lookups are out: a
  // new one would be answered in about 730 ms.
  const { gate, clock } = await measuredGate({ initialWindow: 100 });
  const now = clock.now;
  const out = Array.from({ length: 60 }, () => pending());
  const sent = out.map((c) => gate.run(() => c.p, isTimeout, now + 10_000));
  await until(() => gate.state.inflight === 60);
  assert.equal(gate.state.queued, 0);
  assert.ok(gate.state.window > 60, "the window has room");
  const late = await tryLookup(gate, now + 500);
  assert.equal(reasonOf(late), "UPSTREAM_SATURATED");
  assert.ok(Number((late as DiscoveryError).details?.retryAfterMs) >= 600);
  // A caller with two seconds left is sent at once.
  assert.equal(await tryLookup(gate, now + 2_000), "sent");
  for (const c of out) c.settle(true);
  await Promise.all(sent);
});

test("lookups not judged (private ones, a retry) are neither refused by the answer-time rule nor counted by it", async () => {
  // 40 judged answers: about 80 a second, as above.
  const { gate, clock } = await measuredGate({ initialWindow: 200 });
  const now = clock.now;
  // 100 slow private lookups out: a plain one with 500 ms left goes, as does a private one.
  const slow = Array.from({ length: 100 }, () => pending());
  const out = slow.map((c) => gate.run(() => c.p, isTimeout, now + 10_000, undefined, false));
  await until(() => gate.state.inflight === 100);
  assert.equal(gate.refusalNow(now + 500), undefined);
  // 60 plain ones out: a plain one with 500 ms left is refused; one not judged is not.
  const plain = Array.from({ length: 60 }, () => pending());
  const sent = plain.map((c) => gate.run(() => c.p, isTimeout, now + 10_000));
  await until(() => gate.state.inflight === 160);
  const late = await tryLookup(gate, now + 500);
  assert.equal(reasonOf(late), "UPSTREAM_SATURATED");
  assert.equal(await tryLookup(gate, now + 500, false), "sent");
  for (const c of [...slow, ...plain]) c.settle(true);
  await Promise.all([...out, ...sent]);
});

test("a long queue behind a small window, at the rate it drains, is refused however quick the DP", async () => {
  const clock = { now: 0 };
  const gate = fixedGate(4, clock);
  // 100 lookups through a window of 4, each round answered in 5 ms: 800 a second.
  await inRounds(gate, clock, 100, 5);
  assert.equal(gate.refused, 0);
  // 400 more at once: 4 go, 396 wait. A newcomer with 500 ms left would be answered in about
  // 500 ms: refused; one with 2 s left may wait.
  let verdict: unknown;
  let patient: unknown;
  const out = await inRounds(gate, clock, 400, 5, () => {
    verdict = gate.refusalNow(clock.now + 500);
    patient = gate.refusalNow(clock.now + 2_000);
  });
  assert.match(
    String((verdict as DiscoveryError | undefined)?.message),
    /answers about 8\d\d lookups per second here and 4 are sent and 396 waiting/,
  );
  assert.equal(patient, undefined);
  assert.equal(out.length, 400);
});

test("a burst after light traffic, at a DP that answers as quickly as ever, is judged by what its window could drain, not by what was asked", async () => {
  for (const { gate, queued, rounds } of [
    // In slow start, a window of 64 (waiting lookups do not count: the window doubles for them).
    {
      gate: (clock: { now: number }) =>
        new AdaptiveGate("eu", {
          ...DEFAULT_GATE,
          initialWindow: 64,
          decreaseEveryMs: 1_000,
          now: () => clock.now,
        }),
      queued: 86,
      rounds: 2,
    },
    // At its largest, a window of 16 (waiting lookups count: 16 drain every 5 ms).
    { gate: (clock: { now: number }) => fixedGate(16, clock), queued: 134, rounds: 10 },
  ]) {
    const clock = { now: 0 };
    const g = gate(clock);
    // Three seconds of a lookup every 40 ms, each answered in 5 ms: 25 answers a second, which
    // is what was asked, not what the DP can answer.
    await lightTraffic(g, clock, 3_000, 40);
    // 150 lookups at once with 900 ms to wait (a 1 s deadline), each round answered in 5 ms
    // again. At 25 a second they would look 6 s away, and all but 11 be refused; at twice the one
    // lookup out at once that the DP answered in 5 ms, 400 a second, they are 375 ms away.
    const out = await inRounds(g, clock, 150, 5, (waiting) => assert.equal(waiting, queued), 900);
    assert.deepEqual(new Set(out), new Set(["answer"]), "all 150 answered");
    assert.equal(g.refused, 0);
    assert.equal(clock.now - 3_000, rounds * 5, "answered in rounds of the window");
  }
});

/**
 * A window of 16 on a moving clock (and `stillBusy` for its failures), after three seconds of
 * lookups `atOnce` at a time (default one), every 20 ms, each answered in 5 ms: 50 answers a
 * second for each at once.
 */
async function lightlyUsed(
  o: {
    stillBusy?: GateOptions["stillBusy"];
    atOnce?: number;
    privateOut?: ReturnType<typeof pending>[];
  } = {},
) {
  const { stillBusy, atOnce = 1, privateOut = [] } = o;
  const clock = { now: 0 };
  const gate = new AdaptiveGate("eu", {
    ...DEFAULT_GATE,
    initialWindow: 16,
    minWindow: 16,
    maxWindow: 16,
    decreaseEveryMs: 1_000,
    now: () => clock.now,
    ...(stillBusy && { stillBusy }),
  });
  const held = privateOut.map((c) => gate.run(() => c.p, isTimeout, 10_000, undefined, false));
  await lightTraffic(gate, clock, 3_000, 20, atOnce);
  for (const c of privateOut) c.settle(true);
  await Promise.all(held);
  return { gate, clock };
}

/** The rate a refusal says the DP answers at (lookups per second), or NaN. */
const rateIn = (refusal: DiscoveryError | undefined) =>
  Number(/answers about (\d+) lookups per second/.exec(refusal?.message ?? "")?.[1]);

/** `n` lookups through `gate` (10 s to wait, the default), settled by hand. */
async function outstanding(gate: AdaptiveGate, n: number) {
  const before = gate.state.inflight + gate.state.queued;
  const { calls, runs } = lookupsThrough(gate, n);
  await until(() => gate.state.inflight + gate.state.queued === before + n);
  return async () => {
    for (const c of calls) c.settle(true);
    await Promise.all(runs);
  };
}

test("a DP is not taken to answer more at once, as quickly, than twice what it has shown, nor plain lookups to have the places private ones hold", async () => {
  const { gate, clock } = await lightlyUsed();
  // 500 out and waiting: a newcomer with two seconds left. The window (16 every 5 ms) would drain
  // them in 160 ms; at twice the one lookup the DP has answered at once, 400 a second, they take
  // 1.25 s: refused.
  const settle = await outstanding(gate, 500);
  const rate = rateIn(gate.refusalNow(clock.now + 2_000));
  assert.ok(rate >= 300 && rate <= 600, `${rate}`);
  await settle();
  // The same after lookups one at a time beside 12 private ones: plain ones were out one at a time.
  const beside = await lightlyUsed({ privateOut: Array.from({ length: 12 }, () => pending()) });
  const settleBeside = await outstanding(beside.gate, 500);
  const besideRate = rateIn(beside.gate.refusalNow(beside.clock.now + 2_000));
  assert.ok(besideRate >= 300 && besideRate <= 600, `${besideRate}`);
  await settleBeside();
  // Eight at a time answered in 5 ms (400 a second came back): the window's 16 could be out.
  // With 12 of them held by private lookups, plain ones have 4: 800 a second, and 1,000 of them
  // waiting are 1.26 s away (160 ms at the window's 16 every 5 ms): refused.
  const busy = await lightlyUsed({ atOnce: 8 });
  const slow = Array.from({ length: 12 }, () => pending());
  const held = slow.map((c) =>
    busy.gate.run(() => c.p, isTimeout, busy.clock.now + 10_000, undefined, false),
  );
  const settlePlain = await outstanding(busy.gate, 1_000);
  assert.deepEqual(busy.gate.state, { inflight: 16, window: 16, queued: 996 });
  const busyRate = rateIn(busy.gate.refusalNow(busy.clock.now + 2_000));
  assert.ok(busyRate >= 600 && busyRate <= 1_000, `${busyRate}`);
  for (const c of slow) c.settle(true);
  await Promise.all(held);
  await settlePlain();
});

test("a DP that timed out or answered late is judged by the rate its answers came back at", async () => {
  // 45 out and waiting; a newcomer with a second left. At 400 a second (twice the one out at
  // once, answered in 5 ms) they are 115 ms away: taken; at the 50 a second that came back,
  // 920 ms: refused.
  const verdict = (gate: AdaptiveGate, clock: { now: number }) =>
    reasonOf(gate.refusalNow(clock.now + 1_000) ?? "taken");
  {
    // A timeout: for two attempt deadlines (1 s each here) the DP has shown it can fall behind,
    // counted from the last timeout, though one within a deadline of the last halving does not
    // halve the window again. Lookups one at a time go on in between.
    const { gate, clock } = await lightlyUsed();
    const timesOut = () => assert.rejects(gate.run(() => Promise.reject(timeout()), isTimeout));
    await timesOut();
    await lightTraffic(gate, clock, 3_900);
    await timesOut();
    await lightTraffic(gate, clock, 5_100);
    assert.equal(gate.shrank, false, "the window was halved over two deadlines ago");
    const settle = await outstanding(gate, 45);
    assert.equal(verdict(gate, clock), "UPSTREAM_SATURATED");
    await settle();
  }
  {
    // A lookup that failed with the DP still at it (not a timeout of the gate's), answered 200 ms
    // after it went: the late answer counts in the smoothed answer time, which then shows a queue.
    const late = pending();
    const failure = new DiscoveryError("upstream_unavailable", "attempt deadline");
    const { gate, clock } = await lightlyUsed({
      stillBusy: (err) => (err === failure ? late.p.then(() => true) : undefined),
    });
    const failed = gate.run(
      () => Promise.reject(failure),
      () => false,
      clock.now + 10_000,
    );
    await assert.rejects(failed);
    const settle = await outstanding(gate, 44);
    assert.equal(verdict(gate, clock), "taken");
    clock.now += 200;
    late.settle(true);
    await until(() => verdict(gate, clock) !== "taken");
    assert.equal(verdict(gate, clock), "UPSTREAM_SATURATED");
    await settle();
  }
});

test("a DP whose every answer is slow, but that keeps up, is not refused for its slowness", async () => {
  const clock = { now: 0 };
  const gate = new AdaptiveGate("far", {
    ...DEFAULT_GATE,
    initialWindow: 100,
    decreaseEveryMs: 1_000,
    now: () => clock.now,
  });
  // A lookup every 10 ms, each answered 300 ms after it went: 30 out, 100 answers a second.
  const out: Outstanding = [];
  await steadyLoad(gate, clock, out, { untilMs: 2_000, answerMs: 300 });
  assert.equal(gate.state.inflight, 30);
  // With 250 ms left, less than its quickest answer: the caller's deadline is too short (it
  // stays charged, call-bounds.ts), which is not the DP's saturation.
  const short = await tryLookup(gate, clock.now + 250);
  assert.equal((short as DiscoveryError).code, "upstream_unavailable");
  assert.equal(reasonOf(short), TOO_LATE);
  assert.equal(gate.refused, 0);
  // With 500 ms left it goes: half of 500 ms would refuse it, but its base (300 ms) is not a queue.
  assert.equal(await tryLookup(gate, clock.now + 500), "sent");
  for (const o of out) o.c.settle(true);
  await Promise.all(out.map((o) => o.run));
});

test("while the gate refuses, the base answer time does not rise with the DP's queue; once it stops, it follows", async () => {
  // The base is 5 ms.
  const { gate, clock } = await measuredGate({ initialWindow: 100 });
  // With 300 ms left and 40 out at 100 a second, refused as saturated.
  const refuseOne = async () => {
    const e = await tryLookup(gate, clock.now + 300);
    assert.equal(reasonOf(e), "UPSTREAM_SATURATED");
  };
  // Then a lookup every 10 ms, each answered 400 ms after it went (the DP's queue), refusing one
  // lookup a second once 40 are out when `refusing`.
  const out: Outstanding = [];
  const steady = (untilMs: number, refusing: boolean) =>
    steadyLoad(gate, clock, out, {
      untilMs,
      answerMs: 400,
      ...(refusing && { each: refuseOne, eachFromMs: clock.now + 1_000 }),
    });
  // About 410 ms to an answer with 40 out at 100 a second. With 500 ms left: refused with the
  // base at 5 ms (5 + 247), sent with it at 400 ms (400 + 50).
  await steady(16_000, true);
  assert.equal(reasonOf(await tryLookup(gate, clock.now + 500)), "UPSTREAM_SATURATED");
  // Two whole buckets without a refusal: the base is the DP's answer time now.
  await steady(32_000, false);
  assert.equal(await tryLookup(gate, clock.now + 500), "sent");
  for (const o of out) o.c.settle(true);
  await Promise.all(out.map((o) => o.run));
});

test("past slow start, private lookups waiting for the window do not count as ahead of a plain one", async () => {
  const { gate, answers, clock } = await drainingGate();
  await answers(40, 25);
  const now = clock.now;
  const hold = [pending(), pending()];
  const held = hold.map((c) => gate.run(() => c.p, isTimeout, now + 10_000));
  // 30 private lookups wait (at about 41 answers a second they would make a plain one late).
  const privately = Array.from({ length: 30 }, () => pending());
  const waitingPrivately = privately.map((c) =>
    gate.run(() => c.p, isTimeout, now + 10_000, undefined, false),
  );
  await until(() => gate.state.queued === 30);
  const plain = pending();
  const last = gate.run(() => plain.p, isTimeout, now + 1_000);
  await until(() => gate.state.queued === 31);
  assert.equal(gate.refused, 0);
  for (const c of [...hold, ...privately, plain]) c.settle(true);
  await Promise.all([...held, ...waitingPrivately, last]);
});

test("a queue that stands still refuses a newcomer at once, with no answer to tell a rate", async () => {
  const clock = { now: 0 };
  const gate = fixedGate(2, clock);
  // Two sent that the DP does not answer, two waiting behind them from t = 0, one from t = 500.
  const calls = Array.from({ length: 5 }, () => pending());
  const runs = calls.slice(0, 4).map((c) => gate.run(() => c.p, isTimeout, 10_000));
  await until(() => gate.state.queued === 2);
  clock.now = 500;
  runs.push(gate.run(() => (calls[4] as ReturnType<typeof pending>).p, isTimeout, 10_000));
  await until(() => gate.state.queued === 3);
  // One with 1.1 s left would be answered in 500 ms at the soonest, within half of that: it may wait.
  assert.equal(gate.refusalNow(1_600), undefined);
  // At 600 ms nothing has been sent for 600 ms, past half of the second: refused at once.
  clock.now = 600;
  const refused = await tryLookup(gate, 1_600);
  assert.equal(reasonOf(refused), "UPSTREAM_SATURATED");
  assert.match(
    (refused as DiscoveryError).message,
    /has sent nothing for 600 ms here while lookups wait and 2 are sent and 3 waiting/,
  );
  assert.ok(Number((refused as DiscoveryError).details?.retryAfterMs) >= 600);
  // One with more time may still wait.
  assert.equal(gate.refusalNow(3_000), undefined);
  // The DP answers the two in 600 ms (now the base): the queue moves, and a newcomer with a
  // second left is judged by the 100 ms it has stood since: it may wait.
  calls[0]?.settle(true);
  calls[1]?.settle(true);
  await until(() => gate.state.queued === 1);
  clock.now = 700;
  assert.equal(gate.refusalNow(1_700), undefined);
  for (const c of calls) c.settle(true);
  await Promise.all(runs);
});

test("a lookup that left the front of the queue does not count as waiting there", async () => {
  const clock = { now: 0 };
  const gate = fixedGate(1, clock);
  const held = pending();
  const out = gate.run(() => held.p, isTimeout, 10_000);
  // One waits with 5 ms to spare, and gives up; a second comes at t = 1,000.
  const gaveUp = gate.run(() => Promise.resolve("sent"), isTimeout, 5).catch((e: DiscoveryError) => e);
  assert.match(String(await gaveUp), /waited 5 ms/);
  clock.now = 1_000;
  const second = gate.run(() => Promise.resolve("sent"), isTimeout, 10_000);
  await until(() => gate.state.queued === 1);
  // At 1,100 the one waiting has waited 100 ms, not the 1,100 of the one that left.
  clock.now = 1_100;
  assert.equal(gate.refusalNow(2_100), undefined);
  held.settle(true);
  assert.equal(await second, "sent");
  await out;
});

test("in slow start at the largest window, lookups waiting count: no doubling will drain them", async () => {
  const { gate, clock } = await measuredGate({ initialWindow: 2, minWindow: 2, maxWindow: 2 });
  const now = clock.now;
  const hold = [pending(), pending()];
  const held = hold.map((c) => gate.run(() => c.p, isTimeout, now + 10_000));
  const waiters = Array.from({ length: 60 }, () => pending());
  const waiting = waiters.map((c) => gate.run(() => c.p, isTimeout, now + 10_000));
  await until(() => gate.state.queued === 60);
  // 63 ahead at about 84 a second: about 750 ms, past 5 + (1,000 - 5) / 2.
  const late = await tryLookup(gate, now + 1_000);
  assert.equal(reasonOf(late), "UPSTREAM_SATURATED");
  for (const c of [...hold, ...waiters]) c.settle(true);
  await Promise.all([...held, ...waiting]);
});
