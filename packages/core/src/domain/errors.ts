// The closed set of domain errors. Every failure a component reports to a peer is a
// DiscoveryError with one of these codes; rpc/status.ts maps each code to a gRPC status.

/** Every failure a discovery component reports to a peer. */
export type DiscoveryErrorCode =
  | "invalid_argument"
  | "not_found"
  | "already_exists"
  | "failed_precondition"
  | "not_authoritative"
  | "permission_denied"
  | "unauthenticated"
  | "not_ready"
  | "upstream_unavailable"
  | "upstream_failed"
  | "store_failure"
  | "verification_failed"
  | "resource_exhausted";

/**
 * What a client can act on without parsing the message: sent as gRPC's rich error model
 * (google.rpc.Status in the grpc-status-details-bin trailer; rpc/status.ts).
 */
export interface ErrorDetails {
  /** When trying again can succeed (RetryInfo). */
  readonly retryAfterMs?: number;
  /** The budgets the call ran out of (QuotaFailure). */
  readonly quota?: readonly { readonly subject: string; readonly description: string }[];
  /** The request fields at fault (BadRequest). */
  readonly fields?: readonly { readonly field: string; readonly description: string }[];
  /** A stable UPPER_SNAKE_CASE reason and facts about it (ErrorInfo). */
  readonly reason?: string;
  readonly metadata?: Readonly<Record<string, string>>;
  /** An encoded mimi.discovery.v1.Explanation: how a lookup asked to explain itself failed. */
  readonly explanation?: Uint8Array;
}

/**
 * Codes of the refusals a server may make by the thousand a second (RESOURCE_EXHAUSTED, and the
 * UNAVAILABLE of an upstream that did not answer, under overload; INVALID_ARGUMENT, under a
 * flood of bad requests): their errors carry no stack. They are expected outcomes whose message
 * and details say all there is (the server logs them with their message only), and capturing a
 * stack (through async frames) was 6% of an overloaded resolver's CPU, as much as encoding the
 * refusal's status.
 */
const STACKLESS: ReadonlySet<DiscoveryErrorCode> = new Set([
  "resource_exhausted",
  "upstream_unavailable",
  "invalid_argument",
]);

/** A failure with a code from the closed set and a message a person can act on. */
export class DiscoveryError extends Error {
  override readonly name: string;
  readonly code: DiscoveryErrorCode;
  /** The gRPC status code a peer reported, when the error came from one. */
  readonly remoteStatus: number | undefined;
  /** Machine-readable details, sent to the peer or received from it. */
  readonly details: ErrorDetails | undefined;

  constructor(
    code: DiscoveryErrorCode,
    message: string,
    options?: { cause?: unknown; remoteStatus?: number; details?: ErrorDetails },
  ) {
    const stackFrames = Error.stackTraceLimit;
    if (STACKLESS.has(code)) Error.stackTraceLimit = 0;
    try {
      super(message, options);
    } finally {
      Error.stackTraceLimit = stackFrames;
    }
    this.name = "DiscoveryError";
    this.code = code;
    this.remoteStatus = options?.remoteStatus;
    this.details = options?.details;
  }
}

/**
 * Shorthand for throwing INVALID_ARGUMENT with a reason. `field` names the request field at
 * fault (its path, as google.rpc.BadRequest names it: "csi", "options.tag"); the status then
 * carries it with `reason` and `metadata` (ErrorInfo), so a client can tell which field to fix.
 */
export function invalidArgument(
  message: string,
  field?: string,
  reason = INVALID_FIELD,
  metadata?: Readonly<Record<string, string>>,
): DiscoveryError {
  if (field === undefined) return new DiscoveryError("invalid_argument", message);
  return new DiscoveryError("invalid_argument", message, {
    details: { reason, fields: [{ field, description: message }], ...(metadata && { metadata }) },
  });
}

/**
 * `text` cut to at most `max` UTF-16 units, with "..." when cut, never inside a surrogate pair:
 * for messages that echo a caller's input.
 */
export function clipped(text: string, max: number): string {
  if (text.length <= max) return text;
  const end = /[\uD800-\uDBFF]/.test(text.charAt(max - 1)) ? max - 1 : max;
  return `${text.slice(0, end)}...`;
}

/** How a text is measured on the wire, a code point at a time. */
export type WireSize = "utf8" | "percent-encoded";

/** Characters encodeURI leaves as they are (grpc-js percent-encodes status messages with it). */
const URI_PLAIN = /[A-Za-z0-9;,/?:@&=+$\-_.!~*'()#]/;

/** The size of one code point on the wire. */
function codePointSize(cp: number, ch: string, how: WireSize): number {
  const bytes = cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
  if (how === "utf8") return bytes;
  return bytes === 1 && URI_PLAIN.test(ch) ? 1 : 3 * bytes;
}

/**
 * `text` cut as `clipped` cuts it, to at most `maxUnits` UTF-16 units and then to as few more as
 * keep its size on the wire (`how`: UTF-8 bytes, or characters once percent-encoded as grpc-js
 * sends a status message) within `maxSize`, "..." included; lone surrogates become U+FFFD. A
 * message of non-ASCII characters takes three or more bytes a character on the wire, and a
 * peer's header limit counts bytes. One pass over the text.
 */
export function clippedWithin(text: string, maxUnits: number, maxSize: number, how: WireSize): string {
  const t = clipped(text, maxUnits).toWellFormed();
  let size = 0;
  // Where the text may be cut with "..." still within maxSize.
  let cut = 0;
  for (let i = 0; i < t.length; ) {
    const cp = t.codePointAt(i) as number;
    const width = cp > 0xffff ? 2 : 1;
    size += codePointSize(cp, t.slice(i, i + width), how);
    i += width;
    if (size + 3 <= maxSize) cut = i;
  }
  if (size <= maxSize) return t;
  return `${t.slice(0, cut)}...`;
}

/** ErrorInfo's reason of an INVALID_ARGUMENT that names its field, when nothing more specific says why. */
export const INVALID_FIELD = "INVALID_FIELD";
/**
 * ErrorInfo's reason of an INVALID_ARGUMENT that names no field (the request as a whole, such as
 * a message sent out of turn, or a check of a nested or signed field); the server adapter adds
 * it to those that carry no details.
 */
export const INVALID_REQUEST = "INVALID_REQUEST";
