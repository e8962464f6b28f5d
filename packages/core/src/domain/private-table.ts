// Private lookups (issue 16, the private discovery draft's PSM, sections 7.2 and 8.3): a DP
// answers without learning which CSI was asked or whether it was found. The building blocks,
// shared by the DP that builds the table and the resolver that reads it:
//
// - An oblivious PRF, RFC 9497's VOPRF with the ristretto255-SHA512 suite (@noble/curves, an
//   audited implementation). The DP holds a key per epoch; y = PRF(k, csi). A resolver blinds
//   the CSI, the DP evaluates the blinded element and proves (DLEQ, one proof per batch) that it
//   used the key whose public half it published, the resolver unblinds. The DP sees a random
//   group element; nobody can compute y without the DP, so the table is no dictionary to hash.
// - The table: for each CSI it serves, the DP derives from y a bucket, a tag and an AEAD key
//   (HKDF-SHA256), and seals the CSI's answer under that key (AES-256-GCM) as an entry tagged
//   by the tag in that bucket. Every bucket has the same size (padded), and entries are in tag
//   order, so neither a bucket nor the answer's size tells a hit from a miss or an old entry
//   from a new one. Buckets are the same for every reader, so they can be cached and mirrored.
//
// Measured here (2 cores, loaded; README): a VOPRF evaluation in a batch of 100 about 2 ms of
// DP CPU per CSI, unblinding and checking about 2.3 ms of resolver CPU, the DP's own
// evaluation (the table build) about 2.3 ms per CSI per core. P-256 with native scalar
// multiplication would be about 2x faster (hash-to-curve dominates) and was left out: it would
// mean a hand-assembled suite instead of a reviewed one.
import { createCipheriv, createDecipheriv, createHash, hkdfSync, randomBytes } from "node:crypto";
import { ristretto255, ristretto255_oprf } from "@noble/curves/ed25519.js";

// The VOPRF namespace also has the key holder's evaluate (RFC 9497 section 3.3.1's Evaluate in
// the VOPRF context, the output a client's finalize gives), which @noble/curves 2.4.0's types
// list only for POPRF; the unit tests check the two agree.
const VOPRF = ristretto255_oprf.voprf as typeof ristretto255_oprf.voprf & {
  evaluate(secretKey: Uint8Array, input: Uint8Array): Uint8Array;
};

/** The RFC 9497 suite, named in the DP's published parameters. */
export const PRIVATE_SUITE = ristretto255_oprf.name;
/** Bytes of an evaluated or blinded element (a ristretto255 point) and of a proof (two scalars). */
export const OPRF_ELEMENT_BYTES = 32;
export const OPRF_PROOF_BYTES = 64;
/** Most CSIs one evaluation request may carry (one proof covers them all). */
export const MAX_OPRF_BATCH = 32;
/** Buckets a table may have: 2^bucketBits, at most 2^24. */
export const MAX_BUCKET_BITS = 24;
/** The largest bucket: 1 MiB. */
export const MAX_BUCKET_BYTES = 1 << 20;

const TAG_BYTES = 16;
const NONCE_BYTES = 12;
const GCM_TAG_BYTES = 16;
const KEY_BYTES = 32;
/** An entry's header: ciphertext length (2 bytes), tag, nonce. */
const ENTRY_HEADER = 2 + TAG_BYTES + NONCE_BYTES;
/** The most plaintext one entry holds. */
export const MAX_ENTRY_PLAINTEXT = 0xffff - GCM_TAG_BYTES;

const enc = new TextEncoder();

/** An OPRF key pair of one epoch. */
export interface OprfKeys {
  readonly secretKey: Uint8Array;
  readonly publicKey: Uint8Array;
}

/** A new random key pair. */
export function generateOprfKeys(): OprfKeys {
  return VOPRF.generateKeyPair();
}

