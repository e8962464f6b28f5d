// The DP's private-lookup table, read the way a resolver reads it: blind, evaluate, unblind,
// fetch the bucket, check its signature, open the entry. Built from the store (mappings and
// opt-outs), kept by the change log (a sign-up after the build is in its bucket, and resolvers
// hear of it by an event of its own), buckets of one size for hits and misses.
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { fromBinary } from "@bufbuild/protobuf";
import {
  bucketProblem,
  createLogger,
  DiscoveryError,
  decodeBucketStatement,
  generateOprfKeys,
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
import { until } from "@mimi/core/testing";
import { createChangeLog } from "./change-log.js";
import { createOprfPool, type OprfPool } from "./oprf-pool.js";
import { readKeyFile } from "./private-key-file.js";
import { createPrivateKeys } from "./private-keys.js";
import { createPrivateTable, type EpochKeys, type PrivateTable, tableMetaKey } from "./private-table.js";
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
// One worker thread: the tables' OPRF arithmetic runs as a DP runs it.
const pool = createOprfPool({ threads: 1 });
after(() => pool.close());

/** A DP's answers without real signatures: the table only carries them (verification is the resolver's). */
function answerOf(store: ReturnType<typeof openMappingStore>, unserved: ReadonlySet<string> = new Set()) {
  return (csi: string): LookupOutcome | undefined => {
    if (csi.startsWith("tel:+1") || unserved.has(csi)) return undefined; // not this DP's range
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
  /** CSIs the registry no longer gives this DP (a range moved), and the pool to use. */
  env: {
    unserved?: Set<string>;
    pool?: OprfPool;
    pause?: (ms: number) => Promise<void>;
    notReady?: () => string | undefined;
  } = {},
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
  const [keys] = readKeyFile(join(dir, "oprf-key.json"), () => NOW) as [EpochKeys];
  const table = createPrivateTable({
    dpId: "eu",
    store,
    changeLog,
    keys,
    signingKey,
    answer: answerOf(store, env.unserved),
    mspIndex: () => 0,
    entrySealMs: 86_400_000,
    bucketSealMs: 3_600_000,
    now: () => NOW,
    log,
    pool: env.pool ?? pool,
    ...(env.pause && { pause: env.pause }),
    ...(env.notReady && { notReady: env.notReady }),
  });
  const lookup = (csi: string) => privateLookup(table, signingKey.publicKey, csi);
  return { store, table, lookup, epoch: keys.epoch };
}

/**
 * A resolver's private lookup in `table`: the status it reads, and the bucket's size. Like a
 * resolver it reads the parameters again when the table split while it evaluated.
 */
async function privateLookup(
  table: PrivateTable,
  dpKey: Uint8Array,
  csi: string,
  retried = false,
): Promise<{ status: string; ssis: string[] | undefined; size: number; epoch: number }> {
  const { statement, signature } = table.parameters();
  const params = verifyPrivateParams(statement, signature, "eu", dpKey);
  assert.ok(!("problem" in params), "parameters verify");
  const blinded = oprfBlind(csi);
  const ev = await table.evaluate(params.epoch, [blinded.blinded]);
  const [y] = oprfFinalize([blinded], ev.evaluated, params.publicKey, ev.proof);
  const layout = layoutOf(params);
  const slot = slotOf(y as Uint8Array, layout);
  const b = table.bucket(params.epoch, slot.bucket);
  const problem = bucketProblem(b.data, b.statement, b.signature, params, slot.bucket, dpKey, NOW);
  const now = table.stats().layout;
  if (!retried && (now.bucketBits !== params.bucketBits || now.bucketBytes !== params.bucketBytes))
    return privateLookup(table, dpKey, csi, true);
  assert.equal(problem, undefined);
  const plain = openEntry(layout, slot, b.data);
  const answer = plain && fromBinary(pb.AnswerSchema, plain);
  return {
    status: answer ? pb.LookupStatus[answer.status] : "no entry",
    ssis: answer?.mappings.map((m) => m.ssi),
    size: b.data.length,
    epoch: params.epoch,
  };
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
  await assert.rejects(
    async () => table.evaluate(epoch, [new Uint8Array(32)]),
    (e: DiscoveryError) => e.code === "not_ready",
  );
  await until(async () => table.stats().built);
  assert.deepEqual(await lookup(tel(3)), { status: "FOUND", ssis: ["s1"], size: 4096, epoch });
  assert.equal((await lookup(tel(50))).status, "OPTED_OUT");
  // Unknown, and outside the DP's ranges: no entry, in a bucket of the same size.
  assert.deepEqual(await lookup(tel(99)), { status: "no entry", ssis: undefined, size: 4096, epoch });
  assert.equal((await lookup("tel:+12025550100")).status, "no entry");
  // A sign-up after the build is in its bucket at once, and resolvers hear of it twice: the
  // claim's event, then the table's own once the entry caught up.
  const before = store.logBounds().latest;
  store.putMapping(row(tel(77), "new"));
  await until(async () => store.logBounds().latest === before + 2);
  assert.deepEqual((await lookup(tel(77))).ssis, ["new"]);
  // A write that leaves the answer as it was (the same mapping again) is applied but adds no
  // event of the table's own, so the table's events do not feed themselves.
  const settled = store.logBounds().latest;
  store.putMapping(row(tel(77), "new"));
  assert.equal(store.logBounds().latest, settled + 1);
  for (let i = 0; i < 200; i++) await new Promise((r) => setImmediate(r));
  assert.equal(store.logBounds().latest, settled + 1);
  // Removed: the entry goes.
  store.deleteMapping(tel(3), "m", "s1");
  await until(async () => (await lookup(tel(3))).status === "no entry");
  table.close();
});

test("evaluations of another epoch, malformed elements and buckets out of range are refused clearly", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "mimi-private-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const { table, epoch } = setup((s) => s.putMapping(row(tel(1))), dir);
  await until(async () => table.stats().built);
  await assert.rejects(
    async () => table.evaluate(epoch + 1, [oprfBlind(tel(1)).blinded]),
    (e: DiscoveryError) => e.code === "failed_precondition" && e.details?.reason === "EPOCH_CHANGED",
  );
  await assert.rejects(
    async () => table.evaluate(epoch, [new Uint8Array(32).fill(0xff)]),
    (e: DiscoveryError) => e.code === "invalid_argument",
  );
  assert.throws(
    () => table.bucket(epoch, 2 ** 20),
    (e: unknown) =>
      e instanceof DiscoveryError &&
      /not one of this table's 1/.test(e.message) &&
      e.details?.fields?.[0]?.field === "bucket",
  );
  table.close();
});

