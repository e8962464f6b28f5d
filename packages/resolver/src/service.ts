// Resolver logic, protocol-free: cache -> (one in-flight walk per CSI) -> local registry
// copy -> authoritative -> cache with clamped TTL; serves stale answers when DPs fail.
//
// Walk invariant: the resolver holds the whole delegation table (synced from the root), so a
// walk is one referral lookup in memory plus one call to an authoritative, which never
// recurses. There is no referral chain to loop through.
import {
  type Csi,
  covers,
  csiHash,
  DiscoveryError,
  type Logger,
  type LookupKey,
  type LookupOutcome,
  parseDelegationKeyText,
  type RegistryChange,
  type RegistryView,
} from "@mimi/core";
import type { TtlCache } from "./cache.js";
import type { Upstream } from "./upstream.js";

/** What the cache holds per CSI: the outcome and the key it was delegated by. */
export interface CachedAnswer {
  readonly outcome: LookupOutcome;
  readonly key: LookupKey;
  /** Re-stored after a failed refresh; served as stale until it expires (RFC 8767). */
  readonly stale?: boolean;
}

/** A resolution: the outcome, how long the caller may cache it, and whether it is stale. */
export interface Resolution {
  readonly outcome: LookupOutcome;
  readonly ttlSeconds: number;
  readonly stale: boolean;
  readonly source: "cache" | "upstream" | "stale";
}

/** Counters an operator reads (and tests observe). */
export interface ResolverStats {
  hits: number;
  misses: number;
  stale: number;
  upstreamRequests: number;
  upstreamFailures: number;
  /** Cached answers dropped because their delegation changed. */
  evictedByRegistry: number;
  /** Upstream answers refused because they did not verify. */
  verificationFailures: number;
}

/** The resolver's operations. */
export interface ResolverService {
  resolve(csi: Csi): Promise<Resolution>;
  /** Drops cached answers a registry change made wrong (their range moved, appeared or vanished). */
  registryChanged(change: RegistryChange): void;
  /** The registry copy was replaced wholesale: re-checks every cached answer. */
  registryReplaced(): void;
  readonly stats: Readonly<ResolverStats>;
}

/** Options of the resolver service. */
export interface ResolverServiceOptions {
  cache: TtlCache<CachedAnswer>;
  registry: RegistryView;
  registryReady: () => boolean;
  upstream: Upstream;
  log: Logger;
  /** Upper bound on how long NOT_FOUND is cached, whatever the DP says. */
  negativeMaxTtlSeconds: number;
  /** TTL given with stale answers (RFC 8767 recommends 30 s). */
  staleAnswerTtlSeconds: number;
  /**
   * Checks an upstream answer end to end (signatures against the root-signed registry) and
   * throws verification_failed when it does not hold; such answers are never cached or served.
   */
  verify: (csi: string, outcome: LookupOutcome) => void;
}

