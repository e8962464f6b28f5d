// Code throttles (R22, G5; GLADOS 8.1 and 11.2): a code costs its recipient attention and the DP
// money (SMS), and every code is one more chance to guess. So codes are budgeted per CSI and
// calling MSP (per hour and per day), per CSI across all MSPs (a larger cap: a flood through
// many MSPs still stops), per MSP (from its enrolled user count, and a share of each channel's
// hour), and per channel (all MSPs together, the DP's SMS bill); failed proofs (wrong codes and bad signatures, across
// challenges) lock the CSI's challenges for the MSP that failed, and only for it, so one MSP
// cannot lock a number against the holder's own MSP. Budgets are GCRA limiters in memory (core
// runtime/rate-limit.ts): a restart forgives what was spent. Each refusal is
// RESOURCE_EXHAUSTED naming the budget, with RetryInfo and QuotaFailure details; a code that
// could not be sent is given back. Attempts are budgeted apart and never given back (twice an
// MSP's codes a day, twice its share of a channel's hour, twice the channel's): each one is a
// call to the gateway or relay and a challenge row, and an MSP naming addresses that take no
// code (refused, unknown domains) could otherwise make them without bound.
import { createHash } from "node:crypto";
import { type Csi, createRateLimiter, DiscoveryError, type KeyedRateLimiter } from "@mimi/core";
import type { EnrolledMsp } from "../store/rows.js";

/** The budgets of the claim flow; every one is a config key (claims.limits). */
export interface ClaimLimits {
  /** Codes to one CSI for one MSP. */
  readonly codesPerCsiPerHour: number;
  readonly codesPerCsiPerDay: number;
  /** Codes to one CSI for all MSPs together. */
  readonly sharedCodesPerCsiPerHour: number;
  readonly sharedCodesPerCsiPerDay: number;
  /** An MSP's daily codes: this many per thousand enrolled users, never below the floor. */
  readonly mspCodesPerThousandUsersPerDay: number;
  readonly mspCodesPerDayFloor: number;
  /** All MSPs together, per channel: the DP's SMS bill and its mail reputation. */
  readonly smsCodesPerHour: number;
  readonly emailCodesPerHour: number;
  /** The most of a channel's hourly codes one MSP may take (per cent), so none can use it all. */
  readonly mspSharePercentOfChannel: number;
  /** Failed proofs (wrong code, bad signature) per CSI per MSP per hour before they lock. */
  readonly failuresPerCsiPerHour: number;
}

export const DEFAULT_CLAIM_LIMITS: ClaimLimits = {
  codesPerCsiPerHour: 3,
  codesPerCsiPerDay: 10,
  sharedCodesPerCsiPerHour: 10,
  sharedCodesPerCsiPerDay: 30,
  mspCodesPerThousandUsersPerDay: 50,
  mspCodesPerDayFloor: 100,
  smsCodesPerHour: 1_000,
  emailCodesPerHour: 10_000,
  mspSharePercentOfChannel: 25,
  failuresPerCsiPerHour: 10,
};

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
/** Attempts a code may take (failed sends included), per code of the channel budgets. */
const ATTEMPTS_PER_CODE = 2;
/**
 * Keys tracked per limiter at least: an evicted key is forgiven what it spent (named in
 * ARCHITECTURE), so the per-number limiters hold more than the channels let through in their
 * window (keysFor).
 */
const MIN_KEYS = 200_000;
const MAX_MSPS = 10_000;

/** The throttles of one DP. */
export interface ClaimThrottle {
  /** Before a code is sent: charges every budget, or throws RESOURCE_EXHAUSTED and charges none. */
  beforeCode(csi: Csi, caller: EnrolledMsp, nowMs: number): void;
  /** A code that could not be sent: gives back what beforeCode charged but the attempt. */
  notSent(csi: Csi, caller: EnrolledMsp, nowMs: number): void;
  /** Before a code is checked: throws RESOURCE_EXHAUSTED while `mspId` is locked out of the CSI. */
  beforeProof(csi: string, mspId: string, nowMs: number): void;
  /** A wrong code or a bad signature for `csi` from `mspId`. */
  failed(csi: string, mspId: string, nowMs: number): void;
  /** Refusals so far by reason (CODE_LIMIT_*, CSI_LOCKED), for metrics. */
  readonly refused: Readonly<Record<string, number>>;
}

