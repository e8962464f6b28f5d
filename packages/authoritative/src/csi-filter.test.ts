// The DP's CSI filter: built from the store (mappings and opt-outs), kept by the change log
// (each CSI that gains a mapping is an addition watchers hear), and rebuilt as a new version
// when it is fuller than it was sized for or removals have made it too dirty.
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { createLogger, FilterBits } from "@mimi/core";
import { until } from "@mimi/core/testing";
import { createChangeLog } from "./change-log.js";
import { createDpFilter } from "./csi-filter.js";
import type { MappingRow } from "./store/rows.js";
import { openMappingStore } from "./store/store.js";

const row = (csi: string): MappingRow => ({
  csi,
  mspId: "m",
  ssi: "s1",
  isDefault: true,
  precedence: 1,
  expiresAtMs: Date.UTC(2027, 0, 1),
  record: new Uint8Array([1]),
  userSig: new Uint8Array(),
  mspSig: new Uint8Array([2]),
  dpSig: new Uint8Array([3]),
});
const tel = (i: number) => `tel:+4477${String(i).padStart(8, "0")}`;

function setup(
  prepare?: (store: ReturnType<typeof openMappingStore>) => void,
  clock = { t: 0 },
  snapshotPath?: string,
  store = openMappingStore(":memory:"),
) {
  prepare?.(store);
  const log = createLogger({ name: "test", level: "silent" });
  const changeLog = createChangeLog({
    store,
    clock: () => Date.UTC(2026, 10, 1),
    retentionMs: 3_600_000,
    hashKey: new Uint8Array(32),
    log,
  });
  const filter = createDpFilter({
    store,
    changeLog,
    falsePositiveRate: 0.01,
    log,
    now: () => clock.t,
    ...(snapshotPath !== undefined && { snapshotPath }),
  });
  return { store, filter };
}

test("the first build holds every CSI with a mapping or an opt-out, sized for twice as many", async () => {
  const { filter } = setup((store) => {
    for (let i = 0; i < 3; i++) store.putMapping(row(tel(i)));
    store.setOptOut(tel(9), 1);
  });
  await until(() => filter.current() !== undefined);
  const f = filter.current();
  assert.ok(f);
  assert.equal(f.csis, 4);
  for (const i of [0, 1, 2, 9]) assert.ok(f.bits.mayHold(tel(i)), tel(i));
  let positives = 0;
  for (let i = 100; i < 1100; i++) if (f.bits.mayHold(tel(i))) positives++;
  assert.ok(positives < 20, `${positives} of 1,000 absent CSIs test positive`);
  // At least MIN_FILTER_CSIS (1,024) at 1%: 9,856 bits, 7 hashes.
  assert.deepEqual(f.bits.shape, { bits: 9_856, hashes: 7 });
});

test("a CSI that gains a mapping is an addition, and watchers hear of it", async () => {
  const { store, filter } = setup();
  await until(() => filter.current() !== undefined);
  let woken = 0;
  filter.subscribe(() => woken++);
  const f = filter.current();
  assert.ok(f && !f.bits.mayHold(tel(5)));
  store.putMapping(row(tel(5)));
  assert.ok(f.bits.mayHold(tel(5)));
  assert.equal(f.additions.length, 7);
  assert.ok(woken >= 1);
  // Another mapping of the same CSI sets no new bit.
  store.putMapping({ ...row(tel(5)), ssi: "s2" });
  assert.equal(f.additions.length, 7);
});

test("a filter fuller than its size, or made dirty by removals, is rebuilt as a new version", async () => {
  const clock = { t: 0 };
  const { store, filter } = setup(undefined, clock);
  await until(() => filter.current() !== undefined);
  const first = filter.current();
  // Builds are at least a minute apart: too full within the minute, it waits.
  store.transaction(() => {
    for (let i = 0; i < 1_200; i++) store.putMapping(row(tel(i)));
  });
  assert.equal(filter.current(), first);
  clock.t += 60_000;
  store.transaction(() => {
    for (let i = 1_200; i < 2_100; i++) store.putMapping(row(tel(i)));
  });
  await until(() => filter.current() !== first);
  const second = filter.current();
  assert.ok(second && second.csis === 2_100 && second.sizedFor === 4_200);
  assert.notDeepEqual(second.version, first?.version);
  for (let i = 0; i < 2_100; i++) assert.ok(second.bits.mayHold(tel(i)));
  // Removals cannot clear bits: past max(1,000, a quarter of the CSIs) the filter is rebuilt.
  clock.t += 60_000;
  store.transaction(() => {
    for (let i = 0; i < 1_001; i++) store.deleteMapping(tel(i), "m", "s1");
  });
  await until(() => filter.current() !== second);
  assert.equal(filter.current()?.csis, 1_099);
  assert.equal(filter.stats().versions, 3);
  filter.close();
});

