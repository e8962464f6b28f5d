// Extra processes beside a running local network: a read-only secondary root (H1: root
// failure must not stop resolution), secondaries of a DP (issue 17), resolvers with a root list
// of the caller's choice, and more DPs (federated ones, D4). They are not part of the Network, so whoever starts them stops them.
import { join } from "node:path";
import { pb } from "@mimi/core";
import type { Network } from "./network.js";
import { devSigningKeyPaths } from "./paths.js";
import { ensureDevPki, ensureDevSigningKeys } from "./pki.js";
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

/** Options of startDpSecondary. */
export interface DpSecondaryOptions extends ExtraProcessOptions {
  /** The DP (default "eu"): the secondary presents its certificate and signs with its key. */
  dpId?: "eu" | "us";
  /** The DP's other endpoints (default: the network's DP process). */
  peers?: readonly string[];
}

/**
 * Starts a read-only secondary of one of the network's DPs, following whichever of `peers` is
 * primary, and resolves once it listens (it is NOT_SERVING until it holds a whole copy: see
 * waitUntilServing). It is the same DP: its certificate, signing key and root.
 */
export async function startDpSecondary(net: Network, opts: DpSecondaryOptions = {}): Promise<ServerProcess> {
  const dpId = opts.dpId ?? "eu";
  const name = opts.name ?? `dp-${dpId}-secondary`;
  const identity = `dp-${dpId}`;
  const proc = net.process(name, "authoritative", {
    port: 0,
    dpId,
    dataDir: join(net.dir, name),
    tls: net.tlsConfig(identity),
    rootEndpoints: [net.root.address],
    admins: ["admin"],
    signingKey: devSigningKeyPaths(net.pkiDir, identity).keyFile,
    rootPublicKey: devSigningKeyPaths(net.pkiDir, "root").publicKeyFile,
    // The demo registry places eu in the EU and us in the US (H2: a secondary checks it).
    replication: {
      role: "secondary",
      peers: opts.peers ?? [net.dps[dpId].address],
      jurisdiction: dpId === "eu" ? "EU" : "US",
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

/**
 * Starts DP `id` (certificate and signing key "dp-<id>", made in the network's PKI when new),
 * registers it at the root (EU) and enrols the demo MSPs there, trusted for bulk; returns the
 * process and the root serial of its registration. Naming it as a federated DP of a range is the
 * caller's (RegistryAdminService.UpdateDelegation).
 */
export async function startDp(
  net: Network,
  id: string,
  opts: ExtraProcessOptions = {},
): Promise<{ proc: ServerProcess; serial: bigint }> {
  const identity = opts.name ?? `dp-${id}`;
  await ensureDevPki(net.pkiDir, [identity]);
  ensureDevSigningKeys(net.pkiDir, [identity]);
  const proc = net.process(identity, "authoritative", {
    port: 0,
    dpId: id,
    dataDir: join(net.dir, identity),
    tls: net.tlsConfig(identity),
    rootEndpoints: [net.root.address],
    admins: ["admin"],
    signingKey: devSigningKeyPaths(net.pkiDir, identity).keyFile,
    rootPublicKey: devSigningKeyPaths(net.pkiDir, "root").publicKeyFile,
    ...opts.overrides,
  });
  await proc.start();
  const put = await net
    .channel(net.root.address, "admin")
    .client(pb.RegistryAdminService)
    .putDp({
      dp: {
        id,
        endpoints: [proc.address],
        tlsIdentity: identity,
        jurisdiction: "EU",
        signingPublicKey: net.signingKey(identity).publicKey,
      },
    });
  const admin = net.channel(proc.address, "admin").client(pb.AuthoritativeAdminService);
  await waitForSerial(admin, put.serial);
  for (const [mspId, tlsIdentity] of [
    ["bluebird.example", "msp-bluebird"],
    ["wirechat.example", "msp-wirechat"],
    ["parrot.example", "msp-parrot"],
  ] as const) {
    await admin.enrolMsp({
      mspId,
      tlsIdentity,
      enrolledUsers: 1000n,
      signingPublicKey: net.signingKey(tlsIdentity).publicKey,
      mayBulk: true,
    });
  }
  return { proc, serial: put.serial };
}

/** Waits (polling) until a DP holds the registry at `serial` or later. */
export async function waitForSerial(
  admin: { getStatus(req: object): Promise<{ registrySerial: bigint }> },
  serial: bigint,
  timeoutMs = 10_000,
): Promise<void> {
  const end = Date.now() + timeoutMs;
  while ((await admin.getStatus({})).registrySerial < serial) {
    if (Date.now() > end)
      throw new Error(`the DP did not reach registry serial ${serial} in ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