test("a table that cannot follow the store's log (a restored store) starts over, keeping no entry of a removed CSI", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "mimi-private-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const first = setup((s) => {
    for (let i = 0; i < 5; i++) s.putMapping(row(tel(i)));
  }, dir);
  await until(async () => first.table.stats().built);
  assert.equal((await first.lookup(tel(2))).status, "FOUND");
  first.table.close();
  // While the DP is stopped its store is replaced by a copy without tel(2) and with a new log.
  const { store } = first;
  store.deleteMapping(tel(2), "m", "s1");
  store.pruneChangesBefore(Date.now() + 60_000, 1_000);
  store.setMeta("log_id", "restored");
  const again = setup(() => {}, dir, store);
  assert.equal(again.table.stats().built, false, "lookups wait for the new build");
  await until(async () => again.table.stats().built);
  assert.equal((await again.lookup(tel(2))).status, "no entry");
  assert.equal((await again.lookup(tel(3))).status, "FOUND");
  again.table.close();
});

test("buckets grow, then split, as the table fills: every CSI stays found", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "mimi-private-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  // Sized for an empty store: one bucket, which 700 entries outgrow.
  const { table, lookup, store } = setup(() => {}, dir);
  await until(async () => table.stats().built);
  assert.equal(table.stats().layout.bucketBits, 0);
  store.transaction(() => {
    for (let i = 0; i < 700; i++) store.putMapping(row(tel(i)));
  });
  await until(async () => table.stats().layout.bucketBits > 0 && (await lookup(tel(699))).status === "FOUND");
  for (const i of [0, 123, 350, 699]) assert.equal((await lookup(tel(i))).status, "FOUND", tel(i));
  assert.ok(table.stats().layout.bucketBytes <= 64 * 1024);
  table.close();
});

