// What the resolver's gRPC bindings (server.ts, admin-server.ts) are given besides the service.
import type { EnumerationDetector, Logger, LoopDelayGuard, RegistryView } from "@mimi/core";
import type { ChangeSubscriptions } from "./changes.js";
import type { FilterState } from "./csi-filters.js";
import type { FederationCounts } from "./federation.js";
import type { Quotas } from "./quotas.js";
import type { RateContexts } from "./rate-context.js";

/** Options of the resolver's gRPC binding. */
export interface ResolverServerOptions {
  log: Logger;
  registry: RegistryView;
  /** Identities allowed to call ResolverAdminService (live: a reload replaces its members). */
  admins: ReadonlySet<string>;
  subscriptions: ChangeSubscriptions;
  registryConnected: () => boolean;
  /** Lookup budgets: what the cache cannot answer is charged to the caller. */
  quotas: Quotas;
  /** The pseudonyms forwarded to DPs for each caller's lookups (P2). */
  rateContexts: RateContexts;
  /** Watches each caller's answers for the crawl pattern; in enforce mode refuses its misses. */
  enumeration: EnumerationDetector;
  /** Most federated DPs one query asks (R12); a longer client list is refused, the rest of a longer selection left out. */
  maxFederatedDps: number;
  /** False when federated DP `dpId`'s CSI filter says it holds nothing for `uri` (csi-filters.ts). */
  mayHold: (dpId: string, uri: string) => boolean;
  /** Federated queries and what became of their DPs, counted for the metrics. */
  federationCounts?: FederationCounts;
  /** Whether lookups at a DP are private when a query does not say (config privateLookups). */
  privateByDefault: (dpId: string) => boolean;
  /** The federated DPs' filters, for GetStats. */
  filterStates: () => readonly FilterState[];
  /** The adaptive windows of lookups in flight per DP (upstream.ts). */
  upstreamWindows: () => { dpId: string; inflight: number; window: number; queued: number }[];
  /** Whether the event loop is too far behind to take lookups that need a DP (core runtime/loop-delay.ts). */
  loop: Pick<LoopDelayGuard, "admit" | "delayMs">;
  now: () => number;
}
