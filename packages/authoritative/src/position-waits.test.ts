import assert from "node:assert/strict";
import { test } from "node:test";
import { createPositionWaits, type Timer } from "./position-waits.js";

/** A timer the test fires: each wait's timeout is held until `fire()`. */
function manualTimer() {
  const pending = new Set<() => void>();
  const timer: Timer = (fn) => {
    pending.add(fn);
    return () => pending.delete(fn);
  };
  const fire = () => {
    for (const fn of [...pending]) fn();
  };
  return { timer, pending, fire };
}

const settled = async (p: Promise<void>) => {
  let done = false;
  void p.then(() => {
    done = true;
  });
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
  return done;
};

test("waits end when their target is reached, at their timeout, or at once past the bound", async () => {
  const t = manualTimer();
  const waits = createPositionWaits({ maxWaitMs: 1_000, max: 2, timer: t.timer });
  const a = waits.until(5);
  const b = waits.until(9);
  assert.equal(waits.waiting, 2);
  // Past the bound: no wait at all.
  assert.equal(await settled(waits.until(7)), true);
  // The position reaches 5: only that wait ends, and its timer is cancelled.
  waits.release((target) => target <= 5);
  assert.equal(await settled(a), true);
  assert.equal(await settled(b), false);
  assert.equal(t.pending.size, 1);
  // The other one's timeout.
  t.fire();
  assert.equal(await settled(b), true);
  assert.equal(waits.waiting, 0);
  // Close ends whatever still waits.
  const c = waits.until(20);
  waits.close();
  assert.equal(await settled(c), true);
  assert.equal(t.pending.size, 0);
});
