// Lookup budgets (R22, G5, P1; the abuse issue): an MSP that resolves numbers it does not know
// turns the network into a spam list, so each caller identity gets a budget per DP per day from
// its enrolled users (at least 50 lookups per user per DP per day, the private-discovery
// draft's floor) and a per-minute rate across DPs that stops a sweep within its first minute.
// Only what the resolver must ask a DP for is charged: cached answers cost nobody anything,
// so an address book resolved again is free while fresh numbers are not (Signal's contact
// discovery charges only new numbers the same way). Budgets are GCRA limiters in memory.
import { createRateLimiter, DiscoveryError, type KeyedRateLimiter } from "@mimi/core";

/** The quota configuration of a resolver (its `quotas` section). */
export interface QuotaPolicy {
  /** Lookups per enrolled user per DP per day; never below P1's floor of 50. */
  readonly lookupsPerUserPerDay: number;
  /** How many times the day's average rate a caller may reach within a minute. */
  readonly burstFactor: number;
  /** The per-minute rate no caller is held below. */
  readonly perMinuteFloor: number;
  /** Enrolled users of each caller identity (certificate CN); others count as `defaultEnrolledUsers`. */
  readonly enrolledUsers: Readonly<Record<string, number>>;
  readonly defaultEnrolledUsers: number;
  /**
   * What each DP beyond the first costs a fanned-out (federated) query, in lookups (R12: such
   * queries may be limited harder). A local query asks one DP and costs 1.
   */
  readonly fanOutCostPerExtraDp: number;
}

/** P1: a user can look up at least 50 CSIs per DP per MSP per day. */
export const LOOKUP_FLOOR_PER_USER_PER_DAY = 50;

export const DEFAULT_QUOTA_POLICY: QuotaPolicy = {
  lookupsPerUserPerDay: 100,
  burstFactor: 10,
  perMinuteFloor: 120,
  enrolledUsers: {},
  defaultEnrolledUsers: 1,
  fanOutCostPerExtraDp: 2,
};

const DAY = 86_400_000;
const MINUTE = 60_000;
/** Caller identities and (identity, DP) pairs tracked; an evicted one is only forgiven what it spent. */
const MAX_KEYS = 100_000;

/** A caller's budgets now, as GetQuota reports them. */
export interface QuotaReport {
  readonly identity: string;
  readonly enrolledUsers: number;
  readonly dps: readonly { dpId: string; dailyLimit: number; remaining: number }[];
  readonly perMinuteLimit: number;
  readonly perMinuteRemaining: number;
}

/** The resolver's lookup budgets. */
export interface Quotas {
  /**
   * Charges a lookup of `identity` at `dpId` ("" when no DP is delegated) costing `cost`
   * lookups (1; a federated DP's part of a fanned-out query costs extraDpCost), or throws
   * RESOURCE_EXHAUSTED.
   */
  charge(identity: string, dpId: string, nowMs: number, cost?: number): void;
  /**
   * Records `times` lookups another worker of this resolver already charged (cluster-share.ts):
   * taken even past the budget, which then refuses this worker's next ones.
   */
  absorb(identity: string, dpId: string, nowMs: number, cost: number, times: number): void;
  /** The limiters' state (see QuotaState). */
  state(): QuotaState;
  /** Raises this process's limiters to `state` (another's): never lowers what a key has spent. */
  adopt(state: QuotaState, nowMs: number): void;
  /** Whether `charge` would take `cost` now (it takes and counts nothing). */
  allows(identity: string, dpId: string, nowMs: number, cost?: number): boolean;
  /** Gives back a charge whose lookup got no answer (the DP was down, the resolver not ready). */
  refund(identity: string, dpId: string, nowMs: number, cost?: number): void;
  /** What a query asking `dpsAsked` DPs costs in all, in lookups (R12). */
  lookupCost(dpsAsked: number): number;
  /** What each federated DP a query asks costs besides the first DP's lookup (R12). */
  extraDpCost(): number;
  report(identity: string, dpIds: readonly string[], nowMs: number): QuotaReport;
  /** Refusals so far (GetStats). */
  readonly refused: number;
  /**
   * Applies a new policy (a reload): a caller whose budgets keep their size keeps what it has
   * used; one whose budgets changed starts the new ones afresh.
   */
  setPolicy(policy: QuotaPolicy): void;
}

/** Every limiter's keys and arrival times, by budget size (to hand to a worker that starts). */
export type QuotaState = [string, [string, number][]][];

/**
 * Creates the budgets of `policy`. `processes` is how many processes grant them and report to
 * each other (a resolver's workers): a caller may be that many budgets in debt.
 */