// Each new CSI's PRF output took about 1.4 ms on the event loop: a bulk batch of 10,000 held
// it for 14 s a table. Applied changes now get theirs from the pool, as the build does.
test("sign-ups applied from the change log get their PRF outputs from the pool, not the event loop", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "mimi-private-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const asked: string[] = [];
  const counting: OprfPool = {
    ...pool,
    prf: (key, csis) => {
      asked.push(...csis);
      return pool.prf(key, csis);
    },
  };
  const { table, lookup, store } = setup((s) => s.putMapping(row(tel(1))), dir, undefined, {
    pool: counting,
  });
  await until(async () => table.stats().built);
  asked.length = 0;
  store.transaction(() => {
    for (let i = 100; i < 140; i++) store.putMapping(row(tel(i)));
  });
  // Buckets grow as the pages come in: a lookup between two growths reads again (as resolvers do).
  const found = async (i: number) => {
    try {
      return (await lookup(tel(i))).status === "FOUND";
    } catch {
      return false;
    }
  };
  await until(async () => (await found(100)) && (await found(117)) && (await found(139)));
  assert.deepEqual(
    [...new Set(asked)].sort(),
    Array.from({ length: 40 }, (_, i) => tel(100 + i)),
    "every new CSI went to the pool, once",
  );
  assert.equal(asked.length, 40);
  // A CSI the table holds is sealed again from its entry: nothing new is asked.
  store.putMapping(row(tel(117), "again"));
  await until(async () => (await lookup(tel(117))).ssis?.includes("again") === true);
  assert.equal(asked.length, 40);
  table.close();
});

test("a change-log page whose answers became unavailable while the pool computed is applied only once they are back", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "mimi-private-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  let held: (() => void) | undefined;
  const gated: OprfPool = {
    ...pool,
    prf: async (key, csis) => {
      const out = await pool.prf(key, csis);
      if (csis.includes(tel(300)) && !held) await new Promise<void>((r) => (held = r));
      return out;
    },
  };
  let problem: string | undefined;
  const { table, lookup, store } = setup((s) => s.putMapping(row(tel(1))), dir, undefined, {
    pool: gated,
    notReady: () => problem,
  });
  await until(async () => table.stats().built);
  store.putMapping(row(tel(300)));
  const signUp = store.logBounds().latest;
  await until(async () => held !== undefined);
  // The registry copy expired while the page waited for its outputs: the page is not applied.
  problem = "no usable registry copy";
  held?.();
  for (let i = 0; i < 50; i++) await new Promise((r) => setImmediate(r));
  assert.equal(table.applied().seq, signUp - 1, "the sign-up's event is not applied");
  assert.equal((await lookup(tel(300))).status, "no entry");
  problem = undefined;
  await until(async () => (await lookup(tel(300))).status === "FOUND");
  table.close();
});

test("another key under the same epoch (the key file replaced) rebuilds the table for it", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "mimi-private-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const first = setup((s) => s.putMapping(row(tel(1))), dir);
  await until(async () => first.table.stats().built);
  first.table.close();
  rmSync(join(dir, "oprf-key.json"));
  const again = setup(() => {}, dir, first.store);
  assert.equal(again.epoch, first.epoch, "the same epoch (the same second)");
  await until(async () => again.table.stats().built);
  assert.equal((await again.lookup(tel(1))).status, "FOUND");
  again.table.close();
});

/** A DP's key ring over a store, with a clock the test moves. */
function ringSetup(
  dir: string,
  prepare: (s: ReturnType<typeof openMappingStore>) => void,
  opts: {
    keyLifetimeMs?: number;
    store?: ReturnType<typeof openMappingStore>;
    /** Whether this endpoint is the DP's primary (a replicated DP); always, when not given. */
    role?: { primary: boolean };
    /** The TTL cap of an endpoint out of touch with its primary. */
    cap?: { seconds: number | undefined };
  } = {},
) {
  const store = opts.store ?? openMappingStore(":memory:");
  prepare(store);
  const clock = { now: NOW };
  const log = createLogger({ name: "test", level: "silent" });
  const changeLog = createChangeLog({
    store,
    clock: () => clock.now,
    retentionMs: 3_600_000,
    hashKey: new Uint8Array(32),
    log,
  });
  const signingKey = generateSigningKey();
  const ring = createPrivateKeys({
    path: join(dir, "oprf-key.json"),
    retireAfterMs: 60_000,
    keyLifetimeMs: opts.keyLifetimeMs ?? 0,
    dpId: "eu",
    store,
    changeLog,
    signingKey,
    answer: answerOf(store),
    mspIndex: () => 0,
    entrySealMs: 86_400_000,
    bucketSealMs: 3_600_000,
    now: () => clock.now,
    log,
    pool,
    ...(opts.role && { writer: () => opts.role?.primary === true }),
    ...(opts.cap && { ttlCapSeconds: () => opts.cap?.seconds }),
  });
  const lookup = (csi: string, epoch?: number) => privateLookup(ring.table(epoch), signingKey.publicKey, csi);
  const states = () =>
    ring.status().map((k) => `${k.epoch === ring.status()[0]?.epoch ? "old" : "new"}:${k.state}`);
  return { store, ring, clock, lookup, states };
}