/** Creates the resolver service. */
export function createResolverService(o: ResolverServiceOptions): ResolverService {
  const log = o.log.child({ component: "resolver" });
  const inflight = new Map<string, Promise<Resolution>>();
  const stats: ResolverStats = {
    hits: 0,
    misses: 0,
    stale: 0,
    upstreamRequests: 0,
    upstreamFailures: 0,
    evictedByRegistry: 0,
    verificationFailures: 0,
  };
  // The DP an answer must come from now; "" when no delegation covers the key.
  const delegatedDp = (key: LookupKey) => o.registry.find(key)?.dpId ?? "";
  const store = (csi: Csi, outcome: LookupOutcome, ttlSeconds: number, stale = false) =>
    o.cache.set(csi.uri, Object.freeze({ outcome, key: csi.key, ...(stale ? { stale } : {}) }), ttlSeconds);

  const walk = async (csi: Csi, attempt = 0): Promise<Resolution> => {
    if (!o.registryReady()) {
      throw new DiscoveryError(
        "not_ready",
        "the resolver has no copy of the root registry yet; retry shortly",
      );
    }
    const delegation = o.registry.find(csi.key);
    if (!delegation) {
      // No DP is delegated this range: a definite negative answer, cached like one.
      const outcome: LookupOutcome = Object.freeze({
        kind: "not_found",
        dpId: "",
        ttlSeconds: o.negativeMaxTtlSeconds,
      });
      const ttl = store(csi, outcome, o.negativeMaxTtlSeconds);
      return { outcome, ttlSeconds: ttl, stale: false, source: "upstream" };
    }
    const dp = o.registry.dp(delegation.dpId);
    if (!dp) {
      throw new DiscoveryError(
        "upstream_unavailable",
        `the registry delegates to DP "${delegation.dpId}" but lists no such DP`,
      );
    }
    try {
      stats.upstreamRequests++;
      const outcome = await o.upstream.lookup(dp, csi.uri);
      try {
        o.verify(csi.uri, outcome);
      } catch (err) {
        stats.verificationFailures++;
        log.warn(
          { csi: csiHash(csi.uri), dp: dp.id, err: (err as Error).message },
          "answer failed verification",
        );
        throw err;
      }
      if (delegatedDp(csi.key) !== dp.id) {
        // The delegation moved while the lookup was in flight: this answer is from the old DP.
        // Ask the new one (once; a registry flapping faster than a lookup is not chased).
        if (attempt === 0) return walk(csi, 1);
        return { outcome, ttlSeconds: 0, stale: false, source: "upstream" };
      }
      const wanted =
        outcome.kind !== "answer"
          ? Math.min(outcome.ttlSeconds, o.negativeMaxTtlSeconds)
          : outcome.ttlSeconds;
      const ttl = store(csi, outcome, wanted);
      return { outcome, ttlSeconds: ttl, stale: false, source: "upstream" };
    } catch (err) {
      stats.upstreamFailures++;
      const e = err as DiscoveryError;
      const stale = o.cache.getStale(csi.uri);
      // Only an answer from the DP that holds the range today may be served stale.
      if (stale && stale.outcome.dpId === dp.id) {
        stats.stale++;
        log.warn({ csi: csiHash(csi.uri), dp: dp.id, err: e.message }, "serving stale answer");
        // RFC 8767's failure recheck timer: keep serving it for the stale TTL without asking the
        // failed DP again for every request (each attempt costs a full upstream timeout).
        store(csi, stale.outcome, o.staleAnswerTtlSeconds, true);
        return { outcome: stale.outcome, ttlSeconds: o.staleAnswerTtlSeconds, stale: true, source: "stale" };
      }
      throw err;
    }
  };

  // Eviction scans the cache, so changes arriving together (a backlog replayed after a
  // reconnect) are checked in one pass, on the next turn of the event loop.
  let scopes: ((key: LookupKey) => boolean)[] | "all" = [];
  let scheduled = false;
  const evictSoon = (scope: ((key: LookupKey) => boolean) | "all") => {
    if (scope === "all") scopes = "all";
    else if (scopes !== "all") scopes.push(scope);
    if (scheduled) return;
    scheduled = true;
    setImmediate(() => {
      const taken = scopes;
      scopes = [];
      scheduled = false;
      const inScope = taken === "all" ? () => true : (k: LookupKey) => taken.some((f) => f(k));
      const n = o.cache.prune((_uri, v) => inScope(v.key) && delegatedDp(v.key) !== v.outcome.dpId);
      stats.evictedByRegistry += n;
      if (n > 0) log.info({ evicted: n }, "cached answers evicted after registry change");
    });
  };

  return {
    stats,
    resolve(csi) {
      const hit = o.cache.get(csi.uri);
      if (hit) {
        stats.hits++;
        return Promise.resolve({
          outcome: hit.value.outcome,
          ttlSeconds: hit.remainingTtlSeconds,
          stale: hit.value.stale === true,
          source: hit.value.stale === true ? "stale" : "cache",
        });
      }
      stats.misses++;
      // Concurrent misses for one CSI share a single upstream request.
      let p = inflight.get(csi.uri);
      if (!p) {
        p = walk(csi).finally(() => inflight.delete(csi.uri));
        inflight.set(csi.uri, p);
      }
      return p;
    },
    registryChanged(change) {
      // Only delegation edits move answers; the changed key bounds which entries to check.
      if (change.kind === "put_delegation") {
        const key = change.delegation.key;
        evictSoon((k) => covers(key, k));
      } else if (change.kind === "delete_delegation") {
        const key = parseDelegationKeyText(change.id);
        evictSoon((k) => covers(key, k));
      }
    },
    registryReplaced() {
      evictSoon("all");
    },
  };
}
