// The resolver's own metrics on the ops listener, in the shape of CoreDNS's cache plugin and
// PowerDNS Recursor's counters: read from the stats the resolver keeps anyway when scraped, so
// the hot path pays nothing. Labels: a DP id (from the registry) at most; nothing per caller.

import type { EnumerationDetector } from "@mimi/core";
import { counterFrom, countersFrom, gaugeFrom, registryGauges } from "@mimi/rpc";
import type { Registry } from "prom-client";
import type { ChangeSubscriptions } from "./changes.js";
import type { CsiFilters } from "./csi-filters.js";
import type { FederationCounts } from "./federation.js";
import type { PrivateLookupStats } from "./private-lookups.js";
import type { Quotas } from "./quotas.js";
import type { ResolverService } from "./service.js";
import type { Upstream } from "./upstream.js";

/** What the resolver's metrics read. */
export interface ResolverMetricSources {
  readonly service: ResolverService;
  readonly upstream: Upstream;
  readonly subscriptions: ChangeSubscriptions;
  readonly quotas: Quotas;
  readonly enumeration: EnumerationDetector;
  /** The registry copy in use (registryGauges). */
  readonly registry: Parameters<typeof registryGauges>[1];
  /** Answers the cache dropped for room, by kind (positive, negative). */
  readonly cacheEvictions: () => Readonly<Record<string, number>>;
  /** The verification pool's work so far (verify-pool.ts). */
  readonly verifyPool: { readonly stats: { readonly batches: number; readonly inline: number } };
  /** The event loop's delay and the lookups refused for it (core runtime/loop-delay.ts). */
  readonly loop: { readonly refused: number; takePeak(): number };
  /** Federated queries (federation.ts) and the federated DPs' CSI filters (csi-filters.ts). */
  readonly federation: FederationCounts;
  readonly filters: Pick<CsiFilters, "states" | "bytes">;
  /** Private lookups made so far (private-lookups.ts). */
  readonly privateLookups: () => PrivateLookupStats | undefined;
}