/** Whether `publicKey` is a valid OPRF public key of the suite (a non-identity ristretto255 element). */
export function oprfPublicKeyValid(publicKey: Uint8Array): boolean {
  if (publicKey.length !== OPRF_ELEMENT_BYTES) return false;
  try {
    return !ristretto255.Point.fromBytes(publicKey).equals(ristretto255.Point.ZERO);
  } catch {
    return false;
  }
}

/** Whether `keys` is a key pair of the suite: a secret scalar whose public element is `publicKey`. */
export function oprfKeysMatch(keys: OprfKeys): boolean {
  if (keys.secretKey.length !== OPRF_ELEMENT_BYTES || !oprfPublicKeyValid(keys.publicKey)) return false;
  try {
    const s = ristretto255.Point.Fn.fromBytes(keys.secretKey);
    return s !== 0n && Buffer.from(ristretto255.Point.BASE.multiply(s).toBytes()).equals(keys.publicKey);
  } catch {
    return false;
  }
}

/** PRF(k, csi) computed by the key's holder (the DP, for its table): 64 bytes. */
export function oprfEvaluate(secretKey: Uint8Array, csiUri: string): Uint8Array {
  return VOPRF.evaluate(secretKey, enc.encode(csiUri));
}

/** A blinded CSI: `blinded` goes to the DP, `blind` stays with the resolver. */
export interface BlindedCsi {
  readonly uri: string;
  readonly blind: Uint8Array;
  readonly blinded: Uint8Array;
}

/** Blinds `csiUri` for an evaluation request. */
export function oprfBlind(csiUri: string): BlindedCsi {
  const { blind, blinded } = VOPRF.blind(enc.encode(csiUri));
  return { uri: csiUri, blind, blinded };
}

/**
 * The DP's side: evaluates a batch of blinded elements with one proof. Throws a RangeError for
 * an empty or too large batch, or an element that is not a valid encoding (the caller's fault).
 */
export function oprfBlindEvaluate(
  keys: OprfKeys,
  blinded: readonly Uint8Array[],
): { evaluated: Uint8Array[]; proof: Uint8Array } {
  if (blinded.length === 0 || blinded.length > MAX_OPRF_BATCH)
    throw new RangeError(`an evaluation carries 1 to ${MAX_OPRF_BATCH} elements`);
  for (const [i, b] of blinded.entries()) {
    if (b.length !== OPRF_ELEMENT_BYTES)
      throw new RangeError(`element ${i} is ${b.length} bytes, not ${OPRF_ELEMENT_BYTES}`);
  }
  try {
    return VOPRF.blindEvaluateBatch(keys.secretKey, keys.publicKey, [...blinded]);
  } catch (err) {
    throw new RangeError(`an element is not a valid ristretto255 encoding (${(err as Error).message})`);
  }
}

/**
 * The resolver's side: checks the DP's proof against its published `publicKey` and unblinds;
 * returns each CSI's PRF output. Throws when the proof fails: the DP did not use the key it
 * published (it may be singling this resolver out), or the answer was damaged.
 */
export function oprfFinalize(
  items: readonly BlindedCsi[],
  evaluated: readonly Uint8Array[],
  publicKey: Uint8Array,
  proof: Uint8Array,
): Uint8Array[] {
  if (evaluated.length !== items.length)
    throw new Error(`the DP evaluated ${evaluated.length} elements for ${items.length} asked`);
  try {
    return VOPRF.finalizeBatch(
      items.map((x, i) => ({
        input: enc.encode(x.uri),
        blind: x.blind,
        evaluated: evaluated[i] as Uint8Array,
        blinded: x.blinded,
      })),
      publicKey,
      proof,
    );
  } catch (err) {
    throw new Error(
      `the DP's evaluation proof does not verify against its published key (${(err as Error).message})`,
    );
  }
}

/** Bytes of a key id: the first bytes of the SHA-256 of the OPRF public key. */
export const KEY_ID_BYTES = 16;

/** The id of OPRF public key `publicKey`, which binds slots, entries and buckets to that key. */
export function keyIdOf(publicKey: Uint8Array): Uint8Array {
  return new Uint8Array(createHash("sha256").update(publicKey).digest().subarray(0, KEY_ID_BYTES));
}

