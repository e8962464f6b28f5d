// Answer seals signed in batches. A DP answering many lookups within a moment signs their seal
// statements once, as the leaves of a Merkle tree (RFC 9162's shape and inclusion proofs, as
// Certificate Transparency logs sign many certificates with one signature), and each answer
// carries its leaf's salt and its path to the root. A verifier computes the root from the path
// (a few SHA-256 steps) and checks the one signature over it, which it remembers by digest
// (signing.ts), so the batch's other answers cost it hashes only. Layout: SealBatch in
// common.proto. A seal holds the same whether it was signed alone or in a batch.
import { randomBytes } from "node:crypto";
import type { AnswerSeal, SealBatch } from "./answer.js";
import { ByteWriter } from "./canonical-bytes.js";
import { sha256Latin1, sha256OfParts } from "./digest.js";
import { SIGNING_CONTEXT, type SigningKey, signWith, verifyWith } from "./signing.js";

/** The most seals one batch holds: a path is then at most 8 hashes (256 bytes). */
export const MAX_SEAL_BATCH = 256;

const SALT_BYTES = 16;
const HASH_BYTES = 32;
const BATCH_MAGIC = "MIMI-ANSWER-BATCH-v1";
const LEAF = Buffer.of(0);
const NODE = 1;

// The tree's hashes are latin1 strings of 32 characters (digest.ts): a hash is 0.4 µs and
// leaves no buffer or native object for the collector. What a hash is made of goes into a
// slice of Node's buffer pool, dropped at once.

/** The leaf of a salt (SALT_BYTES) and a statement. */
function leafHash(salt: Uint8Array, statement: Uint8Array): string {
  return sha256OfParts([LEAF, salt, statement], "binary");
}

function nodeHash(left: string, right: string): string {
  const input = Buffer.allocUnsafe(1 + 2 * HASH_BYTES);
  input[0] = NODE;
  input.write(left, 1, "latin1");
  input.write(right, 1 + HASH_BYTES, "latin1");
  return sha256Latin1(input);
}

/** What the DP signs for a batch: its size and root. */
function batchStatement(size: number, root: string): Uint8Array {
  return new ByteWriter().ascii(BATCH_MAGIC).u16(size).bytes(Buffer.from(root, "latin1")).done();
}

/**
 * The seals of `statements` (sealStatement's), in order. One statement is signed alone, as
 * sealAnswer signs it; more are signed together, with one signature over their tree's root.
 */
export function sealBatch(statements: readonly Uint8Array[], key: SigningKey): AnswerSeal[] {
  const n = statements.length;
  if (n === 0) return [];
  if (n > MAX_SEAL_BATCH) throw new RangeError(`a seal batch holds at most ${MAX_SEAL_BATCH} statements`);
  if (n === 1) {
    const statement = statements[0] as Uint8Array;
    return [{ statement, signature: signWith(key, SIGNING_CONTEXT.answerDp, statement) }];
  }
  const salts = randomBytes(SALT_BYTES * n);
  const saltOf = (i: number) => salts.subarray(i * SALT_BYTES, (i + 1) * SALT_BYTES);
  const leaves = statements.map((s, i) => leafHash(saltOf(i), s));
  const paths: string[][] = leaves.map(() => []);
  // RFC 9162 2.1.1: a range splits at the largest power of two below its length. Each leaf's
  // path gets the sibling of every subtree it is in, the deepest first.
  const subtree = (lo: number, hi: number): string => {
    if (hi - lo === 1) return leaves[lo] as string;
    const mid = lo + 2 ** (31 - Math.clz32(hi - lo - 1));
    const left = subtree(lo, mid);
    const right = subtree(mid, hi);
    for (let i = lo; i < mid; i++) paths[i]?.push(right);
    for (let i = mid; i < hi; i++) paths[i]?.push(left);
    return nodeHash(left, right);
  };
  const signature = signWith(key, SIGNING_CONTEXT.answerDpBatch, batchStatement(n, subtree(0, n)));
  // Every path in one buffer of the batch's own (a seal kept keeps at most its batch's, 64 KiB).
  const pathBytes = Buffer.allocUnsafeSlow(paths.reduce((sum, p) => sum + p.length * HASH_BYTES, 0));
  let at = 0;
  return statements.map((statement, index) => {
    const from = at;
    for (const h of paths[index] ?? []) at += pathBytes.write(h, at, "latin1");
    const path = new Uint8Array(pathBytes.buffer, pathBytes.byteOffset + from, at - from);
    return { statement, signature, batch: { salt: saltOf(index), index, size: n, path } };
  });
}

/**
 * The root a batched seal's path leads to (RFC 9162 2.1.3.2), or undefined when the proof is
 * malformed: a salt, size, index or path of the wrong shape.
 */
export function batchRoot(statement: Uint8Array, b: SealBatch): Uint8Array | undefined {
  const root = rootOf(statement, b);
  return root === undefined ? undefined : new Uint8Array(Buffer.from(root, "latin1"));
}

/** batchRoot's root, as the tree's hashes are kept. */
function rootOf(statement: Uint8Array, b: SealBatch): string | undefined {
  const { index, size, path } = b;
  if (
    b.salt.length !== SALT_BYTES ||
    !(Number.isInteger(size) && size >= 2 && size <= MAX_SEAL_BATCH) ||
    !(Number.isInteger(index) && index >= 0 && index < size)
  ) {
    return undefined;
  }
  if (path.length % HASH_BYTES !== 0) return undefined;
  let fn = index;
  let sn = size - 1;
  let r = leafHash(b.salt, statement);
  const pathBytes = Buffer.from(path.buffer, path.byteOffset, path.length);
  for (let at = 0; at < path.length; at += HASH_BYTES) {
    if (sn === 0) return undefined;
    const p = pathBytes.toString("latin1", at, at + HASH_BYTES);
    if ((fn & 1) === 1 || fn === sn) {
      r = nodeHash(p, r);
      while ((fn & 1) === 0 && fn !== 0) {
        fn >>= 1;
        sn >>= 1;
      }
    } else {
      r = nodeHash(r, p);
    }
    fn >>= 1;
    sn >>= 1;
  }
  return sn === 0 ? r : undefined;
}

/** Whether `seal`'s signature is `dpKey`'s, over its statement alone or over its batch. */
export function sealSignatureValid(dpKey: Uint8Array, seal: AnswerSeal): boolean {
  if (!seal.batch) {
    return verifyWith(dpKey, SIGNING_CONTEXT.answerDp, seal.signature, [seal.statement], {
      registryKey: true,
    });
  }
  const root = rootOf(seal.statement, seal.batch);
  return (
    root !== undefined &&
    verifyWith(
      dpKey,
      SIGNING_CONTEXT.answerDpBatch,
      seal.signature,
      [batchStatement(seal.batch.size, root)],
      {
        registryKey: true,
      },
    )
  );
}