/** Creates the throttles for `limits` (`minKeys`: MIN_KEYS, but in tests). */
export function createClaimThrottle(limits: ClaimLimits, minKeys = MIN_KEYS): ClaimThrottle {
  // A number's key is pushed out once as many other keys were put or moved after it (beyond a
  // sixteenth, RecencyMap), and every attempt puts or moves one: a code, a send that failed
  // (to a number charged before, it moves that key; to a fresh one, it puts a key and takes it
  // out), or a failed proof (of a challenge an attempt opened). A GCRA limiter lets through its
  // limit at once and then its rate, so a window of W sees at most the channels' attempts of
  // W / 1 h + 1 hours: the bound is 16/15 of that, and no number's spending is pushed out
  // within its window however the attempts are spread.
  const attemptsPerHour = ATTEMPTS_PER_CODE * (limits.smsCodesPerHour + limits.emailCodesPerHour);
  const keysFor = (windowMs: number) =>
    Math.max(minKeys, Math.ceil(attemptsPerHour * (windowMs / HOUR + 1) * (16 / 15)) + 16);
  const rate = (limit: number, windowMs: number, keys = keysFor(windowMs)) =>
    createRateLimiter({ limit, windowMs }, keys);
  const perHour = rate(limits.codesPerCsiPerHour, HOUR);
  const perDay = rate(limits.codesPerCsiPerDay, DAY);
  const sharedHour = rate(limits.sharedCodesPerCsiPerHour, HOUR);
  const sharedDay = rate(limits.sharedCodesPerCsiPerDay, DAY);
  // Failed proofs come from challenges opened within the hour or the code's lifetime before it.
  const failures = rate(limits.failuresPerCsiPerHour, HOUR, keysFor(2 * HOUR));
  const channels = {
    tel: rate(limits.smsCodesPerHour, HOUR, 1),
    mailto: rate(limits.emailCodesPerHour, HOUR, 1),
  };
  // Each MSP's share of a channel: one MSP alone (its users' real claims, or a flood it lets
  // through) leaves the rest of the channel to the others.
  const share = (perHour: number) =>
    Math.max(1, Math.floor((perHour * limits.mspSharePercentOfChannel) / 100));
  const mspChannels = {
    tel: rate(share(limits.smsCodesPerHour), HOUR, MAX_MSPS),
    mailto: rate(share(limits.emailCodesPerHour), HOUR, MAX_MSPS),
  };
  // Attempts, sent or not, never given back: the channel's, and each MSP's share of them.
  const attempts = {
    tel: rate(ATTEMPTS_PER_CODE * limits.smsCodesPerHour, HOUR, 1),
    mailto: rate(ATTEMPTS_PER_CODE * limits.emailCodesPerHour, HOUR, 1),
  };
  const mspAttempts = {
    tel: rate(ATTEMPTS_PER_CODE * share(limits.smsCodesPerHour), HOUR, MAX_MSPS),
    mailto: rate(ATTEMPTS_PER_CODE * share(limits.emailCodesPerHour), HOUR, MAX_MSPS),
  };
  // One limiter per MSP budget size: an MSP's size changes only when it is enrolled again.
  // Its attempts a day are twice its codes.
  const mspLimiters = new Map<number, KeyedRateLimiter>();
  const mspLimiter = (m: EnrolledMsp, perCode = 1) => {
    const codes = Math.max(
      limits.mspCodesPerDayFloor,
      Math.ceil((m.enrolledUsers * limits.mspCodesPerThousandUsersPerDay) / 1000),
    );
    const limit = perCode * codes;
    // Keyed apart from a budget of codes of the same size (negative: attempts).
    const id = perCode === 1 ? limit : -limit;
    let l = mspLimiters.get(id);
    if (!l) {
      l = rate(limit, DAY, MAX_MSPS);
      mspLimiters.set(id, l);
    }
    return l;
  };
  // Numbers are keyed by a digest of fixed length: an email address may be 254 characters.
  const numberKey = (csi: string) => createHash("sha256").update(csi).digest().toString("base64url", 0, 16);
  const pair = (csi: string, mspId: string) => `${numberKey(csi)}\0${mspId}`;
  const refused: Record<string, number> = {};
  const counted = (reason: string) => {
    refused[reason] = (refused[reason] ?? 0) + 1;
  };
  const lockedProblem = (csi: string, mspId: string, nowMs: number) => {
    const r = failures.check(pair(csi, mspId), nowMs);
    return (
      r &&
      refusal(
        "CSI_LOCKED",
        "csi",
        `${limits.failuresPerCsiPerHour} failed proofs per number per hour`,
        "this MSP's challenges for this number are locked after too many wrong codes or bad signatures",
        r.retryAfterMs,
      )
    );
  };
  /** The budgets a code takes: [limiter, key, reason, subject, what, given back when not sent]. */
  const budgetsOf = (
    csi: Csi,
    caller: EnrolledMsp,
  ): [KeyedRateLimiter, string, string, string, string, boolean][] => {
    const channelName = csi.type === "tel" ? "sms" : "email";
    const number = numberKey(csi.uri);
    const own = `${number}\0${caller.mspId}`;
    const tel = csi.type === "tel";
    return [
      [
        mspLimiter(caller),
        caller.mspId,
        "CODE_LIMIT_MSP",
        `msp:${caller.mspId}`,
        "codes per MSP per day",
        true,
      ],
      [perHour, own, "CODE_LIMIT_CSI_HOUR", "csi", "codes per number per hour", true],
      [perDay, own, "CODE_LIMIT_CSI_DAY", "csi", "codes per number per day", true],
      [
        sharedHour,
        number,
        "CODE_LIMIT_CSI_SHARED_HOUR",
        "csi",
        "codes per number per hour, all MSPs together",
        true,
      ],
      [
        sharedDay,
        number,
        "CODE_LIMIT_CSI_SHARED_DAY",
        "csi",
        "codes per number per day, all MSPs together",
        true,
      ],
      [
        tel ? channels.tel : channels.mailto,
        "",
        "CODE_LIMIT_CHANNEL",
        `channel:${channelName}`,
        `${channelName} codes per hour`,
        true,
      ],
      [
        tel ? mspChannels.tel : mspChannels.mailto,
        caller.mspId,
        "CODE_LIMIT_MSP_CHANNEL",
        `msp:${caller.mspId}`,
        `${channelName} codes per hour for one MSP (its share of the channel)`,
        true,
      ],
      // Checked after the code budgets, which ordinary claims meet first.
      [
        mspLimiter(caller, ATTEMPTS_PER_CODE),
        caller.mspId,
        "CODE_LIMIT_MSP_DAY_ATTEMPTS",
        `msp:${caller.mspId}`,
        "code attempts per MSP per day, failed sends included",
        false,
      ],
      [
        tel ? mspAttempts.tel : mspAttempts.mailto,
        caller.mspId,
        "CODE_LIMIT_MSP_ATTEMPTS",
        `msp:${caller.mspId}`,
        `${channelName} code attempts per hour for one MSP, failed sends included`,
        false,
      ],
      [
        tel ? attempts.tel : attempts.mailto,
        "",
        "CODE_LIMIT_CHANNEL_ATTEMPTS",
        `channel:${channelName}`,
        `${channelName} code attempts per hour, failed sends included`,
        false,
      ],
    ];
  };
  return {
    refused,
    beforeCode(csi, caller, nowMs) {
      const locked = lockedProblem(csi.uri, caller.mspId, nowMs);
      if (locked) {
        counted("CSI_LOCKED");
        throw locked;
      }
      // Checked first, taken only when all allow: a refused call spends nothing.
      const budgets = budgetsOf(csi, caller);
      for (const [limiter, key, reason, subject, what] of budgets) {
        const r = limiter.check(key, nowMs);
        if (r) {
          const budget = `${limiter.budget.limit} ${what}`;
          counted(reason);
          throw refusal(reason, subject, budget, `the budget of ${budget} is spent`, r.retryAfterMs);
        }
      }
      for (const [limiter, key] of budgets) limiter.take(key, nowMs);
    },
    notSent(csi, caller, nowMs) {
      for (const [limiter, key, , , , givenBack] of budgetsOf(csi, caller)) {
        if (givenBack) limiter.giveBack(key, nowMs);
      }
    },
    beforeProof(csi, mspId, nowMs) {
      const locked = lockedProblem(csi, mspId, nowMs);
      if (locked) {
        counted("CSI_LOCKED");
        throw locked;
      }
    },
    failed(csi, mspId, nowMs) {
      failures.take(pair(csi, mspId), nowMs);
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
  // Whole seconds: the exact time would tell an MSP when another MSP acted on the number.
  const seconds = Math.ceil(retryAfterMs / 1000);
  return new DiscoveryError("resource_exhausted", `${what}; try again in ${seconds} s`, {
    details: {
      retryAfterMs: seconds * 1000,
      quota: [{ subject, description: budget }],
      reason,
      metadata: { budget },
    },
  });
}
