import assert from "node:assert/strict";
import { test } from "node:test";
import { LoopDelayGuard } from "./loop-delay.js";

/**
 * A guard sampled by hand, its timer due every 10 ms: `late(ms)` fires the timer `ms` after it
 * was due (the next one is due 10 ms after that).
 */
function guard(maxDelayMs = 100) {
  let now = 0;
  const g = new LoopDelayGuard({ maxDelayMs, everyMs: 10, now: () => now });
  g.start();
  g.stop(); // the test fires the samples itself
  let due = 10;
  const late = (ms: number) => {
    now = due + ms;
    g.sample(now);
    due = now + 10;
  };
  return { g, late };
}

test("a timer that fires on time leaves the loop admitting work", () => {
  const { g, late } = guard();
  for (let i = 0; i < 10; i++) late(0);
  assert.equal(g.delayMs, 0);
  assert.equal(g.overloaded, false);
  assert.equal(g.admit(), true);
  assert.equal(g.refused, 0);
});

test("a sample at the bound overloads the loop; it recovers only below half the bound", () => {
  const { g, late } = guard(100);
  late(0);
  late(99);
  assert.equal(g.overloaded, false, "99 ms late is under the bound");
  late(100);
  assert.equal(g.delayMs, 100);
  assert.equal(g.overloaded, true);
  assert.equal(g.admit(), false);
  assert.equal(g.admit(), false);
  assert.equal(g.refused, 2, "each refusal counted");
  late(60);
  assert.equal(g.overloaded, true, "no flip on a sample between half the bound and the bound");
  late(49);
  assert.equal(g.overloaded, false);
  assert.equal(g.admit(), true);
});

test("the peak delay is kept for the next scrape, then reset", () => {
  const { g, late } = guard(100);
  late(0);
  late(70);
  late(3);
  assert.equal(g.takePeak(), 70);
  assert.equal(g.takePeak(), 3, "the last sample's delay, once the peak is taken");
});

test("a bound of 0 turns the guard off, however late the loop runs", () => {
  const { g, late } = guard(0);
  late(5_000);
  assert.equal(g.overloaded, false);
  assert.equal(g.admit(), true);
});