export function createQuotas(initial: QuotaPolicy, processes = 1): Quotas {
  let policy = initial;
  let perUser = Math.max(policy.lookupsPerUserPerDay, LOOKUP_FLOOR_PER_USER_PER_DAY);
  // Own keys only: a certificate named "__proto__" or "constructor" is just an unlisted identity.
  const usersOf = (identity: string) =>
    Object.hasOwn(policy.enrolledUsers, identity)
      ? (policy.enrolledUsers[identity] as number)
      : policy.defaultEnrolledUsers;
  const dailyOf = (identity: string) => Math.max(1, usersOf(identity)) * perUser;
  const minuteOf = (identity: string) =>
    Math.max(policy.perMinuteFloor, Math.ceil((dailyOf(identity) / 1440) * policy.burstFactor));
  // One limiter per budget size: callers with the same enrolled users share it, keyed apart.
  const limiters = new Map<string, KeyedRateLimiter>();
  const limiter = (limit: number, windowMs: number) => {
    const k = `${limit}/${windowMs}`;
    let l = limiters.get(k);
    if (!l) {
      l = createRateLimiter({ limit, windowMs }, MAX_KEYS, { maxDebtBudgets: processes });
      limiters.set(k, l);
    }
    return l;
  };
  let refused = 0;
  const lookupCost = (dpsAsked: number) =>
    1 + Math.max(0, Math.floor(dpsAsked) - 1) * policy.fanOutCostPerExtraDp;
  return {
    charge(identity, dpId, nowMs, cost = 1) {
      const day = limiter(dailyOf(identity), DAY);
      const minute = limiter(minuteOf(identity), MINUTE);
      const dayKey = `${identity}\0${dpId}`;
      const dpName = dpId === "" ? "ranges no DP serves" : `DP "${dpId}"`;
      const budgets: [KeyedRateLimiter, string, string, string][] = [
        [minute, identity, "LOOKUP_LIMIT_MINUTE", `${minute.budget.limit} lookups per minute`],
        [day, dayKey, "LOOKUP_LIMIT_DAY", `${day.budget.limit} lookups per day at ${dpName}`],
      ];
      for (const [l, key, reason, budget] of budgets) {
        const r = l.check(key, nowMs, cost);
        if (!r) continue;
        refused++;
        const s = Math.ceil(r.retryAfterMs / 1000);
        throw new DiscoveryError(
          "resource_exhausted",
          `"${identity}" has spent its budget of ${budget}; cached answers stay free; try again in ${s} s`,
          {
            details: {
              retryAfterMs: r.retryAfterMs,
              quota: [{ subject: `identity:${identity}`, description: budget }],
              reason,
              metadata: { dp: dpId },
            },
          },
        );
      }
      for (const [l, key] of budgets) l.take(key, nowMs, cost);
    },
    allows(identity, dpId, nowMs, cost = 1) {
      return (
        !limiter(minuteOf(identity), MINUTE).check(identity, nowMs, cost) &&
        !limiter(dailyOf(identity), DAY).check(`${identity}\0${dpId}`, nowMs, cost)
      );
    },
    absorb(identity, dpId, nowMs, cost, times) {
      limiter(minuteOf(identity), MINUTE).force(identity, nowMs, cost * times);
      limiter(dailyOf(identity), DAY).force(`${identity}\0${dpId}`, nowMs, cost * times);
    },
    state: () => [...limiters].map(([size, l]) => [size, l.entries()]),
    adopt(state, nowMs) {
      for (const [size, entries] of state) {
        const [limit, windowMs] = size.split("/").map(Number);
        if (!limit || !windowMs) continue;
        const l = limiter(limit, windowMs);
        for (const [key, tat] of entries) l.raise(key, tat, nowMs);
      }
    },
    refund(identity, dpId, nowMs, cost = 1) {
      limiter(minuteOf(identity), MINUTE).giveBack(identity, nowMs, cost);
      limiter(dailyOf(identity), DAY).giveBack(`${identity}\0${dpId}`, nowMs, cost);
    },
    lookupCost,
    extraDpCost: () => policy.fanOutCostPerExtraDp,
    setPolicy(next) {
      policy = next;
      perUser = Math.max(next.lookupsPerUserPerDay, LOOKUP_FLOOR_PER_USER_PER_DAY);
      // Limiters of budget sizes no caller can have any more are dropped, so reloads do not pile them up.
      const identities = [...Object.keys(next.enrolledUsers), "\0default"];
      const sizes = new Set(
        identities.flatMap((id) => [`${dailyOf(id)}/${DAY}`, `${minuteOf(id)}/${MINUTE}`]),
      );
      for (const k of limiters.keys()) if (!sizes.has(k)) limiters.delete(k);
    },
    report(identity, dpIds, nowMs) {
      const day = limiter(dailyOf(identity), DAY);
      const minute = limiter(minuteOf(identity), MINUTE);
      return {
        identity,
        enrolledUsers: usersOf(identity),
        dps: dpIds.map((dpId) => ({
          dpId,
          dailyLimit: day.budget.limit,
          remaining: day.remaining(`${identity}\0${dpId}`, nowMs),
        })),
        perMinuteLimit: minute.budget.limit,
        perMinuteRemaining: minute.remaining(identity, nowMs),
      };
    },
    get refused() {
      return refused;
    },
  };
}