/** Registers the resolver's metrics on `registry`. */
export function registerResolverMetrics(registry: Registry, s: ResolverMetricSources): void {
  const stats = () => s.service.stats;
  const c = (name: string, help: string, read: () => number) =>
    counterFrom(registry, `mimi_resolver_${name}`, help, read);
  gaugeFrom(registry, "mimi_resolver_cache_entries", "Answers held in the cache.", () => s.service.cacheSize);
  c("cache_hits_total", "Lookups answered from the cache.", () => stats().hits);
  c("cache_misses_total", "Lookups the cache could not answer.", () => stats().misses);
  c("cache_prefetches_total", "Popular answers refreshed before they expired.", () => stats().prefetches);
  c("cache_served_stale_total", "Expired answers served because their DP failed.", () => stats().stale);
  c(
    "cache_invalidations_total",
    "Cached answers dropped by a DP's change event.",
    () => stats().invalidations,
  );
  c(
    "cache_resyncs_total",
    "Times a DP's answers were all dropped (its log could not be continued).",
    () => stats().resyncs,
  );
  c(
    "cache_registry_evictions_total",
    "Cached answers dropped by registry changes.",
    () => stats().evictedByRegistry,
  );
  c(
    "lookups_abandoned_total",
    "Lookups dropped unsent or unverified because their caller had gone (cancelled or past its deadline).",
    () => stats().abandoned,
  );
  c("cache_flushed_total", "Cached answers dropped by an operator's flush.", () => stats().flushed);
  gaugeFrom(
    registry,
    "mimi_resolver_event_loop_delay_peak_ms",
    "The event loop's largest delay since the last scrape, ms; past maxEventLoopDelayMs, lookups that need a DP are refused.",
    () => s.loop.takePeak(),
  );
  c(
    "overload_refusals_total",
    "Lookups that needed a DP refused while the event loop ran late (RESOLVER_OVERLOADED).",
    () => s.loop.refused,
  );
  c(
    "verify_batches_total",
    "Batches of Ed25519 checks of DP answers sent to the verification threads.",
    () => s.verifyPool.stats.batches,
  );
  c(
    "verify_inline_total",
    "Ed25519 checks made on the event loop because the verification threads were busy (or verifyThreads is 0).",
    () => s.verifyPool.stats.inline,
  );
  countersFrom(
    registry,
    "mimi_resolver_cache_evictions_total",
    "Answers dropped to make room (least recently used), by kind: positive (mappings) or negative (not found, opted out).",
    "kind",
    s.cacheEvictions,
  );
  c("upstream_requests_total", "Lookups sent to DPs.", () => stats().upstreamRequests);
  c("upstream_failures_total", "Lookups to DPs that failed.", () => stats().upstreamFailures);
  c(
    "verification_failures_total",
    "DP answers refused because they did not verify.",
    () => stats().verificationFailures,
  );
  c("quota_refusals_total", "Lookups refused because the caller's budget was spent.", () => s.quotas.refused);
  c(
    "enumeration_detections_total",
    "Windows of a caller's lookups that looked like a crawl.",
    () => s.enumeration.counts.detections,
  );
  c(
    "enumeration_refusals_total",
    "Lookups refused by an enforced enumeration detection.",
    () => s.enumeration.counts.refused,
  );
  countersFrom(
    registry,
    "mimi_resolver_upstream_refusals_total",
    "Lookups a DP's gate refused unsent (UPSTREAM_SATURATED: they would have been answered too late, or its queue was full; DP_CAPACITY: over its published rate).",
    "dp",
    () => Object.fromEntries(s.upstream.windows().map((w) => [w.dpId, w.refused])),
  );
  registryGauges(registry, s.registry);
  const perDp = (pick: (w: { inflight: number; window: number; queued: number }) => number) => () =>
    s.upstream.windows().map((w) => ({ labels: { dp: w.dpId }, value: pick(w) }));
  gaugeFrom(
    registry,
    "mimi_resolver_upstream_window",
    "Lookups the adaptive window lets be in flight at a DP.",
    perDp((w) => w.window),
    ["dp"],
  );
  gaugeFrom(
    registry,
    "mimi_resolver_upstream_inflight",
    "Lookups in flight at a DP.",
    perDp((w) => w.inflight),
    ["dp"],
  );
  gaugeFrom(
    registry,
    "mimi_resolver_upstream_queued",
    "Lookups waiting for a DP's window.",
    perDp((w) => w.queued),
    ["dp"],
  );
  gaugeFrom(
    registry,
    "mimi_resolver_change_subscription_connected",
    "1 while the change subscription to a DP is open and caught up.",
    () => s.subscriptions.states().map((x) => ({ labels: { dp: x.dpId }, value: x.connected ? 1 : 0 })),
    ["dp"],
  );
  c(
    "federated_queries_total",
    "Queries that federated (asked a range's federated DPs too).",
    () => s.federation.queries,
  );
  c(
    "federated_partial_total",
    "Federated answers marked partial: a DP failed or was over the fan-out limit.",
    () => s.federation.partial,
  );
  countersFrom(
    registry,
    "mimi_resolver_federated_sources_total",
    "DPs of federated queries by outcome (answered, skipped by their CSI filter, failed, over the fan-out limit).",
    "outcome",
    () => ({ ...s.federation.sources }),
  );
  gaugeFrom(
    registry,
    "mimi_resolver_csi_filter_routing",
    "1 while a federated DP's CSI filter is whole and its stream open, so it decides which lookups go there.",
    () => s.filters.states().map((f) => ({ labels: { dp: f.dpId }, value: f.routing ? 1 : 0 })),
    ["dp"],
  );
  c("private_lookups_total", "Lookups made privately at DPs.", () => s.privateLookups()?.lookups ?? 0);
  c(
    "private_evaluations_total",
    "Evaluate calls of private lookups (each carries the lookups of one DP and caller made together).",
    () => s.privateLookups()?.evaluations ?? 0,
  );
  c(
    "private_buckets_behind_total",
    "Private-lookup buckets a DP endpoint read before applying a change this resolver had seen (answers served uncached).",
    () => s.privateLookups()?.bucketsBehind ?? 0,
  );
  c(
    "private_bucket_bytes_total",
    "Bytes of private-lookup buckets received.",
    () => s.privateLookups()?.bucketBytes ?? 0,
  );
  c(
    "private_bucket_hits_total",
    "Private lookups answered from a bucket kept from an earlier fetch (no fetch at the DP).",
    () => s.privateLookups()?.bucketHits ?? 0,
  );
  gaugeFrom(registry, "mimi_resolver_csi_filter_bytes", "Bytes of federated DPs' CSI filters held.", () =>
    s.filters.bytes(),
  );
}
