// A keyed rate limiter: GCRA (the generic cell rate algorithm), one "theoretical arrival time"
// per key. It allows `limit` units at once and refills them evenly over `windowMs` (a token
// bucket of `limit` tokens, without a timer), answers exactly when a refused call could
// succeed, and keeps one number of state per key. Keys live in a RecencyMap (bounded-map.ts)
// bounded by `maxKeys`: an evicted key only loses what it had spent, so fifteen sixteenths
// of `maxKeys` must exceed the number of keys that can be busy within one window (callers size it
// from the budgets in front of it).

import { RecencyMap } from "./bounded-map.js";

/** A budget: `limit` units per `windowMs`, all of them available at once. */
export interface RateLimit {
  readonly limit: number;
  readonly windowMs: number;
}

/** A refusal: when the units asked for would be available. */
export interface RateRefusal {
  readonly retryAfterMs: number;
}

/** The limiter of one budget over many keys. */
export interface KeyedRateLimiter {
  readonly budget: RateLimit;
  /** Whether `cost` units may be taken for `key` at `nowMs`, without taking them. */
  check(key: string, nowMs: number, cost?: number): RateRefusal | undefined;
  /** Takes `cost` units for `key` when they are available; otherwise takes nothing. */
  take(key: string, nowMs: number, cost?: number): RateRefusal | undefined;
  /**
   * Takes `cost` units for `key` even past its budget (units another process already granted
   * and reports afterwards): the key goes into debt, at most `maxDebtBudgets` whole budgets
   * ahead, and is refused until it has paid it off.
   */
  force(key: string, nowMs: number, cost?: number): void;
  /** Every key's arrival time, to hand a limiter's state to another process (a restarted worker). */
  entries(): [string, number][];
  /** Raises `key`'s arrival time to `tatMs` (from entries()), within the debt bound. */
  raise(key: string, tatMs: number, nowMs: number): void;
  /** Gives back `cost` units taken for `key` (a charge for work that did not happen). */
  giveBack(key: string, nowMs: number, cost?: number): void;
  /** Units `key` could take at `nowMs`. */
  remaining(key: string, nowMs: number): number;
  /** Keys held now (for metrics and tests). */
  readonly size: number;
}

/**
 * A limiter of `budget` per key, holding at most `maxKeys` keys. `maxDebtBudgets` (default 1:
 * none) bounds how far force() may push a key past its budget: the number of processes that
 * grant the same budget and report to each other.
 */
export function createRateLimiter(
  budget: RateLimit,
  maxKeys: number,
  opts: { maxDebtBudgets?: number } = {},
): KeyedRateLimiter {
  if (!(budget.limit >= 1 && budget.windowMs >= 1))
    throw new RangeError("a rate limit needs limit and window ≥ 1");
  const interval = budget.windowMs / budget.limit; // ms per unit
  const span = budget.windowMs; // the whole budget, in ms of arrival time
  const ahead = span * Math.max(1, opts.maxDebtBudgets ?? 1); // the furthest an arrival time may be
  const tat = new RecencyMap<string, number>(maxKeys);
  // An arrival time further ahead than charges (and debts) can put it means the clock went back
  // (a host's clock is stepped): the key is forgiven rather than locked out that long.
  const arrival = (key: string, nowMs: number) => {
    const t = tat.get(key) ?? nowMs;
    return t > nowMs + ahead ? nowMs : Math.max(t, nowMs);
  };
  const refusal = (key: string, nowMs: number, cost: number): RateRefusal | undefined => {
    if (cost > budget.limit) return { retryAfterMs: Number.POSITIVE_INFINITY };
    const allowAt = arrival(key, nowMs) + cost * interval - span;
    return allowAt > nowMs ? { retryAfterMs: Math.ceil(allowAt - nowMs) } : undefined;
  };
  return {
    budget,
    check: (key, nowMs, cost = 1) => refusal(key, nowMs, cost),
    take(key, nowMs, cost = 1) {
      const refused = refusal(key, nowMs, cost);
      if (refused) return refused;
      const next = arrival(key, nowMs) + cost * interval;
      tat.set(key, next);
      return undefined;
    },
    force(key, nowMs, cost = 1) {
      tat.set(key, Math.min(arrival(key, nowMs) + cost * interval, nowMs + ahead));
    },
    entries: () => [...tat.entries()],
    raise(key, tatMs, nowMs) {
      const t = Math.min(tatMs, nowMs + ahead);
      if (t > arrival(key, nowMs)) tat.set(key, t);
    },
    giveBack(key, nowMs, cost = 1) {
      const t = tat.get(key);
      if (t === undefined) return;
      const back = t - cost * interval;
      if (back <= nowMs) tat.delete(key);
      else tat.set(key, back);
    },
    remaining: (key, nowMs) =>
      Math.max(0, Math.floor((span - (arrival(key, nowMs) - nowMs)) / interval + 1e-9)),
    get size() {
      return tat.size;
    },
  };
}
