import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { createLogger } from "@mimi/core";
import Database from "better-sqlite3";
import { createChangeLog } from "./change-log.js";
import type { MappingRow } from "./store/rows.js";
import { openMappingStore } from "./store/store.js";

const row = (csi: string, ssi = "s1"): MappingRow => ({
  csi,
  mspId: "m",
  ssi,
  isDefault: false,
  precedence: 1,
  expiresAtMs: Date.UTC(2027, 0, 1),
  record: new Uint8Array([1]),
  userSig: new Uint8Array(),
  mspSig: new Uint8Array([2]),
  dpSig: new Uint8Array([3]),
});

function setup(retentionMs = 3_600_000) {
  const store = openMappingStore(":memory:");
  const clock = { now: Date.UTC(2026, 10, 1) };
  const changeLog = createChangeLog({
    store,
    clock: () => clock.now,
    retentionMs,
    hashKey: new Uint8Array(32),
    log: createLogger({ name: "test", level: "silent" }),
  });
  return { store, changeLog, clock };
}

test("every change to a CSI's mappings or opt-out is logged, in commit order", () => {
  const { store, changeLog } = setup();
  store.putMapping(row("tel:+441"));
  store.updateMapping("tel:+441", "m", "s1", { isDefault: true, precedence: 0, dpSig: new Uint8Array([4]) });
  store.setOptOut("tel:+442", 1);
  store.clearOptOut("tel:+442");
  store.deleteMapping("tel:+441", "m", "s1");
  store.deleteMapping("tel:+441", "m", "s1"); // nothing to delete: nothing logged
  store.enrol({
    mspId: "m",
    tlsIdentity: "x",
    enrolledUsers: 1,
    enrolledAtMs: 1,
    signingPublicKey: new Uint8Array(32),
    mayBulk: false,
  });
  const events = changeLog.since(0, 100);
  assert.deepEqual(
    events.map((e) => [e.seq, e.csi]),
    [
      [1, "tel:+441"],
      [2, "tel:+441"],
      [3, "tel:+442"],
      [4, "tel:+442"],
      [5, "tel:+441"],
    ],
  );
  assert.deepEqual(
    changeLog.since(3, 1).map((e) => e.seq),
    [4],
  );
  assert.deepEqual(store.logBounds(), { oldest: 1, latest: 5 });
});

test("watchers are woken once per committed transaction, never for a rolled-back one", () => {
  const { store, changeLog } = setup();
  let fired = 0;
  const unsubscribe = changeLog.subscribe(() => {
    fired++;
  });
  store.transaction(() => {
    store.putMapping(row("tel:+441", "a"));
    store.putMapping(row("tel:+441", "b"));
    assert.equal(fired, 0, "not from inside the transaction");
  });
  assert.equal(fired, 1);
  assert.throws(() =>
    store.transaction(() => {
      store.putMapping(row("tel:+443"));
      throw new Error("abort");
    }),
  );
  assert.equal(fired, 1);
  assert.equal(changeLog.since(0, 100).length, 2);
  store.enrol({
    mspId: "m",
    tlsIdentity: "x",
    enrolledUsers: 1,
    enrolledAtMs: 1,
    signingPublicKey: new Uint8Array(32),
    mayBulk: false,
  });
  assert.equal(fired, 1, "writes that log nothing wake nobody");
  unsubscribe();
  store.putMapping(row("tel:+444"));
  assert.equal(fired, 1);
});

