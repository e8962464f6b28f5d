// The refusals a caller hears (RESOURCE_EXHAUSTED): a DP's, restated in the resolver's words,
// and which of them, and of the resolver's own, are the caller's doing.
import { DiscoveryError } from "@mimi/core";
import { statusName } from "@mimi/rpc";
import { UPSTREAM_SATURATED } from "./adaptive-gate.js";
import { OVERLOADED } from "./call-bounds.js";

/** Why a DP may refuse a lookup (lookup-limits.ts at the DP); anything else reads DP_LIMIT. */
const DP_REASONS = new Set([
  "DP_CAPACITY",
  "DP_RESOLVER_LIMIT",
  "DP_CONTEXTS_PER_RESOLVER",
  "DP_CONTEXT_LIMIT",
  "ENUMERATION_SUSPECTED",
]);
/** Refusals of one endpoint's own capacity: the next endpoint is asked. */
export const ENDPOINT_REASONS = new Set(["DP_CAPACITY", "DP_RESOLVER_LIMIT"]);
/** Reasons that concern the caller's rate-limit context, not the resolver as a whole. */
const CALLER_REASONS = new Set(["DP_CONTEXT_LIMIT", "ENUMERATION_SUSPECTED"]);
/**
 * Refusals for capacity: the resolver's event loop, a DP's window or published rate, a DP's
 * limits on this resolver as a whole. Nobody's doing, and nothing a caller can change.
 */
const CAPACITY_REASONS = new Set([
  OVERLOADED,
  UPSTREAM_SATURATED,
  ...ENDPOINT_REASONS,
  "DP_CONTEXTS_PER_RESOLVER",
]);

/**
 * Whether a RESOURCE_EXHAUSTED is one a caller earns: its budgets, an enumeration block, a DP's
 * refusal of its rate-limit context, and whatever a DP did not say was capacity. Only these
 * count towards slowing a caller that keeps being refused (server.ts).
 */
export function earnedRefusal(err: unknown): err is DiscoveryError {
  return (
    err instanceof DiscoveryError &&
    err.code === "resource_exhausted" &&
    !CAPACITY_REASONS.has(err.details?.reason ?? "")
  );
}
const DAY_MS = 86_400_000;

/**
 * A DP's RESOURCE_EXHAUSTED, as the caller gets it: in the resolver's words (the DP's text is
 * for our log; it may name this resolver), a known reason, a retry-after of at most a day.
 */
export function dpRefusal(dpId: string, e: DiscoveryError): DiscoveryError {
  const given = e.details?.reason ?? "";
  const reason = DP_REASONS.has(given) ? given : "DP_LIMIT";
  const raw = e.details?.retryAfterMs ?? 1_000;
  const retryAfterMs = Math.min(DAY_MS, Math.max(0, Number.isFinite(raw) ? raw : DAY_MS));
  return dpRefusalError(dpId, reason, retryAfterMs, e);
}

/**
 * The caller's RESOURCE_EXHAUSTED for a DP's refusal: as the DP sent it (`cause`, with the
 * DP's status), or as the resolver repeats it while it holds the caller (held-refusals.ts).
 */
export function dpRefusalError(
  dpId: string,
  reason: string,
  retryAfterMs: number,
  cause?: DiscoveryError,
): DiscoveryError {
  return new DiscoveryError(
    "resource_exhausted",
    `DP "${dpId}" refused the lookup (${reason}); try again in ${Math.ceil(retryAfterMs / 1000)} s`,
    {
      ...(cause && { cause, remoteStatus: cause.remoteStatus }),
      details: { retryAfterMs, reason, metadata: { dp: dpId } },
    },
  );
}

/**
 * Whether `err` is a DP refusing the caller's own rate-limit context (its budget there, or an
 * enumeration block): charged to the caller, not retried under its name.
 */
export function isCallerRefusal(err: unknown): err is DiscoveryError {
  return (
    err instanceof DiscoveryError &&
    err.code === "resource_exhausted" &&
    statusName(err.remoteStatus ?? -1) === "RESOURCE_EXHAUSTED" &&
    CALLER_REASONS.has(err.details?.reason ?? "")
  );
}
