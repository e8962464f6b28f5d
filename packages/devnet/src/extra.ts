// Extra processes beside a running local network: a read-only secondary root (H1: root
// failure must not stop resolution) and resolvers with a root list of the caller's choice.
// They are not part of the Network, so whoever starts them stops them.
import { join } from "node:path";
import { pb } from "@mimi/core";
import type { Network } from "./network.js";
import { devSigningKeyPaths } from "./paths.js";
import type { ServerProcess } from "./server-process.js";

/** Options shared by the extra processes. */
export interface ExtraProcessOptions {
  /** Process name; also names its config file and data folder under the network's folder. */
  name?: string;
  /** Extra config keys. */
  overrides?: object;
}

/** Options of startRootSecondary. */
export interface RootSecondaryOptions extends ExtraProcessOptions {
  /** Roots to follow (default: the network's root). */
  primaryEndpoints?: readonly string[];
}

/**
 * Starts a secondary root that follows `primaryEndpoints` and resolves once it listens (it may
 * still be NOT_SERVING: see waitUntilServing). It reuses the "root" TLS identity, which clients
 * of a root expect, and pins the dev root key; it never sees the private key.
 */
export async function startRootSecondary(
  net: Network,
  opts: RootSecondaryOptions = {},
): Promise<ServerProcess> {
  const name = opts.name ?? "root-secondary";
  const proc = net.process(name, "root", {
    port: 0,
    dataDir: join(net.dir, name),
    tls: net.tlsConfig("root"),
    primary: {
      endpoints: opts.primaryEndpoints ?? [net.root.address],
      rootPublicKey: devSigningKeyPaths(net.pkiDir, "root").publicKeyFile,
    },
    ...opts.overrides,
  });
  await proc.start();
  return proc;
}

/** Options of startResolver. */
export interface ExtraResolverOptions extends ExtraProcessOptions {
  rootEndpoints: readonly string[];
}

/** Starts a resolver with its own data folder (fresh unless `name` was used before) and root list. */
export async function startResolver(net: Network, opts: ExtraResolverOptions): Promise<ServerProcess> {
  const name = opts.name ?? "resolver-extra";
  const proc = net.process(name, "resolver", {
    port: 0,
    dataDir: join(net.dir, name),
    tls: net.tlsConfig("resolver"),
    rootEndpoints: opts.rootEndpoints,
    rootPublicKey: devSigningKeyPaths(net.pkiDir, "root").publicKeyFile,
    ...opts.overrides,
  });
  await proc.start();
  return proc;
}

/** Waits until `proc` reports SERVING over grpc.health.v1 (a secondary: once it holds a verified copy). */
export async function waitUntilServing(net: Network, proc: ServerProcess, timeoutMs = 10_000): Promise<void> {
  const health = net.channel(proc.address, "cli").client(pb.Health);
  const end = Date.now() + timeoutMs;
  for (;;) {
    const r = await health.check({ service: "" }, { timeoutMs: 1_000 }).catch(() => undefined);
    if (r?.status === pb.HealthCheckResponse_ServingStatus.SERVING) return;
    if (Date.now() > end) throw new Error(`${proc.name} is not SERVING after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