test("a watcher continues from its position, or is told why it must resync", () => {
  const { store, changeLog, clock } = setup(60_000);
  const logId = store.logId();
  assert.match(logId, /^[0-9a-f]{32}$/);
  assert.equal(changeLog.start({ logId: "", sinceSeq: 0, sinceAtMs: 0 }).resync, "new_watcher");
  // An empty log continues from 0.
  assert.deepEqual(changeLog.start({ logId, sinceSeq: 0, sinceAtMs: 0 }), {
    logId,
    seq: 0,
    resync: "none",
    oldestSeq: 1,
    atMs: 0,
  });
  for (let i = 1; i <= 3; i++) store.putMapping(row(`tel:+44${i}`));
  const [e1, e2] = changeLog.since(0, 2);
  assert.ok(e1 && e2);
  assert.equal(changeLog.start({ logId, sinceSeq: 2, sinceAtMs: e2.atMs }).resync, "none");
  assert.equal(changeLog.start({ logId, sinceSeq: 2, sinceAtMs: e2.atMs }).seq, 2);
  assert.equal(
    changeLog.start({ logId: "0".repeat(32), sinceSeq: 2, sinceAtMs: e2.atMs }).resync,
    "other_log",
  );
  assert.equal(changeLog.start({ logId, sinceSeq: 9, sinceAtMs: 1 }).resync, "behind");
  assert.equal(changeLog.start({ logId, sinceSeq: 2, sinceAtMs: e2.atMs - 1 }).resync, "diverged");
  const restart = changeLog.start({ logId, sinceSeq: 9, sinceAtMs: 1 });
  assert.equal(restart.seq, 3, "a resync starts at the end of the log");
  // ... with that event's time, so the watcher resuming there is not told to resync again
  // (regression: a resynced resolver reconnecting to a quiet DP resynced at every reconnect).
  const e3 = changeLog.since(2, 1)[0];
  assert.equal(restart.atMs, e3?.atMs);
  const resumed = changeLog.start({ logId, sinceSeq: restart.seq, sinceAtMs: restart.atMs });
  assert.deepEqual([resumed.resync, resumed.seq, resumed.atMs], ["none", 3, e3?.atMs]);
  const fresh = changeLog.start({ logId: "", sinceSeq: 0, sinceAtMs: 0 });
  assert.equal(changeLog.start({ logId, sinceSeq: fresh.seq, sinceAtMs: fresh.atMs }).resync, "none");
  // Pruning: everything is older than the window once the clock moves on.
  clock.now = Math.max(e1.atMs, e2.atMs) + 120_000;
  assert.equal(changeLog.prune(), 3);
  assert.deepEqual(store.logBounds(), { oldest: 4, latest: 3 });
  assert.equal(changeLog.start({ logId, sinceSeq: 1, sinceAtMs: e1.atMs }).resync, "too_old");
  // The last event is gone but nothing after it is: the watcher loses nothing by going on.
  assert.equal(changeLog.start({ logId, sinceSeq: 3, sinceAtMs: 0 }).resync, "none");
  store.putMapping(row("tel:+449"));
  assert.deepEqual(
    changeLog.since(3, 10).map((e) => e.seq),
    [4],
    "sequence numbers are never reused",
  );
});

test("each store has its own log id", () => {
  assert.notEqual(setup().store.logId(), setup().store.logId());
});

test("pruning drops a prefix of the log and of the notices: a younger entry (a clock stepped back) stops it, never a hole", () => {
  const dir = mkdtempSync(join(tmpdir(), "mimi-prune-"));
  try {
    const path = join(dir, "mappings.sqlite");
    openMappingStore(path).close();
    // Events committed under a clock that stepped back between the second and the third.
    const db = new Database(path);
    const ins = db.prepare("INSERT INTO change_log (csi, at_ms) VALUES (?, ?)");
    for (const [csi, at] of [
      ["tel:+441", 1_000],
      ["tel:+442", 5_000],
      ["tel:+443", 2_000],
    ] as const)
      ins.run(csi, at);
    db.close();
    const store = openMappingStore(path);
    try {
      assert.equal(store.pruneChangesBefore(3_000, 10), 1, "the third is older, but behind a younger one");
      assert.deepEqual(store.logBounds(), { oldest: 2, latest: 3 });
      assert.equal(
        store.pruneChangesBefore(3_000, 10),
        0,
        "a sweep with nothing old at the front reads one row",
      );
      assert.equal(store.pruneChangesBefore(6_000, 1), 1, "at most `limit`");
      assert.equal(store.pruneChangesBefore(6_000, 10), 1);
      assert.deepEqual(store.logBounds(), { oldest: 4, latest: 3 });
      // Notices are pruned the same way: by seq, while old, so a notice stream resumes cleanly.
      const body = { kind: "mapping_removed", csi: "tel:+441", ssi: "s", reason: "test" } as const;
      for (const at of [1_000, 5_000, 2_000]) store.addNotice("m", at, body);
      assert.equal(store.deleteNoticesBefore(3_000), 1);
      assert.deepEqual(
        store.noticesSince("m", 0, 10).map((n) => n.seq),
        [2, 3],
      );
      assert.equal(store.deleteNoticesBefore(6_000), 2);
    } finally {
      store.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
