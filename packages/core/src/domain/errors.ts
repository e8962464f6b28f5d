// The closed set of domain errors. Every failure a component reports to a peer is a
// DiscoveryError with one of these codes; wire/status.ts maps each code to a gRPC status.

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
  | "verification_failed";

/** A failure with a code from the closed set and a message a person can act on. */
export class DiscoveryError extends Error {
  override readonly name = "DiscoveryError";
  /** The gRPC status code a peer reported, when the error came from one. */
  readonly remoteStatus: number | undefined;

  constructor(
    readonly code: DiscoveryErrorCode,
    message: string,
    options?: { cause?: unknown; remoteStatus?: number },
  ) {
    super(message, options);
    this.remoteStatus = options?.remoteStatus;
  }
}

/** Shorthand for throwing INVALID_ARGUMENT with a reason. */
export function invalidArgument(message: string): DiscoveryError {
  return new DiscoveryError("invalid_argument", message);
}
