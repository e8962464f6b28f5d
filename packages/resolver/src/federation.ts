// Federated DPs' answers (D4, R10): a query that federates asks the range's federated DPs
// besides its authoritative one. Each federated DP's answer for a CSI is verified and cached on
// its own, under a key of its own ("fed:<dp>/<uri>"), so a local query never sees it and every
// freshness rule of the cache applies to it as to any answer: the DP's change events evict it at
// once (R20), a resync or key change drops it, a registry change that takes the DP off the range
// drops it. The merge of the parts is made per query (core's mergeFederated), never cached.
import {
  type Csi,
  csiHash,
  DiscoveryError,
  type DpInfo,
  type FederatedPart,
  type FederationPlan,
  isPartial,
  type Logger,
  type LookupOutcome,
  type LookupParams,
  type MergedAnswer,
  mergeFederated,
  type RegistryView,
  type SealStatement,
  type SourceReport,
  servesRange,
} from "@mimi/core";
import type { TtlCache } from "./cache.js";
import { CachedAnswer, isPartKey, partKey, uriOfKey } from "./cached-answer.js";
import { callerGone } from "./call-bounds.js";
import { type Flight, InFlight } from "./in-flight.js";
import type { MissCaller, Resolution, ResolverStats, Verified } from "./lookup-context.js";
import { eventKey, type RecentChanges } from "./recent-changes.js";
import type { Upstream } from "./upstream.js";

/** Whether a cached answer is still right for its range: from its DP, or, for a part, from a DP of the range. */
export function answersRange(
  registry: Pick<RegistryView, "find">,
  cacheKey: string,
  v: CachedAnswer,
): boolean {
  const d = registry.find(v.keyOf(uriOfKey(cacheKey)));
  if (!isPartKey(cacheKey)) return (d?.dpId ?? "") === v.dpId;
  return d !== undefined && servesRange(d, v.dpId) && d.dpId !== v.dpId;
}

/** What the part lookups need from the resolver service. */
export interface PartDeps {
  cache: TtlCache<CachedAnswer>;
  registry: RegistryView;
  upstream: Upstream;
  verify: (csi: Csi, outcome: LookupOutcome) => Verified | Promise<Verified>;
  recent: RecentChanges;
  changeKeys: ReadonlyMap<string, Uint8Array>;
  stats: ResolverStats;
  log: Logger;
  negativeMaxTtlSeconds: number;
  encodingRegistry: { readonly serial: bigint; indexOf(mspId: string): number | undefined };
  sealLeftSeconds: (sealed: SealStatement | undefined) => number;
  /** Why the registry copy may not be used now, or undefined when it may. */
  registryProblem: () => string | undefined;
}

/**
 * Lookups of federated DPs' answers: from the cache, or asked of the DP (one lookup per DP and
 * CSI in flight, shared by concurrent callers). `onMiss` runs on a miss only, like the
 * resolver's own lookups: it charges the caller at that DP and says who the DP is asked for.
 */
export function createPartLookups(d: PartDeps) {
  // A lookup in flight per part, plain or private (in-flight.ts).
  const inflight = new InFlight<Resolution>();

  const ask = async (dp: DpInfo, csi: Csi, caller: MissCaller, flight: Flight): Promise<Resolution> => {
    const key = partKey(dp.id, csi.uri);
    const startedAt = d.recent.count;
    d.stats.upstreamRequests++;
    let outcome: LookupOutcome;
    let sealed: Verified;
    const abandoned = () => caller.gone?.() === true && !flight.joined;
    try {
      outcome = await d.upstream.lookup(dp, csi.uri, {
        rateContext: caller.contextFor(dp.id),
        waitUntilMs: caller.waitUntilMs,
        abandoned,
        privately: caller.privateAt?.(dp.id),
        prefer: d.recent.deliveredBy(dp.id, d.changeKeys.get(dp.id), csi.uri),
      });
      if (abandoned()) throw callerGone(true);
      try {
        sealed = await d.verify(csi, outcome);
      } catch (err) {
        d.stats.verificationFailures++;
        d.log.warn(
          { csi: csiHash(csi.uri), dp: dp.id, err: (err as Error).message },
          "federated answer failed verification",
        );
        throw err;
      }
    } catch (err) {
      d.stats.upstreamFailures++;
      throw err;
    }
    const range = d.registry.find(csi.key);
    // The DP left the range while the lookup was out, or a change event for this CSI came
    // meanwhile (the answer may predate it): the answer is given once and not cached.
    const hashKey = startedAt !== d.recent.count ? d.changeKeys.get(dp.id) : undefined;
    const raced = hashKey !== undefined && d.recent.after(eventKey(dp.id, hashKey, csi.uri), startedAt);
    if (!range || !servesRange(range, dp.id) || range.dpId === dp.id || raced) {
      return { outcome, ttlSeconds: 0, stale: false, source: "upstream" };
    }
    const wanted =
      outcome.kind === "answer" ? outcome.ttlSeconds : Math.min(outcome.ttlSeconds, d.negativeMaxTtlSeconds);
    const answer = new CachedAnswer(outcome, csi.key, false, d.encodingRegistry);
    const ttl = d.cache.set(key, answer, wanted, d.sealLeftSeconds(sealed));
    return { outcome, ttlSeconds: ttl, stale: false, source: "upstream", answer };
  };

  const single = (dp: DpInfo, csi: Csi, caller: MissCaller): Promise<Resolution> =>
    inflight.run(
      inflight.keyOf(partKey(dp.id, csi.uri), caller.privateAt?.(dp.id) === true),
      { caller: caller.key, background: false, waitUntilMs: caller.waitUntilMs },
      (flight) => ask(dp, csi, caller, flight),
      () => single(dp, csi, caller),
    );

  return {
    /**
     * DP `dp`'s answer for `csi` as a federated DP of its range; with `sealedDenial`, a cached
     * NOT_FOUND a private lookup found is a miss (as for service.resolve).
     */
    part(dp: DpInfo, csi: Csi, onMiss: () => MissCaller, sealedDenial = false): Promise<Resolution> {
      // Like the resolver's own walks: no copy of the registry that may be used, no lookup.
      const problem = d.registryProblem();
      if (problem) return Promise.reject(new DiscoveryError("not_ready", `${problem}; retry shortly`));
      const key = partKey(dp.id, csi.uri);
      const hit = d.cache.get(key);
      if (hit && !(sealedDenial && hit.value.private && hit.value.kind === "not_found")) {
        d.stats.hits++;
        const answer = hit.value;
        return Promise.resolve({
          outcome: answer.outcome,
          answer,
          ttlSeconds: hit.remainingTtlSeconds,
          stale: false,
          source: "cache",
        });
      }
      d.stats.misses++;
      let caller: MissCaller;
      try {
        caller = onMiss();
      } catch (err) {
        return Promise.reject(err);
      }
      return single(dp, csi, caller);
    },
    /** Drops every federated DP's answer for `uri` (an operator's flush of one CSI). */
    flush(uri: string): number {
      let n = 0;
      for (const dp of d.registry.allDps()) if (d.cache.delete(partKey(dp.id, uri))) n++;
      return n;
    },
  };
}

