// Resolver process entry: argv/env -> config -> logger -> registry sync + cache + upstream +
// change subscriptions -> gRPC -> signals, through core's runServer.
import { join } from "node:path";
import { startRegistrySync } from "@mimi/client";
import {
  createEnumerationDetector,
  ensurePrivateDir,
  LoopDelayGuard,
  loadPublicKey,
  pb,
  readOrCreateSecret,
  registryKeys,
  verifyOutcome,
} from "@mimi/core";
import { reloadAdmins, runServer } from "@mimi/host";
import { channelCredentials, createChannelPool, outcomesBy } from "@mimi/rpc";
import { createTtlCache } from "./cache.js";
import { type ChangeSubscriptions, createChangeSubscriptions } from "./changes.js";
import { clusterPrimary, shareWithCluster } from "./cluster-share.js";
import { parseConfig, type ResolverConfig } from "./config.js";
import { type CsiFilters, createCsiFilters } from "./csi-filters.js";
import { createFederationCounts } from "./federation.js";
import { registerResolverMetrics } from "./metrics.js";
import { createOprfPool } from "./oprf-pool.js";
import { createPrivateLookups, type PrivateLookups } from "./private-lookups.js";
import { createQuotas } from "./quotas.js";
import { createRateContexts, RATE_CONTEXT_KEY_BYTES } from "./rate-context.js";
import { bindResolverServer, logDetection } from "./server.js";
import { answerIndex, type CachedAnswer, createResolverService, type ResolverService } from "./service.js";
import { createUpstream } from "./upstream.js";
import { createVerifyPool, verifyOffLoop } from "./verify-pool.js";

