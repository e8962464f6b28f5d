// The DP's private-lookup table, read the way a resolver reads it: blind, evaluate, unblind,
// fetch the bucket, check its signature, open the entry. Built from the store (mappings and
// opt-outs), kept by the change log (a sign-up after the build is in its bucket, and resolvers
// hear of it by an event of its own), buckets of one size for hits and misses.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { fromBinary } from "@bufbuild/protobuf";
import {
  bucketProblem,
  createLogger,
  type DiscoveryError,
  generateSigningKey,
  type LookupOutcome,
  layoutOf,
  openEntry,
  oprfBlind,
  oprfFinalize,
  pb,
  slotOf,
  verifyPrivateParams,
} from "@mimi/core";
import { createChangeLog } from "./change-log.js";
import { createPrivateTable, readOrCreateEpochKeys } from "./private-table.js";
import type { MappingRow } from "./store/rows.js";
import { openMappingStore } from "./store/store.js";

const row = (csi: string, ssi = "s1"): MappingRow => ({
  csi,
  mspId: "m",
  ssi,
  isDefault: true,
  precedence: 1,
  expiresAtMs: Date.UTC(2027, 0, 1),
  record: new Uint8Array([1]),
  userSig: new Uint8Array(),
  mspSig: new Uint8Array([2]),
  dpSig: new Uint8Array([3]),
});
const tel = (i: number) => `tel:+4477${String(i).padStart(8, "0")}`;
const NOW = Date.UTC(2026, 11, 4);

/** A DP's answers without real signatures: the table only carries them (verification is the resolver's). */
function answerOf(store: ReturnType<typeof openMappingStore>) {
  return (csi: string): LookupOutcome | undefined => {
    if (csi.startsWith("tel:+1")) return undefined; // not this DP's range
    const seal = { statement: new Uint8Array([9, 9]), signature: new Uint8Array(64) };
    const rows = store.mappings(csi);
    if (rows.length > 0) {
      const mappings = rows.map((r) => ({
        mspId: r.mspId,
        ssi: r.ssi,
        isDefault: r.isDefault,
        tags: [],
        createdAtMs: NOW,
        proofMethod: "sms-code",
        expiresAtMs: r.expiresAtMs,
      }));
      return { kind: "answer", mappings, dpId: "eu", ttlSeconds: 300, seal };
    }
    if (store.optedOutAt(csi) !== undefined) return { kind: "opted_out", dpId: "eu", ttlSeconds: 60, seal };
    return { kind: "not_found", dpId: "eu", ttlSeconds: 60, seal };
  };
}

function setup(
  prepare: (s: ReturnType<typeof openMappingStore>) => void,
  dir: string,
  store = openMappingStore(":memory:"),
) {
  prepare(store);
  const log = createLogger({ name: "test", level: "silent" });
  const changeLog = createChangeLog({
    store,
    clock: () => NOW,
    retentionMs: 3_600_000,
    hashKey: new Uint8Array(32),
    log,
  });
  const signingKey = generateSigningKey();
  const keys = readOrCreateEpochKeys(join(dir, "oprf-key.json"), () => NOW);
  const table = createPrivateTable({
    dpId: "eu",
    store,
    changeLog,
    keys,
    signingKey,
    answer: answerOf(store),
    mspIndex: () => 0,
    entrySealMs: 86_400_000,
    bucketSealMs: 3_600_000,
    now: () => NOW,
    log,
  });
  /** A resolver's private lookup: the status it reads, and the bucket's size. */
  const lookup = (csi: string) => {
    const { statement, signature } = table.parameters();
    const params = verifyPrivateParams(statement, signature, "eu", signingKey.publicKey);
    assert.ok(!("problem" in params), "parameters verify");
    const blinded = oprfBlind(csi);
    const ev = table.evaluate(params.epoch, [blinded.blinded]);
    const [y] = oprfFinalize([blinded], ev.evaluated, params.publicKey, ev.proof);
    const layout = layoutOf(params);
    const slot = slotOf(y as Uint8Array, layout);
    const b = table.bucket(params.epoch, slot.bucket);
    assert.equal(
      bucketProblem(b.data, b.statement, b.signature, params, slot.bucket, signingKey.publicKey, NOW),
      undefined,
    );
    const plain = openEntry(layout, slot, b.data);
    const answer = plain && fromBinary(pb.AnswerSchema, plain);
    return {
      status: answer ? pb.LookupStatus[answer.status] : "no entry",
      ssis: answer?.mappings.map((m) => m.ssi),
      size: b.data.length,
    };
  };
  return { store, table, lookup, epoch: keys.epoch };
}

async function until(check: () => boolean): Promise<void> {
  for (let i = 0; i < 10_000 && !check(); i++) await new Promise((r) => setImmediate(r));
  assert.ok(check(), "condition never held");
}

