// Root process entry: argv/env -> config -> logger -> store -> (primary: signing service |
// secondary: follower of the primary) -> gRPC -> signals.
import { mkdirSync } from "node:fs";
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
  type RegistrySync,
  readConfigFile,
  serverCredentials,
  shutdown,
  silenceIpServernameWarning,
  startRegistrySync,
  systemClock,
} from "@mimi/core";
import { parseConfig } from "./config.js";
import { createSecondaryService } from "./secondary.js";
import { bindRootServer } from "./server.js";
import { createRootService, type RootService } from "./service.js";
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
  const tls = loadTls(config.tls);
  const server = createGrpcServer();
  let service: RootService;
  let sync: RegistrySync | undefined;
  let serving = true;
  if (config.primary) {
    const { endpoints, rootPublicKey } = config.primary;
    const pinned = loadPublicKey(rootPublicKey);
    log.info({ primary: endpoints }, "following primary");
    const secondary = createSecondaryService({
      store,
      clock: systemClock,
      log,
      rootPublicKey: pinned,
      primaryEndpoints: endpoints,
    });
    const copy = secondary.copy();
    sync = startRegistrySync({
      rootEndpoints: endpoints,
      credentials: channelCredentials(tls),
      log,
      rootPublicKey: pinned,
      ...(copy ? { initialCopy: copy } : {}),
      onSnapshot: (_view, data) => secondary.snapshotReceived(data),
      onChange: (change, view) => secondary.changeReceived(change, () => view.snapshot()),
    });
    service = secondary;
    serving = copy !== undefined;
  } else {
    // parseConfig sets signingKey whenever primary is unset.
    service = createRootService({
      store,
      clock: systemClock,
      defaultDelegationTtlSeconds: config.defaultDelegationTtlSeconds,
      signingKey: loadSigningKey(config.signingKey as string),
    });
  }
  bindRootServer(server, service, { log, admins: config.admins });
  const health = addHealthService(
    server,
    log,
    [pb.RootService.typeName, pb.RegistryAdminService.typeName],
    serving,
  );
  // A secondary answers once it holds a verified copy: from its store, or from the primary.
  void sync?.ready.then(() => health.setServing(true));
  const port = await listen(server, config.host, config.port, serverCredentials(tls));
  logListening(log, { host: config.host, port });

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, "shutdown");
    health.setServing(false);
    sync?.close();
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
