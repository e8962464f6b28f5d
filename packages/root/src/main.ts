// Root process entry: argv/env -> config -> logger -> store -> (primary: signing service |
// secondary: follower of the primary) -> gRPC -> signals, through core's runServer.
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import {
  channelCredentials,
  loadPublicKey,
  loadSigningKey,
  pb,
  type RegistrySync,
  runServer,
  startRegistrySync,
} from "@mimi/core";
import { parseConfig, type RootConfig } from "./config.js";
import { createSecondaryService } from "./secondary.js";
import { bindRootServer } from "./server.js";
import { createRootService, type RootService } from "./service.js";
import { openRegistryStore } from "./store.js";

runServer<RootConfig>(process, {
  role: "root",
  parseConfig,
  start({ config, log, clock, tls, server }) {
    mkdirSync(config.dataDir, { recursive: true });
    const dbPath = join(config.dataDir, "registry.sqlite");
    const store = openRegistryStore(dbPath);
    log.info({ path: dbPath, serial: store.serial().toString() }, "store opened");
    let service: RootService;
    let sync: RegistrySync | undefined;
    let ready = Promise.resolve();
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
        credentials: channelCredentials(tls),
        log,
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
      });
    }
    bindRootServer(server, service, { log, admins: config.admins });
    return {
      healthServices: [pb.RootService.typeName, pb.RegistryAdminService.typeName],
      ready,
      stop: () => sync?.close(),
      close: () => store.close(),
    };
  },
});