test("a key rotation: the next table is built beside the served one, the registry's newest key is current, the old key goes after the delay", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "mimi-private-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const { store, ring, clock, lookup, states } = ringSetup(dir, (s) => s.putMapping(row(tel(1))));
  t.after(() => ring.close());
  await until(async () => ring.status()[0]?.built === true);
  const a = ring.status()[0] as { epoch: number; publicKey: Uint8Array };
  const pub = (...ks: { epoch: number; publicKey: Uint8Array }[]) =>
    ring.published(ks.map((k) => ({ epoch: k.epoch, publicKey: k.publicKey })));
  pub(a);
  assert.deepEqual(states(), ["old:current"]);

  clock.now += 5_000;
  const rolled = ring.roll();
  assert.equal(rolled.made, true);
  assert.ok(rolled.key.epoch > a.epoch, "a later epoch");
  const b = rolled.key;
  assert.deepEqual(ring.roll().key.epoch, b.epoch, "rolling again returns the key being rolled to");
  assert.equal(ring.roll().made, false);
  assert.deepEqual(
    readKeyFile(join(dir, "oprf-key.json")).map((k) => k.epoch),
    [a.epoch, b.epoch],
  );
  // The served key goes on serving while the next table is built.
  assert.equal((await lookup(tel(1))).epoch, a.epoch);
  assert.equal((await lookup(tel(1))).status, "FOUND");
  await until(async () => ring.status()[1]?.built === true);
  assert.deepEqual(states(), ["old:current", "new:ready"]);
  // Both tables follow the store.
  store.putMapping(row(tel(2)));
  await until(
    async () =>
      (await lookup(tel(2), a.epoch)).status === "FOUND" &&
      (await lookup(tel(2), b.epoch)).status === "FOUND",
  );

  // Published beside the old one: the new key is current, the old one still served.
  pub(a, b);
  assert.deepEqual(states(), ["old:previous", "new:current"]);
  assert.equal((await lookup(tel(1))).epoch, b.epoch, "parameters without an epoch are the current key's");
  assert.equal((await lookup(tel(1), a.epoch)).status, "FOUND");
  assert.throws(() => ring.roll(), /epoch \d+ is still published beside the current one/);

  // Published alone: the old key retires after the delay, never before.
  pub(b);
  assert.deepEqual(states(), ["old:retiring", "new:current"]);
  assert.equal(ring.status()[0]?.retireAtMs, clock.now + 60_000);
  ring.maintain();
  assert.equal((await lookup(tel(1), a.epoch)).status, "FOUND", "served until the delay ends");
  clock.now += 60_000;
  ring.maintain();
  assert.deepEqual(
    ring.status().map((k) => k.epoch),
    [b.epoch],
  );
  assert.throws(
    () => ring.table(a.epoch),
    (e: DiscoveryError) => e.code === "failed_precondition" && e.details?.reason === "EPOCH_CHANGED",
  );
  assert.deepEqual(
    readKeyFile(join(dir, "oprf-key.json")).map((k) => k.epoch),
    [b.epoch],
  );
  await until(
    () =>
      store.privateBucket(a.epoch, 0, 2 ** 32 - 1).length === 0 &&
      store.meta(tableMetaKey(a.epoch)) === undefined &&
      store.meta("private_retiring") === undefined,
  );
  assert.equal((await lookup(tel(2))).status, "FOUND");
  // The next rotation may start.
  clock.now += 5_000;
  assert.equal(ring.roll().made, true);
});

