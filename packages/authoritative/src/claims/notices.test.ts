// Notices reach every watcher of an MSP once the transaction that wrote them is over.
import assert from "node:assert/strict";
import { test } from "node:test";
import { openMappingStore } from "../store/store.js";
import { createNotices } from "./notices.js";

const body = { kind: "mapping_removed" as const, csi: "tel:+447700900100", ssi: "s", reason: "r" };

test("two watchers of one MSP are both woken, and only after the notices are announced", () => {
  // Regression: watchers of one MSP shared a single-consumer latch, so with two WatchNotices
  // streams open one of them stalled until a later notice.
  const store = openMappingStore(":memory:");
  const notices = createNotices(store);
  const woken: string[] = [];
  const first = notices.subscribe("m.example", () => woken.push("first"));
  notices.subscribe("m.example", () => woken.push("second"));
  notices.subscribe("other.example", () => woken.push("other"));
  store.transaction(() => notices.add("m.example", 1, body));
  assert.deepEqual(woken, [], "nobody is woken before the announcement");
  notices.announce();
  assert.deepEqual(woken, ["first", "second"]);
  assert.deepEqual(
    notices.since("m.example", 0, 10).map((n) => n.body.kind),
    ["mapping_removed"],
  );
  first();
  notices.add("m.example", 2, body);
  notices.announce();
  notices.announce(); // nothing new: nobody is woken again
  assert.deepEqual(woken, ["first", "second", "second"]);
});
