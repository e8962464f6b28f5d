// The one mapping between domain errors and gRPC status codes. The adapter in grpc.ts turns
// whatever a handler throws into a status through toWireStatus; clients turn statuses back
// into DiscoveryError through fromServiceError and fromStatus.
import { Metadata, type ServiceError, status as Status } from "@grpc/grpc-js";
import {
  clippedWithin,
  DiscoveryError,
  type DiscoveryErrorCode,
  decodeStatusDetails,
  type ErrorDetails,
  encodeStatusDetails,
  INVALID_REQUEST,
  STATUS_DETAILS_KEY,
} from "@mimi/core";
import type { Logger } from "pino";

const STATUS_OF: Record<DiscoveryErrorCode, Status> = {
  invalid_argument: Status.INVALID_ARGUMENT,
  not_found: Status.NOT_FOUND,
  already_exists: Status.ALREADY_EXISTS,
  failed_precondition: Status.FAILED_PRECONDITION,
  not_authoritative: Status.FAILED_PRECONDITION,
  permission_denied: Status.PERMISSION_DENIED,
  unauthenticated: Status.UNAUTHENTICATED,
  not_ready: Status.UNAVAILABLE,
  upstream_unavailable: Status.UNAVAILABLE,
  upstream_failed: Status.UNAVAILABLE,
  store_failure: Status.INTERNAL,
  // Like a DNSSEC-validating resolver's SERVFAIL: the answer exists but cannot be trusted.
  verification_failed: Status.UNAVAILABLE,
  resource_exhausted: Status.RESOURCE_EXHAUSTED,
};

/** The gRPC status an error code is reported with. */
function statusOf(code: DiscoveryErrorCode): Status {
  return STATUS_OF[code];
}

/** A status object grpc-js can send: a code and a message that is safe for the peer to read. */
export interface WireStatus {
  code: Status;
  details: string;
  metadata: Metadata;
}

/**
 * Turns anything thrown inside a handler into a status for the peer.
 * Unknown errors become INTERNAL with a fixed message; their cause goes to the log only,
 * because grpc-js would otherwise copy a raw error's message and numeric code onto the wire.
 */
export function toWireStatus(err: unknown, log: Logger, method: string): WireStatus {
  const metadata = new Metadata();
  const s = peerStatus(err, log, method);
  if (s.errorDetails) {
    let bytes = encodeStatusDetails(s.code, s.details, s.errorDetails);
    // Each text is cut; should many of them together still outgrow the trailers' budget, the
    // details keep what a client acts on (the reason and when to retry) and drop the rest.
    if (Math.ceil(bytes.length / 3) * 4 + encodeURI(s.details).length > MAX_TRAILER_VALUES) {
      const { reason, retryAfterMs, fields } = s.errorDetails;
      bytes = encodeStatusDetails(s.code, s.details, {
        ...(reason !== undefined && { reason }),
        ...(retryAfterMs !== undefined && { retryAfterMs }),
        ...(fields?.[0] && { fields: [fields[0]] }),
      });
    }
    metadata.set(STATUS_DETAILS_KEY, Buffer.from(bytes));
  }
  return { code: s.code, details: s.details, metadata };
}

/**
 * The most the status message (percent-encoded) and the rich details (base64) may take
 * together: under gRPC C-core's 8 KiB soft limit on metadata, with room for the names, the
 * per-entry overhead HPACK counts and a trailers-only reply's other headers.
 */
export const MAX_TRAILER_VALUES = 7_000;

/**
 * `text` with each lone UTF-16 surrogate replaced by U+FFFD, as a UTF-8 encoder writes it. A
 * message that echoes a caller's input cut short (a CSI truncated inside a surrogate pair, before
 * core's `clipped`) can hold one, and grpc-js percent-encodes the status message with encodeURI,
 * which throws on it: uncaught, in the middle of sending the status, which ended the server
 * process (found by test/slow/fuzz.test.ts). Every status message we send goes through here,
 * and is cut to MAX_STATUS_MESSAGE: a message echoing a field of a large request (a 64 KiB id)
 * would outgrow the peer's header limit, which resets the stream instead of telling the status.
 */
export function sendable(text: string): string {
  return clippedWithin(text, MAX_STATUS_MESSAGE, MAX_STATUS_WIRE, "percent-encoded");
}

/** The longest status message sent, in UTF-16 units. */
export const MAX_STATUS_MESSAGE = 2_000;
/**
 * The longest status message sent, percent-encoded as grpc-js sends it (encodeURI: three
 * characters a UTF-8 byte outside plain ASCII). The message also goes, in UTF-8, into the rich
 * details, which are base64-encoded: with a field's description (1,000 bytes at most) the
 * trailers stay under 8 KiB, the size above which gRPC's C core starts to refuse them (its
 * default soft limit), where 2,000 characters of non-ASCII text took about 26 KB.
 */
