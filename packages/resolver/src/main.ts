// Resolver process entry: argv/env -> config -> logger -> registry sync + cache + upstream -> gRPC -> signals.
import { join } from "node:path";
import {
  addHealthService,
  changeHashHex,
  channelCredentials,
  createGrpcServer,
  createLogger,
  listen,
  loadPublicKey,
  loadTls,
  logListening,
  pb,
  readConfigFile,
  registryKeys,
  serverCredentials,
  shutdown,
  silenceIpServernameWarning,
  startRegistrySync,
  systemClock,
  verifyOutcome,
} from "@mimi/core";
import { createTtlCache } from "./cache.js";
import { type ChangeSubscriptions, createChangeSubscriptions } from "./changes.js";
import { parseConfig } from "./config.js";
import { bindResolverServer } from "./server.js";
import { type CachedAnswer, createResolverService, type ResolverService } from "./service.js";
import { createUpstream } from "./upstream.js";

async function main(): Promise<void> {
  silenceIpServernameWarning();
  const configPath = argValue("--config");
  if (!configPath) throw new Error("usage: resolver --config <file.json>");
  const { raw, baseDir } = readConfigFile(configPath);
  const envPort = process.env.RESOLVER_PORT;
  const config = parseConfig(
    { ...(raw as object), ...(envPort !== undefined ? { port: Number(envPort) } : {}) },
    baseDir,
  );
  const log = createLogger({ name: "resolver", level: process.env.LOG_LEVEL ?? config.logLevel });
  const tls = loadTls(config.tls);
  let synced = false;
  // Registry changes reach the service once it exists (the sync starts first, to load the copy).
  let service: ResolverService | undefined;
  let subscriptions: ChangeSubscriptions | undefined;
  const sync = startRegistrySync({
    rootEndpoints: config.rootEndpoints,
    credentials: channelCredentials(tls),
    log,
    rootPublicKey: loadPublicKey(config.rootPublicKey),
    onChange: (change) => {
      service?.registryChanged(change);
      if (change.kind === "put_dp" || change.kind === "delete_dp") subscriptions?.reconcile();
    },
    onSnapshot: () => {
      service?.registryReplaced();
      subscriptions?.reconcile();
    },
    ...(config.dataDir ? { persistPath: join(config.dataDir, "registry.bin") } : {}),
  });
  const cache = createTtlCache<CachedAnswer>({ ...config.cache, now: systemClock, indexKey: changeHashHex });
  const keys = registryKeys(sync.view);
  const upstream = createUpstream({ tls, log, attemptTimeoutMs: config.upstreamTimeoutMs });
  const resolver = createResolverService({
    cache,
    registry: sync.view,
    registryReady: () => synced,
    upstream,
    log,
    negativeMaxTtlSeconds: config.cache.negativeMaxTtlSeconds,
    staleAnswerTtlSeconds: config.cache.staleAnswerTtlSeconds,
    verify: (csi, outcome) => verifyOutcome(csi, outcome, keys, systemClock()),
    prefetch: {
      minHits: config.cache.prefetchMinHits,
      remainingFraction: config.cache.prefetchPercent / 100,
    },
    now: systemClock,
  });
  const subs = createChangeSubscriptions({
    registry: sync.view,
    upstream,
    sink: resolver,
    log,
    now: systemClock,
    maxBackoffMs: 5_000,
  });
  subscriptions = subs;
  const server = createGrpcServer();
  service = resolver;
  bindResolverServer(server, resolver, {
    log,
    registry: sync.view,
    admins: config.admins,
    subscriptions: subs,
    registryConnected: () => sync.connected(),
  });
  const health = addHealthService(server, log, [pb.ResolverService.typeName]);
  // Resolution needs the registry copy (from a root or from disk); NOT_SERVING until then.
  void sync.ready.then(() => {
    synced = true;
    subs.reconcile();
    health.setServing(true);
  });
  const port = await listen(server, config.host, config.port, serverCredentials(tls));
  logListening(log, { host: config.host, port });

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal, ...resolver.stats }, "shutdown");
    health.setServing(false);
    sync.close();
    subs.close();
    upstream.close();
    await shutdown(server, 2_000);
    process.exit(0);
  };
  process.on("SIGINT", () => void stop("SIGINT"));
  process.on("SIGTERM", () => void stop("SIGTERM"));
}

function argValue(flag: string): string | undefined {
  const i = process.argv.indexOf(flag);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

main().catch((err) => {
  process.stderr.write(`resolver: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
