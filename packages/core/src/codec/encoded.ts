// Pre-encoded responses for the resolver's cache-hit path. A cached answer is serialized once
// without its TTL; each hit appends the remaining TTL and the response framing. Proto3 readers
// accept fields in any order, so the bytes decode exactly like the message built field by field.
// Also the root's registry snapshot, encoded once per serial for every caller.
import { create, toBinary } from "@bufbuild/protobuf";
import { BinaryReader, BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { DEFAULT_PARAMS, type LookupOutcome } from "../domain/answer.js";
import { shortLivedBytes } from "../domain/canonical-bytes.js";
import type { RegistryData } from "../domain/registry.js";
import { AnswerSchema, RegistrySnapshotSchema } from "../gen/generated/mimi/discovery/v1/common_pb.js";
import {
  type GetSnapshotResponse,
  GetSnapshotResponseSchema,
  type WatchRegistryResponse,
} from "../gen/generated/mimi/discovery/v1/root_pb.js";
import { handEncodable, varintSize, writeAnswerWithoutTtl } from "./answer-encoding.js";
import { answerToProto, snapshotToProto } from "./convert.js";

/** Bytes that are already the wire form of a message of type M. */
export type Encoded<M> = Uint8Array & { readonly __encodedMessage?: M };

// Field numbers, fixed by common.proto and resolver.proto.
const ANSWER_TTL_SECONDS = 4;
const RESOLVE_RESPONSE_ANSWER = 1;
const RESOLVE_RESPONSE_STALE = 2;

/**
 * The Answer for default parameters (verbose, no filter) without ttl_seconds, for reuse across
 * hits; `shortLived` for bytes copied into a response at once (writeAnswerWithoutTtl).
 */
export function encodeAnswerWithoutTtl(
  outcome: LookupOutcome,
  indexOf: (mspId: string) => number | undefined,
  shortLived = false,
): Uint8Array {
  // By hand (answer-encoding.ts), but for times no varint of ours takes (negative or past 2^53).
  if (handEncodable(outcome)) return writeAnswerWithoutTtl(outcome, indexOf, shortLived);
  return toBinary(AnswerSchema, create(AnswerSchema, answerToProto(outcome, DEFAULT_PARAMS, indexOf, 0)));
}

/** A ResolveResponse from an answer encoded without TTL, the TTL to give, and the stale flag. */
export function encodeResolveResponse<M>(
  answerWithoutTtl: Uint8Array,
  ttlSeconds: number,
  stale: boolean,
): Encoded<M> {
  // Written by hand into one buffer of the exact size: protobuf-es's BinaryWriter keeps chunk
  // lists and copies the answer twice, about 13 us a hit against 1 here (the hit path's cost).
  const size = resolveResponseSize(answerWithoutTtl, ttlSeconds, stale);
  // A unary reply: grpc-js copies it into its frame as soon as it is sent.
  const out = shortLivedBytes(size);
  return filled(out, writeResolveResponse(out, 0, answerWithoutTtl, ttlSeconds, stale)) as Encoded<M>;
}

/** `out`, checked to have been written to its end (a pooled buffer's other bytes are another's). */
function filled(out: Uint8Array, end: number): Uint8Array {
  if (end !== out.length) throw new Error(`encoder wrote ${end} of ${out.length} bytes`);
  return out;
}

/** Length of the Answer once its ttl_seconds field (absent when 0) is appended. */
function answerLengthWithTtl(answerWithoutTtl: Uint8Array, ttlSeconds: number): number {
  return answerWithoutTtl.length + (ttlSeconds !== 0 ? 1 + varintSize(ttlSeconds) : 0);
}

/** Length of the ResolveResponse that writeResolveResponse writes. */
function resolveResponseSize(answerWithoutTtl: Uint8Array, ttlSeconds: number, stale: boolean): number {
  const answerLength = answerLengthWithTtl(answerWithoutTtl, ttlSeconds);
  return 1 + varintSize(answerLength) + answerLength + (stale ? 2 : 0);
}

/** Writes the ResolveResponse at `at`; returns the position after it. */
function writeResolveResponse(
  out: Uint8Array,
  at: number,
  answerWithoutTtl: Uint8Array,
  ttlSeconds: number,
  stale: boolean,
): number {
  const answerLength = answerLengthWithTtl(answerWithoutTtl, ttlSeconds);
  out[at++] = (RESOLVE_RESPONSE_ANSWER << 3) | 2;
  at = writeVarint(out, at, answerLength);
  out.set(answerWithoutTtl, at);
  at += answerWithoutTtl.length;
  if (ttlSeconds !== 0) {
    out[at++] = (ANSWER_TTL_SECONDS << 3) | 0;
    at = writeVarint(out, at, ttlSeconds);
  }
  if (stale) {
    out[at++] = (RESOLVE_RESPONSE_STALE << 3) | 0;
    out[at++] = 1;
  }
  return at;
}

/** Writes `n` (0 <= n < 2^53) as a varint at `at`; returns the position after it. */
function writeVarint(out: Uint8Array, at: number, n: number): number {
  while (n >= 0x80) {
    out[at++] = (n % 128) | 0x80;
    n = Math.floor(n / 128);
  }
  out[at++] = n;
  return at;
}

// Field numbers of ResolveStreamResponse.
const STREAM_REQUEST_ID = 1;
const STREAM_RESPONSE = 2;

/**
 * Where a stream's item bytes come from: `size` zeroed bytes, which stay the item's while it
 * waits in the stream's write queue. `ownBuffer` gives each a typed array of its own;
 * `streamItemSlab` cuts them from chunks kept for one stream.
 */
export type ItemBytes = (size: number) => Uint8Array;

export const ownBuffer: ItemBytes = (size) => new Uint8Array(size);

/** Chunks a stream's items are cut from (streamItemSlab): Node's pool size. */
const SLAB_CHUNK_BYTES = 8_192;

/**
 * Item buffers for one stream that writes each item as it is cut (the resolver's fast path,
 * rpc stream-intake.ts), cut in turn from zeroed chunks of its own: one typed array (one backing store
 * to allocate, and for the collector to sweep) for every ten or so items, where a typed array
 * per item cost 1.1 µs of CPU against 0.2 (in-process, 700-byte items, 2026-12-07). Unlike slices
 * of Node's shared pool (shortLivedBytes), a chunk holds this stream's items only, in the order
 * they wait in its queue, so what the queue keeps alive is its items and at most one chunk more,
 * not a pool per item; and a chunk is zeroed, so a byte an encoder left unwritten is a zero,
 * never another message's. Not for a stream whose items are cut in another order than they are
 * written (the DP's LookupStream cuts each as its seal is signed and writes them in the order
 * asked): a late item would keep its whole chunk alive. Items over half a chunk get buffers of
 * their own. The stream holds at most one chunk while it is open.
 */
export function streamItemSlab(): ItemBytes {
  let chunk = new Uint8Array(0);
  let at = 0;
  return (size) => {
    if (size > SLAB_CHUNK_BYTES / 2) return new Uint8Array(size);
    if (at + size > chunk.length) {
      chunk = new Uint8Array(SLAB_CHUNK_BYTES);
      at = 0;
    }
    at += size;
    return chunk.subarray(at - size, at);
  };
}

/** A ResolveStreamResponse carrying an encoded ResolveResponse, in bytes from `bytes`. */
export function encodeResolveStreamItem<M>(
  requestId: bigint | number,
  resolveResponse: Uint8Array,
  bytes: ItemBytes = ownBuffer,
): Encoded<M> {
  // By hand, as encodeResolveResponse. A request id beyond 2^53 (a client's choice) takes
  // protobuf-es's 64-bit writer.
  if (typeof requestId === "bigint" && (requestId < 0n || requestId > BigInt(Number.MAX_SAFE_INTEGER))) {
    const w = new BinaryWriter();
    if (requestId !== 0n) w.tag(STREAM_REQUEST_ID, WireType.Varint).uint64(requestId);
    w.tag(STREAM_RESPONSE, WireType.LengthDelimited).bytes(resolveResponse);
    return w.finish() as Encoded<M>;
  }
  // Not from the shared pool: a stream item may wait in the stream's write queue (ItemBytes).
  const out = bytes(streamItemHeadSize(Number(requestId), resolveResponse.length) + resolveResponse.length);
  const at = writeStreamItemHead(out, Number(requestId), resolveResponse.length);
  out.set(resolveResponse, at);
  return filled(out, at + resolveResponse.length) as Encoded<M>;
}

/**
 * A ResolveStreamResponse for a cache hit, written in one buffer: what encodeResolveStreamItem
 * of encodeResolveResponse's bytes gives, without making those bytes first (the streamed hit
 * path). `requestId` below 2^53, as readSimpleRequest reads it.
 */
export function encodeResolveStreamHit<M>(
  requestId: number,
  answerWithoutTtl: Uint8Array,
  ttlSeconds: number,
  stale: boolean,
  bytes: ItemBytes = ownBuffer,
): Encoded<M> {
  // Beyond 2^53 a number's varint would be wrong, not refused: say so. readSimpleRequest's ids
  // never are; were one, the fast path would decline (having counted the hit) and the full path
  // answer.
  if (!Number.isSafeInteger(requestId) || requestId < 0) {
    throw new RangeError(`a streamed hit's request id must be a whole number below 2^53, not ${requestId}`);
  }
  const size = resolveResponseSize(answerWithoutTtl, ttlSeconds, stale);
  const out = bytes(streamItemHeadSize(requestId, size) + size); // not from the shared pool: ItemBytes
  const at = writeStreamItemHead(out, requestId, size);
  return filled(out, writeResolveResponse(out, at, answerWithoutTtl, ttlSeconds, stale)) as Encoded<M>;
}

/** Bytes of a stream item before its ResolveResponse: the request id (when not 0) and the field's tag and length. */
function streamItemHeadSize(id: number, responseLength: number): number {
  return (id !== 0 ? 1 + varintSize(id) : 0) + 1 + varintSize(responseLength);
}

/** Writes a stream item's head (streamItemHeadSize); returns where its ResolveResponse goes. */
function writeStreamItemHead(out: Uint8Array, id: number, responseLength: number): number {
  let at = 0;
  if (id !== 0) {
    out[at++] = (STREAM_REQUEST_ID << 3) | 0;
    at = writeVarint(out, at, id);
  }
  out[at++] = (STREAM_RESPONSE << 3) | 2;
  return writeVarint(out, at, responseLength);
}

/** A request of the simple shape the cache-hit path answers without decoding it (readSimpleRequest). */
export interface SimpleRequest {
  /** The request id (0 when absent). */
  readonly id: number;
  /** The CSI text (ASCII only: other CSIs take the full decoder). */
  readonly csi: string;
}

/** Longest CSI the simple reader takes (parseCsi's limit); longer ones take the full decoder. */
const MAX_SIMPLE_CSI_BYTES = 512;

/**
 * Reads a request that holds only a CSI string (field `csiField`) and, when `idField` is given,
 * before it an optional request id below 2^53 (varint field `idField`): ResolveRequest and
 * ResolveStreamRequest as clients send them for default parameters. Anything else (options,
 * explain, unknown fields, other field orders, a long or non-ASCII CSI) gives undefined, and the request
 * takes the full decoder; so this reader only ever answers requests whose decoded form has
 * default values in every other field.
 */
export function readSimpleRequest(
  bytes: Uint8Array,
  csiField: number,
  idField?: number,
): SimpleRequest | undefined {
  let at = 0;
  let id = 0;
  if (idField !== undefined && bytes[0] === idField << 3) {
    let shift = 1;
    at = 1;
    for (;;) {
      const b = bytes[at++];
      // Seven bytes at most: 49 bits, below 2^53.
      if (b === undefined || shift > 2 ** 42) return undefined;
      id += (b & 0x7f) * shift;
      shift *= 128;
      if (b < 0x80) break;
    }
  }
  if (bytes[at++] !== ((csiField << 3) | 2)) return undefined;
  let length = bytes[at++];
  if (length === undefined) return undefined;
  if (length >= 0x80) {
    const high = bytes[at++];
    if (high === undefined || high >= 0x80) return undefined;
    length = (length & 0x7f) + high * 128;
  }
  if (length > MAX_SIMPLE_CSI_BYTES || at + length !== bytes.length) return undefined;
  // ASCII only: bytes read one to a character then mean what UTF-8 means. A canonical CSI may
  // hold other characters (an email's local part), and UTF-8 read as Latin-1 could spell one
  // of them; such CSIs, and bytes that are not UTF-8 at all, take the full decoder.
  for (let i = at; i < bytes.length; i++) if ((bytes[i] as number) >= 0x80) return undefined;
  const buffer =
    bytes instanceof Buffer ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return { id, csi: buffer.toString("latin1", at, at + length) };
}

/**
 * The value of varint field `field` (the last one, as a decoder takes it) of a message that
 * may not decode, e.g. one whose string is not UTF-8: read by walking the fields' wire format,
 * decoding none of them. Undefined when the field is absent or the wire format itself breaks.
 */
export function readVarintField(bytes: Uint8Array, field: number): bigint | undefined {
  try {
    const r = new BinaryReader(bytes);
    let found: bigint | undefined;
    while (r.pos < r.len) {
      const [no, type] = r.tag();
      if (no === field && type === WireType.Varint) found = BigInt(r.uint64());
      else r.skip(type, no);
    }
    return found;
  } catch {
    return undefined;
  }
}

/**
 * A LookupResponse (a DP's answer to a resolver) from an answer encoded without TTL: the same
 * layout as a ResolveResponse that is not stale (the Answer is field 1 of both).
 */
export function encodeLookupResponse<M>(answerWithoutTtl: Uint8Array, ttlSeconds: number): Encoded<M> {
  return encodeResolveResponse<M>(answerWithoutTtl, ttlSeconds, false);
}

/** A LookupStreamResponse carrying an encoded LookupResponse: ResolveStreamResponse's layout. */
export function encodeLookupStreamItem<M>(requestId: bigint, lookupResponse: Uint8Array): Encoded<M> {
  return encodeResolveStreamItem<M>(requestId, lookupResponse);
}

/** A registry snapshot as the root's GetSnapshot and WatchRegistry (its snapshot event) send it. */
export interface EncodedSnapshot {
  readonly getSnapshot: Encoded<GetSnapshotResponse>;
  readonly watchRegistry: Encoded<WatchRegistryResponse>;
}

/**
 * Encodes both responses that carry the registry snapshot `s`, for reuse by every call. They
 * are one encoding: GetSnapshotResponse.snapshot and WatchRegistryResponse's snapshot event
 * are both field 1, a RegistrySnapshot.
 */
export function encodeSnapshotResponses(s: RegistryData): EncodedSnapshot {
  const bytes = toBinary(
    GetSnapshotResponseSchema,
    create(GetSnapshotResponseSchema, { snapshot: create(RegistrySnapshotSchema, snapshotToProto(s)) }),
  );
  return { getSnapshot: bytes, watchRegistry: bytes };
}