runServer<ResolverConfig>(process, {
  role: "resolver",
  parseConfig,
  check(config) {
    loadPublicKey(config.rootPublicKey);
  },
  reloadable: ["admins", "quotas", "enumeration"],
  cluster: {
    workers: (config) => config.workers,
    // The data folder and the rate-context key exist before the workers start, so they all use one key.
    prepare: (config) => void rateContextKey(config),
    primary: (ctx) => clusterPrimary(ctx, logDetection),
  },
  start({ config, log, clock, tls, server, metrics, cluster }) {
    // The saved registry copy lives in a folder only this user may open (0700); one that others
    // may open or change is refused unless the config accepts it.
    if (config.dataDir) {
      const allowInsecure = config.allowInsecureDataPermissions;
      const problem = ensurePrivateDir(config.dataDir, { allowInsecure });
      if (problem) log.warn({ problem }, "insecure data permissions accepted");
    }
    let synced = false;
    // Registry changes reach the service once it exists (the sync starts first, to load the copy).
    let service: ResolverService | undefined;
    let subscriptions: ChangeSubscriptions | undefined;
    let filters: CsiFilters | undefined;
    let privateLookups: PrivateLookups | undefined;
    let retainEndpoints: (() => void) | undefined;
    const sync = startRegistrySync({
      rootEndpoints: config.rootEndpoints,
      // Only a root may serve the registry (a certificate with the root role).
      credentials: channelCredentials(tls, { role: "root" }),
      log,
      clock,
      rootPublicKey: loadPublicKey(config.rootPublicKey),
      onChange: (change) => {
        service?.registryChanged(change);
        // A key or a range moved: kept private-lookup buckets may hold answers it changed.
        if (change.kind !== "refresh") privateLookups?.changedAll();
        if (change.kind === "put_dp" || change.kind === "delete_dp") subscriptions?.reconcile();
        if (change.kind !== "put_msp" && change.kind !== "delete_msp" && change.kind !== "refresh")
          filters?.reconcile();
        // Last: the streams above have moved off the endpoints it lets go.
        if (change.kind === "put_dp" || change.kind === "delete_dp") retainEndpoints?.();
      },
      onSnapshot: () => {
        service?.registryReplaced();
        privateLookups?.changedAll();
        subscriptions?.reconcile();
        filters?.reconcile();
        retainEndpoints?.();
      },
      ...(config.dataDir ? { persistPath: join(config.dataDir, "registry.bin") } : {}),
    });
    const changeKeys = new Map<string, Uint8Array>();
    const cache = createTtlCache<CachedAnswer>({
      ...config.cache,
      now: clock,
      indexKey: answerIndex(changeKeys),
      kindOf: (v) => (v.kind === "answer" ? "positive" : "negative"),
    });
    const keys = registryKeys(sync.view);
    // Ed25519 checks of DP answers run on worker threads, started at the first cold lookup.
    const verifyPool = createVerifyPool({ threads: config.verifyThreads });
    // So do a private lookup's blinding and finalizing, as many threads again.
    const oprfPool = createOprfPool({ threads: config.verifyThreads });
    const upstream = createUpstream({
      channels: createChannelPool(tls),
      registry: sync.view,
      log,
      attemptTimeoutMs: config.upstreamTimeoutMs,
      // Lookups a query (or the configuration) asks privately go through the same windows.
      privateLookups: (channel) =>
        (privateLookups = createPrivateLookups({
          channel,
          now: clock,
          timeoutMs: config.upstreamTimeoutMs,
          negativeTtlSeconds: config.cache.negativeMaxTtlSeconds,
          pool: oprfPool,
          // Buckets are kept only while the DP's change stream would say they changed.
          following: (dpId) => subscriptions?.connected(dpId) === true,
          position: (dpId) => subscriptions?.position(dpId),
        })),
      // Per DP (ids from the registry): each lookup's time, window wait included, and result.
      ...(metrics && {
        observe: outcomesBy(
          metrics,
          { total: "mimi_resolver_dp_lookups_total", seconds: "mimi_resolver_dp_lookup_duration_seconds" },
          "Lookups sent to each DP",
          "dp",
        ),
      }),
    });
    // Streams and channels to endpoints no DP lists any longer end (grpc-js would reconnect to
    // them every few seconds for as long as they lived).
    retainEndpoints = () => {
      const closed = upstream.retain(sync.view.allDps());
      if (closed > 0) log.info({ closed }, "closed the channels to endpoints no DP lists");
    };
    const resolver = createResolverService({
      cache,
      registry: sync.view,
      registryProblem: () => (synced ? sync.problem() : "the resolver has no copy of the root registry yet"),
      upstream,
      log,
      negativeMaxTtlSeconds: config.cache.negativeMaxTtlSeconds,
      staleAnswerTtlSeconds: config.cache.staleAnswerTtlSeconds,
      verify: (csi, outcome) =>
        verifyOffLoop(
          verifyPool,
          () => verifyOutcome(csi, outcome, keys, clock()),
          () => sync.view.serial,
        ),
      prefetch: {
        minHits: config.cache.prefetchMinHits,
        remainingFraction: config.cache.prefetchPercent / 100,
      },
      now: clock,
      changeKeys,
    });
    service = resolver;
    const subs = createChangeSubscriptions({
      registry: sync.view,
      upstream,
      // Every event or resync of a DP also drops the private-lookup buckets kept from it.
      sink: {
        changed(dpId, hashHex, endpoint) {
          privateLookups?.changed(dpId);
          resolver.changed(dpId, hashHex, endpoint);
        },
        changeKey: (dpId, key) => resolver.changeKey(dpId, key),
        resync(dpId, counted) {
          privateLookups?.changed(dpId);
          return resolver.resync(dpId, counted);
        },
      },
      log,
      now: clock,
      maxBackoffMs: 5_000,
    });
    subscriptions = subs;
    // Federated DPs' CSI filters: a federated query asks such a DP only when its filter may hold the CSI.
    const csiFilters = createCsiFilters({ registry: sync.view, upstream, log, maxBackoffMs: 5_000 });
    filters = csiFilters;
    const federationCounts = createFederationCounts();
    // A worker of several shares budgets and enumeration detection with the others (cluster-share.ts).
    const share = cluster && shareWithCluster(cluster, config, clock);
    const quotas = share ? share.quotas : createQuotas(config.quotas);
    const enumeration = share ? share.enumeration : createEnumerationDetector(config.enumeration);
    // Lateness is measured on the monotonic clock: a wall clock that steps would read as delay.
    const loop = new LoopDelayGuard({
      maxDelayMs: config.maxEventLoopDelayMs,
      everyMs: 10,
      now: () => performance.now(),
    }).start();
    if (metrics) {
      registerResolverMetrics(metrics, {
        service: resolver,
        upstream,
        subscriptions: subs,
        quotas,
        enumeration,
        registry: { serial: () => sync.view.serial, seal: () => sync.seal(), now: clock },
        cacheEvictions: () => cache.evictions,
        verifyPool,
        loop,
        federation: federationCounts,
        filters: csiFilters,
        privateLookups: () => privateLookups?.stats,
      });
    }
    const admins = new Set(config.admins);
    bindResolverServer(server, resolver, {
      log,
      registry: sync.view,
      admins,
      subscriptions: subs,
      registryConnected: () => sync.connected(),
      quotas,
      enumeration,
      rateContexts: createRateContexts(rateContextKey(config)),
      upstreamWindows: () => upstream.windows(),
      maxFederatedDps: config.maxFederatedDps,
      privateByDefault: (dpId) => config.privateLookups.all || config.privateLookups.dps.includes(dpId),
      mayHold: (dpId, uri) => csiFilters.mayHold(dpId, uri),
      filterStates: () => csiFilters.states(),
      federationCounts,
      loop,
      now: clock,
    });
    // Resolution needs the registry copy (from a root or from disk); NOT_SERVING until then.
    const ready = sync.ready.then(() => {
      synced = true;
      subs.reconcile();
      csiFilters.reconcile();
    });
    return {
      healthServices: [pb.ResolverService.typeName],
      ready,
      reload(next, applied) {
        if (applied.includes("admins")) reloadAdmins(admins, next.admins, log);
        if (applied.includes("quotas")) {
          quotas.setPolicy(next.quotas);
          log.info({ quotas: next.quotas }, "quotas reloaded");
        }
        if (applied.includes("enumeration")) {
          enumeration.setPolicy(next.enumeration);
          log.info({ enumeration: next.enumeration }, "enumeration detection reloaded");
        }
      },
      notReady: () => sync.problem(),
      shutdownFields: () => ({ ...resolver.stats }),
      stop() {
        loop.stop();
        share?.close();
        sync.close();
        subs.close();
        csiFilters.close();
        upstream.close();
        void verifyPool.close();
        void oprfPool.close();
      },
    };
  },
});

/**
 * The key of the rate-limit contexts this resolver sends DPs (kept in the data folder, so a
 * restart keeps them; without one, a key for this process's life). A cluster's primary makes it
 * before its workers start.
 */
function rateContextKey(config: ResolverConfig): Uint8Array | undefined {
  if (!config.dataDir) return undefined;
  ensurePrivateDir(config.dataDir, { allowInsecure: config.allowInsecureDataPermissions });
  return readOrCreateSecret(
    join(config.dataDir, "rate-context.key"),
    RATE_CONTEXT_KEY_BYTES,
    "a rate-limit context key",
  );
}
