// What a DP lets reach its store (the abuse issue; R13, R22, P2). Resolvers hold each MSP to
// its budgets, but a DP cannot rely on every resolver doing so, so it limits on its own side:
// - the endpoint's capacity (all callers together), published to each resolver at the start
//   of its LookupStream so a well-behaved resolver paces itself instead of being refused;
// - each calling resolver, by its certificate identity;
// - each rate-limit context a resolver forwards: a per-MSP, per-day pseudonym (P2) that lets
//   the DP cap one abusive MSP behind a shared resolver without learning which MSP it is;
// - enumeration detection per context (core runtime/enumeration.ts), since a DP sees every
//   miss of every resolver: a crawl through a lax resolver is still a crawl here.
// GCRA limiters in memory with bounded keys; refusals are RESOURCE_EXHAUSTED with retry-after.
import {
  type ConfigReader,
  createEnumerationDetector,
  createRateLimiter,
  type Detection,
  DiscoveryError,
  type EnumerationDetector,
  type EnumerationPolicy,
  invalidArgument,
  type KeyedRateLimiter,
  setNewest,
} from "@mimi/core";

/** The `lookupLimits` config section. */
export interface LookupLimitPolicy {
  /** Lookups per second this endpoint takes from all callers together; 0: not limited, not published. */
  readonly capacityPerSecond: number;
  /** Lookups per second one calling identity (a resolver) may send. */
  readonly perResolverPerSecond: number;
  /** Lookups one rate-limit context (one MSP behind one resolver, one day) may make per minute. */
  readonly perContextPerMinute: number;
  /** ...and per day. */
  readonly perContextPerDay: number;
  /** Distinct contexts one caller may use per UTC day (a resolver sends one per MSP it serves). */
  readonly maxContextsPerResolverPerDay: number;
  /**
   * Lookups a caller may make per minute and per day without a context (a resolver's own
   * refreshes of popular answers): its own budget, larger than one MSP's.
   */
  readonly ownPerMinute: number;
  readonly ownPerDay: number;
}

export const DEFAULT_LOOKUP_LIMITS: LookupLimitPolicy = {
  capacityPerSecond: 0,
  perResolverPerSecond: 20_000,
  perContextPerMinute: 60_000,
  perContextPerDay: 5_000_000,
  maxContextsPerResolverPerDay: 10_000,
  ownPerMinute: 600_000,
  ownPerDay: 50_000_000,
};

/** Reads the `lookupLimits` section. */
export function readLookupLimits(r: ConfigReader): LookupLimitPolicy {
  const d = DEFAULT_LOOKUP_LIMITS;
  const policy: LookupLimitPolicy = {
    capacityPerSecond: r.integer("capacityPerSecond", d.capacityPerSecond, 0, 10_000_000),
    perResolverPerSecond: r.integer("perResolverPerSecond", d.perResolverPerSecond, 1, 10_000_000),
    perContextPerMinute: r.integer("perContextPerMinute", d.perContextPerMinute, 1, 100_000_000),
    perContextPerDay: r.integer("perContextPerDay", d.perContextPerDay, 1, 10_000_000_000),
    maxContextsPerResolverPerDay: r.integer(
      "maxContextsPerResolverPerDay",
      d.maxContextsPerResolverPerDay,
      1,
      100_000,
    ),
    ownPerMinute: r.integer("ownPerMinute", d.ownPerMinute, 1, 1_000_000_000),
    ownPerDay: r.integer("ownPerDay", d.ownPerDay, 1, 100_000_000_000),
  };
  r.done();
  return policy;
}

/** Size of a rate-limit context (bytes); other lengths are refused. */
export const RATE_CONTEXT_BYTES = 16;

/**
 * Contexts tracked per limiter; an evicted one only loses what it spent. One caller can hold at
 * most `maxContextsPerResolverPerDay` of them, so it cannot push out all of the others'.
 */
const MAX_KEYS = 100_000;
/**
 * Callers whose contexts are counted at once (identities with the resolver role, which
 * only the CA hands out): at most this many times maxContextsPerResolverPerDay entries.
 */
const MAX_CALLERS = 256;

const msToNextDay = (nowMs: number) => 86_400_000 - (nowMs % 86_400_000);

