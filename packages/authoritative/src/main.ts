// Authoritative process entry: argv/env -> config -> logger -> store + registry sync -> gRPC -> signals.
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import {
  addHealthService,
  channelCredentials,
  createGrpcServer,
  createLogger,
  listen,
  loadPublicKey,
  loadSigningKey,
  loadTls,
  logListening,
  pb,
  readConfigFile,
  serverCredentials,
  shutdown,
  silenceIpServernameWarning,
  startRegistrySync,
  systemClock,
} from "@mimi/core";
import { createChangeFeed } from "./changes.js";
import { createClaims } from "./claims.js";
import { parseConfig } from "./config.js";
import { createPeerSender } from "./peers.js";
import { createCodeSender } from "./senders.js";
import { bindAuthoritativeServer } from "./server.js";
import { createAuthoritativeService } from "./service.js";
import { openMappingStore } from "./store.js";

async function main(): Promise<void> {
  silenceIpServernameWarning();
  const configPath = argValue("--config");
  if (!configPath) throw new Error("usage: authoritative --config <file.json>");
  const { raw, baseDir } = readConfigFile(configPath);
  const envPort = process.env.AUTHORITATIVE_PORT;
  const config = parseConfig(
    { ...(raw as object), ...(envPort !== undefined ? { port: Number(envPort) } : {}) },
    baseDir,
  );
  const log = createLogger({
    name: `authoritative-${config.dpId}`,
    level: process.env.LOG_LEVEL ?? config.logLevel,
  });
  mkdirSync(config.dataDir, { recursive: true });
  const dbPath = join(config.dataDir, "mappings.sqlite");
  const store = openMappingStore(dbPath);
  log.info({ path: dbPath, mappings: store.count() }, "store opened");
  const legacy = store.legacyCount();
  if (legacy > 0) {
    log.warn({ legacy }, "unsigned mappings from an older version are kept but not served; re-register them");
  }
  const signingKey = loadSigningKey(config.signingKey);
  const tls = loadTls(config.tls);
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
    clock: systemClock,
    answerTtlSeconds: config.answerTtlSeconds,
    negativeTtlSeconds: config.negativeTtlSeconds,
  });
  const sender = createCodeSender(config.delivery, log);
  const peers = createPeerSender({ store, registry: sync.view, tls, clock: systemClock, log });
  const claims = createClaims({
    dpId: config.dpId,
    store,
    clock: systemClock,
    signingKey,
    sender,
    codeSecret: codeSecret(join(config.dataDir, "code-secret")),
    policy: config.claims,
    requireDelegated: (csi) => service.requireDelegated(csi),
    registryMsp: (id) => sync.view.msp(id),
    registry: sync.view,
    onPeerRequests: () => peers.kick(),
    log,
  });
  const feed = createChangeFeed({
    store,
    clock: systemClock,
    retentionMs: config.changeLogRetentionMs,
    log,
  });
  const sweep = setInterval(() => {
    try {
      claims.sweep();
      feed.prune();
      peers.kick();
    } catch (err) {
      log.error({ err: (err as Error).message }, "sweep failed");
    }
  }, config.sweepIntervalMs);
  const server = createGrpcServer();
  bindAuthoritativeServer(server, service, claims, { log, admins: config.admins, feed });
  const health = addHealthService(server, log, [
    pb.AuthoritativeService.typeName,
    pb.AuthoritativeAdminService.typeName,
    pb.PeerService.typeName,
  ]);
  // Lookups need the delegations; until the first registry copy arrives the DP is NOT_SERVING.
  void sync.ready.then(() => {
    synced = true;
    checkPublishedKey();
    health.setServing(true);
  });
  const port = await listen(server, config.host, config.port, serverCredentials(tls));
  logListening(log, { host: config.host, port, dpId: config.dpId });

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, "shutdown");
    health.setServing(false);
    clearInterval(sweep);
    sender.close();
    peers.close();
    sync.close();
    await shutdown(server, 2_000);
    store.close();
    process.exit(0);
  };
  process.on("SIGINT", () => void stop("SIGINT"));
  process.on("SIGTERM", () => void stop("SIGTERM"));
}

// Keys the hashes of open codes; made once per DP and kept beside its store.
function codeSecret(path: string): Uint8Array {
  if (!existsSync(path)) writeFileSync(path, randomBytes(32), { mode: 0o600, flag: "wx" });
  return new Uint8Array(readFileSync(path));
}

function argValue(flag: string): string | undefined {
  const i = process.argv.indexOf(flag);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

main().catch((err) => {
  process.stderr.write(`authoritative: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