export const MAX_STATUS_WIRE = 2_400;

/** What the peer is told of `err`: its status, message and rich details (toWireStatus, itemError). */
function peerStatus(
  err: unknown,
  log: Logger,
  method: string,
): { code: Status; details: string; errorDetails?: ErrorDetails } {
  if (err instanceof DiscoveryError) {
    if (err.code === "store_failure") {
      // Storage errors describe our database, not the request: the details stay in the log.
      log.error({ err, method }, "request failed");
      return { code: statusOf(err.code), details: "storage failure; the server log has the cause" };
    }
    log.debug({ code: err.code, method, reason: err.message }, "request refused");
    // A request the caller must fix always says so in machine-readable form: one that names
    // no field is the request as a whole (INVALID_REQUEST).
    const errorDetails =
      err.details ?? (err.code === "invalid_argument" ? { reason: INVALID_REQUEST } : undefined);
    const details = sendable(err.message);
    return { code: statusOf(err.code), details, ...(errorDetails && { errorDetails }) };
  }
  log.error({ err, method }, "unexpected error in handler");
  return { code: Status.INTERNAL, details: "internal error; the server log has the cause" };
}

/** Converts a failure from a gRPC call into a DiscoveryError; UNAVAILABLE and deadline errors become upstream_unavailable. */
export function fromServiceError(err: unknown, what: string): DiscoveryError {
  if (err instanceof DiscoveryError) return err;
  const se = err as Partial<ServiceError>;
  if (typeof se.code === "number") {
    const raw = se.metadata?.get(STATUS_DETAILS_KEY)[0];
    const details = decodeStatusDetails(typeof raw === "string" ? undefined : raw);
    return fromStatus(se.code, se.details || se.message || "no details", what, err, details);
  }
  return new DiscoveryError("upstream_unavailable", `${what}: ${(err as Error)?.message ?? String(err)}`, {
    cause: err,
  });
}

/** A DiscoveryError for a status a peer reported (for a call, or for one item of a stream). */
export function fromStatus(
  code: Status,
  details: string,
  what: string,
  cause?: unknown,
  errorDetails?: ErrorDetails,
): DiscoveryError {
  const transient =
    code === Status.UNAVAILABLE || code === Status.DEADLINE_EXCEEDED || code === Status.CANCELLED;
  return new DiscoveryError(
    transient ? "upstream_unavailable" : codeOfStatus(code),
    `${what}: ${Status[code] ?? code}: ${details}`,
    { cause, remoteStatus: code, ...(errorDetails && { details: errorDetails }) },
  );
}

/** The name of a gRPC status code ("PERMISSION_DENIED"), or its number when unknown. */
export function statusName(code: number): string {
  return Status[code] ?? String(code);
}

function codeOfStatus(code: Status): DiscoveryErrorCode {
  switch (code) {
    case Status.INVALID_ARGUMENT:
      return "invalid_argument";
    case Status.NOT_FOUND:
      return "not_found";
    case Status.ALREADY_EXISTS:
      return "already_exists";
    case Status.FAILED_PRECONDITION:
      return "failed_precondition";
    case Status.PERMISSION_DENIED:
      return "permission_denied";
    case Status.UNAUTHENTICATED:
      return "unauthenticated";
    case Status.RESOURCE_EXHAUSTED:
      return "resource_exhausted";
    default:
      return "upstream_failed";
  }
}

/** The failure of one stream item (ItemError's fields): status, message, retry-after and reason. */
export function itemError(
  err: unknown,
  log: Logger,
  method: string,
): { code: number; message: string; retryAfterMs: bigint; reason: string } {
  const s = peerStatus(err, log, method);
  const d = s.errorDetails;
  const retry = d?.retryAfterMs ?? 0;
  return {
    code: s.code,
    message: s.details,
    retryAfterMs: BigInt(Number.isFinite(retry) && retry > 0 ? Math.ceil(retry) : 0),
    reason: d?.reason ?? "",
  };
}

/** The details an ItemError carries, for the DiscoveryError made of it (fromStatus). */
export function itemErrorDetails(e: { retryAfterMs: bigint; reason: string }): ErrorDetails | undefined {
  if (e.retryAfterMs === 0n && e.reason === "") return undefined;
  return {
    ...(e.retryAfterMs > 0n && { retryAfterMs: Number(e.retryAfterMs) }),
    ...(e.reason !== "" && { reason: e.reason }),
  };
}
