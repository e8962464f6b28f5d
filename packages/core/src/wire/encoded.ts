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
  const answer = new BinaryWriter();
  answer.raw(answerWithoutTtl);
  if (ttlSeconds !== 0) answer.tag(ANSWER_TTL_SECONDS, WireType.Varint).uint32(ttlSeconds);
  const w = new BinaryWriter();
  w.tag(RESOLVE_RESPONSE_ANSWER, WireType.LengthDelimited).bytes(answer.finish());
  if (stale) w.tag(RESOLVE_RESPONSE_STALE, WireType.Varint).bool(true);
  return w.finish() as Encoded<M>;
}

// Field numbers of ResolveStreamResponse.
const STREAM_REQUEST_ID = 1;
const STREAM_RESPONSE = 2;

/** A ResolveStreamResponse carrying an encoded ResolveResponse. */
export function encodeResolveStreamItem<M>(requestId: bigint, resolveResponse: Uint8Array): Encoded<M> {
  const w = new BinaryWriter();
  if (requestId !== 0n) w.tag(STREAM_REQUEST_ID, WireType.Varint).uint64(requestId);
  w.tag(STREAM_RESPONSE, WireType.LengthDelimited).bytes(resolveResponse);
  return w.finish() as Encoded<M>;
}