/** The shape of one epoch's table. */
export interface TableLayout {
  /** The key epoch (uint32): a new key makes a new table. */
  readonly epoch: number;
  /** keyIdOf(the epoch's OPRF public key). */
  readonly keyId: Uint8Array;
  /** 2^bucketBits buckets. */
  readonly bucketBits: number;
  /** Bytes of every bucket. */
  readonly bucketBytes: number;
}

/**
 * Where a CSI's entry lives and how it is sealed, derived from its PRF output. `position` is 32
 * bits of it; the bucket is its top `bucketBits`, so a table that splits its buckets (more bits)
 * moves no entry.
 */
export interface Slot {
  readonly position: number;
  readonly bucket: number;
  readonly tag: Uint8Array;
  readonly key: Uint8Array;
}

/** The bucket of slot position `position` in a table of 2^bits buckets. */
export function bucketOf(position: number, bits: number): number {
  return bits === 0 ? 0 : position >>> (32 - bits);
}

/** The slot positions of bucket `bucket` of 2^bits: [first, last]. */
export function positionsOf(bucket: number, bits: number): [number, number] {
  const span = 2 ** (32 - bits);
  return [bucket * span, (bucket + 1) * span - 1];
}

/** The slot of PRF output `y` in a table of `layout`. */
export function slotOf(y: Uint8Array, layout: Pick<TableLayout, "epoch" | "keyId" | "bucketBits">): Slot {
  const info = new Uint8Array(4 + layout.keyId.length);
  new DataView(info.buffer).setUint32(0, layout.epoch);
  info.set(layout.keyId, 4);
  const okm = new Uint8Array(hkdfSync("sha256", y, "MIMI-PRIVATE-v1", info, 4 + TAG_BYTES + KEY_BYTES));
  const position = new DataView(okm.buffer).getUint32(0);
  return {
    position,
    bucket: bucketOf(position, layout.bucketBits),
    tag: okm.slice(4, 4 + TAG_BYTES),
    key: okm.slice(4 + TAG_BYTES),
  };
}

function aad(layout: Pick<TableLayout, "epoch" | "keyId">, slot: Pick<Slot, "tag">): Uint8Array {
  const head = enc.encode("MIMI-PRIVATE-ENTRY-v1");
  const out = new Uint8Array(head.length + 4 + layout.keyId.length + TAG_BYTES);
  out.set(head);
  new DataView(out.buffer).setUint32(head.length, layout.epoch);
  out.set(layout.keyId, head.length + 4);
  out.set(slot.tag, head.length + 4 + layout.keyId.length);
  return out;
}

/** Seals `plaintext` (the CSI's answer) as the entry of `slot`. */
export function sealEntry(
  layout: Pick<TableLayout, "epoch" | "keyId">,
  slot: Pick<Slot, "tag" | "key">,
  plaintext: Uint8Array,
): Uint8Array {
  if (plaintext.length > MAX_ENTRY_PLAINTEXT)
    throw new RangeError(`an entry holds at most ${MAX_ENTRY_PLAINTEXT} bytes`);
  const nonce = randomBytes(NONCE_BYTES);
  const c = createCipheriv("aes-256-gcm", slot.key, nonce);
  c.setAAD(aad(layout, slot));
  const body = Buffer.concat([c.update(plaintext), c.final(), c.getAuthTag()]);
  const out = new Uint8Array(ENTRY_HEADER + body.length);
  new DataView(out.buffer).setUint16(0, body.length);
  out.set(slot.tag, 2);
  out.set(nonce, 2 + TAG_BYTES);
  out.set(body, ENTRY_HEADER);
  return out;
}

/** Bytes an entry of `plaintextBytes` takes in a bucket. */
export function entryBytes(plaintextBytes: number): number {
  return ENTRY_HEADER + plaintextBytes + GCM_TAG_BYTES;
}

/** The tag of a sealed entry (for ordering a bucket). */
export function entryTag(entry: Uint8Array): Uint8Array {
  return entry.subarray(2, 2 + TAG_BYTES);
}