test("the table answers what a plain lookup would, for found, opted-out and unknown CSIs", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "mimi-private-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const { table, lookup, store, epoch } = setup((s) => {
    for (let i = 0; i < 10; i++) s.putMapping(row(tel(i)));
    s.setOptOut(tel(50), NOW);
  }, dir);
  assert.equal(statSync(join(dir, "oprf-key.json")).mode & 0o777, 0o600);
  // Until the build is done the table refuses, so resolvers fall back or retry.
  assert.throws(
    () => table.evaluate(epoch, [new Uint8Array(32)]),
    (e: DiscoveryError) => e.code === "not_ready",
  );
  await until(() => table.stats().built);
  assert.deepEqual(lookup(tel(3)), { status: "FOUND", ssis: ["s1"], size: 4096 });
  assert.equal(lookup(tel(50)).status, "OPTED_OUT");
  // Unknown, and outside the DP's ranges: no entry, in a bucket of the same size.
  assert.deepEqual(lookup(tel(99)), { status: "no entry", ssis: undefined, size: 4096 });
  assert.equal(lookup("tel:+12025550100").status, "no entry");
  // A sign-up after the build is in its bucket at once, and resolvers hear of it twice: the
  // claim's event, then the table's own once the entry caught up.
  const before = store.logBounds().latest;
  store.putMapping(row(tel(77), "new"));
  await until(() => store.logBounds().latest === before + 2);
  assert.deepEqual(lookup(tel(77)).ssis, ["new"]);
  // A write that leaves the answer as it was (the same mapping again) is applied but adds no
  // event of the table's own, so the table's events do not feed themselves.
  const settled = store.logBounds().latest;
  store.putMapping(row(tel(77), "new"));
  assert.equal(store.logBounds().latest, settled + 1);
  for (let i = 0; i < 200; i++) await new Promise((r) => setImmediate(r));
  assert.equal(store.logBounds().latest, settled + 1);
  // Removed: the entry goes.
  store.deleteMapping(tel(3), "m", "s1");
  await until(() => lookup(tel(3)).status === "no entry");
  table.close();
});

test("evaluations of another epoch, malformed elements and buckets out of range are refused clearly", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "mimi-private-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const { table, epoch } = setup((s) => s.putMapping(row(tel(1))), dir);
  await until(() => table.stats().built);
  assert.throws(
    () => table.evaluate(epoch + 1, [oprfBlind(tel(1)).blinded]),
    (e: DiscoveryError) => e.code === "failed_precondition" && e.details?.reason === "EPOCH_CHANGED",
  );
  assert.throws(
    () => table.evaluate(epoch, [new Uint8Array(32).fill(0xff)]),
    (e: DiscoveryError) => e.code === "invalid_argument",
  );
  assert.throws(() => table.bucket(epoch, 2 ** 20), /not one of this table's 1/);
  table.close();
});

test("a table that cannot follow the store's log (a restored store) starts over, keeping no entry of a removed CSI", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "mimi-private-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const first = setup((s) => {
    for (let i = 0; i < 5; i++) s.putMapping(row(tel(i)));
  }, dir);
  await until(() => first.table.stats().built);
  assert.equal(first.lookup(tel(2)).status, "FOUND");
  first.table.close();
  // While the DP is stopped its store is replaced by a copy without tel(2) and with a new log.
  const { store } = first;
  store.deleteMapping(tel(2), "m", "s1");
  store.pruneChangesBefore(Date.now() + 60_000, 1_000);
  store.setMeta("log_id", "restored");
  const again = setup(() => {}, dir, store);
  assert.equal(again.table.stats().built, false, "lookups wait for the new build");
  await until(() => again.table.stats().built);
  assert.equal(again.lookup(tel(2)).status, "no entry");
  assert.equal(again.lookup(tel(3)).status, "FOUND");
  again.table.close();
});

test("buckets grow, then split, as the table fills: every CSI stays found", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "mimi-private-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  // Sized for an empty store: one bucket, which 700 entries outgrow.
  const { table, lookup, store } = setup(() => {}, dir);
  await until(() => table.stats().built);
  assert.equal(table.stats().layout.bucketBits, 0);
  store.transaction(() => {
    for (let i = 0; i < 700; i++) store.putMapping(row(tel(i)));
  });
  await until(() => table.stats().layout.bucketBits > 0 && lookup(tel(699)).status === "FOUND");
  for (const i of [0, 123, 350, 699]) assert.equal(lookup(tel(i)).status, "FOUND", tel(i));
  assert.ok(table.stats().layout.bucketBytes <= 64 * 1024);
  table.close();
});

test("another key under the same epoch (the key file replaced) rebuilds the table for it", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "mimi-private-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const first = setup((s) => s.putMapping(row(tel(1))), dir);
  await until(() => first.table.stats().built);
  first.table.close();
  rmSync(join(dir, "oprf-key.json"));
  const again = setup(() => {}, dir, first.store);
  assert.equal(again.epoch, first.epoch, "the same epoch (the same second)");
  await until(() => again.table.stats().built);
  assert.equal(again.lookup(tel(1)).status, "FOUND");
  again.table.close();
});
