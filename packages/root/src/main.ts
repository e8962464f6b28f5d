// Root process entry: argv/env -> config -> logger -> store -> gRPC -> signals.
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import {
  addHealthService,
  createGrpcServer,
  createLogger,
  listen,
  loadSigningKey,
  loadTls,
  logListening,
  pb,
  readConfigFile,
  serverCredentials,
  shutdown,
  silenceIpServernameWarning,
  systemClock,
} from "@mimi/core";
import { parseConfig } from "./config.js";
import { bindRootServer } from "./server.js";
import { createRootService } from "./service.js";
import { openRegistryStore } from "./store.js";

async function main(): Promise<void> {
  silenceIpServernameWarning();
  const configPath = argValue("--config");
  if (!configPath) throw new Error("usage: root --config <file.json>");
  const { raw, baseDir } = readConfigFile(configPath);
  const envPort = process.env.ROOT_PORT;
  const config = parseConfig(
    { ...(raw as object), ...(envPort !== undefined ? { port: Number(envPort) } : {}) },
    baseDir,
  );
  const log = createLogger({ name: "root", level: process.env.LOG_LEVEL ?? config.logLevel });
  mkdirSync(config.dataDir, { recursive: true });
  const dbPath = join(config.dataDir, "registry.sqlite");
  const store = openRegistryStore(dbPath);
  log.info({ path: dbPath, serial: store.serial().toString() }, "store opened");
  const service = createRootService({
    store,
    clock: systemClock,
    defaultDelegationTtlSeconds: config.defaultDelegationTtlSeconds,
    signingKey: loadSigningKey(config.signingKey),
  });
  const server = createGrpcServer();
  bindRootServer(server, service, { log, admins: config.admins });
  const health = addHealthService(
    server,
    log,
    [pb.RootService.typeName, pb.RegistryAdminService.typeName],
    true,
  );
  const port = await listen(server, config.host, config.port, serverCredentials(loadTls(config.tls)));
  logListening(log, { host: config.host, port });

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, "shutdown");
    health.setServing(false);
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
  process.stderr.write(`root: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
