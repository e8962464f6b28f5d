// Private lookups' building blocks: the VOPRF round trip gives the DP's own PRF output, a DP
// that evaluates with another key than it published is caught, and a bucket gives up the entry
// of a CSI only to whoever has that CSI's PRF output, at the same size for a hit and a miss.
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  bucketBitsFor,
  bucketBytesFor,
  bucketEntries,
  encodeBucket,
  entryBytes,
  generateOprfKeys,
  keyIdOf,
  openEntry,
  oprfBlind,
  oprfBlindEvaluate,
  oprfEvaluate,
  oprfFinalize,
  oprfKeysMatch,
  PRIVATE_SUITE,
  type Slot,
  sealEntry,
  slotOf,
  type TableLayout,
} from "./private-table.js";

const enc = new TextEncoder();
const csis = ["tel:+447700900123", "tel:+447700900456", "mailto:alice@example.org"];

test("a blinded evaluation, unblinded, equals the DP's own PRF output; the DP sees neither", () => {
  assert.equal(PRIVATE_SUITE, "ristretto255-SHA512");
  const keys = generateOprfKeys();
  const blinded = csis.map(oprfBlind);
  // The blinded elements differ from one blinding to the next: the DP cannot link two asks.
  assert.notDeepEqual(oprfBlind(csis[0] as string).blinded, blinded[0]?.blinded);
  const { evaluated, proof } = oprfBlindEvaluate(
    keys,
    blinded.map((b) => b.blinded),
  );
  const outputs = oprfFinalize(blinded, evaluated, keys.publicKey, proof);
  for (const [i, csi] of csis.entries()) assert.deepEqual(outputs[i], oprfEvaluate(keys.secretKey, csi));
  assert.equal(outputs[0]?.length, 64);
  assert.notDeepEqual(outputs[0], outputs[1]);
});

test("a DP that evaluates with another key than it published is caught by the proof", () => {
  const published = generateOprfKeys();
  const other = generateOprfKeys();
  const blinded = csis.map(oprfBlind);
  const r = oprfBlindEvaluate(
    other,
    blinded.map((b) => b.blinded),
  );
  assert.throws(
    () => oprfFinalize(blinded, r.evaluated, published.publicKey, r.proof),
    /does not verify against its published key/,
  );
  // An answer with an element swapped fails too.
  const ok = oprfBlindEvaluate(
    published,
    blinded.map((b) => b.blinded),
  );
  const swapped = [ok.evaluated[1], ok.evaluated[0], ok.evaluated[2]] as Uint8Array[];
  assert.throws(() => oprfFinalize(blinded, swapped, published.publicKey, ok.proof), /does not verify/);
});

test("a key pair matches only when its public element is its secret's", () => {
  const k = generateOprfKeys();
  assert.equal(oprfKeysMatch(k), true);
  const other = generateOprfKeys();
  assert.equal(oprfKeysMatch({ secretKey: k.secretKey, publicKey: other.publicKey }), false);
  assert.equal(oprfKeysMatch({ secretKey: new Uint8Array(32).fill(255), publicKey: k.publicKey }), false);
  assert.equal(oprfKeysMatch({ secretKey: new Uint8Array(32), publicKey: k.publicKey }), false);
  assert.equal(oprfKeysMatch({ secretKey: k.secretKey.subarray(1), publicKey: k.publicKey }), false);
});

test("evaluation requests are bounded and malformed elements refused", () => {
  const keys = generateOprfKeys();
  assert.throws(() => oprfBlindEvaluate(keys, []), RangeError);
  assert.throws(() => oprfBlindEvaluate(keys, Array(33).fill(new Uint8Array(32))), /1 to 32/);
  assert.throws(() => oprfBlindEvaluate(keys, [new Uint8Array(31)]), /31 bytes/);
  assert.throws(() => oprfBlindEvaluate(keys, [new Uint8Array(32).fill(0xff)]), /not a valid ristretto255/);
});

test("a bucket opens the entry of a CSI whose PRF output is known, and nothing else", () => {
  const keys = generateOprfKeys();
  const layout: TableLayout = { epoch: 7, keyId: keyIdOf(keys.publicKey), bucketBits: 0, bucketBytes: 4096 };
  const ys = csis.map((c) => oprfEvaluate(keys.secretKey, c));
  const [s0, s1, s2] = ys.map((y) => slotOf(y, layout)) as [Slot, Slot, Slot];
  const entries = [
    sealEntry(layout, s0, enc.encode("answer 0")),
    sealEntry(layout, s1, enc.encode("answer one")),
  ];
  assert.equal(entries[1]?.length, entryBytes("answer one".length));
  const bucket = encodeBucket(layout, entries);
  assert.equal(bucket.length, 4096);
  assert.equal(bucketEntries(bucket).length, 2);
  assert.deepEqual(openEntry(layout, s0, bucket), enc.encode("answer 0"));
  assert.deepEqual(openEntry(layout, s1, bucket), enc.encode("answer one"));
  // A CSI the DP holds nothing for: no entry, in a bucket of the same size.
  assert.equal(openEntry(layout, s2, bucket), undefined);
  assert.equal(encodeBucket(layout, []).length, bucket.length);
  // Another epoch's slot of the same CSI is elsewhere (a new key makes a new table).
  assert.notDeepEqual(slotOf(ys[0] as Uint8Array, { ...layout, epoch: 8 }).tag, s0.tag);
  // A damaged entry is an error, not a miss.
  const damaged = bucket.slice();
  damaged[40] = (damaged[40] as number) ^ 1;
  // Byte 40 is in the ciphertext of the first entry (its header is 30 bytes): the one of the lower tag.
  const first = Buffer.compare(Buffer.from(s0.tag), Buffer.from(s1.tag)) < 0 ? s0 : s1;
  assert.throws(() => openEntry(layout, first, damaged), /does not open/);
  // Entries are in tag order, so a bucket does not tell which entry came last.
  assert.deepEqual(encodeBucket(layout, [...entries].reverse()).length, bucket.length);
  assert.deepEqual(
    bucketEntries(encodeBucket(layout, [...entries].reverse())).map((e) => e.subarray(2, 18)),
    bucketEntries(bucket).map((e) => e.subarray(2, 18)),
  );
});

test("buckets that do not fit are refused; sizes follow the table", () => {
  const layout: TableLayout = { epoch: 1, keyId: new Uint8Array(16), bucketBits: 4, bucketBytes: 64 };
  const slot = slotOf(new Uint8Array(64).fill(1), layout);
  assert.ok(slot.bucket >= 0 && slot.bucket < 16);
  assert.throws(() => encodeBucket(layout, [sealEntry(layout, slot, new Uint8Array(40))]), RangeError);
  assert.equal(bucketBitsFor(10), 0);
  assert.equal(bucketBitsFor(1_000_000), 15);
  assert.equal(bucketBytesFor(100), 4096);
  assert.equal(bucketBytesFor(10_000), 13_312);
  assert.equal(bucketBytesFor(1_000_000), 1 << 20);
});