test("keys are never retired on a registry that publishes none of them, and a roll waits for the old key to go", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "mimi-private-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const { ring, clock, states } = ringSetup(dir, (s) => s.putMapping(row(tel(1))));
  t.after(() => ring.close());
  await until(async () => ring.status()[0]?.built === true);
  clock.now += 5_000;
  ring.roll();
  await until(async () => ring.status()[1]?.built === true);
  // A registry that lost the keys (or never had them) and one that publishes a key of another epoch.
  for (const published of [undefined, [], [{ epoch: 7, publicKey: new Uint8Array(32) }]]) {
    ring.published(published);
    clock.now += 3_600_000;
    ring.maintain();
    assert.deepEqual(states(), ["old:ready", "new:ready"]);
  }
});

test("rotation across restarts: both keys come back, a table half deleted by a crash is deleted, a key's lifetime rolls it", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "mimi-private-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const first = ringSetup(dir, (s) => s.putMapping(row(tel(1))), { keyLifetimeMs: 86_400_000 });
  await until(async () => first.ring.status()[0]?.built === true);
  first.ring.maintain();
  assert.equal(first.ring.status().length, 1, "not rolled before its lifetime");
  first.clock.now += 86_400_000;
  first.ring.maintain();
  assert.equal(first.ring.status().length, 2, "rolled at its lifetime");
  await until(async () => first.ring.status()[1]?.built === true);
  first.ring.close();
  // A crash between a retirement's key-file write and the deletion of its table.
  const { store } = first;
  const gone = 12345;
  store.putPrivateEntry(gone, {
    csi: tel(9),
    position: 1,
    tag: new Uint8Array(16),
    entryKey: new Uint8Array(32),
    content: new Uint8Array(32),
    entry: new Uint8Array(40),
    sealedUntilMs: NOW,
  });
  store.setMeta("private_retiring", JSON.stringify([gone]));
  const again = ringSetup(dir, () => {}, { store });
  t.after(() => again.ring.close());
  assert.deepEqual(again.states(), ["old:ready", "new:ready"], "both keys, both tables kept");
  await until(async () => store.privateBucket(gone, 0, 2 ** 32 - 1).length === 0);
  await until(async () => store.meta("private_retiring") === undefined);
  assert.equal((await again.lookup(tel(1))).status, "FOUND");
});

