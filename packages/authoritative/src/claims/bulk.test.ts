// Bulk batches verified by the worker pool (audit finding 14: a batch used to verify thousands
// of signatures on the event loop, and lookups on the DP waited for all of them). The pool must
// change nothing a batch reports: the same acknowledgement, the same first failing record.
import assert from "node:assert/strict";
import { after, test } from "node:test";

import {
  bulkRecord,
  createLogger,
  DiscoveryError,
  generateSigningKey,
  type MappingRecord,
  RegistryView,
  type SigningKey,
} from "@mimi/core";
import { type BulkVerifier, createBulkVerifier, type SignedBulkRecord } from "../bulk-verifier.js";
import { createAuthoritativeService } from "../service.js";
import { openMappingStore } from "../store/store.js";
import { createClaims } from "./index.js";

const DAY = 86_400_000;
const NOW = Date.UTC(2026, 10, 1);
const MSP = "bluebird.example";
const mspKey = generateSigningKey();
const otherKey = generateSigningKey();
const dpKey = generateSigningKey();

const verifier = createBulkVerifier({ threads: 1 });
after(() => verifier.close());

/** A DP holding e164:44 with one MSP enrolled for bulk, its claims checking through `bulkVerifier`. */
function setup(bulkVerifier?: BulkVerifier) {
  const registry = new RegistryView();
  registry.replace({
    serial: 1n,
    delegations: [{ id: "e164:44", key: { kind: "e164", prefix: "44" }, dpId: "eu", ttlSeconds: 3600 }],
    dps: [
      {
        id: "eu",
        endpoints: ["127.0.0.1:1"],
        tlsIdentity: "dp-eu",
        jurisdiction: "EU",
        signingPublicKey: dpKey.publicKey,
      },
    ],
    msps: [{ id: MSP, name: MSP, index: 0, signingPublicKey: mspKey.publicKey }],
  });
  const store = openMappingStore(":memory:");
  const service = createAuthoritativeService({
    dpId: "eu",
    store,
    registry,
    registryProblem: () => undefined,
    clock: () => NOW,
    answerTtlSeconds: 300,
    negativeTtlSeconds: 60,
    signingKey: dpKey,
    answerSealMs: DAY,
  });
  const claims = createClaims({
    dpId: "eu",
    store,
    clock: () => NOW,
    signingKey: dpKey,
    sender: { send: async () => {}, counts: { sent: {}, failed: {} }, close() {} },
    codeSecret: new Uint8Array(32),
    policy: {
      codeLength: 6,
      codeTtlMs: 600_000,
      maxAttempts: 3,
      contestWindowMs: 60_000,
      mappingLifetimeMs: 365 * DAY,
      proofRanking: ["bulk", "email-code", "sms-code"],
      noticeRetentionMs: 30 * DAY,
      maxMappingsPerCsi: 16,
      maxMappingsPerCsiPerMsp: 4,
    },
    requireDelegated: (csi) => service.requireDelegated(csi),
    registry,
    log: createLogger({ name: "test", level: "silent" }),
    ...(bulkVerifier ? { bulkVerifier } : {}),
  });
  const caller = service.enrolMsp({
    mspId: MSP,
    tlsIdentity: "tls-bluebird",
    enrolledUsers: 10,
    signingPublicKey: mspKey.publicKey,
    mayBulk: true,
  });
  return { claims, service, store, caller };
}

const csiOf = (i: number) => `tel:+4477009${String(i).padStart(5, "0")}`;

function record(i: number, o: { key?: SigningKey; fields?: Partial<MappingRecord> } = {}): SignedBulkRecord {
  return bulkRecord(
    {
      csi: csiOf(i),
      mspId: MSP,
      ssi: `u${i}`,
      defaultRequested: false,
      tags: [],
      createdAtMs: NOW,
      dpId: "eu",
      expiresAtMs: NOW + 300 * DAY,
      ...o.fields,
    },
    o.key ?? mspKey,
  );
}

/** 10,000 good records of CSIs 1..10000 (made once: signing them takes a while). */
let large: SignedBulkRecord[] | undefined;
function largeBatch(): SignedBulkRecord[] {
  large ??= Array.from({ length: 10_000 }, (_, i) => record(i + 1));
  return large;
}

const badSignature = (i: number) => record(i, { key: otherKey });
const badField = (i: number) => record(i, { fields: { dpId: "us" } });
const badBoth = (i: number) => record(i, { key: otherKey, fields: { dpId: "us" } });

/** The outcome of a batch as the MSP sees it: the acknowledgement, or the refusal's code and message. */
async function outcome(run: () => unknown): Promise<unknown> {
  try {
    return await run();
  } catch (err) {
    if (!(err instanceof DiscoveryError)) throw err;
    return { code: err.code, message: err.message };
  }
}

