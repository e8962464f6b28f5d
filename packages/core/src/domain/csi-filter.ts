// CSI filters (G6, GLADOS section 9): a bloom filter a DP keeps of the CSIs it holds mappings
// for, so a resolver asks a federated DP only when the filter says it may hold a CSI. It is
// keyed: a CSI's bit positions come from HMAC-SHA256 under the filter's key, so a filter in
// the wrong hands is noise (an unkeyed filter of phone numbers would be an enumeration oracle:
// hash every number of a country and read off who is there). Only resolvers get the key.
import { createHmac } from "node:crypto";

/** Bytes of a filter key. */
export const FILTER_KEY_BYTES = 32;
/** Bytes of a filter version (random). */
export const FILTER_VERSION_BYTES = 16;
/** Fewest CSIs a filter is sized for, so a small DP's filter is not rebuilt with every sign-up. */
export const MIN_FILTER_CSIS = 1_024;
/** The largest filter a DP builds or a resolver accepts: 2^32 bits (512 MiB). */
export const MAX_FILTER_BITS = 2 ** 32;
/** The most hash functions a filter uses. */
export const MAX_FILTER_HASHES = 16;

/** A filter's shape: bits and hash functions. */
export interface FilterShape {
  readonly bits: number;
  readonly hashes: number;
}

/**
 * The shape for `csis` CSIs at false-positive rate `fpr` (the classic optimum: m = -n ln p /
 * (ln 2)^2 bits, k = (m / n) ln 2 functions), bits a multiple of 64, within the bounds above.
 */
export function filterShape(csis: number, fpr: number): FilterShape {
  const n = Math.max(MIN_FILTER_CSIS, Math.ceil(csis));
  const p = Math.min(0.5, Math.max(1e-9, fpr));
  const raw = Math.ceil((-n * Math.log(p)) / Math.LN2 ** 2);
  const bits = Math.min(MAX_FILTER_BITS, Math.ceil(raw / 64) * 64);
  const hashes = Math.min(MAX_FILTER_HASHES, Math.max(1, Math.round((bits / n) * Math.LN2)));
  return { bits, hashes };
}

/** The false-positive rate of a filter of this shape holding `csis` CSIs. */
export function expectedFpr(shape: FilterShape, csis: number): number {
  return (1 - Math.exp((-shape.hashes * csis) / shape.bits)) ** shape.hashes;
}

const DOMAIN = Buffer.from("MIMI-FILTER-v1\0", "ascii");

/**
 * The bit positions of `csi` (a canonical URI) in a filter of this key and shape: double
 * hashing over two 48-bit halves of HMAC-SHA256(key, "MIMI-FILTER-v1", 0, csi).
 */
export function filterPositions(key: Uint8Array, shape: FilterShape, csi: string): number[] {
  const d = createHmac("sha256", key).update(DOMAIN).update(csi, "utf8").digest();
  const h1 = d.readUIntBE(0, 6);
  // Odd, so the positions differ for every i (arithmetic, not `| 1`, which would cut to 32 bits).
  const raw2 = d.readUIntBE(6, 6);
  const h2 = raw2 % 2 === 1 ? raw2 : raw2 + 1;
  const out: number[] = [];
  for (let i = 0; i < shape.hashes; i++) out.push((h1 + i * h2) % shape.bits);
  return out;
}

/** A filter's bits, which only ever go from 0 to 1 within a version. */
export class FilterBits {
  readonly bytes: Uint8Array;
  constructor(
    readonly key: Uint8Array,
    readonly shape: FilterShape,
    bytes?: Uint8Array,
  ) {
    this.bytes = bytes ?? new Uint8Array(shape.bits / 8);
    if (this.bytes.length * 8 !== shape.bits) throw new RangeError("filter bytes do not match its shape");
  }

  /** Whether `csi` may be in the filter (false: it certainly is not). */
  mayHold(csi: string): boolean {
    for (const b of filterPositions(this.key, this.shape, csi)) if (!this.get(b)) return false;
    return true;
  }

  /** Adds `csi`; returns the positions that went from 0 to 1 (none when it may already be in). */
  add(csi: string): number[] {
    const set: number[] = [];
    for (const b of filterPositions(this.key, this.shape, csi)) if (this.set(b)) set.push(b);
    return set;
  }

  get(bit: number): boolean {
    return (((this.bytes[bit >>> 3] as number) >> (bit & 7)) & 1) === 1;
  }

  /** Sets one bit; returns whether it was 0. */
  set(bit: number): boolean {
    const i = bit >>> 3;
    const mask = 1 << (bit & 7);
    const was = this.bytes[i] as number;
    if (was & mask) return false;
    this.bytes[i] = was | mask;
    return true;
  }
}
