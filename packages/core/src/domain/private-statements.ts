// The signed statements of private lookups (private-table.ts): a DP's table parameters (its
// OPRF public key of an epoch and the table's layout) and each bucket as the DP served it.
// Both are signed with the DP's key the root registry publishes, so a resolver checks them
// as it checks answers. A bucket statement with an expiry makes a missing entry a denial as
// verifiable, and as bounded in time, as a sealed NOT_FOUND.
import { MAX_ANSWER_SEAL_MS } from "./answer-seal.js";
import { ByteReader, ByteWriter } from "./canonical-bytes.js";
import { sha256 } from "./digest.js";
import {
  keyIdOf,
  MAX_BUCKET_BITS,
  MAX_BUCKET_BYTES,
  OPRF_ELEMENT_BYTES,
  PRIVATE_SUITE,
  type TableLayout,
} from "./private-table.js";
import { SIGNING_CONTEXT, type SigningKey, signWith, verifyWith } from "./signing.js";

/** A DP's private-lookup parameters of one epoch. */
export interface PrivateParams {
  readonly dpId: string;
  readonly suite: string;
  readonly epoch: number;
  readonly publicKey: Uint8Array;
  readonly bucketBits: number;
  readonly bucketBytes: number;
  readonly signedAtMs: number;
}

/** What a bucket statement says. */
export interface BucketStatement {
  readonly dpId: string;
  readonly epoch: number;
  /** keyIdOf(the epoch's OPRF public key): the bucket is of the table of that key. */
  readonly keyId: Uint8Array;
  readonly bucketBits: number;
  readonly bucket: number;
  readonly signedAtMs: number;
  readonly expiresAtMs: number;
  /** SHA-256 of the bucket's bytes. */
  readonly digest: Uint8Array;
}

const PARAMS_MAGIC = "MIMI-PRIVATE-PARAMS-v1";
const BUCKET_MAGIC = "MIMI-PRIVATE-BUCKET-v1";

function u32(w: ByteWriter, n: number): ByteWriter {
  return w.u16(Math.floor(n / 65_536)).u16(n % 65_536);
}
function readU32(r: ByteReader): number {
  return r.u16() * 65_536 + r.u16();
}

export function encodePrivateParams(p: PrivateParams): Uint8Array {
  const w = new ByteWriter().ascii(PARAMS_MAGIC).string(p.dpId).string(p.suite);
  return u32(w, p.epoch).bytes(p.publicKey).u8(p.bucketBits).u64(p.bucketBytes).u64(p.signedAtMs).done();
}

/** Decodes parameters; throws INVALID_ARGUMENT (from the reader) or a RangeError when out of bounds. */
export function decodePrivateParams(bytes: Uint8Array): PrivateParams {
  const r = new ByteReader(bytes, "private parameters");
  r.magic(PARAMS_MAGIC);
  const p: PrivateParams = {
    dpId: r.string(),
    suite: r.string(),
    epoch: readU32(r),
    publicKey: r.bytes(),
    bucketBits: r.u8(),
    bucketBytes: r.u64(),
    signedAtMs: r.u64(),
  };
  r.end();
  if (p.publicKey.length !== OPRF_ELEMENT_BYTES) throw new RangeError("the OPRF public key is not 32 bytes");
  if (p.bucketBits > MAX_BUCKET_BITS) throw new RangeError(`bucket bits above ${MAX_BUCKET_BITS}`);
  if (p.bucketBytes < 1 || p.bucketBytes > MAX_BUCKET_BYTES)
    throw new RangeError("bucket size out of bounds");
  return p;
}

/** The statement and the DP's signature over it. */
export function signPrivateParams(
  p: PrivateParams,
  key: SigningKey,
): { statement: Uint8Array; signature: Uint8Array } {
  const statement = encodePrivateParams(p);
  return { statement, signature: signWith(key, SIGNING_CONTEXT.privateParams, statement) };
}

/**
 * The parameters in `statement` when DP `dpId` signed them with `dpKey` and they are of the
 * suite this code speaks; otherwise a problem a person can act on.
 */
