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

/** A failure with a code from the closed set and a message a person can act on. */
export class DiscoveryError extends Error {
  override readonly name = "DiscoveryError";
  /** The gRPC status code a peer reported, when the error came from one. */
  readonly remoteStatus: number | undefined;
  /** Machine-readable details, sent to the peer or received from it. */
  readonly details: ErrorDetails | undefined;

  constructor(
    readonly code: DiscoveryErrorCode,
    message: string,
    options?: { cause?: unknown; remoteStatus?: number; details?: ErrorDetails },
  ) {
    super(message, options);
    this.remoteStatus = options?.remoteStatus;
    this.details = options?.details;
  }
}

/** Shorthand for throwing INVALID_ARGUMENT with a reason. */
export function invalidArgument(message: string): DiscoveryError {
  return new DiscoveryError("invalid_argument", message);
}
