// gRPC's rich error model: ErrorDetails of a DiscoveryError travel as a google.rpc.Status in the
// `grpc-status-details-bin` trailer (RetryInfo, QuotaFailure, BadRequest, ErrorInfo), which
// client libraries in every language decode. A malformed or oversized trailer from a peer is
// ignored: details help a client, they never decide whether a call failed.
import { fromBinary } from "@bufbuild/protobuf";
import { BinaryWriter } from "@bufbuild/protobuf/wire";
import { anyUnpack, durationMs } from "@bufbuild/protobuf/wkt";
import { clippedWithin, type ErrorDetails } from "../domain/errors.js";
import {
  BadRequestSchema,
  ErrorInfoSchema,
  QuotaFailureSchema,
  RetryInfoSchema,
} from "../gen/generated/google/rpc/error_details_pb.js";
import { StatusSchema } from "../gen/generated/google/rpc/status_pb.js";

/** The trailer key of the rich error model. */
export const STATUS_DETAILS_KEY = "grpc-status-details-bin";
/** The domain named in ErrorInfo. */
export const ERROR_DOMAIN = "discovery.mimi";
/** The type of an Explanation (resolver.proto) among the details. */
const EXPLANATION_TYPE = "type.googleapis.com/mimi.discovery.v1.Explanation";
/** Larger trailers from a peer are not decoded. */
const MAX_DETAILS_BYTES = 16 * 1024;

// Field tags (number << 3 | wire type 2 or 0) of google.rpc.Status, Any, RetryInfo, Duration,
// QuotaFailure(.Violation), BadRequest(.FieldViolation) and ErrorInfo (with its map entries).
const STATUS_CODE = (1 << 3) | 0;
const STATUS_MESSAGE = (2 << 3) | 2;
const STATUS_DETAIL = (3 << 3) | 2;
const ANY_TYPE = (1 << 3) | 2;
const ANY_VALUE = (2 << 3) | 2;
const FIRST_MESSAGE = (1 << 3) | 2; // RetryInfo.retry_delay, QuotaFailure.violations, BadRequest.field_violations
const DURATION_SECONDS = (1 << 3) | 0;
const DURATION_NANOS = (2 << 3) | 0;
const PAIR_FIRST = (1 << 3) | 2; // Violation.subject, FieldViolation.field, ErrorInfo.reason, a map entry's key
const PAIR_SECOND = (2 << 3) | 2; // Violation.description, FieldViolation.description, ErrorInfo.domain, a map entry's value
const INFO_METADATA = (3 << 3) | 2;
const TYPE_PREFIX = "type.googleapis.com/google.rpc.";

/**
 * The longest text of a detail (a field's description, a metadata value): this many UTF-16
 * units, and this many UTF-8 bytes before its "..." when cut.
 */
const MAX_DETAIL_TEXT = 1_000;

/**
 * The google.rpc.Status bytes for a status with `details`. Written field by field, in
 * field-number order with proto3 defaults left out, as protobuf-es writes these messages
 * (error-details.test.ts compares the bytes with its create/anyPack/toBinary): every refusal
 * carries them, and reflection took about 6 us a status here.
 */
export function encodeStatusDetails(code: number, message: string, d: ErrorDetails): Uint8Array {
  const w = new BinaryWriter();
  if (code !== 0) w.uint32(STATUS_CODE).int32(code);
  if (message) w.uint32(STATUS_MESSAGE).string(message);
  const detail = (type: string, value: () => void) => {
    w.uint32(STATUS_DETAIL).fork().uint32(ANY_TYPE).string(type);
    w.uint32(ANY_VALUE).fork();
    value();
    w.join().join();
  };
  // Texts may echo a caller's input (a field's description repeats the message): each is cut,
  // so the trailer stays within every peer's header limit, as the message is (rpc's sendable).
  const text = (t: string) => clippedWithin(t, MAX_DETAIL_TEXT, MAX_DETAIL_TEXT + 3, "utf8");
  const pair = (first: string, second: string) => {
    if (first) w.uint32(PAIR_FIRST).string(text(first));
    if (second) w.uint32(PAIR_SECOND).string(text(second));
  };
  if (d.retryAfterMs !== undefined) {
    const ms = Math.max(0, Math.ceil(d.retryAfterMs));
    const seconds = Math.floor(ms / 1_000);
    const nanos = (ms % 1_000) * 1_000_000;
    detail(`${TYPE_PREFIX}RetryInfo`, () => {
      w.uint32(FIRST_MESSAGE).fork();
      if (seconds !== 0) w.uint32(DURATION_SECONDS).int64(seconds);
      if (nanos !== 0) w.uint32(DURATION_NANOS).int32(nanos);
      w.join();
    });
  }
  for (const [type, list] of [
    ["QuotaFailure", d.quota?.map((q) => [q.subject, q.description] as const)],
    ["BadRequest", d.fields?.map((f) => [f.field, f.description] as const)],
  ] as const) {
    if (!list?.length) continue;
    detail(`${TYPE_PREFIX}${type}`, () => {
      for (const [first, second] of list) {
        w.uint32(FIRST_MESSAGE).fork();
        pair(first, second);
        w.join();
      }
    });
  }
  if (d.reason) {
    const reason = d.reason;
    detail(`${TYPE_PREFIX}ErrorInfo`, () => {
      pair(reason, ERROR_DOMAIN);
      // Map entries keep both fields, empty or not, as protobuf-es writes them.
      for (const [key, value] of Object.entries(d.metadata ?? {})) {
        w.uint32(INFO_METADATA)
          .fork()
          .uint32(PAIR_FIRST)
          .string(text(key))
          .uint32(PAIR_SECOND)
          .string(text(value))
          .join();
      }
    });
  }
  if (d.explanation) {
    const explanation = d.explanation;
    w.uint32(STATUS_DETAIL).fork().uint32(ANY_TYPE).string(EXPLANATION_TYPE);
    if (explanation.length > 0) w.uint32(ANY_VALUE).bytes(explanation);
    w.join();
  }
  return w.finish();
}

/** The details in a peer's google.rpc.Status bytes; undefined when absent or unreadable. */
export function decodeStatusDetails(bytes: Uint8Array | undefined): ErrorDetails | undefined {
  if (!bytes || bytes.length === 0 || bytes.length > MAX_DETAILS_BYTES) return undefined;
  let status: ReturnType<typeof fromBinary<typeof StatusSchema>>;
  try {
    status = fromBinary(StatusSchema, bytes);
  } catch {
    return undefined;
  }
  let out: { -readonly [K in keyof ErrorDetails]: ErrorDetails[K] } = {};
  for (const any of status.details) {
    if (any.typeUrl === EXPLANATION_TYPE) {
      out.explanation = any.value;
      continue;
    }
    try {
      const retry = anyUnpack(any, RetryInfoSchema);
      if (retry?.retryDelay) out.retryAfterMs = durationMs(retry.retryDelay);
      const quota = anyUnpack(any, QuotaFailureSchema);
      if (quota) out.quota = quota.violations.map(({ subject, description }) => ({ subject, description }));
      const bad = anyUnpack(any, BadRequestSchema);
      if (bad) out.fields = bad.fieldViolations.map(({ field, description }) => ({ field, description }));
      const info = anyUnpack(any, ErrorInfoSchema);
      if (info) out = { ...out, reason: info.reason, metadata: { ...info.metadata } };
    } catch {
      // One unreadable detail does not hide the others.
    }
  }
  return Object.keys(out).length > 0 ? out : undefined;
}
