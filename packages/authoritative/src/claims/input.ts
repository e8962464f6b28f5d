// Checks of what MSPs send that every flow shares: tags, SSIs and record times.
import { invalidArgument, type MappingRecord, ssiProblem, tagsProblem } from "@mimi/core";

/** Created times may lie at most this far ahead of the DP's clock. */
export const MAX_CLOCK_SKEW_MS = 5 * 60_000;

/** Validates preference tags (R7); throws INVALID_ARGUMENT with the reason (naming `field`, when given). */
export function checkTags(tags: readonly string[], field?: string): string[] {
  const why = tagsProblem(tags);
  if (why) throw invalidArgument(why, field);
  return [...tags];
}

/** Validates a service-specific identifier; throws INVALID_ARGUMENT with the reason (naming `field`, when given). */
export function checkSsi(ssi: string, field?: string): void {
  const why = ssiProblem(ssi);
  if (why) throw invalidArgument(why, field);
}

/** A record made elsewhere (bulk) must be current and must not outlive the DP's mapping lifetime. */
export function checkRecordTimes(r: MappingRecord, nowMs: number, mappingLifetimeMs: number): void {
  if (r.createdAtMs > nowMs + MAX_CLOCK_SKEW_MS) throw invalidArgument("created_at_ms lies in the future");
  if (r.expiresAtMs <= nowMs) throw invalidArgument("the record has already expired");
  if (r.expiresAtMs > nowMs + mappingLifetimeMs + MAX_CLOCK_SKEW_MS) {
    throw invalidArgument(
      `the record expires later than this DP's mapping lifetime allows (${Math.round(mappingLifetimeMs / 86_400_000)} days)`,
    );
  }
}
