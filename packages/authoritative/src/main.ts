// Authoritative process entry: argv/env -> config -> logger -> store + registry sync + claims +
// change log + peer requests -> gRPC -> signals, through core's runServer.
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import {
  channelCredentials,
  createChannelPool,
  loadPublicKey,
  loadSigningKey,
  pb,
  runServer,
  startRegistrySync,
} from "@mimi/core";
import { createChangeLog } from "./change-log.js";
import { createClaims } from "./claims/index.js";
import { type AuthoritativeConfig, parseConfig } from "./config.js";
import { createPeerSender } from "./peers.js";
import { createCodeSender } from "./senders.js";
import { bindAuthoritativeServer } from "./server.js";
import { createAuthoritativeService } from "./service.js";
import { openMappingStore } from "./store/store.js";

runServer<AuthoritativeConfig>(process, {
  role: "authoritative",
  parseConfig,
  logName: (config) => `authoritative-${config.dpId}`,
  start({ config, log, clock, tls, server }) {
    mkdirSync(config.dataDir, { recursive: true });
    const dbPath = join(config.dataDir, "mappings.sqlite");
    const store = openMappingStore(dbPath);
    log.info({ path: dbPath, mappings: store.count() }, "store opened");
    const legacy = store.legacyCount();
    if (legacy > 0) {
      log.warn(
        { legacy },
        "unsigned mappings from an older version are kept but not served; re-register them",
      );
    }
    const signingKey = loadSigningKey(config.signingKey);
    let synced = false;
    const sync = startRegistrySync({
      rootEndpoints: config.rootEndpoints,
      credentials: channelCredentials(tls),
      log,
      persistPath: join(config.dataDir, "registry.bin"),
      rootPublicKey: loadPublicKey(config.rootPublicKey),
      onChange: () => synced && checkPublishedKey(),
      onSnapshot: () => synced && checkPublishedKey(),
    });
    // Answers verify only if the registry publishes this DP's key: say so loudly while it does
    // not (a new DP is often registered after it first starts), and once when it does.
    let keyPublished: boolean | undefined;
    const checkPublishedKey = () => {
      const published = sync.view.dp(config.dpId)?.signingPublicKey;
      const ok = published !== undefined && Buffer.from(published).equals(signingKey.publicKey);
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
      registryReady: () => synced,
      clock,
      answerTtlSeconds: config.answerTtlSeconds,
      negativeTtlSeconds: config.negativeTtlSeconds,
    });
    const sender = createCodeSender(config.delivery, log, clock);
    const peers = createPeerSender({
      store,
      registry: sync.view,
      channels: createChannelPool(tls),
      clock,
      log,
    });
    const claims = createClaims({
      dpId: config.dpId,
      store,
      clock,
      signingKey,
      sender,
      codeSecret: codeSecret(join(config.dataDir, "code-secret")),
      policy: config.claims,
      requireDelegated: (csi) => service.requireDelegated(csi),
      registry: sync.view,
      onPeerRequests: () => void peers.kick(),
      log,
    });
    const changeLog = createChangeLog({
      store,
      clock,
      retentionMs: config.changeLogRetentionMs,
      log,
    });
    const sweep = setInterval(() => {
      try {
        claims.sweep();
        changeLog.prune();
        void peers.kick();
      } catch (err) {
        log.error({ err: (err as Error).message }, "sweep failed");
      }
    }, config.sweepIntervalMs);
    bindAuthoritativeServer(server, service, claims, { log, admins: config.admins, changeLog });
    // Lookups need the delegations; until the first registry copy arrives the DP is NOT_SERVING.
    const ready = sync.ready.then(() => {
      synced = true;
      checkPublishedKey();
    });
    return {
      healthServices: [
        pb.AuthoritativeService.typeName,
        pb.AuthoritativeAdminService.typeName,
        pb.PeerService.typeName,
      ],
      ready,
      listening: { dpId: config.dpId },
      stop() {
        clearInterval(sweep);
        sender.close();
        peers.close();
        sync.close();
      },
      close: () => store.close(),
    };
  },
});

// Keys the hashes of open codes; made once per DP and kept beside its store.
function codeSecret(path: string): Uint8Array {
  if (!existsSync(path)) writeFileSync(path, randomBytes(32), { mode: 0o600, flag: "wx" });
  return new Uint8Array(readFileSync(path));
}