test("the key file: the first version's single key is read, a damaged file is refused", (t) => {
  const dir = mkdtempSync(join(tmpdir(), "mimi-private-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, "oprf-key.json");
  const [k] = readKeyFile(path, () => NOW) as [EpochKeys];
  assert.equal(k.epoch, NOW / 1000);
  assert.equal(statSync(path).mode & 0o777, 0o600);
  const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");
  writeFileSync(path, JSON.stringify({ epoch: 5, secretKey: hex(k.secretKey), publicKey: hex(k.publicKey) }));
  assert.deepEqual(
    readKeyFile(path).map((x) => [x.epoch, hex(x.publicKey)]),
    [[5, hex(k.publicKey)]],
  );
  for (const bad of ["{", "{}", JSON.stringify({ epoch: -1, secretKey: "00", publicKey: "00" })]) {
    writeFileSync(path, bad);
    assert.throws(() => readKeyFile(path), /does not hold this DP's OPRF keys/);
  }
  // No key held (a secondary's, or none yet): a secondary reads none, a primary makes its first.
  writeFileSync(path, '{"keys":[]}');
  assert.deepEqual(
    readKeyFile(path, () => NOW, false),
    [],
  );
  rmSync(path);
  assert.deepEqual(
    readKeyFile(path, () => NOW, false),
    [],
  );
  assert.equal(existsSync(path), false, "a secondary makes no key file");
  writeFileSync(path, '{"keys":[]}');
  assert.equal(readKeyFile(path, () => NOW)[0]?.epoch, NOW / 1000);
  assert.equal(readKeyFile(path, () => NOW, false).length, 1, "the key made is kept");
});

test("a retirement waits for the new key's table, keeps its time across a restart, and a crash inside it is finished at start", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "mimi-private-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const first = ringSetup(dir, (s) => s.putMapping(row(tel(1))));
  await until(async () => first.ring.status()[0]?.built === true);
  const a = first.ring.status()[0] as { epoch: number; publicKey: Uint8Array };
  first.clock.now += 5_000;
  const b = first.ring.roll().key;
  // Published alone before its table is built (an operator's mistake): the old key stays until it is.
  first.ring.published([{ epoch: b.epoch, publicKey: b.publicKey }]);
  const retireAt = first.ring.status()[0]?.retireAtMs as number;
  assert.equal(retireAt, first.clock.now + 60_000);
  first.clock.now += 60_000;
  assert.equal(first.ring.status()[1]?.built, false, "the new table is still being built");
  first.ring.maintain();
  assert.equal(first.ring.status().length, 2, "not retired while the current key's table is not served");
  await until(async () => first.ring.status()[1]?.built === true);
  first.ring.close();

  // A restart keeps the retirement's time rather than starting the delay again.
  const { store } = first;
  const second = ringSetup(dir, () => {}, { store });
  second.clock.now = first.clock.now;
  second.ring.published([{ epoch: b.epoch, publicKey: b.publicKey }]);
  assert.equal(second.ring.status()[0]?.retireAtMs, retireAt);
  second.ring.close();

  // A crash after the retirement was recorded but before the key left the file: finished at start.
  store.setMeta("private_retiring", JSON.stringify([a.epoch]));
  const third = ringSetup(dir, () => {}, { store });
  t.after(() => third.ring.close());
  assert.deepEqual(
    third.ring.status().map((k) => k.epoch),
    [b.epoch],
  );
  assert.deepEqual(
    readKeyFile(join(dir, "oprf-key.json")).map((k) => k.epoch),
    [b.epoch],
  );
  await until(async () => store.privateBucket(a.epoch, 0, 2 ** 32 - 1).length === 0);
  assert.equal((await third.lookup(tel(1))).status, "FOUND");
});

test("a rescan re-reads every CSI, tells resolvers of each answer it changed, and starts again when asked during a scan", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "mimi-private-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const unserved = new Set<string>();
  const { table, lookup, store, epoch } = setup(
    (s) => {
      for (let i = 0; i < 300; i++) s.putMapping(row(tel(i)));
    },
    dir,
    undefined,
    { unserved },
  );
  // Asked during the first scan, once tel(0) was read: the scan goes back to the first CSI, so
  // the answer read before the change does not stay.
  await until(async () => store.privateEntry(epoch, tel(0)) !== undefined);
  assert.equal(table.stats().built, false, "still scanning");
  unserved.add(tel(0));
  table.rescan("a registry change during the build");
  await until(async () => table.stats().built);
  assert.equal((await lookup(tel(0))).status, "no entry");
  const before = store.logBounds().latest;
  // The registry moved tel(7)'s range away: no store change, so only the rescan can see it.
  unserved.add(tel(7));
  table.rescan("registry change put_delegation");
  await until(async () => (await lookup(tel(7))).status === "no entry" && !table.stats().scanning);
  assert.equal((await lookup(tel(8))).status, "FOUND");
  const events = store.changesSince(before, 100).map((e) => e.csi);
  assert.ok(events.includes(tel(7)), "resolvers hear of the changed answer");
  assert.ok(!events.includes(tel(8)), "and of nothing else");
  table.close();
});

test("a page the pool failed is tried again: the build finishes", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "mimi-private-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  let failures = 1;
  const flaky: OprfPool = {
    ...pool,
    prf: (key, csis) => (failures-- > 0 ? Promise.reject(new Error("worker exited")) : pool.prf(key, csis)),
  };
  // The retry's pause is the test's: it records the wait and goes on at the next turn.
  const pauses: number[] = [];
  const { table, lookup } = setup((s) => s.putMapping(row(tel(1))), dir, undefined, {
    pool: flaky,
    pause: (ms) => {
      pauses.push(ms);
      return new Promise((r) => setImmediate(r));
    },
  });
  await until(async () => table.stats().built);
  assert.deepEqual(pauses, [1_000], "one failed page, retried after a pause");
  assert.equal((await lookup(tel(1))).status, "FOUND");
  table.close();
});

