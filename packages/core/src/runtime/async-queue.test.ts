import assert from "node:assert/strict";
import { test } from "node:test";
import { until, untilCollected } from "../testing.js";
import { AsyncQueue } from "./async-queue.js";

test("items come out in order, across compactions, and close ends the iteration after them", async () => {
  const q = new AsyncQueue<number>();
  const got: number[] = [];
  const reading = (async () => {
    for await (const n of q) got.push(n);
  })();
  for (let i = 0; i < 3_000; i++) q.push(i);
  await until(() => got.length === 3_000, "every item taken");
  q.push(3_000);
  q.close();
  q.push(3_001); // ignored once closed
  await reading;
  assert.deepEqual(
    got,
    Array.from({ length: 3_001 }, (_, i) => i),
  );
  assert.equal(q.length, 0);
});

test("a queue still holding items lets go of those it has handed out", async () => {
  // Regression: taken items stayed in the array until a compaction (up to 1,024 of them), and
  // a resolver's queue of requests to a DP stays open, and busy, for days.
  const q = new AsyncQueue<object>();
  const handed: WeakRef<object>[] = [];
  const kept: object[] = [];
  for (let i = 0; i < 500; i++) {
    const item = { i };
    if (i < 250) handed.push(new WeakRef(item));
    else kept.push(item);
    q.push(item);
  }
  const it = q[Symbol.asyncIterator]();
  for (let i = 0; i < 250; i++) await it.next();
  assert.equal(q.length, 250, "half still queued");
  await untilCollected(handed, 2, "the items handed out were collected while others wait");
  q.close();
  for (let i = 0; i < 250; i++) assert.equal((await it.next()).value, kept[i]);
  assert.equal((await it.next()).done, true);
});
