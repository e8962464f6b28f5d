// The byte layout every signed statement shares (mapping records, action statements, contest
// statements, answer seals): an ASCII magic naming kind and version, strings and byte fields as
// a u16 big-endian length and the bytes, integers big-endian. One reader refuses every input
// that another encoding could also produce, so one statement has exactly one encoding.
import { invalidArgument } from "./errors.js";

const MAX_FIELD = 0xffff;

/**
 * `size` bytes for what is copied elsewhere at once (a unary reply grpc-js frames as it is sent,
 * a lookup's seal statement written into its answer): a slice of Node's shared pool, which costs
 * about a quarter of a typed array of its own (no backing store to allocate, zero and collect:
 * 0.35 against 0.9-1.2 µs a kilobyte here) and leaves the collector no array buffer to sweep.
 * Not zeroed: the writer must fill every byte. Never for what may be kept: a slice keeps its
 * whole 8 KiB pool alive, and a stream's messages wait in its write queue (up to a thousand of
 * them for a peer that does not read), so cache entries and stream items get buffers of their
 * own, or, where a stream writes each item as it is cut, slices of chunks of that stream's own
 * (codec/encoded.ts streamItemSlab). A plain Uint8Array view, so that what decodes it gets
 * Uint8Array fields, not Buffers.
 */
export function shortLivedBytes(size: number): Uint8Array {
  const b = Buffer.allocUnsafe(size);
  return new Uint8Array(b.buffer, b.byteOffset, size);
}

/** Strings whose UTF-8 encoding decodes back to themselves (no lone surrogate). ES2024. */
const wellFormed = (s: string): boolean => s.isWellFormed();

/** Writes `n` (a safe non-negative integer) as a big-endian u64 at `at` of `out`. */
export function writeU64(out: Uint8Array, at: number, n: number): void {
  if (!Number.isSafeInteger(n) || n < 0)
    throw invalidArgument("a record time must be a non-negative integer");
  // Safe integers fit in 53 bits: the high and low 32-bit halves, no BigInt.
  const hi = Math.floor(n / 0x1_0000_0000);
  const lo = n >>> 0;
  out[at] = hi >>> 24;
  out[at + 1] = (hi >>> 16) & 0xff;
  out[at + 2] = (hi >>> 8) & 0xff;
  out[at + 3] = hi & 0xff;
  out[at + 4] = lo >>> 24;
  out[at + 5] = (lo >>> 16) & 0xff;
  out[at + 6] = (lo >>> 8) & 0xff;
  out[at + 7] = lo & 0xff;
}

/**
 * Writes a canonical encoding: ASCII magic, u16-length-prefixed fields, big-endian integers.
 * Into one buffer that doubles when full: a record is built per claim, bulk row and answer seal,
 * and a small allocation per field cost more than the bytes themselves.
 */
export class ByteWriter {
  private buf = Buffer.allocUnsafe(256);
  private at = 0;
  private room(n: number): void {
    if (this.at + n <= this.buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.at + n));
    this.buf.copy(next, 0, 0, this.at);
    this.buf = next;
  }
  ascii(s: string): this {
    this.room(s.length);
    this.at += this.buf.write(s, this.at, "ascii");
    return this;
  }
  bytes(b: Uint8Array): this {
    if (b.length > MAX_FIELD) throw invalidArgument("a record field is longer than 65535 bytes");
    this.room(2 + b.length);
    this.buf.writeUInt16BE(b.length, this.at);
    this.buf.set(b, this.at + 2);
    this.at += 2 + b.length;
    return this;
  }
  string(s: string): this {
    // Strings the decoder would refuse (lone surrogates, U+FFFD) must not get signed either.
    if (s.includes("\uFFFD") || !wellFormed(s)) {
      throw invalidArgument("a record string holds a lone surrogate or U+FFFD");
    }
    const n = Buffer.byteLength(s, "utf8");
    if (n > MAX_FIELD) throw invalidArgument("a record field is longer than 65535 bytes");
    this.room(2 + n);
    this.buf.writeUInt16BE(n, this.at);
    this.buf.write(s, this.at + 2, n, "utf8");
    this.at += 2 + n;
    return this;
  }
  u8(n: number): this {
    this.room(1);
    this.buf[this.at++] = n;
    return this;
  }
  u16(n: number): this {
    if (!Number.isInteger(n) || n < 0 || n > MAX_FIELD) throw invalidArgument("a count exceeds 65535");
    this.room(2);
    this.buf.writeUInt16BE(n, this.at);
    this.at += 2;
    return this;
  }
  u64(n: number): this {
    this.room(8);
    writeU64(this.buf, this.at, n);
    this.at += 8;
    return this;
  }
  /** The encoding, in a buffer of its own. */
  done(): Uint8Array {
    return new Uint8Array(this.buf.subarray(0, this.at));
  }
}

/** Reads what ByteWriter wrote; every malformed input throws INVALID_ARGUMENT naming `what`. */
export class ByteReader {
  private at = 0;
  private readonly buf: Buffer;
  constructor(
    bytes: Uint8Array,
    private readonly what: string,
  ) {
    this.buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
  private need(n: number): void {
    if (this.at + n > this.buf.length) throw invalidArgument(`${this.what} is truncated`);
  }
  magic(m: string): void {
    this.need(m.length);
    if (this.buf.toString("latin1", this.at, this.at + m.length) !== m) {
      throw invalidArgument(
        `${this.what} does not start with "${m}" (unknown version or not a ${this.what})`,
      );
    }
    this.at += m.length;
  }
  bytes(): Uint8Array {
    this.need(2);
    const n = this.buf.readUInt16BE(this.at);
    this.at += 2;
    this.need(n);
    const out = new Uint8Array(this.buf.subarray(this.at, this.at + n));
    this.at += n;
    return out;
  }
  string(): string {
    const b = this.bytes();
    const s = Buffer.from(b).toString("utf8");
    // Reject bytes that do not round-trip, or two encodings of one record would exist.
    if (Buffer.byteLength(s) !== b.length || s.includes("\uFFFD")) {
      throw invalidArgument(`${this.what} holds a string that is not valid UTF-8`);
    }
    return s;
  }
  u8(): number {
    this.need(1);
    return this.buf[this.at++] as number;
  }
  u16(): number {
    this.need(2);
    const v = this.buf.readUInt16BE(this.at);
    this.at += 2;
    return v;
  }
  bool(): boolean {
    const v = this.u8();
    if (v > 1) throw invalidArgument(`${this.what} holds a flag that is neither 0 nor 1`);
    return v === 1;
  }
  u64(): number {
    this.need(8);
    const v = this.buf.readBigUInt64BE(this.at);
    this.at += 8;
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw invalidArgument(`${this.what} holds a time beyond 2^53`);
    return Number(v);
  }
  end(): void {
    if (this.at !== this.buf.length) throw invalidArgument(`${this.what} has trailing bytes`);
  }
}