/** A replicated change applied to a secondary's store as replication applies it: with the primary's number. */
function replicate(store: ReturnType<typeof openMappingStore>, seq: number, csi: string, ssi = "s1") {
  store.applyReplicated(() => {
    store.putMapping(row(csi, ssi));
    store.logChangeAt(seq, csi, NOW);
  });
}

test("a secondary's keys: none of its own, its primary's taken, tables that log nothing, a dropped key's table deleted, no roll until promoted", async (t) => {
  const pdir = mkdtempSync(join(tmpdir(), "mimi-private-"));
  const sdir = mkdtempSync(join(tmpdir(), "mimi-private-"));
  t.after(() => {
    rmSync(pdir, { recursive: true, force: true });
    rmSync(sdir, { recursive: true, force: true });
  });
  const primary = ringSetup(pdir, (s) => s.putMapping(row(tel(1))));
  t.after(() => primary.ring.close());
  await until(async () => primary.ring.status()[0]?.built === true);
  // The secondary's store is a replica's: written only by replication, with the primary's numbers.
  const role = { primary: false };
  const sec = ringSetup(
    sdir,
    (s) => {
      s.setMeta("replica", "1");
      replicate(s, 1, tel(1));
    },
    { role },
  );
  t.after(() => sec.ring.close());
  assert.deepEqual(sec.ring.status(), [], "a secondary makes no key of its own");
  assert.throws(
    () => sec.ring.table(),
    (e: DiscoveryError) => e.code === "not_ready",
  );
  assert.throws(
    () => sec.ring.roll(),
    (e: DiscoveryError) => e.details?.reason === "NOT_PRIMARY",
  );
  sec.ring.maintain();
  assert.equal(existsSync(join(sdir, "oprf-key.json")), false);

  // The primary's key: the same public key, a table built from the secondary's own store.
  sec.ring.adopt(primary.ring.held());
  assert.equal(statSync(join(sdir, "oprf-key.json")).mode & 0o777, 0o600);
  assert.deepEqual(sec.ring.status()[0]?.publicKey, primary.ring.status()[0]?.publicKey);
  await until(async () => sec.ring.status()[0]?.built === true);
  assert.equal((await sec.lookup(tel(1))).status, "FOUND");
  // A replicated change: a bucket read after caughtUp holds it, and the table logged nothing.
  replicate(sec.store, 2, tel(2), "s2");
  await sec.ring.table().caughtUp();
  assert.equal(sec.ring.table().applied().seq, 2);
  assert.deepEqual((await sec.lookup(tel(2))).ssis, ["s2"]);
  assert.equal(sec.store.logBounds().latest, 2, "the log is the primary's alone");
  // The same set again changes nothing, not even the array a primary's stream compares.
  const held = sec.ring.held();
  sec.ring.adopt(primary.ring.held().map((k) => ({ ...k })));
  assert.equal(sec.ring.held(), held, "the same set: nothing taken, nothing to send");

  // A roll at the primary, then its retirement of the old key: the secondary follows both.
  const old = primary.ring.held()[0] as EpochKeys;
  primary.ring.roll();
  sec.ring.adopt(primary.ring.held());
  assert.equal(sec.ring.status().length, 2);
  await until(async () => sec.ring.status().every((k) => k.built));
  const next = primary.ring.held()[1] as EpochKeys;
  const publish = (...ks: EpochKeys[]) =>
    sec.ring.published(ks.map((k) => ({ epoch: k.epoch, publicKey: k.publicKey })));
  // While its registry copy still publishes the old key, a set without it is not taken.
  publish(old, next);
  sec.ring.adopt([next]);
  assert.equal(sec.ring.status().length, 2, "the published key is kept");
  assert.equal((await sec.lookup(tel(1), old.epoch)).status, "FOUND");
  // Unpublished: the sweep takes it, unless the key file cannot be written (then all stays).
  publish(next);
  rmSync(sdir, { recursive: true, force: true });
  sec.ring.maintain();
  sec.ring.maintain(); // a sweep after the failure deletes nothing either
  assert.equal(sec.ring.status().length, 2, "a failed write changes nothing");
  assert.ok(sec.store.privateEntry(old.epoch, tel(1)), "the old table's entries are kept");
  assert.equal((await sec.lookup(tel(1), old.epoch)).status, "FOUND", "and deletes no table");
  mkdirSync(sdir, { mode: 0o700 });
  sec.ring.maintain();
  assert.deepEqual(
    sec.ring.status().map((k) => k.epoch),
    [next.epoch],
  );
  await until(async () => sec.store.privateEntry(old.epoch, tel(1)) === undefined);
  assert.equal((await sec.lookup(tel(2), next.epoch)).status, "FOUND");
  // A set that is not keys is refused whole.
  const other = generateOprfKeys();
  assert.throws(
    () => sec.ring.adopt([{ ...next, publicKey: other.publicKey }]),
    (e: DiscoveryError) => e.code === "invalid_argument" && /not a key pair/.test(e.message),
  );
  assert.throws(
    () => sec.ring.adopt([]),
    (e: DiscoveryError) => e.code === "invalid_argument",
  );
  assert.deepEqual(
    sec.ring.status().map((k) => k.epoch),
    [next.epoch],
  );
  // The store replaced by a copy: the table is deleted and built again.
  sec.ring.restart("the store was copied from the primary");
  assert.equal(sec.ring.status()[0]?.built, false);
  await until(async () => sec.ring.status()[0]?.built === true);
  assert.equal((await sec.lookup(tel(2))).status, "FOUND");
  // Promoted: keys from elsewhere are ignored, it rolls, and its tables log their own changes.
  role.primary = true;
  sec.store.setMeta("replica", undefined);
  sec.ring.adopt([{ epoch: next.epoch + 5, ...generateOprfKeys() }]);
  assert.deepEqual(
    sec.ring.status().map((k) => k.epoch),
    [next.epoch],
  );
  const at = sec.store.logBounds().latest;
  sec.store.putMapping(row(tel(2), "s3"));
  await until(async () => sec.store.logBounds().latest === at + 2);
  assert.equal(sec.ring.roll().made, true);
});

