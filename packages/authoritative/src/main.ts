// Authoritative process entry: argv/env -> config -> logger -> store + registry sync + claims +
// change log + peer requests -> gRPC -> signals, through core's runServer.
import { existsSync, rmSync } from "node:fs";
import { join } from "node:path";
import { getHeapStatistics } from "node:v8";
import { savedRegistryCopy, startRegistrySync } from "@mimi/client";
import {
  CHANGE_HASH_KEY_BYTES,
  ConfigError,
  checkDataDir,
  derivedSecret,
  loadPublicKey,
  loadSigningKey,
  pb,
  readOrCreateSecret,
  registryKeys,
  replacePrivateFile,
  sqliteFilesOf,
} from "@mimi/core";
import { reloadAdmins, runServer } from "@mimi/host";
import {
  channelCredentials,
  counterFrom,
  countersFrom,
  createChannelPool,
  gaugeFrom,
  registryGauges,
} from "@mimi/rpc";
import { answerCacheMetrics } from "./answer-cache.js";
import { createBulkVerifier } from "./bulk-verifier.js";
import { createChangeLog } from "./change-log.js";
import { createClaims } from "./claims/index.js";
import { type AuthoritativeConfig, answerCacheProblem, parseConfig } from "./config.js";
import { createDpFilter } from "./csi-filter.js";
import { bindFilterServer } from "./filter-server.js";
import { createLookupLimits } from "./lookup-limits.js";
import { createOprfPool, type OprfPool } from "./oprf-pool.js";
import { createPeerSender } from "./peers.js";
import { readKeyFile } from "./private-key-file.js";
import { createPrivateKeys, type PrivateKeys } from "./private-keys.js";
import { bindPrivateServer } from "./private-server.js";
import type { EpochKeys } from "./private-table.js";
import { replicationMetrics, startReplication } from "./replication/index.js";
import { createCodeSender } from "./senders.js";
import { bindAuthoritativeServer } from "./server.js";
import { createAuthoritativeService } from "./service.js";
import { openMappingStore } from "./store/store.js";

// Keys the hashes of open codes. Derived from the DP's signing key, so every endpoint of a
// replicated DP holds it and a promoted secondary completes the challenges the old primary
// opened (a new signing key ends the open ones: their MSPs start the claim again).
const CODE_SECRET_PURPOSE = "MIMI-CODE-HASH-v1";

/** Refuses an answer cache this process's heap could not hold (at `--check` and at every start). */
function refuseOversizedCache(config: AuthoritativeConfig): void {
  const problem = answerCacheProblem(config.answerCacheMegabytes, getHeapStatistics().heap_size_limit);
  if (problem) throw new ConfigError(problem);
}

