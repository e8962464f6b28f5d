// The Answer message for default parameters (verbose, no filter) written by hand, without its
// TTL: what the resolver caches per answer and sends on every hit, and sends once per miss.
// protobuf-es builds it by reflection (create, then toBinary), about 90 us an answer of two
// signed mappings here; this writes the same bytes in two passes (sizes, then one buffer of the
// exact size). Fields go in field-number order and proto3 defaults are left out, as protobuf-es
// writes them, so the bytes are identical (answer-encoding.test.ts compares them).
import type { LookupOutcome, Mapping, MappingSignatures } from "../domain/answer.js";
import { compactBitsLength, setCompactBits } from "../domain/answer.js";
import { LookupStatus } from "../gen/generated/mimi/discovery/v1/common_pb.js";

// Field numbers of Answer, Mapping, MappingRecordSignatures, AnswerSeal and OptOutProof (common.proto).
const LEN = 2;
const VARINT = 0;
const tag = (field: number, wire: number) => (field << 3) | wire;

// The mappings' bytes (Answer field 2, each with its tag and length) of answers a DP gives again
// and again from its answer cache, by the identity of their array, which it never changes:
// written once when the answer is kept (keepEncodedMappings), copied into each answer after.
const keptMappings = new WeakMap<readonly Mapping[], Uint8Array>();

/**
 * Encodes `mappings` once for every answer that lists this very array, and freezes the array,
 * its mappings, their tags and signature sets (not the bytes: typed arrays cannot be frozen),
 * which must not change after; an array with a number the varint writer does not take is left
 * to each answer.
 */
export function keepEncodedMappings(mappings: readonly Mapping[]): void {
  if (!mappings.every(encodableMapping)) return;
  for (const m of mappings) {
    Object.freeze(m.tags);
    if (m.signed) Object.freeze(m.signed);
    Object.freeze(m);
  }
  Object.freeze(mappings);
  const sizes = mappings.map(mappingSize);
  const w = new Writer(sizes.reduce((n, s) => n + 1 + varintSize(s) + s, 0));
  mappings.forEach((m, i) => {
    w.lengthPrefix(2, sizes[i] as number);
    writeMapping(w, m);
  });
  keptMappings.set(mappings, w.done());
}

/** Whether every number of the answer is one the varint writer takes (0 <= n < 2^53). */
export function handEncodable(outcome: LookupOutcome): boolean {
  const b = outcome.seal?.batch;
  if (b && !(isUint32(b.index) && isUint32(b.size))) return false;
  if (outcome.kind !== "answer") return true;
  return keptMappings.has(outcome.mappings) || outcome.mappings.every(encodableMapping);
}

const encodableMapping = (m: Mapping) =>
  Number.isSafeInteger(m.createdAtMs) &&
  m.createdAtMs >= 0 &&
  Number.isSafeInteger(m.expiresAtMs) &&
  m.expiresAtMs >= 0;

const isUint32 = (n: number) => Number.isInteger(n) && n >= 0 && n <= 0xffff_ffff;

/**
 * The Answer without ttl_seconds, as protobuf-es would encode it; numbers must be handEncodable.
 * Its bytes are a buffer of their own, to be kept (the resolver caches them), unless
 * `shortLived` (copied into a response at once, as a DP's are): then a slice of Node's buffer
 * pool, which costs the collector nothing of its own.
 */
export function writeAnswerWithoutTtl(
  outcome: LookupOutcome,
  indexOf: (mspId: string) => number | undefined,
  shortLived = false,
): Uint8Array {
  const mappings = outcome.kind === "answer" ? outcome.mappings : [];
  const status =
    outcome.kind === "opted_out"
      ? LookupStatus.OPTED_OUT
      : mappings.length === 0
        ? LookupStatus.NOT_FOUND
        : LookupStatus.FOUND;
  const bitsLength = status === LookupStatus.FOUND ? compactBitsLength(mappings, indexOf) : 0;
  const kept = keptMappings.get(mappings);
  const mappingSizes = kept ? [] : mappings.map(mappingSize);
  const seal = outcome.seal;
  const optOut = outcome.kind === "opted_out" ? outcome.optOut : undefined;
  const batch = seal?.batch;
  const batchSize = batch
    ? bytesSize(batch.salt) +
      varintFieldSize(batch.index) +
      varintFieldSize(batch.size) +
      bytesSize(batch.path)
    : 0;
  const sealSize = seal
    ? bytesSize(seal.statement) +
      bytesSize(seal.signature) +
      (batch ? 1 + varintSize(batchSize) + batchSize : 0)
    : 0;
  const optOutSize = optOut
    ? bytesSize(optOut.statement) + bytesSize(optOut.userSignature) + bytesSize(optOut.mspSignature)
    : 0;
  // Status is never UNSPECIFIED (0), so it is always written.
  let size = 1 + varintSize(status) + (kept?.length ?? 0);
  for (const n of mappingSizes) size += 1 + varintSize(n) + n;
  if (bitsLength > 0) size += 1 + varintSize(bitsLength) + bitsLength;
  if (outcome.dpId) size += repeatedStringSize(outcome.dpId);
  if (seal) size += 1 + varintSize(sealSize) + sealSize;
  if (optOut) size += 1 + varintSize(optOutSize) + optOutSize;
  if (outcome.private) size += 2;

  const w = new Writer(size, shortLived);
  w.varintField(1, status);
  if (kept) w.raw(kept);
  else
    mappings.forEach((m, i) => {
      w.lengthPrefix(2, mappingSizes[i] as number);
      writeMapping(w, m);
    });
  if (bitsLength > 0) {
    w.lengthPrefix(3, bitsLength);
    w.compactBits(bitsLength, mappings, indexOf);
  }
  if (outcome.dpId) w.stringField(5, outcome.dpId, true);
  if (seal) {
    w.lengthPrefix(6, sealSize);
    w.bytesField(1, seal.statement);
    w.bytesField(2, seal.signature);
    if (batch) {
      w.lengthPrefix(3, batchSize);
      w.bytesField(1, batch.salt);
      if (batch.index !== 0) w.varintField(2, batch.index);
      if (batch.size !== 0) w.varintField(3, batch.size);
      w.bytesField(4, batch.path);
    }
  }
  if (optOut) {
    w.lengthPrefix(7, optOutSize);
    w.bytesField(1, optOut.statement);
    w.bytesField(2, optOut.userSignature);
    w.bytesField(3, optOut.mspSignature);
  }
  if (outcome.private) w.varintField(8, 1);
  return w.done();
}

