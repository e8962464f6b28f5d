// What the resolver service (service.ts) is given: its cache, registry copy, upstream and
// verifier, and its freshness policies.
import type { Csi, Logger, LookupOutcome, RegistryView } from "@mimi/core";
import type { TtlCache } from "./cache.js";
import type { CachedAnswer } from "./cached-answer.js";
import type { Verified } from "./lookup-context.js";
import type { Upstream } from "./upstream.js";

/** Background refresh of popular answers (like Unbound's prefetch). */
export interface PrefetchPolicy {
  /** Fresh hits an answer needs within its TTL to be refreshed; 0 turns prefetch off. */
  readonly minHits: number;
  /** Refresh once less than this share of the TTL remains (0..1). */
  readonly remainingFraction: number;
}

/** Options of the resolver service. */
export interface ResolverServiceOptions {
  cache: TtlCache<CachedAnswer>;
  registry: RegistryView;
  /** Why the registry copy may not be used now (none yet, or expired), or undefined when it may. */
  registryProblem: () => string | undefined;
  upstream: Upstream;
  log: Logger;
  /** Upper bound on how long NOT_FOUND is cached, whatever the DP says. */
  negativeMaxTtlSeconds: number;
  /** TTL given with stale answers (RFC 8767 recommends 30 s). */
  staleAnswerTtlSeconds: number;
  /**
   * Checks an upstream answer end to end (its seal and signatures against the root-signed
   * registry) and returns its seal; throws verification_failed when it does not hold. Such
   * answers are never cached or served.
   */
  verify: (csi: Csi, outcome: LookupOutcome) => Verified | Promise<Verified>;
  prefetch: PrefetchPolicy;
  /** Clock for the record of recent change events. */
  now: () => number;
  /** Each DP's change-hash key, as its change log sent it; shared with the cache's index (answerIndex). */
  changeKeys: Map<string, Uint8Array>;
}
