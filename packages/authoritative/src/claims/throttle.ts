// Code throttles (R22, G5; GLADOS 8.1 and 11.2): a code costs its recipient attention and the DP
// money (SMS), and every code is one more chance to guess. So codes are budgeted per CSI (per
// hour and per day, across MSPs: a flood to one person stops whoever sends it), per MSP (from
// its enrolled user count), and per channel (all MSPs together, the DP's SMS bill), and failed
// proofs (wrong codes and bad signatures, across challenges) lock the CSI's challenges for a
// while. Budgets are GCRA limiters in memory (core runtime/rate-limit.ts): a restart forgives
// what was spent, at most one more day's budget per CSI. Each refusal is RESOURCE_EXHAUSTED
// naming the budget, with RetryInfo and QuotaFailure details.
import { type Csi, createRateLimiter, DiscoveryError, type KeyedRateLimiter } from "@mimi/core";
import type { EnrolledMsp } from "../store/rows.js";

/** The budgets of the claim flow; every one is a config key (claims.limits). */
export interface ClaimLimits {
  readonly codesPerCsiPerHour: number;
  readonly codesPerCsiPerDay: number;
  /** An MSP's daily codes: this many per thousand enrolled users, never below the floor. */
  readonly mspCodesPerThousandUsersPerDay: number;
  readonly mspCodesPerDayFloor: number;
  /** All MSPs together, per channel: the DP's SMS bill and its mail reputation. */
  readonly smsCodesPerHour: number;
  readonly emailCodesPerHour: number;
  /** Failed proofs (wrong code, bad signature) per CSI per hour before its challenges lock. */
  readonly failuresPerCsiPerHour: number;
}

export const DEFAULT_CLAIM_LIMITS: ClaimLimits = {
  codesPerCsiPerHour: 3,
  codesPerCsiPerDay: 10,
  mspCodesPerThousandUsersPerDay: 50,
  mspCodesPerDayFloor: 100,
  smsCodesPerHour: 1_000,
  emailCodesPerHour: 10_000,
  failuresPerCsiPerHour: 10,
};

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
/** CSIs tracked: far above the CSIs the channel budgets let the DP send to in a day. */
const MAX_CSIS = 200_000;
const MAX_MSPS = 10_000;

/** The throttles of one DP. */
export interface ClaimThrottle {
  /** Before a code is sent: charges every budget, or throws RESOURCE_EXHAUSTED and charges none. */
  beforeCode(csi: Csi, caller: EnrolledMsp, nowMs: number): void;
  /** Before a code is checked: throws RESOURCE_EXHAUSTED while the CSI is locked. */
  beforeProof(csi: string, nowMs: number): void;
  /** A wrong code or a bad signature for `csi`. */
  failed(csi: string, nowMs: number): void;
}

/** Creates the throttles for `limits`. */
export function createClaimThrottle(limits: ClaimLimits): ClaimThrottle {
  const perHour = createRateLimiter({ limit: limits.codesPerCsiPerHour, windowMs: HOUR }, MAX_CSIS);
  const perDay = createRateLimiter({ limit: limits.codesPerCsiPerDay, windowMs: DAY }, MAX_CSIS);
  const failures = createRateLimiter({ limit: limits.failuresPerCsiPerHour, windowMs: HOUR }, MAX_CSIS);
  const channels = {
    tel: createRateLimiter({ limit: limits.smsCodesPerHour, windowMs: HOUR }, 1),
    mailto: createRateLimiter({ limit: limits.emailCodesPerHour, windowMs: HOUR }, 1),
  };
  // One limiter per MSP budget size: an MSP's size changes only when it is enrolled again.
  const mspLimiters = new Map<number, KeyedRateLimiter>();
  const mspLimiter = (m: EnrolledMsp) => {
    const limit = Math.max(
      limits.mspCodesPerDayFloor,
      Math.ceil((m.enrolledUsers * limits.mspCodesPerThousandUsersPerDay) / 1000),
    );
    let l = mspLimiters.get(limit);
    if (!l) {
      l = createRateLimiter({ limit, windowMs: DAY }, MAX_MSPS);
      mspLimiters.set(limit, l);
    }
    return l;
  };
  const lockedProblem = (csi: string, nowMs: number) => {
    const r = failures.check(csi, nowMs);
    return (
      r &&
      refusal(
        "CSI_LOCKED",
        "csi",
        `${limits.failuresPerCsiPerHour} failed proofs per number per hour`,
        "this number's challenges are locked after too many wrong codes or bad signatures",
        r.retryAfterMs,
      )
    );
  };
  return {
    beforeCode(csi, caller, nowMs) {
      const locked = lockedProblem(csi.uri, nowMs);
      if (locked) throw locked;
      const channel = csi.type === "tel" ? channels.tel : channels.mailto;
      const channelName = csi.type === "tel" ? "sms" : "email";
      const msp = mspLimiter(caller);
      // Checked first, taken only when all allow: a refused call spends nothing.
      const budgets: [KeyedRateLimiter, string, string, string, string][] = [
        [msp, caller.mspId, "CODE_LIMIT_MSP", `msp:${caller.mspId}`, "codes per MSP per day"],
        [perHour, csi.uri, "CODE_LIMIT_CSI_HOUR", "csi", "codes per number per hour"],
        [perDay, csi.uri, "CODE_LIMIT_CSI_DAY", "csi", "codes per number per day"],
        [channel, "", "CODE_LIMIT_CHANNEL", `channel:${channelName}`, `${channelName} codes per hour`],
      ];
      for (const [limiter, key, reason, subject, what] of budgets) {
        const r = limiter.check(key, nowMs);
        if (r) {
          const budget = `${limiter.budget.limit} ${what}`;
          throw refusal(reason, subject, budget, `the budget of ${budget} is spent`, r.retryAfterMs);
        }
      }
      for (const [limiter, key] of budgets) limiter.take(key, nowMs);
    },
    beforeProof(csi, nowMs) {
      const locked = lockedProblem(csi, nowMs);
      if (locked) throw locked;
    },
    failed(csi, nowMs) {
      failures.take(csi, nowMs);
    },
  };
}

function refusal(
  reason: string,
  subject: string,
  budget: string,
  what: string,
  retryAfterMs: number,
): DiscoveryError {
  const at = Math.ceil(retryAfterMs / 1000);
  return new DiscoveryError("resource_exhausted", `${what}; try again in ${at} s`, {
    details: { retryAfterMs, quota: [{ subject, description: budget }], reason, metadata: { budget } },
  });
}
