import assert from "node:assert/strict";
import { test } from "node:test";
import { Latch } from "./latch.js";

test("a fire before wait is not lost; wait clears the latch", async () => {
  const latch = new Latch();
  const signal = new AbortController().signal;
  latch.fire();
  await latch.wait(signal); // returns at once
  let woke = false;
  const waiting = latch.wait(signal).then(() => {
    woke = true;
  });
  await Promise.resolve();
  assert.equal(woke, false, "cleared by the first wait");
  latch.fire();
  await waiting;
  assert.equal(woke, true);
});

test("abort ends a wait", async () => {
  const latch = new Latch();
  const ac = new AbortController();
  const waiting = latch.wait(ac.signal);
  ac.abort();
  await waiting;
});