/** Refusals by kind (GetStatus). */
export interface LookupRefusals {
  capacity: number;
  resolver: number;
  context: number;
  enumeration: number;
}

/** The DP's lookup limits. */
export interface LookupLimits {
  /**
   * Admits one lookup of `csi` by `caller` for `context` (empty: none), or throws
   * RESOURCE_EXHAUSTED; returns the lookup's subject (caller and context) for `answered`.
   * A private lookup's evaluation has no CSI (nothing to watch for a crawl) and costs `cost`
   * lookups of the budgets, one per CSI it evaluates, and `load` of the endpoint's capacity and
   * the caller's rate: what it costs the DP's CPU in plain lookups (default: `cost`).
   */
  admit(
    caller: string,
    context: Uint8Array,
    csi: string | undefined,
    nowMs: number,
    cost?: number,
    load?: number,
  ): string;
  /** Records the answer to an admitted lookup of `subject` for enumeration detection. */
  answered(subject: string, csi: string, notFound: boolean, nowMs: number): void;
  /** Lookups per second `caller` may send this endpoint (0: no limit published). */
  publishedRate(): number;
  /** Applies new limits (a reload); budgets that did not change keep their callers' use. */
  reconfigure(policy: LookupLimitPolicy, enumeration: EnumerationPolicy): void;
  readonly refused: Readonly<LookupRefusals>;
  readonly enumeration: EnumerationDetector;
}

