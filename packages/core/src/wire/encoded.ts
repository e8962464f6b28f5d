// Pre-encoded responses for the resolver's cache-hit path. A cached answer is serialized once
// without its TTL; each hit appends the remaining TTL and the response framing. Proto3 readers
// accept fields in any order, so the bytes decode exactly like the message built field by field.
import { create, toBinary } from "@bufbuild/protobuf";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { DEFAULT_PARAMS, type LookupOutcome } from "../domain/answer.js";
import { AnswerSchema } from "../gen/generated/mimi/discovery/v1/common_pb.js";
import { answerToProto } from "./convert.js";

/** Bytes that are already the wire form of a message of type M. */
export type Encoded<M> = Uint8Array & { readonly __encodedMessage?: M };

// Field numbers, fixed by common.proto and resolver.proto.
const ANSWER_TTL_SECONDS = 4;
const RESOLVE_RESPONSE_ANSWER = 1;
const RESOLVE_RESPONSE_STALE = 2;

/** The Answer for default parameters (verbose, no filter) without ttl_seconds, for reuse across hits. */
export function encodeAnswerWithoutTtl(
  outcome: LookupOutcome,
  indexOf: (mspId: string) => number | undefined,
): Uint8Array {
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
  const ttl = ttlSeconds !== 0 ? 1 + varintSize(ttlSeconds) : 0;
  const answerLength = answerWithoutTtl.length + ttl;
  const out = new Uint8Array(1 + varintSize(answerLength) + answerLength + (stale ? 2 : 0));
  let at = 0;
  out[at++] = (RESOLVE_RESPONSE_ANSWER << 3) | 2;
  at = writeVarint(out, at, answerLength);
  out.set(answerWithoutTtl, at);
  at += answerWithoutTtl.length;
  if (ttl) {
    out[at++] = (ANSWER_TTL_SECONDS << 3) | 0;
    at = writeVarint(out, at, ttlSeconds);
  }
  if (stale) {
    out[at++] = (RESOLVE_RESPONSE_STALE << 3) | 0;
    out[at++] = 1;
  }
  return out as Encoded<M>;
}

/** Bytes of a varint of `n` (0 <= n < 2^53). */
function varintSize(n: number): number {
  let size = 1;
  while (n >= 0x80) {
    n = Math.floor(n / 128);
    size++;
  }
  return size;
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

/** A ResolveStreamResponse carrying an encoded ResolveResponse. */
export function encodeResolveStreamItem<M>(requestId: bigint, resolveResponse: Uint8Array): Encoded<M> {
  // By hand, as encodeResolveResponse. A request id beyond 2^53 (a client's choice) takes
  // protobuf-es's 64-bit writer.
  if (requestId < 0n || requestId > BigInt(Number.MAX_SAFE_INTEGER)) {
    const w = new BinaryWriter();
    if (requestId !== 0n) w.tag(STREAM_REQUEST_ID, WireType.Varint).uint64(requestId);
    w.tag(STREAM_RESPONSE, WireType.LengthDelimited).bytes(resolveResponse);
    return w.finish() as Encoded<M>;
  }
  const id = Number(requestId);
  const idSize = id !== 0 ? 1 + varintSize(id) : 0;
  const out = new Uint8Array(idSize + 1 + varintSize(resolveResponse.length) + resolveResponse.length);
  let at = 0;
  if (id !== 0) {
    out[at++] = (STREAM_REQUEST_ID << 3) | 0;
    at = writeVarint(out, at, id);
  }
  out[at++] = (STREAM_RESPONSE << 3) | 2;
  at = writeVarint(out, at, resolveResponse.length);
  out.set(resolveResponse, at);
  return out as Encoded<M>;
}