test("the served version keeps taking additions while a new one is built", async () => {
  const clock = { t: 0 };
  const { store, filter } = setup((s) => {
    for (let i = 0; i < 25_000; i++) s.putMapping(row(tel(i)));
  }, clock);
  await until(() => filter.current() !== undefined);
  const first = filter.current();
  assert.ok(first);
  clock.t += 60_000;
  // Enough new CSIs to need a bigger filter: the build reads the store in pages, on later turns.
  store.transaction(() => {
    for (let i = 25_000; i < 60_000; i++) store.putMapping(row(tel(i)));
  });
  assert.equal(filter.current(), first, "still building");
  // A sign-up during the build is in the served version at once, and in the new one when it comes.
  store.putMapping(row(tel(99_999_999)));
  assert.ok(first.bits.mayHold(tel(99_999_999)));
  await until(() => filter.current() !== first);
  assert.ok(filter.current()?.bits.mayHold(tel(99_999_999)));
  filter.close();
});

test("a clean stop keeps the served version: the next start continues it, with what changed meanwhile", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "mimi-filter-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, "csi-filter.bin");
  const first = setup((s) => s.putMapping(row(tel(1))), undefined, path);
  const { store } = first;
  await until(() => first.filter.current() !== undefined);
  store.putMapping(row(tel(2)));
  const before = first.filter.current();
  assert.ok(before);
  const position = before.floor + before.additions.length;
  assert.ok(position > 0, "tel(2)'s bits were added");
  first.filter.close();
  // The bits tel(3) sets on top of the kept version: seven, less any that the version's random
  // key puts on a bit already set (so the count is read off the bits, not assumed).
  const replayed = new FilterBits(before.bits.key, before.bits.shape, before.bits.bytes.slice()).add(tel(3));
  assert.ok(replayed.length > 0);
  assert.equal(statSync(path).mode & 0o777, 0o600);
  // Written while the DP was stopping (calls drain after the filter closed): replayed at start.
  store.putMapping(row(tel(3)));
  const second = setup(undefined, undefined, path, store);
  const f = second.filter.current();
  assert.ok(f, "taken up at once, without a build");
  assert.deepEqual(f.version, before.version);
  assert.equal(f.floor, position);
  assert.deepEqual(f.additions, replayed, "the replayed CSI's bits follow the kept position");
  for (const i of [1, 2, 3]) assert.ok(f.bits.mayHold(tel(i)), tel(i));
  assert.equal(existsSync(path), false, "taken, so a crash from here cannot reuse it");
  // A crash (no clean stop): the next start builds a new version.
  const third = setup(undefined, undefined, path, store);
  await until(() => third.filter.current() !== undefined);
  assert.notDeepEqual(third.filter.current()?.version, before.version);
  third.filter.close();
});

test("a snapshot of another change log, or a damaged one, is not used", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "mimi-filter-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, "csi-filter.bin");
  const a = setup((s) => s.putMapping(row(tel(1))), undefined, path);
  await until(() => a.filter.current() !== undefined);
  const kept = a.filter.current()?.version;
  a.filter.close();
  // Another store (a restored backup has a new change log id).
  const b = setup((s) => s.putMapping(row(tel(1))), undefined, path);
  await until(() => b.filter.current() !== undefined);
  assert.notDeepEqual(b.filter.current()?.version, kept);
  b.filter.close();
  writeFileSync(path, "MIMIFLT1 not a filter");
  const c = setup(undefined, undefined, path, b.store);
  await until(() => c.filter.current() !== undefined);
  assert.ok(c.filter.current()?.bits.mayHold(tel(1)));
  assert.equal(existsSync(path), false);
});

test("a store replaced under the filter (a secondary's copy) is read whole again when asked, at once", async () => {
  const { store, filter } = setup();
  await until(() => filter.current() !== undefined);
  const first = filter.current();
  // A secondary's copy writes rows with its change-log triggers quiet: no event describes them.
  store.setMeta("replica", "1");
  store.applyReplicated(() => {
    for (let i = 0; i < 5; i++) store.putMapping(row(tel(i)));
  });
  assert.equal(store.logBounds().latest, 0);
  assert.equal(first?.bits.mayHold(tel(3)), false);
  filter.rebuildNow("test: the store was copied");
  await until(() => filter.current() !== first);
  assert.equal(filter.current()?.csis, 5);
  for (let i = 0; i < 5; i++) assert.ok(filter.current()?.bits.mayHold(tel(i)), tel(i));
});