/**
 * A bucket of `layout.bucketBytes` holding `entries` in tag order, zero-padded. Throws a
 * RangeError when they do not fit (the table then needs larger buckets).
 */
export function encodeBucket(
  layout: Pick<TableLayout, "bucketBytes">,
  entries: readonly Uint8Array[],
): Uint8Array {
  const sorted = [...entries].sort((a, b) => Buffer.compare(entryTag(a), entryTag(b)));
  const out = new Uint8Array(layout.bucketBytes);
  let at = 0;
  for (const e of sorted) {
    // A zero length ends the entries, so a full bucket needs no terminator but others do.
    if (at + e.length > out.length) throw new RangeError("the entries do not fit the bucket size");
    out.set(e, at);
    at += e.length;
  }
  return out;
}

/** The entries of a bucket (views into it); throws when the bucket is malformed. */
export function bucketEntries(bucket: Uint8Array): Uint8Array[] {
  const out: Uint8Array[] = [];
  const v = new DataView(bucket.buffer, bucket.byteOffset, bucket.byteLength);
  let at = 0;
  while (at + 2 <= bucket.length) {
    const n = v.getUint16(at);
    if (n === 0) break;
    if (n < GCM_TAG_BYTES || at + ENTRY_HEADER + n > bucket.length) throw new Error("malformed bucket");
    out.push(bucket.subarray(at, at + ENTRY_HEADER + n));
    at += ENTRY_HEADER + n;
  }
  return out;
}

/**
 * Opens the entry of `slot` in `bucket`: its plaintext, or undefined when the bucket holds none
 * (the DP holds nothing for the CSI). Throws when the entry is there but does not open
 * (damaged, or sealed under another key).
 */
export function openEntry(
  layout: Pick<TableLayout, "epoch" | "keyId">,
  slot: Pick<Slot, "tag" | "key">,
  bucket: Uint8Array,
): Uint8Array | undefined {
  const entry = bucketEntries(bucket).find((e) => Buffer.from(entryTag(e)).equals(slot.tag));
  if (!entry) return undefined;
  const nonce = entry.subarray(2 + TAG_BYTES, ENTRY_HEADER);
  const body = entry.subarray(ENTRY_HEADER);
  const d = createDecipheriv("aes-256-gcm", slot.key, nonce);
  d.setAAD(aad(layout, slot));
  d.setAuthTag(body.subarray(body.length - GCM_TAG_BYTES));
  try {
    return new Uint8Array(
      Buffer.concat([d.update(body.subarray(0, body.length - GCM_TAG_BYTES)), d.final()]),
    );
  } catch {
    throw new Error("the CSI's entry in the bucket does not open: damaged, or sealed under another key");
  }
}

/** Entries a bucket is meant to hold on average: a bucket fetched reveals one of this many. */
export const ENTRIES_PER_BUCKET = 32;

/** Bucket bits for a table of `csis` CSIs: about ENTRIES_PER_BUCKET entries per bucket. */
export function bucketBitsFor(csis: number): number {
  const b = Math.ceil(Math.log2(Math.max(1, csis) / ENTRIES_PER_BUCKET));
  return Math.min(MAX_BUCKET_BITS, Math.max(0, b));
}

/**
 * The bucket size for a table whose fullest bucket takes `largest` bytes: a quarter more, at
 * least 4 KiB, in whole KiB, at most MAX_BUCKET_BYTES, so sign-ups fit for a while before the
 * table grows its buckets again.
 */
export function bucketBytesFor(largest: number): number {
  return Math.min(MAX_BUCKET_BYTES, Math.max(4096, Math.ceil((largest * 1.25) / 1024) * 1024));
}

/**
 * Buckets grow to this size; past it a table splits them (one more bucket bit) instead, so a
 * lookup downloads tens of KiB, not a MiB, at the price of fewer entries per bucket.
 */
export const SPLIT_BUCKET_BYTES = 64 * 1024;
