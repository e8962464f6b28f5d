// gRPC's rich error model: ErrorDetails of a DiscoveryError travel as a google.rpc.Status in the
// `grpc-status-details-bin` trailer (RetryInfo, QuotaFailure, BadRequest, ErrorInfo), which
// client libraries in every language decode. A malformed or oversized trailer from a peer is
// ignored: details help a client, they never decide whether a call failed.
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { type Any, AnySchema, anyPack, anyUnpack, durationFromMs, durationMs } from "@bufbuild/protobuf/wkt";
import type { ErrorDetails } from "../domain/errors.js";
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

/** The google.rpc.Status bytes for a status with `details`. */
export function encodeStatusDetails(code: number, message: string, d: ErrorDetails): Uint8Array {
  const details: Any[] = [];
  if (d.retryAfterMs !== undefined) {
    const retryDelay = durationFromMs(Math.max(0, Math.ceil(d.retryAfterMs)));
    details.push(anyPack(RetryInfoSchema, create(RetryInfoSchema, { retryDelay })));
  }
  if (d.quota?.length) {
    details.push(anyPack(QuotaFailureSchema, create(QuotaFailureSchema, { violations: [...d.quota] })));
  }
  if (d.fields?.length) {
    details.push(anyPack(BadRequestSchema, create(BadRequestSchema, { fieldViolations: [...d.fields] })));
  }
  if (d.reason) {
    const info = create(ErrorInfoSchema, {
      reason: d.reason,
      domain: ERROR_DOMAIN,
      metadata: { ...d.metadata },
    });
    details.push(anyPack(ErrorInfoSchema, info));
  }
  if (d.explanation) details.push(create(AnySchema, { typeUrl: EXPLANATION_TYPE, value: d.explanation }));
  return toBinary(StatusSchema, create(StatusSchema, { code, message, details }));
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
