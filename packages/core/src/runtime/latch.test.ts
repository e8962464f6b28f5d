import assert from "node:assert/strict";
import { test } from "node:test";
import { Latch } from "./latch.js";

/** A signal that aborts on the next turn of the event loop, so a lost wake-up fails instead of hanging. */
const nextTurn = () => {
  const ac = new AbortController();
  setImmediate(() => ac.abort());
  return ac.signal;
};

test("a fire before wait is not lost; wait clears the latch", async () => {
  const latch = new Latch();
  latch.fire();
  assert.equal(await latch.wait(nextTurn()), true, "the earlier fire is seen");
  assert.equal(await latch.wait(nextTurn()), false, "cleared by the first wait");
});

test("a fire during a wait wakes it", async () => {
  const latch = new Latch();
  const waiting = latch.wait(nextTurn());
  latch.fire();
  assert.equal(await waiting, true);
});

test("abort ends a wait, and an aborted signal returns at once", async () => {
  const latch = new Latch();
  const ac = new AbortController();
  const waiting = latch.wait(ac.signal);
  ac.abort();
  assert.equal(await waiting, false);
  assert.equal(await latch.wait(ac.signal), false);
});