test("a secondary promoted without keys makes its first; an endpoint out of touch signs buckets no longer than its TTL cap", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "mimi-private-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const role = { primary: false };
  const cap: { seconds: number | undefined } = { seconds: undefined };
  const { ring, clock } = ringSetup(dir, (s) => s.putMapping(row(tel(1))), { role, cap });
  t.after(() => ring.close());
  ring.maintain();
  assert.equal(ring.status().length, 0);
  role.primary = true;
  // The registry publishes a key of this DP it does not hold: a new one would replace it at
  // every endpoint, so that is left to the operator.
  ring.published([{ epoch: 5, publicKey: generateOprfKeys().publicKey }]);
  ring.maintain();
  assert.equal(ring.status().length, 0);
  ring.published([]);
  ring.maintain();
  assert.equal(ring.status().length, 1, "the sweep of a new primary made a key");
  await until(async () => ring.status()[0]?.built === true);
  const table = ring.table();
  const expiry = () => decodeBucketStatement(table.bucket(table.epoch, 0).statement).expiresAtMs;
  assert.equal(expiry(), NOW + 3_600_000);
  cap.seconds = 30;
  assert.equal(expiry(), NOW + 30_000, "a kept bucket signed for longer is not handed out");
  cap.seconds = undefined;
  assert.equal(expiry(), NOW + 30_000, "a shorter one is kept for half its life");
  clock.now += 16_000;
  assert.equal(expiry(), clock.now + 3_600_000);
  // A closed table (its key retired or replaced) serves nothing.
  table.close();
  assert.throws(
    () => table.bucket(table.epoch, 0),
    (e: DiscoveryError) => e.code === "not_ready",
  );
});

test("entries of an epoch neither held nor being deleted are deleted at start", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "mimi-private-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const orphan = {
    csi: tel(9),
    position: 0,
    tag: new Uint8Array(16),
    entryKey: new Uint8Array(32),
    content: new Uint8Array(32),
    entry: new Uint8Array(8),
    sealedUntilMs: NOW,
  };
  const { ring, store } = ringSetup(dir, (s) => {
    s.putMapping(row(tel(1)));
    s.putPrivateEntry(7, orphan);
  });
  t.after(() => ring.close());
  await until(async () => store.privateEntry(7, tel(9)) === undefined);
  await until(async () => ring.status()[0]?.built === true);
  assert.equal(store.privateEpochAfter(-1), ring.status()[0]?.epoch, "only the held key's entries are left");
});