export function verifyPrivateParams(
  statement: Uint8Array,
  signature: Uint8Array,
  dpId: string,
  dpKey: Uint8Array | undefined,
): PrivateParams | { problem: string } {
  if (!dpKey) return { problem: `the registry publishes no key for DP "${dpId}"` };
  if (!verifyWith(dpKey, SIGNING_CONTEXT.privateParams, signature, [statement]))
    return { problem: `DP "${dpId}"'s private-lookup parameters are not signed by its registry key` };
  let p: PrivateParams;
  try {
    p = decodePrivateParams(statement);
  } catch (err) {
    return { problem: `DP "${dpId}"'s private-lookup parameters are malformed: ${(err as Error).message}` };
  }
  if (p.dpId !== dpId) return { problem: `the parameters are DP "${p.dpId}"'s, not DP "${dpId}"'s` };
  if (p.suite !== PRIVATE_SUITE)
    return { problem: `DP "${dpId}" uses suite ${p.suite}, not ${PRIVATE_SUITE}` };
  return p;
}

export function encodeBucketStatement(s: BucketStatement): Uint8Array {
  const w = new ByteWriter().ascii(BUCKET_MAGIC).string(s.dpId);
  return u32(u32(w, s.epoch).bytes(s.keyId).u8(s.bucketBits), s.bucket)
    .u64(s.signedAtMs)
    .u64(s.expiresAtMs)
    .bytes(s.digest)
    .done();
}

export function decodeBucketStatement(bytes: Uint8Array): BucketStatement {
  const r = new ByteReader(bytes, "bucket statement");
  r.magic(BUCKET_MAGIC);
  const s: BucketStatement = {
    dpId: r.string(),
    epoch: readU32(r),
    keyId: r.bytes(),
    bucketBits: r.u8(),
    bucket: readU32(r),
    signedAtMs: r.u64(),
    expiresAtMs: r.u64(),
    digest: r.bytes(),
  };
  r.end();
  return s;
}

/** The layout of the table the parameters describe. */
export function layoutOf(p: PrivateParams): TableLayout {
  return {
    epoch: p.epoch,
    keyId: keyIdOf(p.publicKey),
    bucketBits: p.bucketBits,
    bucketBytes: p.bucketBytes,
  };
}

/** SHA-256 of a bucket's bytes. */
export function bucketDigest(data: Uint8Array): Uint8Array {
  return sha256(data);
}

/** Signs bucket `data` as `s` (its digest is computed here). */
export function signBucket(
  s: Omit<BucketStatement, "digest">,
  data: Uint8Array,
  key: SigningKey,
): { statement: Uint8Array; signature: Uint8Array } {
  const statement = encodeBucketStatement({ ...s, digest: bucketDigest(data) });
  return { statement, signature: signWith(key, SIGNING_CONTEXT.privateBucket, statement) };
}

/**
 * Why bucket `data` with `statement` and `signature` is not DP `params.dpId`'s current bucket
 * `bucket` of the parameters' table at `nowMs`, or undefined when it is.
 */
export function bucketProblem(
  data: Uint8Array,
  statement: Uint8Array,
  signature: Uint8Array,
  params: PrivateParams,
  bucket: number,
  dpKey: Uint8Array,
  nowMs: number,
): string | undefined {
  const dp = `DP "${params.dpId}"`;
  if (!verifyWith(dpKey, SIGNING_CONTEXT.privateBucket, signature, [statement]))
    return `${dp}'s bucket ${bucket} is not signed by its registry key`;
  let s: BucketStatement;
  try {
    s = decodeBucketStatement(statement);
  } catch (err) {
    return `${dp}'s bucket statement is malformed: ${(err as Error).message}`;
  }
  if (
    s.dpId !== params.dpId ||
    s.epoch !== params.epoch ||
    !Buffer.from(s.keyId).equals(keyIdOf(params.publicKey)) ||
    s.bucketBits !== params.bucketBits ||
    s.bucket !== bucket
  )
    return `${dp} sent a bucket statement for another bucket or table than the one asked`;
  if (data.length !== params.bucketBytes)
    return `${dp}'s bucket is ${data.length} bytes, not the table's ${params.bucketBytes}`;
  if (!Buffer.from(bucketDigest(data)).equals(s.digest))
    return `${dp}'s bucket does not match its signed digest`;
  if (s.expiresAtMs <= nowMs) return `${dp}'s bucket statement expired`;
  if (s.expiresAtMs - s.signedAtMs > MAX_ANSWER_SEAL_MS)
    return `${dp}'s bucket statement is valid for longer than any seal may be (${MAX_ANSWER_SEAL_MS / 86_400_000} days)`;
  if (s.signedAtMs > nowMs + 60_000) return `${dp}'s bucket statement is signed in the future`;
  return undefined;
}