/** The part lookups of a resolver service. */
export type PartLookups = ReturnType<typeof createPartLookups>;

/** Federated queries so far, for the resolver's metrics. */
export interface FederationCounts {
  queries: number;
  /** Answers marked partial: a DP failed or was over the fan-out limit. */
  partial: number;
  /** The DPs of those queries, authoritative ones included, by what became of them. */
  readonly sources: Record<SourceReport["outcome"], number>;
}

/** Counts at zero. */
export function createFederationCounts(): FederationCounts {
  return { queries: 0, partial: 0, sources: { answered: 0, skipped: 0, failed: 0, over_limit: 0 } };
}

/** What a federated query found: the merge, each DP's part, and how long it may be cached. */
export interface FederatedResolution {
  readonly merged: MergedAnswer;
  readonly sources: readonly SourceReport[];
  readonly ttlSeconds: number;
  readonly stale: boolean;
}

/**
 * Asks every DP of `plan` at once (the authoritative DP through the resolver's own lookup, the
 * federated ones as parts) and merges what they answered. A DP that fails is reported as such
 * and the answer is partial; when none answers, the authoritative DP's failure is the call's.
 */
export async function resolveFederated(
  plan: FederationPlan,
  params: LookupParams,
  registry: Pick<RegistryView, "dp">,
  lookup: (dp?: DpInfo) => Promise<Resolution>,
  mayHold: (dpId: string) => boolean = () => true,
  counts: FederationCounts = createFederationCounts(),
): Promise<FederatedResolution> {
  // A federated DP whose filter says it holds nothing for the CSI is not asked (G6).
  const skipped = new Set(plan.federated.filter((id) => !mayHold(id)));
  const ids = [plan.delegation.dpId, ...plan.federated];
  const settled = await Promise.allSettled(
    ids.map((id, i) => {
      if (i === 0) return lookup();
      if (skipped.has(id)) return Promise.resolve(undefined);
      const dp = registry.dp(id);
      return dp
        ? lookup(dp)
        : Promise.reject(new DiscoveryError("upstream_unavailable", `DP "${id}" is not in the registry`));
    }),
  );
  const parts: FederatedPart[] = [];
  const sources: SourceReport[] = [];
  let ttlSeconds = Number.POSITIVE_INFINITY;
  let stale = false;
  for (const [i, r] of settled.entries()) {
    const dpId = ids[i] as string;
    const authoritative = i === 0;
    if (r.status === "rejected") {
      // The caller's words for it, as a failed call would give them (never a stray internal text).
      const e = r.reason instanceof DiscoveryError ? r.reason : undefined;
      sources.push({
        dpId,
        authoritative,
        outcome: "failed",
        failure: e?.message ?? "internal error",
        ...(e?.details?.reason && { reason: e.details.reason }),
        ...(e?.details?.retryAfterMs !== undefined && { retryAfterMs: e.details.retryAfterMs }),
      });
      continue;
    }
    if (r.value === undefined) {
      sources.push({ dpId, authoritative, outcome: "skipped" });
      continue;
    }
    const { outcome } = r.value;
    parts.push({ dpId, outcome });
    ttlSeconds = Math.min(ttlSeconds, r.value.ttlSeconds);
    stale ||= r.value.stale;
    sources.push({
      dpId,
      authoritative,
      outcome: "answered",
      status: outcome.kind,
      ...(outcome.seal && { seal: outcome.seal }),
      ...(outcome.kind === "opted_out" && outcome.optOut && { optOut: outcome.optOut }),
    });
  }
  if (parts.length === 0) throw (settled[0] as PromiseRejectedResult).reason;
  for (const dpId of plan.overLimit) {
    sources.push({
      dpId,
      authoritative: false,
      outcome: "over_limit",
      failure: "not asked: over the resolver's fan-out limit (maxFederatedDps)",
      reason: "FANOUT_LIMIT",
    });
  }
  counts.queries++;
  for (const s of sources) counts.sources[s.outcome]++;
  if (isPartial(sources)) counts.partial++;
  return { merged: mergeFederated(parts, params), sources, ttlSeconds, stale };
}
