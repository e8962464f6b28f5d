import assert from "node:assert/strict";
import { test } from "node:test";
import { AnswerTimes } from "./answer-times.js";

/** Answer times on a clock the test moves; `answer(ms)` counts one answered in `ms`, at now. */
function times() {
  const clock = { now: 0 };
  const t = new AnswerTimes(() => clock.now);
  const answer = (ms: number, out = 1) => {
    t.timely(ms, 0, out);
    t.done();
  };
  return { t, clock, answer };
}

test("a burst after an idle spell is read at the rate of the burst, not averaged with the idle time", () => {
  const { t, clock, answer } = times();
  // Two seconds of an answer every 20 ms: 50 a second, over whole buckets.
  for (let i = 0; i < 100; i++) {
    answer(5);
    clock.now += 20;
  }
  assert.equal(Math.round(t.drainRate()), 50);
  // Five seconds idle: no rate.
  clock.now += 5_000;
  assert.equal(t.drainRate(), 0);
  // Then 30 answers in 30 ms: 300 a second (a rate is read over 100 ms at least); averaged with
  // the idle time it would be 6, or 30 over one idle second.
  for (let i = 0; i < 30; i++) {
    answer(5);
    clock.now += 1;
  }
  assert.equal(Math.round(t.drainRate()), 300);
  // Fewer than 20 answers in the span tell no rate.
  clock.now += 1_000;
  for (let i = 0; i < 19; i++) answer(5);
  assert.equal(t.drainRate(), 0);
});

test("the smoothed answer time is told while it is about the base, with the most out at once then", () => {
  const { t, clock, answer } = times();
  assert.equal(t.unqueued(), undefined, "no answer yet");
  // Answers in 8 ms, one out at a time, with a quickest of 5 (the base); one in 12 ms with 6
  // out (quick enough), one in 40 ms with 9 out (a queue: not counted).
  answer(5);
  for (let i = 0; i < 40; i++) {
    answer(8);
    clock.now += 10;
  }
  answer(12, 6);
  answer(40, 9);
  for (let i = 0; i < 40; i++) answer(8);
  assert.equal(t.unqueued()?.out, 6);
  assert.equal(Math.round(t.unqueued()?.ms ?? 0), 8);
  // Answers in 30 ms: within a few of them the smoothed time passes the base by a quarter and
  // 10 ms (16.25), a queue at the DP.
  let answers = 0;
  while (t.unqueued() !== undefined) {
    answer(30);
    answers++;
  }
  assert.ok(answers >= 3 && answers <= 8, `${answers} answers in 30 ms`);
  // Answers as quick as the base again bring it back.
  for (let i = 0; i < 40; i++) answer(5);
  assert.equal(Math.round(t.unqueued()?.ms ?? 0), 5);
  // A late answer counts in the smoothed time (not in the base): one in 200 ms shows a queue.
  t.late(200);
  assert.equal(t.unqueued(), undefined);
  assert.equal(t.baseMs(), 5);
  // The most out at once is forgotten after 5-10 s: a bucket later it is still there, two later
  // not; and with no answer in time for 10 s, nothing is told.
  clock.now += 5_000;
  for (let i = 0; i < 40; i++) answer(5);
  assert.equal(t.unqueued()?.out, 6);
  clock.now += 5_000;
  answer(5);
  assert.equal(t.unqueued()?.out, 1);
  clock.now += 5_000;
  assert.equal(t.unqueued(), undefined, "no answer in time for 5 s");
  // After an idle spell the smoothed time starts afresh: one answer in 9 ms is 9, not 5.5.
  clock.now += 5_000;
  answer(9);
  assert.equal(t.unqueued()?.ms, 9);
  // Time under a millisecond is told as one, so a window over it stays finite.
  for (let i = 0; i < 200; i++) answer(0);
  assert.equal(t.unqueued()?.ms, 1);
});