test("a batch checked in the pool reports what inline checking reports, record for record", async () => {
  const batch = (n: number, bad: Record<number, (i: number) => SignedBulkRecord>) =>
    Array.from({ length: n }, (_, i) => (bad[i] ?? record)(i));
  const sigError = (n: number) => ({
    code: "invalid_argument",
    message: `record ${n}: msp_signature does not verify with the MSP's enrolled signing key`,
  });
  const dpError = (n: number) => ({
    code: "invalid_argument",
    message: `record ${n}: the record names DP "us", not this DP ("eu")`,
  });
  const cases: { name: string; records: SignedBulkRecord[]; expected: unknown }[] = [
    {
      name: "all good, across several slices",
      records: batch(1_200, {}),
      expected: { committed: 1_200, stored: 1_200, unchanged: 0, optedOut: 0, overLimit: 0 },
    },
    {
      name: "a bad signature before a bad field",
      records: batch(900, { 700: badSignature, 800: badField }),
      expected: sigError(700),
    },
    {
      name: "a bad field before a bad signature",
      records: batch(900, { 700: badField, 800: badSignature }),
      expected: dpError(700),
    },
    {
      name: "one record with both: its own checks come first",
      records: batch(900, { 650: badBoth }),
      expected: dpError(650),
    },
    {
      name: "a bad signature in the last record",
      records: batch(900, { 899: badSignature }),
      expected: sigError(899),
    },
  ];
  for (const c of cases) {
    const inline = setup();
    const pooled = setup(verifier);
    const a = await outcome(() => inline.claims.bulkBatch(inline.caller, "s", 0, c.records));
    const b = await outcome(() => pooled.claims.bulkBatchAsync(pooled.caller, "s", 0, c.records));
    assert.deepEqual(a, c.expected, `${c.name} (inline)`);
    assert.deepEqual(b, c.expected, `${c.name} (pool)`);
    assert.equal(pooled.store.count(), inline.store.count(), `${c.name}: stored`);
    assert.equal(pooled.claims.bulkResume(pooled.caller, "s"), inline.claims.bulkResume(inline.caller, "s"));
  }
});

test("a resent batch that overlaps the committed ones is numbered and skipped as before", async () => {
  const t = setup(verifier);
  const records = Array.from({ length: 20 }, (_, i) => record(i));
  assert.equal((await t.claims.bulkBatchAsync(t.caller, "s", 0, records.slice(0, 10))).stored, 10);
  const bad = [...records.slice(5, 15), badSignature(15), ...records.slice(16)];
  // Records 5..9 are committed and skipped; record 15 (fresh index 5) is reported by its session index.
  assert.deepEqual(await outcome(() => t.claims.bulkBatchAsync(t.caller, "s", 5, bad)), {
    code: "invalid_argument",
    message: "record 15: msp_signature does not verify with the MSP's enrolled signing key",
  });
  const ack = await t.claims.bulkBatchAsync(t.caller, "s", 5, records.slice(5));
  assert.deepEqual(ack, { committed: 20, stored: 10, unchanged: 0, optedOut: 0, overLimit: 0 });
});

test("lookups are answered while the pool verifies a large batch", async () => {
  // Regression (audit finding 14): the batch verified every signature synchronously, so a
  // lookup issued during it waited for the whole batch. The order of events shows where the
  // work ran: with the pool, the lookup is answered before this batch's signatures are verified.
  const order: string[] = [];
  const t = setup({
    threads: verifier.threads,
    verify: (key, items) =>
      verifier.verify(key, items).then((valid) => {
        order.push("verified");
        return valid;
      }),
    close: () => verifier.close(),
  });
  await t.claims.bulkBatchAsync(t.caller, "seed", 0, [record(0)]);
  order.length = 0;
  const records = largeBatch();
  const looked = new Promise<void>((resolve) =>
    setImmediate(async () => {
      const o = await t.service.lookup(csiOf(0)).sealed();
      order.push(`lookup ${o.kind}`);
      resolve();
    }),
  );
  const batch = t.claims.bulkBatchAsync(t.caller, "big", 0, records).then((ack) => {
    order.push(`batch stored ${ack.stored}`);
  });
  await Promise.all([looked, batch]);
  assert.deepEqual(order, ["lookup answer", "verified", "batch stored 10000"]);
});

test("a flood of batches is refused at once with not_ready and a retry hint and commits nothing", async () => {
  const t = setup(verifier);
  const records = largeBatch();
  const order: string[] = [];
  const first = t.claims.bulkBatchAsync(t.caller, "a", 0, records).then((ack) => {
    order.push(`first stored ${ack.stored}`);
  });
  const second = outcome(() => t.claims.bulkBatchAsync(t.caller, "b", 0, records)).then((o) => {
    order.push("second refused");
    return o;
  });
  const refusal = (await second) as { code: string; message: string };
  assert.equal(refusal.code, "not_ready");
  assert.match(refusal.message, /at capacity.*retry the batch in about 1 s/);
  await first;
  assert.deepEqual(order, ["second refused", "first stored 10000"]);
  assert.equal(t.claims.bulkResume(t.caller, "b"), 0);
});
