// What the adaptive gate (adaptive-gate.ts) says of the lookups it fails without sending them:
// not the DP's doing (upstream.ts does not count them as the DP's failures or latencies), and,
// of those, which its caller's wait bound decided (in-flight.ts asks again for joiners allowing
// longer; stale-answers.ts keeps no stale answer for a caller's deadline).
import type { DiscoveryError } from "@mimi/core";

const unsent = new WeakSet<DiscoveryError>();
const forBound = new WeakSet<DiscoveryError>();

/** Marks `e` as the gate's failure of a lookup it never sent. */
export function notSent(e: DiscoveryError): DiscoveryError {
  unsent.add(e);
  return e;
}

/**
 * Marks `e` as the gate's failure of a lookup it never sent that its caller's wait bound
 * decided, which a caller allowing longer would not have had: too little time for the DP's
 * answer time or for the queue ahead (at the answer rate or the published one), none left to
 * wait, or a wait that ran out. Not a full queue, which refuses whatever the bound.
 */
export function notSentForBound(e: DiscoveryError): DiscoveryError {
  forBound.add(e);
  return notSent(e);
}

/** Whether `err` is the gate's failure of a lookup it never sent. */
export function refusedUnsent(err: unknown): boolean {
  return unsent.has(err as DiscoveryError);
}

/** Whether `err` is the gate's failure of a lookup it never sent, for its caller's wait bound. */
export function refusedForBound(err: unknown): boolean {
  return forBound.has(err as DiscoveryError);
}
