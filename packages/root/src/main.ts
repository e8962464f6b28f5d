// Root process entry: argv/env -> config -> logger -> store -> (primary: signing service |
// secondary: follower of the primary) -> gRPC -> signals, through core's runServer.
import { join } from "node:path";
import { type RegistrySync, startRegistrySync } from "@mimi/client";
import { checkDataDir, loadPublicKey, loadSigningKey, pb, sqliteFilesOf } from "@mimi/core";
import { reloadAdmins, runServer } from "@mimi/host";
import { channelCredentials, registryGauges } from "@mimi/rpc";
import { parseConfig, type RootConfig } from "./config.js";
import { createSecondaryService } from "./secondary.js";
import { bindRootServer } from "./server.js";
import { createRootService, type RootService } from "./service.js";
import { openRegistryStore } from "./store.js";

runServer<RootConfig>(process, {
  role: "root",
  parseConfig,
  check(config) {
    if (config.signingKey) loadSigningKey(config.signingKey);
    if (config.primary) loadPublicKey(config.primary.rootPublicKey);
  },
  reloadable: ["admins"],
  start({ config, log, clock, tls, server, metrics }) {
    const dbPath = join(config.dataDir, "registry.sqlite");
    // The data folder is made 0700 and the store 0600; one that others may open or change is
    // refused unless the config accepts it.
    const allowInsecure = config.allowInsecureDataPermissions;
    for (const problem of checkDataDir(config.dataDir, sqliteFilesOf(dbPath), { allowInsecure })) {
      log.warn({ problem }, "insecure data permissions accepted");
    }
    const store = openRegistryStore(dbPath, { durability: config.durability });
    log.info(
      { path: dbPath, serial: store.serial().toString(), durability: store.durability() },
      "store opened",
    );
    if (metrics) {
      registryGauges(metrics, { serial: () => store.serial(), seal: () => store.seal(), now: clock });
    }
    let service: RootService;
    let sync: RegistrySync | undefined;
    let ready = Promise.resolve();
    let refreshTimer: NodeJS.Timeout | undefined;
    if (config.primary) {
      const { endpoints, rootPublicKey } = config.primary;
      const pinned = loadPublicKey(rootPublicKey);
      log.info({ primary: endpoints }, "following primary");
      const secondary = createSecondaryService({
        store,
        clock,
        log,
        rootPublicKey: pinned,
        primaryEndpoints: endpoints,
      });
      const copy = secondary.copy();
      sync = startRegistrySync({
        rootEndpoints: endpoints,
        // Only a root may serve the registry (a certificate with the root role).
        credentials: channelCredentials(tls, { role: "root" }),
        log,
        clock,
        rootPublicKey: pinned,
        ...(copy ? { initialCopy: copy } : {}),
        onSnapshot: (_view, data) => secondary.snapshotReceived(data),
        onChange: (change, view) => secondary.changeReceived(change, () => view.snapshot()),
      });
      service = secondary;
      // A secondary answers once it holds a verified copy: from its store, or from the primary.
      if (!copy) ready = sync.ready;
    } else {
      // parseConfig sets signingKey whenever primary is unset.
      service = createRootService({
        store,
        clock,
        defaultDelegationTtlSeconds: config.defaultDelegationTtlSeconds,
        signingKey: loadSigningKey(config.signingKey as string),
        signatureValidityMs: config.signatureValiditySeconds * 1000,
        signatureRefreshMs: config.signatureRefreshSeconds * 1000,
      });
      // Re-signing is due days ahead; a check a second costs one comparison and follows a
      // moved test clock without delay.
      const primary = service;
      const refresh = () => {
        try {
          const c = primary.refreshIfDue();
          if (c)
            log.info({ serial: c.serial.toString(), expiresAtMs: c.seal?.expiresAtMs }, "registry re-signed");
        } catch (err) {
          log.error({ err: (err as Error).message }, "registry re-sign failed; retrying");
        }
      };
      refresh();
      refreshTimer = setInterval(refresh, 1_000);
      refreshTimer.unref();
    }
    const admins = new Set(config.admins);
    bindRootServer(server, service, { log, admins, now: clock });
    return {
      reload: (next, applied) => {
        if (applied.includes("admins")) reloadAdmins(admins, next.admins, log);
      },
      healthServices: [pb.RootService.typeName, pb.RegistryAdminService.typeName],
      ready,
      stop: () => {
        clearInterval(refreshTimer);
        sync?.close();
      },
      close: () => store.close(),
    };
  },
});