function mappingSize(m: Mapping): number {
  let n = stringSize(m.mspId) + stringSize(m.ssi) + (m.isDefault ? 2 : 0);
  for (const t of m.tags) n += repeatedStringSize(t);
  n += m.createdAtMs !== 0 ? 1 + varintSize(m.createdAtMs) : 0;
  n += stringSize(m.proofMethod);
  n += m.expiresAtMs !== 0 ? 1 + varintSize(m.expiresAtMs) : 0;
  if (m.signed) {
    const s = signedSize(m.signed);
    n += 1 + varintSize(s) + s;
  }
  return n;
}

function signedSize(s: MappingSignatures): number {
  return (
    bytesSize(s.record) + bytesSize(s.userSignature) + bytesSize(s.mspSignature) + bytesSize(s.dpSignature)
  );
}

function writeMapping(w: Writer, m: Mapping): void {
  w.stringField(1, m.mspId);
  w.stringField(2, m.ssi);
  if (m.isDefault) w.varintField(3, 1);
  for (const t of m.tags) w.stringField(4, t, true);
  if (m.createdAtMs !== 0) w.varintField(5, m.createdAtMs);
  w.stringField(6, m.proofMethod);
  if (m.expiresAtMs !== 0) w.varintField(7, m.expiresAtMs);
  const s = m.signed;
  if (s) {
    w.lengthPrefix(8, signedSize(s));
    w.bytesField(1, s.record);
    w.bytesField(2, s.userSignature);
    w.bytesField(3, s.mspSignature);
    w.bytesField(4, s.dpSignature);
  }
}

/** Bytes of a varint of `n` (0 <= n < 2^53). */
export function varintSize(n: number): number {
  let size = 1;
  while (n >= 0x80) {
    n = Math.floor(n / 128);
    size++;
  }
  return size;
}

const bytesSize = (b: Uint8Array) => (b.length ? 1 + varintSize(b.length) + b.length : 0);
/** A varint field of a field number below 16, left out when 0 (proto3). */
const varintFieldSize = (n: number) => (n ? 1 + varintSize(n) : 0);
const stringSize = (s: string) => (s ? repeatedStringSize(s) : 0);
/** An element of a repeated string, written even when empty. */
const repeatedStringSize = (s: string) => {
  const n = Buffer.byteLength(s, "utf8");
  return 1 + varintSize(n) + n;
};

/** Writes fields (numbers below 16, so one-byte tags) into a buffer of the size computed first. */
class Writer {
  private readonly out: Buffer;
  private at = 0;

  constructor(size: number, shortLived = false) {
    // Not from Buffer's shared pool unless short-lived: a cached answer must not keep a pool
    // slab alive. A pooled buffer is not zeroed: done() checks every byte was written.
    this.out = shortLived ? Buffer.allocUnsafe(size) : Buffer.from(new ArrayBuffer(size));
  }

  varint(n: number): void {
    while (n >= 0x80) {
      this.out[this.at++] = (n % 128) | 0x80;
      n = Math.floor(n / 128);
    }
    this.out[this.at++] = n;
  }

  varintField(field: number, n: number): void {
    this.out[this.at++] = tag(field, VARINT);
    this.varint(n);
  }

  lengthPrefix(field: number, length: number): void {
    this.out[this.at++] = tag(field, LEN);
    this.varint(length);
  }

  /** Bytes already encoded. */
  raw(b: Uint8Array): void {
    this.out.set(b, this.at);
    this.at += b.length;
  }

  bytesField(field: number, b: Uint8Array): void {
    if (b.length === 0) return;
    this.lengthPrefix(field, b.length);
    this.out.set(b, this.at);
    this.at += b.length;
  }

  /** A string field; `always` for elements of repeated fields, written even when empty. */
  stringField(field: number, s: string, always = false): void {
    if (!s && !always) return;
    const n = Buffer.byteLength(s, "utf8");
    this.lengthPrefix(field, n);
    this.at += this.out.write(s, this.at, "utf8");
  }

  /** The compact bits of `mappings` (compactBitsLength bytes), written in place. */
  compactBits(
    length: number,
    mappings: readonly Mapping[],
    indexOf: (mspId: string) => number | undefined,
  ): void {
    this.out.fill(0, this.at, this.at + length);
    setCompactBits(this.out, this.at, mappings, indexOf);
    this.at += length;
  }

  done(): Uint8Array {
    if (this.at !== this.out.length)
      throw new Error(`answer encoding wrote ${this.at} of ${this.out.length} bytes`);
    return new Uint8Array(this.out.buffer, this.out.byteOffset, this.at);
  }
}
