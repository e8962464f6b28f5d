// The bulk verifier: worker threads answer exactly what inline checking answers, record by
// record; the work does not run on the event loop; a full queue refuses at once; the thread
// count's default.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { after, test } from "node:test";

import { bulkRecord, DiscoveryError, generateSigningKey, type SigningKey } from "@mimi/core";
import {
  type BulkVerifier,
  createBulkVerifier,
  type SignedBulkRecord,
  verifyInline,
} from "./bulk-verifier.js";
import { parseConfig } from "./config.js";

const msp = generateSigningKey();
const other = generateSigningKey();
// Pools are shared between tests: each worker's start loads @mimi/core.
const pools = new Map<number, BulkVerifier>();
after(() => Promise.all([...pools.values()].map((v) => v.close())));

function pool(threads: number): BulkVerifier {
  const v = pools.get(threads) ?? createBulkVerifier({ threads });
  pools.set(threads, v);
  return v;
}

function signed(i: number, key: SigningKey = msp): SignedBulkRecord {
  return bulkRecord(
    {
      csi: `tel:+4477009${String(i).padStart(5, "0")}`,
      mspId: "bluebird.example",
      ssi: `u${i}`,
      defaultRequested: false,
      tags: [],
      createdAtMs: 1,
      dpId: "eu",
      expiresAtMs: 2,
    },
    key,
  );
}

function flipped(b: Uint8Array, at: number): Uint8Array {
  const c = new Uint8Array(b);
  c[at] = (c[at] ?? 0) ^ 1;
  return c;
}

/** Each kind of record a batch may hold, and whether its MSP signature verifies. */
const kinds: { name: string; make: (i: number) => SignedBulkRecord; valid: boolean }[] = [
  { name: "good", make: (i) => signed(i), valid: true },
  { name: "another key's signature", make: (i) => signed(i, other), valid: false },
  {
    name: "record changed after signing",
    make: (i) => {
      const x = signed(i);
      return { record: flipped(x.record, x.record.length - 1), mspSignature: x.mspSignature };
    },
    valid: false,
  },
  {
    name: "signature bit flipped",
    make: (i) => {
      const x = signed(i);
      return { record: x.record, mspSignature: flipped(x.mspSignature, 0) };
    },
    valid: false,
  },
  { name: "empty signature", make: (i) => ({ ...signed(i), mspSignature: new Uint8Array(0) }), valid: false },
  {
    name: "signature one byte short",
    make: (i) => {
      const x = signed(i);
      return { record: x.record, mspSignature: x.mspSignature.subarray(0, 63) };
    },
    valid: false,
  },
  {
    name: "signature one byte long",
    make: (i) => {
      const x = signed(i);
      return { record: x.record, mspSignature: new Uint8Array([...x.mspSignature, 0]) };
    },
    valid: false,
  },
  { name: "empty record", make: (i) => ({ ...signed(i), record: new Uint8Array(0) }), valid: false },
];

const kindOf = (i: number) => kinds[(i * 7) % kinds.length] as (typeof kinds)[number];

/** A batch that cycles through the kinds; every record is a view into one shared buffer, as gRPC hands them over. */
function mixedBatch(n: number): { items: SignedBulkRecord[]; expected: Uint8Array } {
  const made = Array.from({ length: n }, (_, i) => kindOf(i).make(i));
  const whole = new Uint8Array(made.reduce((s, x) => s + x.record.length + x.mspSignature.length, 0));
  let at = 0;
  const view = (b: Uint8Array) => {
    whole.set(b, at);
    at += b.length;
    return whole.subarray(at - b.length, at);
  };
  const items = made.map((x) => ({ record: view(x.record), mspSignature: view(x.mspSignature) }));
  const expected = Uint8Array.from({ length: n }, (_, i) => (kindOf(i).valid ? 1 : 0));
  return { items, expected };
}

test("workers answer record by record exactly as inline checking does", async () => {
  const cases = [
    { threads: 1, n: 40 },
    { threads: 2, n: 1_300 }, // several slices, a short last one
  ];
  for (const { threads, n } of cases) {
    const { items, expected } = mixedBatch(n);
    const inline = verifyInline(msp.publicKey, items);
    assert.deepEqual(inline, expected, `inline, ${n} records`);
    assert.deepEqual(
      await pool(threads).verify(msp.publicKey, items),
      expected,
      `${threads} threads, ${n} records`,
    );
    assert.deepEqual(await pool(0).verify(msp.publicKey, items), expected, `threads: 0, ${n} records`);
  }
  assert.deepEqual(await pool(1).verify(msp.publicKey, []), new Uint8Array(0));
});

test("verification with workers leaves the event loop free; inline verification does not", async () => {
  // The order of two callbacks tells where the work ran: while workers verify, a setImmediate
  // callback queued after the call runs first; inline, the result is there before it.
  const { items } = mixedBatch(2_000);
  for (const [threads, expected] of [
    [1, ["event loop turned", "verified"]],
    [0, ["verified", "event loop turned"]],
  ] as const) {
    const order: string[] = [];
    const verified = pool(threads)
      .verify(msp.publicKey, items)
      .then(() => order.push("verified"));
    const turned = new Promise<void>((resolve) =>
      setImmediate(() => {
        order.push("event loop turned");
        resolve();
      }),
    );
    await Promise.all([verified, turned]);
    assert.deepEqual(order, expected, `threads: ${threads}`);
  }
});

test("a full queue refuses a batch at once with not_ready and a retry hint; room comes back", async () => {
  const v = pool(1);
  // Empty signatures fail fast, so the slices are cheap; the queue counts slices, not their cost.
  const items = new Array<SignedBulkRecord>(10_000).fill({ ...signed(0), mspSignature: new Uint8Array(0) });
  const first = v.verify(msp.publicKey, items);
  assert.throws(
    () => v.verify(msp.publicKey, items),
    (err: unknown) =>
      err instanceof DiscoveryError &&
      err.code === "not_ready" &&
      err.details?.retryAfterMs === 1_000 &&
      err.details.reason === "VERIFICATION_AT_CAPACITY" &&
      /at capacity.*retry the batch in about/.test(err.message),
  );
  assert.equal((await first).indexOf(1), -1);
  // Once the first batch is done its slices are released.
  assert.equal((await v.verify(msp.publicKey, items)).length, items.length);
});

test("closing the pool fails what is still waiting", async () => {
  const v = createBulkVerifier({ threads: 1 });
  const refused = assert.rejects(v.verify(msp.publicKey, mixedBatch(2_000).items));
  await v.close();
  await refused;
});

test("bulkVerifyThreads defaults to every core but one, at least one; 0 verifies inline", () => {
  const example = JSON.parse(
    readFileSync(new URL("../../../deploy/examples/authoritative-eu.json", import.meta.url), "utf8"),
  );
  const cases = [
    { cores: 1, raw: {}, threads: 1 },
    { cores: 2, raw: {}, threads: 1 },
    { cores: 16, raw: {}, threads: 15 },
    { cores: 16, raw: { bulkVerifyThreads: 0 }, threads: 0 },
    { cores: 2, raw: { bulkVerifyThreads: 4 }, threads: 4 },
  ];
  for (const c of cases) {
    const config = parseConfig({ ...example, ...c.raw }, "/etc/mimi", c.cores);
    assert.equal(config.bulkVerifyThreads, c.threads, JSON.stringify(c));
  }
  assert.throws(
    () => parseConfig({ ...example, bulkVerifyThreads: -1 }, "/etc/mimi", 4),
    /bulkVerifyThreads/,
  );
});
