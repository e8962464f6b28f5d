// The byte layout every signed statement shares (mapping records, action statements, contest
// statements, answer seals): an ASCII magic naming kind and version, strings and byte fields as
// a u16 big-endian length and the bytes, integers big-endian. One reader refuses every input
// that another encoding could also produce, so one statement has exactly one encoding.
import { invalidArgument } from "./errors.js";

const MAX_FIELD = 0xffff;

/** Writes a canonical encoding: ASCII magic, u16-length-prefixed fields, big-endian integers. */
export class ByteWriter {
  private chunks: Uint8Array[] = [];
  ascii(s: string): this {
    this.chunks.push(Buffer.from(s, "ascii"));
    return this;
  }
  bytes(b: Uint8Array): this {
    if (b.length > MAX_FIELD) throw invalidArgument("a record field is longer than 65535 bytes");
    const len = Buffer.alloc(2);
    len.writeUInt16BE(b.length);
    this.chunks.push(len, b);
    return this;
  }
  string(s: string): this {
    // Strings the decoder would refuse (lone surrogates, U+FFFD) must not get signed either.
    const b = Buffer.from(s, "utf8");
    if (s.includes("\uFFFD") || b.toString("utf8") !== s) {
      throw invalidArgument("a record string holds a lone surrogate or U+FFFD");
    }
    return this.bytes(b);
  }
  u8(n: number): this {
    this.chunks.push(Uint8Array.of(n));
    return this;
  }
  u16(n: number): this {
    if (!Number.isInteger(n) || n < 0 || n > MAX_FIELD) throw invalidArgument("a count exceeds 65535");
    const b = Buffer.alloc(2);
    b.writeUInt16BE(n);
    this.chunks.push(b);
    return this;
  }
  u64(n: number): this {
    if (!Number.isSafeInteger(n) || n < 0)
      throw invalidArgument("a record time must be a non-negative integer");
    const b = Buffer.alloc(8);
    b.writeBigUInt64BE(BigInt(n));
    this.chunks.push(b);
    return this;
  }
  done(): Uint8Array {
    return new Uint8Array(Buffer.concat(this.chunks));
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