/** Creates the limits; `onDetection` hears each enumeration detection (for the log). */
export function createLookupLimits(
  initial: LookupLimitPolicy,
  enumeration: EnumerationPolicy,
  onDetection: (d: Detection) => void,
): LookupLimits {
  const second = 1_000;
  let policy = initial;
  // A limiter per budget; a reload replaces only those whose budget changed (their windows
  // start afresh), so the others keep what callers have used.
  const limiter = (old: KeyedRateLimiter | undefined, limit: number, windowMs: number, keys: number) =>
    old && old.budget.limit === limit && old.budget.windowMs === windowMs
      ? old
      : createRateLimiter({ limit, windowMs }, keys);
  let capacity: KeyedRateLimiter | undefined;
  let perCaller!: KeyedRateLimiter;
  let contextBudgets: (readonly [KeyedRateLimiter, string])[] = [];
  let ownBudgets: (readonly [KeyedRateLimiter, string])[] = [];
  const build = (p: LookupLimitPolicy) => {
    capacity = p.capacityPerSecond > 0 ? limiter(capacity, p.capacityPerSecond, second, 1) : undefined;
    perCaller = limiter(perCaller, p.perResolverPerSecond, second, MAX_KEYS);
    // The minute and day budgets of a context, and of the lookups without one (the caller's
    // own budget: its refreshes).
    contextBudgets = [
      [limiter(contextBudgets[0]?.[0], p.perContextPerMinute, 60_000, MAX_KEYS), "minute"],
      [limiter(contextBudgets[1]?.[0], p.perContextPerDay, 86_400_000, MAX_KEYS), "day"],
    ];
    ownBudgets = [
      [limiter(ownBudgets[0]?.[0], p.ownPerMinute, 60_000, MAX_CALLERS), "minute"],
      [limiter(ownBudgets[1]?.[0], p.ownPerDay, 86_400_000, MAX_CALLERS), "day"],
    ];
  };
  build(policy);
  const detector = createEnumerationDetector(enumeration);
  const refused: LookupRefusals = { capacity: 0, resolver: 0, context: 0, enumeration: 0 };
  // A context is named by its caller and its bytes: two resolvers' contexts never share a budget.
  // Lookups without one (a resolver's own refreshes) are the caller's own context,
  // held to the same budgets and watched the same way. A caller whose name holds a "/" is
  // named with one more at the end without a context, so that "a/<context hex>" cannot pass
  // for caller "a" under that context (the subject also keys budgets and seal batches).
  const subjectOf = (caller: string, context: Uint8Array) =>
    context.length > 0
      ? `${caller}/${Buffer.from(context).toString("hex")}`
      : caller.includes("/")
        ? `${caller}/`
        : caller;
  // The contexts each caller opened today: a resolver forwards one per MSP it serves, so a
  // caller inventing a context per lookup (a fresh budget each time) is refused past the cap.
  const opened = new Map<string, { day: number; contexts: Set<string> }>();
  const opens = (caller: string, subject: string, nowMs: number): boolean => {
    const day = Math.floor(nowMs / 86_400_000);
    let o = opened.get(caller);
    if (!o || o.day !== day) {
      o = { day, contexts: new Set() };
      setNewest(opened, caller, o, MAX_CALLERS);
    }
    if (o.contexts.has(subject)) return true;
    if (o.contexts.size >= policy.maxContextsPerResolverPerDay) return false;
    o.contexts.add(subject);
    return true;
  };

  const refuse = (
    kind: keyof LookupRefusals,
    retryAfterMs: number,
    reason: string,
    what: string,
  ): DiscoveryError => {
    refused[kind]++;
    const ms = Number.isFinite(retryAfterMs) ? retryAfterMs : 86_400_000;
    return new DiscoveryError("resource_exhausted", `${what}; try again in ${Math.ceil(ms / 1000)} s`, {
      details: { retryAfterMs: ms, reason },
    });
  };

  return {
    admit(caller, context, csi, nowMs, cost = 1, load = cost) {
      if (context.length !== 0 && context.length !== RATE_CONTEXT_BYTES) {
        throw invalidArgument(
          `rate_context must be empty or ${RATE_CONTEXT_BYTES} bytes, not ${context.length}`,
          "rate_context",
        );
      }
      const subject = subjectOf(caller, context);
      const block = csi === undefined ? undefined : detector.blocked(subject, csi, nowMs);
      if (block) {
        throw refuse(
          "enumeration",
          block.blockedUntilMs - nowMs,
          "ENUMERATION_SUSPECTED",
          `this DP saw lookups of this rate-limit context in number block ${block.scope} that looked like enumeration; its lookups there are refused for a while`,
        );
      }
      // Checked before anything is taken, so a refused lookup costs no budget.
      const c = capacity?.check("all", nowMs, load);
      if (c)
        throw refuse(
          "capacity",
          c.retryAfterMs,
          "DP_CAPACITY",
          `this DP endpoint is at its capacity of ${policy.capacityPerSecond} lookups per second`,
        );
      const r = perCaller.check(caller, nowMs, load);
      if (r)
        throw refuse(
          "resolver",
          r.retryAfterMs,
          "DP_RESOLVER_LIMIT",
          `"${caller}" has sent this DP its ${policy.perResolverPerSecond} lookups per second`,
        );
      if (context.length > 0 && !opens(caller, subject, nowMs)) {
        throw refuse(
          "resolver",
          msToNextDay(nowMs),
          // Not the context's doing: the resolver as a whole is refused new contexts.
          "DP_CONTEXTS_PER_RESOLVER",
          `"${caller}" has opened its ${policy.maxContextsPerResolverPerDay} rate-limit contexts at this DP today`,
        );
      }
      const own = context.length === 0;
      const budgets = own ? ownBudgets : contextBudgets;
      for (const [l, per] of budgets) {
        const over = l.check(subject, nowMs, cost);
        if (over)
          throw refuse(
            own ? "resolver" : "context",
            over.retryAfterMs,
            own ? "DP_RESOLVER_LIMIT" : "DP_CONTEXT_LIMIT",
            `${own ? `"${caller}"` : "the rate-limit context"} has made its ${l.budget.limit} lookups per ${per}${own ? " without a context" : ""} at this DP`,
          );
      }
      for (const [l] of budgets) l.take(subject, nowMs, cost);
      capacity?.take("all", nowMs, load);
      perCaller.take(caller, nowMs, load);
      return subject;
    },
    answered(subject, csi, notFound, nowMs) {
      const found = detector.observe(subject, csi, notFound, nowMs);
      for (const d of found) onDetection(d);
    },
    publishedRate: () =>
      policy.capacityPerSecond > 0
        ? Math.min(policy.capacityPerSecond, policy.perResolverPerSecond)
        : policy.perResolverPerSecond,
    reconfigure(next, nextEnumeration) {
      policy = next;
      build(next);
      detector.setPolicy(nextEnumeration);
    },
    refused,
    enumeration: detector,
  };
}