runServer<AuthoritativeConfig>(process, {
  role: "authoritative",
  parseConfig,
  check(config) {
    refuseOversizedCache(config);
    const key = loadSigningKey(config.signingKey);
    // The signing key against the registry this DP last saw: a key the registry does not
    // publish makes resolvers refuse every answer (a copy the root did not sign is an error too).
    const path = join(config.dataDir, "registry.bin");
    const saved = savedRegistryCopy(path, loadPublicKey(config.rootPublicKey));
    if (saved && "problem" in saved) throw new ConfigError(saved.problem);
    if (saved) {
      const entry = saved.data.dps.find((d) => d.id === config.dpId);
      if (!entry) {
        throw new ConfigError(
          `the registry (serial ${saved.data.serial}, ${path}) lists no DP "${config.dpId}"`,
        );
      }
      if (!Buffer.from(entry.signingPublicKey).equals(key.publicKey)) {
        throw new ConfigError(
          `the registry (serial ${saved.data.serial}, ${path}) publishes another signing key for DP "${config.dpId}" ` +
            `than ${config.signingKey}; resolvers would refuse its answers (fix signingKey, or mimi root dp put --signing-key)`,
        );
      }
    }
  },
  reloadable: ["admins", "lookupLimits", "enumeration"],
  logName: (config) => `authoritative-${config.dpId}`,
  start({ config, log, clock, tls, server, metrics }) {
    refuseOversizedCache(config);
    const dbPath = join(config.dataDir, "mappings.sqlite");
    // The store holds phone numbers, email addresses and service ids: the data folder is made
    // 0700 and the store 0600, and one that others may open is refused unless the config accepts it.
    const filterPath = join(config.dataDir, "csi-filter.bin");
    const oprfKeyPath = join(config.dataDir, "oprf-key.json");
    const dataFiles = [...sqliteFilesOf(dbPath), filterPath, oprfKeyPath];
    // The code-hash key once was a file of its own; it is derived from the signing key now.
    const oldCodeSecret = join(config.dataDir, "code-secret");
    if (existsSync(oldCodeSecret)) {
      rmSync(oldCodeSecret, { force: true });
      log.info(
        { path: oldCodeSecret },
        "removed the old code-hash key file (the key is derived from the signing key)",
      );
    }
    const allowInsecure = config.allowInsecureDataPermissions;
    for (const problem of checkDataDir(config.dataDir, dataFiles, { allowInsecure })) {
      log.warn({ problem }, "insecure data permissions accepted");
    }
    const store = openMappingStore(dbPath, { durability: config.durability });
    log.info({ path: dbPath, mappings: store.count(), durability: store.durability() }, "store opened");
    const legacy = store.legacyCount();
    if (legacy > 0) {
      log.warn(
        { legacy },
        "unsigned mappings from an older version are kept but not served; re-register them",
      );
    }
    const signingKey = loadSigningKey(config.signingKey);
    let synced = false;
    // The private-lookup keys and tables (issue 16), built once the registry says which CSIs
    // this DP serves. The key file is read (by a primary, made) once the role is known, so a
    // damaged one stops the start; a secondary takes its primary's keys.
    let privateKeys: PrivateKeys | undefined;
    // Follow streams waiting to send the primary's keys again after a change.
    const keyWakes = new Set<() => void>();
    const sync = startRegistrySync({
      rootEndpoints: config.rootEndpoints,
      // Only a root may serve the registry (a certificate with the root role).
      credentials: channelCredentials(tls, { role: "root" }),
      log,
      clock,
      persistPath: join(config.dataDir, "registry.bin"),
      rootPublicKey: loadPublicKey(config.rootPublicKey),
      onChange: (change) => {
        if (synced) checkPublishedKey();
        // What this DP serves, or an MSP key its opt-out answers depend on, may have changed.
        if (change.kind !== "refresh") privateKeys?.rescan(`registry change ${change.kind}`);
      },
      onSnapshot: () => {
        if (synced) checkPublishedKey();
        privateKeys?.rescan("a new registry copy");
      },
    });
    // Answers verify only if the registry publishes this DP's key: say so loudly while it does
    // not (a new DP is often registered after it first starts), and once when it does.
    let keyPublished: boolean | undefined;
    const checkPublishedKey = () => {
      const published = sync.view.dp(config.dpId)?.signingPublicKey;
      const ok = published !== undefined && Buffer.from(published).equals(signingKey.publicKey);
      // Resolvers make private lookups only with the key the registry publishes as newest.
      privateKeys?.published(sync.view.dp(config.dpId)?.privateLookupKeys);
      if (ok === keyPublished) return;
      keyPublished = ok;
      if (ok) log.info({ dpId: config.dpId }, "the root registry publishes this DP's signing key");
      else {
        log.warn(
          { dpId: config.dpId },
          "the root registry does not (yet) publish this DP's signing key; resolvers refuse its answers until it does (mimi root dp put --signing-key)",
        );
      }
    };
    const service = createAuthoritativeService({
      dpId: config.dpId,
      store,
      registry: sync.view,
      registryProblem: () => (synced ? sync.problem() : "no registry copy received from a root yet"),
      storeProblem: () => replication.storeProblem(),
      ttlCapSeconds: () => replication.answerTtlCap(),
      clock,
      answerTtlSeconds: config.answerTtlSeconds,
      negativeTtlSeconds: config.negativeTtlSeconds,
      signingKey,
      answerSealMs: config.answerSealSeconds * 1000,
      sealBatchMax: config.sealBatchMax,
      sealBatchWaitMs: config.sealBatchWaitMs,
      answerCacheBytes: config.answerCacheMegabytes * 2 ** 20,
    });
    const sender = createCodeSender(config.delivery, log, clock);
    // Channels to other DPs and to this DP's own other endpoints, authenticated as this DP
    // (closed with the peer sender).
    const channels = createChannelPool(tls);
    const peers = createPeerSender({
      store,
      registry: sync.view,
      channels,
      clock,
      log,
    });
    const bulkVerifier = createBulkVerifier({ threads: config.bulkVerifyThreads });
    // Made only when private lookups are on; its workers start with the first task.
    const oprfPool = config.privateLookups.enabled
      ? createOprfPool({ threads: config.privateLookups.threads })
      : undefined;
    const claims = createClaims({
      dpId: config.dpId,
      store,
      clock,
      signingKey,
      sender,
      codeSecret: derivedSecret(signingKey, CODE_SECRET_PURPOSE),
      policy: config.claims,
      requireDelegated: (csi) => service.requireDelegated(csi),
      registry: sync.view,
      onPeerRequests: () => void peers.kick(),
      bulkVerifier,
      log,
    });
    const changeKeyPath = join(config.dataDir, "change-key");
    const changeLog = createChangeLog({
      store,
      clock,
      retentionMs: config.changeLogRetentionMs,
      // Kept in the data folder like the code secret: the same key across restarts, so
      // resolvers' indexes stay valid; only watchers (resolvers, DPs) are sent it.
      hashKey: changeKey(changeKeyPath),
      log,
    });
    // Primary and secondaries (issue 17): the DP's endpoints share one store's contents, log
    // and change-hash key, so a resolver's subscription continues at whichever it reaches.
    const dpIdentity = () => sync.view.dp(config.dpId)?.tlsIdentity;
    const replication = startReplication({
      config: config.replication,
      server,
      store,
      changeLog,
      dpId: config.dpId,
      dpIdentity,
      dpRecord: () => sync.view.dp(config.dpId),
      channel: (endpoint) => channels.get(endpoint, dpIdentity() ?? ""),
      setHashKey(key) {
        replacePrivateFile(changeKeyPath, [key]);
        changeLog.setHashKey(key);
      },
      retentionMs: config.changeLogRetentionMs,
      // A copy replaces the store under the CSI filter and the private tables, which no change
      // event describes.
      onCopied: () => {
        filter.rebuildNow("the store was copied from the primary");
        privateKeys?.restart("the store was copied from the primary");
      },
      privateKeys: {
        held: () => privateKeys?.held(),
        subscribe(wake) {
          keyWakes.add(wake);
          return () => keyWakes.delete(wake);
        },
        // Asked for only by an endpoint that serves private lookups.
        ...(config.privateLookups.enabled && { adopt: (keys: EpochKeys[]) => privateKeys?.adopt(keys) }),
      },
      clock,
      log,
    });
    // Made at start only by a lone DP: a replicated primary's first key comes from the sweep, and
    // only while the registry publishes none (one promoted without the DP's keys must not make
    // a key of its own at a restart).
    const makeKeyAtStart = replication.isPrimary() && config.replication.peers.length === 0;
    if (config.privateLookups.enabled) readKeyFile(oprfKeyPath, clock, makeKeyAtStart);
    // The CSI filter resolvers route federated lookups by (G6); built from the store in the background.
    const filter = createDpFilter({
      store,
      changeLog,
      falsePositiveRate: config.filterFalsePositivePpm / 1e6,
      log,
      now: clock,
      // Kept across a clean restart, so resolvers resume their streams; it holds the filter's key.
      snapshotPath: filterPath,
    });
    const sweep = setInterval(() => {
      try {
        // Only the primary writes: a secondary's rows change only as its primary's did.
        if (replication.isPrimary()) {
          claims.sweep();
          void peers.kick();
        }
        changeLog.prune();
        replication.prune();
      } catch (err) {
        log.error({ err: (err as Error).message }, "sweep failed");
      }
      // Renewals page on later turns (their failures are logged there); retirements, a roll.
      try {
        privateKeys?.maintain();
      } catch (err) {
        log.error({ err: (err as Error).message }, "private-lookup key maintenance failed");
      }
    }, config.sweepIntervalMs);
    const limits = createLookupLimits(config.lookupLimits, config.enumeration, (d) =>
      log.warn(
        {
          subject: d.subject,
          scope: d.scope,
          distinct: d.distinct,
          answers: d.answers,
          notFound: d.notFound,
          mode: limits.enumeration.policy.mode,
        },
        limits.enumeration.policy.mode === "enforce"
          ? "enumeration suspected; the context's lookups refused"
          : "enumeration suspected (log mode)",
      ),
    );
    if (metrics) {
      // Read when scraped; no label names anything per caller (a context is never a label).
      counterFrom(metrics, "mimi_dp_lookups_total", "Lookups answered.", () => service.lookupsServed);
      counterFrom(
        metrics,
        "mimi_dp_seal_signatures_total",
        "Signatures made to seal lookups' answers: one per batch sealed together (lookups per signature is the batch size).",
        () => service.sealCounts.signatures,
      );
      if (service.answerCacheCounts) answerCacheMetrics(metrics, service.answerCacheCounts);
      countersFrom(
        metrics,
        "mimi_dp_lookups_refused_total",
        "Lookups refused by the DP's limits (lookupLimits, enumeration), by kind.",
        "kind",
        () => ({ ...limits.refused }),
      );
      counterFrom(
        metrics,
        "mimi_dp_enumeration_detections_total",
        "Windows of a rate-limit context's lookups that looked like a crawl.",
        () => limits.enumeration.counts.detections,
      );
      registryGauges(metrics, { serial: () => sync.view.serial, seal: () => sync.seal(), now: clock });
      countersFrom(
        metrics,
        "mimi_dp_codes_sent_total",
        "Codes handed to a delivery channel, by channel.",
        "channel",
        () => ({ ...sender.counts.sent }),
      );
      countersFrom(
        metrics,
        "mimi_dp_code_delivery_failures_total",
        "Codes a delivery channel could not take, by channel.",
        "channel",
        () => ({ ...sender.counts.failed }),
      );
      countersFrom(
        metrics,
        "mimi_dp_claim_refusals_total",
        "Claim steps refused by the code and proof throttles, by reason (CODE_LIMIT_*, CSI_LOCKED).",
        "reason",
        () => ({ ...claims.refusals }),
      );
      gaugeFrom(metrics, "mimi_dp_conflicts_open", "Claim conflicts waiting for their deadline.", () =>
        store.openConflictCount(),
      );
      gaugeFrom(
        metrics,
        "mimi_dp_csi_filter_false_positive_rate",
        "The CSI filter's false-positive rate at its present fill (a new version is built past its target).",
        () => filter.stats().falsePositiveRate,
      );
      counterFrom(
        metrics,
        "mimi_dp_private_evaluations_total",
        "Blinded CSIs evaluated for private lookups (each one lookup of the caller's budgets).",
        () => privateCounts.evaluated,
      );
      counterFrom(
        metrics,
        "mimi_dp_private_buckets_served_total",
        "Private-lookup buckets served.",
        () => privateCounts.buckets,
      );
      counterFrom(
        metrics,
        "mimi_dp_csi_filter_builds_total",
        "Versions of the CSI filter built.",
        () => filter.stats().versions,
      );
      replicationMetrics(metrics, () => replication.status(), clock);
    }
    const admins = new Set(config.admins);
    bindAuthoritativeServer(server, service, claims, {
      log,
      admins,
      changeLog,
      limits,
      now: clock,
      privateKeys: () => privateKeys,
      privateLookupsEnabled: config.privateLookups.enabled,
      replication,
    });
    // Whether some range names this DP as a federated DP, read again once per registry serial.
    let federatedAt = -1n;
    let federated = false;
    bindFilterServer(server, filter, log, () => {
      if (sync.view.serial === 0n) return undefined;
      if (sync.view.serial !== federatedAt) {
        federatedAt = sync.view.serial;
        federated = sync.view.delegationsOf(config.dpId).some((d) => d.federatedDpIds?.includes(config.dpId));
      }
      return federated;
    });
    const privateCounts = bindPrivateServer(server, () => privateKeys, {
      log,
      limits,
      now: clock,
      enabled: config.privateLookups.enabled,
      atCapacity: () => oprfPool?.full() === true,
      notServing: () => (synced ? (sync.problem() ?? replication.storeProblem()) : undefined),
    });
    // Lookups need the delegations; until the first registry copy arrives the DP is NOT_SERVING.
    const ready = sync.ready.then(async () => {
      synced = true;
      if (config.privateLookups.enabled) {
        privateKeys = createPrivateKeys({
          path: oprfKeyPath,
          retireAfterMs: config.privateLookups.retireAfterSeconds * 1000,
          keyLifetimeMs: config.privateLookups.keyLifetimeDays * 86_400_000,
          dpId: config.dpId,
          store,
          changeLog,
          signingKey,
          answer: (csi, sealMs) => service.answerFor(csi, sealMs),
          mspIndex: (id) => service.mspIndex(id),
          // Nor built from a store that is not whole (a secondary copying) or not to be served.
          notReady: () => sync.problem() ?? replication.storeProblem(),
          // Only the primary makes, rolls and retires keys and logs its tables' changes.
          writer: () => replication.isPrimary(),
          makeKeyAtStart,
          onKeysChanged: () => {
            for (const wake of keyWakes) wake();
          },
          ttlCapSeconds: () => replication.answerTtlCap(),
          entrySealMs: config.privateLookups.entrySealSeconds * 1000,
          bucketSealMs: config.answerSealSeconds * 1000,
          now: clock,
          log,
          pool: oprfPool as OprfPool,
        });
      }
      checkPublishedKey();
      replication.start(registryKeys(sync.view));
      // A secondary is SERVING once it holds a whole copy and has caught up once.
      await replication.whenServing();
    });
    return {
      healthServices: [
        pb.AuthoritativeService.typeName,
        pb.AuthoritativeAdminService.typeName,
        pb.PeerService.typeName,
        pb.CsiFilterService.typeName,
        pb.PrivateLookupService.typeName,
        pb.ReplicationService.typeName,
      ],
      ready,
      // Readiness (ops /readyz): a registry copy that expired or did not verify cannot be served from.
      notReady: () => sync.problem() ?? replication.storeProblem(),
      listening: { dpId: config.dpId },
      reload(next, applied) {
        if (applied.includes("admins")) reloadAdmins(admins, next.admins, log);
        if (applied.includes("lookupLimits") || applied.includes("enumeration")) {
          limits.reconfigure(next.lookupLimits, next.enumeration);
          log.info(
            { lookupLimits: next.lookupLimits, enumeration: next.enumeration },
            "lookup limits reloaded",
          );
        }
      },
      stop() {
        clearInterval(sweep);
        filter.close();
        privateKeys?.close();
        sender.close();
        replication.close();
        peers.close();
        sync.close();
      },
      close() {
        // Calls have drained (or been cut off); a batch still verifying fails before the store closes.
        void bulkVerifier.close();
        void oprfPool?.close();
        store.close();
      },
    };
  },
});

/** The change-hash key; a damaged file would break every resolver's subscription, so it is refused. */
function changeKey(path: string): Uint8Array {
  return readOrCreateSecret(
    path,
    CHANGE_HASH_KEY_BYTES,
    "a change-hash key (a new one makes resolvers resync)",
  );
}
