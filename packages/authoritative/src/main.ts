// Authoritative process entry: argv/env -> config -> logger -> store + registry sync -> gRPC -> signals.
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import {
  addHealthService,
  channelCredentials,
  createGrpcServer,
  createLogger,
  listen,
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
import { parseConfig } from "./config.js";
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
  const tls = loadTls(config.tls);
  let synced = false;
  const sync = startRegistrySync({
    rootEndpoints: config.rootEndpoints,
    credentials: channelCredentials(tls),
    log,
    persistPath: join(config.dataDir, "registry.bin"),
  });
  const service = createAuthoritativeService({
    dpId: config.dpId,
    store,
    registry: sync.view,
    registryReady: () => synced,
    clock: systemClock,
    answerTtlSeconds: config.answerTtlSeconds,
    negativeTtlSeconds: config.negativeTtlSeconds,
  });
  const server = createGrpcServer();
  bindAuthoritativeServer(server, service, { log, admins: config.admins });
  const health = addHealthService(server, log, [
    pb.AuthoritativeService.typeName,
    pb.AuthoritativeAdminService.typeName,
  ]);
  // Lookups need the delegations; until the first registry copy arrives the DP is NOT_SERVING.
  void sync.ready.then(() => {
    synced = true;
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
    sync.close();
    await shutdown(server, 2_000);
    store.close();
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
  process.stderr.write(`authoritative: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
