// Seals signed in batches (SealBatch in common.proto): the tree other implementations rebuild
// (RFC 9162's shape), one Ed25519 check per batch, and every way a batched seal can be wrong.
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { test } from "node:test";
import type { AnswerSeal, SealBatch } from "./answer.js";
import { batchRoot, MAX_SEAL_BATCH, sealBatch, sealSignatureValid } from "./seal-batch.js";
import { generateSigningKey, SIGNING_CONTEXT, verifications, verifyWith } from "./signing.js";

const key = generateSigningKey();
const statements = (n: number) => Array.from({ length: n }, (_, i) => randomBytes(60 + (i % 7)));
const sha256 = (...parts: Uint8Array[]) => {
  const h = createHash("sha256");
  for (const p of parts) h.update(p);
  return h.digest();
};

// RFC 9162 2.1.1, written from its definition: MTH of a list of leaf hashes.
function mth(leaves: readonly Buffer[]): Buffer {
  if (leaves.length === 1) return leaves[0] as Buffer;
  let k = 1;
  while (k * 2 < leaves.length) k *= 2;
  return sha256(Buffer.of(1), mth(leaves.slice(0, k)), mth(leaves.slice(k)));
}

/** The batch statement as common.proto lays it out, signed under "MIMI-ANSWER-BATCH-DP-v1". */
const batchStatement = (size: number, root: Uint8Array) =>
  Buffer.concat([
    Buffer.from("MIMI-ANSWER-BATCH-v1", "ascii"),
    Buffer.from([size >> 8, size & 0xff, 0, 32]),
    root,
  ]);

test("known answer: a batch's signature is over the RFC 9162 root of its salted leaves, as common.proto says", () => {
  for (const n of [2, 3, 5, 8, 13]) {
    const st = statements(n);
    const seals = sealBatch(st, key);
    const leaves = seals.map((s, i) =>
      sha256(Buffer.of(0), (s.batch as SealBatch).salt, st[i] as Uint8Array),
    );
    const root = mth(leaves);
    for (const [i, s] of seals.entries()) {
      assert.deepEqual(s.statement, st[i]);
      assert.deepEqual({ index: s.batch?.index, size: s.batch?.size }, { index: i, size: n });
      assert.deepEqual(Buffer.from(batchRoot(s.statement, s.batch as SealBatch) as Uint8Array), root);
    }
    assert.ok(
      verifyWith(key.publicKey, SIGNING_CONTEXT.answerDpBatch, seals[0]?.signature as Uint8Array, [
        batchStatement(n, root),
      ]),
    );
  }
});

test("every seal of a batch verifies on its own, and the batch costs one Ed25519 check", () => {
  for (const n of [2, 3, 4, 7, 9, 16, 33, MAX_SEAL_BATCH]) {
    const seals = sealBatch(statements(n), key);
    assert.equal(new Set(seals.map((s) => Buffer.from(s.signature).toString("hex"))).size, 1);
    // A path is one hash per level: ceil(log2 n) at most.
    for (const s of seals) assert.ok((s.batch?.path.length ?? 0) / 32 <= Math.ceil(Math.log2(n)));
    const before = verifications.computed;
    for (const s of seals)
      assert.ok(sealSignatureValid(key.publicKey, s), `batch of ${n}, seal ${s.batch?.index}`);
    assert.equal(verifications.computed - before, 1, `batch of ${n}`);
  }
});

test("a seal alone is signed as sealAnswer signs it, without a batch", () => {
  const [s] = sealBatch(statements(1), key);
  assert.ok(s && !s.batch);
  assert.ok(verifyWith(key.publicKey, SIGNING_CONTEXT.answerDp, s.signature, [s.statement]));
  assert.deepEqual(sealBatch([], key), []);
  assert.throws(() => sealBatch(statements(MAX_SEAL_BATCH + 1), key), RangeError);
});

test("a batched seal does not hold for another statement, salt, place, size, path, key or signing context", () => {
  const seals = sealBatch(statements(11), key);
  const s = seals[5] as AnswerSeal & { batch: SealBatch };
  const other = seals[6] as AnswerSeal & { batch: SealBatch };
  const b = s.batch;
  const flip = (u: Uint8Array, at = 0) => {
    const c = Uint8Array.from(u);
    c[at] = (c[at] ?? 0) ^ 1;
    return c;
  };
  const hash = new Uint8Array(32).fill(3);
  const bad: [string, AnswerSeal][] = [
    ["statement", { ...s, statement: flip(s.statement, 10) }],
    ["another seal's statement", { ...s, statement: other.statement }],
    ["salt", { ...s, batch: { ...b, salt: flip(b.salt) } }],
    ["another seal's salt", { ...s, batch: { ...b, salt: other.batch.salt } }],
    ["a short salt", { ...s, batch: { ...b, salt: b.salt.subarray(1) } }],
    ["index", { ...s, batch: { ...b, index: 4 } }],
    ["index past the size", { ...s, batch: { ...b, index: 11 } }],
    ["a negative index", { ...s, batch: { ...b, index: -1 } }],
    ["a fractional index", { ...s, batch: { ...b, index: 5.5 } }],
    ["size", { ...s, batch: { ...b, size: 12 } }],
    ["size of one", { ...s, batch: { ...b, size: 1, index: 0 } }],
    ["size past the most", { ...s, batch: { ...b, size: MAX_SEAL_BATCH + 1 } }],
    ["a path hash", { ...s, batch: { ...b, path: flip(b.path, 40) } }],
    ["a path short of a hash", { ...s, batch: { ...b, path: b.path.subarray(32) } }],
    ["a path with a hash more", { ...s, batch: { ...b, path: Buffer.concat([b.path, hash]) } }],
    ["a path of a partial hash", { ...s, batch: { ...b, path: b.path.subarray(1) } }],
    ["another seal's path", { ...s, batch: other.batch }],
    ["the batch's signature over the statement alone", { statement: s.statement, signature: s.signature }],
  ];
  assert.ok(sealSignatureValid(key.publicKey, s));
  for (const [what, seal] of bad) assert.equal(sealSignatureValid(key.publicKey, seal), false, what);
  assert.equal(sealSignatureValid(generateSigningKey().publicKey, s), false, "another key");
  // A signature over a statement alone does not stand for a batch holding it.
  const [alone] = sealBatch([s.statement], key);
  assert.equal(sealSignatureValid(key.publicKey, { ...s, signature: alone?.signature as Uint8Array }), false);
});

test("a path's hashes are salted: they tell nothing of the batch's other statements", () => {
  const st = statements(2);
  const [first, second] = sealBatch(st, key);
  // The sibling of the first leaf is the second leaf: not the unsalted hash anyone could make.
  const sibling = Buffer.from(first?.batch?.path ?? []);
  assert.equal(sibling.length, 32);
  assert.notDeepEqual(sibling, sha256(Buffer.of(0), st[1] as Uint8Array));
  assert.deepEqual(sibling, sha256(Buffer.of(0), second?.batch?.salt as Uint8Array, st[1] as Uint8Array));
  // Sealing the same statements again gives other salts, so other paths and another root.
  const [again] = sealBatch(st, key);
  assert.notDeepEqual(Buffer.from(again?.batch?.salt ?? []), Buffer.from(first?.batch?.salt ?? []));
  assert.notDeepEqual(Buffer.from(again?.batch?.path ?? []), sibling);
});
