// A DP's refusals of one caller's rate-limit context (its budget there, an enumeration block),
// remembered until the DP said to retry, so the caller's further lookups are refused here
// instead of being sent to a DP that will refuse them too (and spending the DP's window, which
// every caller shares). Bounded: past the bound the oldest is forgotten, which only means the
// next lookup asks the DP again.
import { csiBlockOf, type DiscoveryError, setNewest } from "@mimi/core";
import { dpRefusalError } from "./refusals.js";

const MAX_HELD = 100_000;

/** The refusals held. */
export interface HeldRefusals {
  /** The refusal that still holds `identity`'s lookup of `csi` at `dpId`, if any. */
  check(identity: string, dpId: string, csi: string, nowMs: number): DiscoveryError | undefined;
  /** Remembers a DP's refusal of `identity` (a caller refusal; see upstream.ts isCallerRefusal). */
  hold(identity: string, dpId: string, csi: string, err: DiscoveryError, nowMs: number): void;
}

export function createHeldRefusals(): HeldRefusals {
  const held = new Map<string, { untilMs: number; reason: string }>();
  // A context's budget holds at the whole DP; an enumeration block at one number block.
  const keyOf = (identity: string, dpId: string, csi: string, reason: string) =>
    reason === "ENUMERATION_SUSPECTED" ? `${identity}\0${dpId}\0${csiBlockOf(csi)}` : `${identity}\0${dpId}`;
  const active = (key: string, nowMs: number) => {
    const h = held.get(key);
    if (!h) return undefined;
    if (nowMs < h.untilMs) return h;
    held.delete(key);
    return undefined;
  };
  return {
    check(identity, dpId, csi, nowMs) {
      if (held.size === 0) return undefined;
      const h =
        active(keyOf(identity, dpId, csi, "DP_CONTEXT_LIMIT"), nowMs) ??
        active(keyOf(identity, dpId, csi, "ENUMERATION_SUSPECTED"), nowMs);
      if (!h) return undefined;
      return dpRefusalError(dpId, h.reason, h.untilMs - nowMs);
    },
    hold(identity, dpId, csi, err, nowMs) {
      const reason = err.details?.reason ?? "";
      const untilMs = nowMs + (err.details?.retryAfterMs ?? 0);
      if (untilMs <= nowMs) return;
      setNewest(held, keyOf(identity, dpId, csi, reason), { untilMs, reason }, MAX_HELD);
    },
  };
}
