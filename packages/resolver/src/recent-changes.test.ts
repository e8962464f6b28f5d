import assert from "node:assert/strict";
import { test } from "node:test";
import { RecentChanges } from "./recent-changes.js";

test("an event counts against lookups that started before it, until it is forgotten", () => {
  let now = 0;
  const recent = new RecentChanges(() => now, 1_000);
  const started = recent.count;
  recent.note("eu/aa");
  assert.equal(recent.after("eu/aa", started), true, "the lookup started before the event");
  assert.equal(recent.after("eu/aa", recent.count), false, "one that started after it");
  assert.equal(recent.after("eu/bb", started), false, "another CSI's lookup");
  assert.equal(recent.after("us/aa", started), false, "the same hash at another DP");
  now = 1_500;
  recent.note("eu/cc"); // noting is when old events are forgotten
  assert.equal(recent.after("eu/aa", started), false, "forgotten after its time");
  assert.equal(recent.after("eu/cc", started), true);
});

test("memory follows the events of the window, however many came before", () => {
  let now = 0;
  const recent = new RecentChanges(() => now, 10);
  for (let i = 0; i < 5_000; i++) {
    now = i;
    recent.note(`eu/${i}`);
  }
  const queue = (recent as unknown as { queue: unknown[]; head: number }).queue;
  assert.ok(queue.length < 2_100, `queue of ${queue.length} for a window of ~10 events`);
  assert.equal(recent.after("eu/4999", 4_998), true);
  assert.equal(recent.after("eu/10", 0), false);
});
