// Starts a whole local network (root, two regional authoritatives, a resolver) as separate
// processes on loopback with a development PKI, and loads the demo data. `npm start` runs it
// on fixed ports; the integration tests and the benchmark run it on ports the OS picks.
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { loadSigningKey, pb, type SigningKey } from "@mimi/core";
import { type Channel, channelCredentials, loadTls, openChannel } from "@mimi/rpc";
import { loadMappings, loadRegistry, waitUntilResolving } from "./demo.js";
import { devSigningKeyPaths, devTlsPaths, IDENTITIES, SIGNING_KEYS } from "./paths.js";
import { ensureDevPki, ensureDevSigningKeys } from "./pki.js";
import { type Role, ServerProcess } from "./server-process.js";

/** Port choices; 0 lets the OS pick. */
export interface NetworkPorts {
  root: number;
  eu: number;
  us: number;
  /** The third-party DP's (with `thirdParty`). */
  fed?: number;
  resolver: number;
}

/** Options of startNetwork. */
export interface NetworkOptions {
  /** Folder for the PKI, configs and data; created when absent. */
  dir: string;
  ports?: NetworkPorts;
  logLevel?: string;
  onLine?: (name: string, line: string) => void;
  /** Load the demo delegations, MSPs and mappings (default true). */
  demo?: boolean;
  /** Extra config keys for each role. */
  overrides?: { root?: object; authoritative?: object; resolver?: object };
  /** Extra node arguments for every server, e.g. ["--cpu-prof"]. */
  nodeArgs?: readonly string[];
  /** A command that runs node for every server, e.g. ["taskset", "-c", "0"] (server-process.ts). */
  launcher?: readonly string[];
  /** Give every server a test clock that setClockOffset moves (tests only). */
  testClock?: boolean;
  /**
   * Also run the third-party DP "fed" (EU), a federated DP of +44 holding a few demo mappings of
   * its own (federation, D4). `npm start` runs it; tests ask for it.
   */
  thirdParty?: boolean;
  /**
   * DPs build private-lookup tables (issue 16; about 2 ms of CPU per CSI at start) and the
   * resolver may be asked for private lookups. `npm start` and the private-lookup tests turn it
   * on; benchmarks of other things leave it off.
   */
  privateLookups?: boolean;
}

/** A running network. */
export interface Network {
  readonly dir: string;
  readonly pkiDir: string;
  readonly root: ServerProcess;
  readonly dps: { readonly eu: ServerProcess; readonly us: ServerProcess; readonly fed?: ServerProcess };
  readonly resolver: ServerProcess;
  /** A channel to `address` authenticated as `identity`; closed by stop(). */
  channel(address: string, identity: string): Channel;
  /** A development signing key by name (see SIGNING_KEYS). */
  signingKey(name: string): SigningKey;
  /**
   * A server process beside the network (a secondary root, another resolver): its config
   * `name`.json is written from `config`, with a test clock when the network has them.
   * Whoever starts it stops it.
   */
  process(name: string, role: Role, config: Record<string, unknown>): ServerProcess;
  /** The TLS section of a config for `identity`. */
  tlsConfig(identity: string): { caFile: string; certFile: string; keyFile: string };
  stop(): Promise<void>;
}

/** Starts root, authoritatives eu and us (and the third-party fed), and a resolver; loads the demo data. */
export async function startNetwork(opts: NetworkOptions): Promise<Network> {
  const dir = resolve(opts.dir);
  const pkiDir = join(dir, "pki");
  const configDir = join(dir, "config");
  const clockDir = join(dir, "clock");
  mkdirSync(configDir, { recursive: true });
  if (opts.testClock) mkdirSync(clockDir, { recursive: true });
  makeDataPrivate(dir);
  await ensureDevPki(pkiDir, IDENTITIES);
  ensureDevSigningKeys(pkiDir, SIGNING_KEYS);
  const signingKey = (name: string) => loadSigningKey(devSigningKeyPaths(pkiDir, name).keyFile);
  const rootPublicKey = devSigningKeyPaths(pkiDir, "root").publicKeyFile;
  const ports = opts.ports ?? { root: 0, eu: 0, us: 0, resolver: 0 };
  const logLevel = opts.logLevel ?? "info";
  const tlsConfig = (identity: string) => devTlsPaths(pkiDir, identity);
  const channels: Channel[] = [];
  const channel = (address: string, identity: string) => {
    const ch = openChannel(address, channelCredentials(loadTls(devTlsPaths(pkiDir, identity))));
    channels.push(ch);
    return ch;
  };
  const serverProcess = (name: string, role: Role, config: Record<string, unknown>) => {
    const clockFile = opts.testClock ? join(clockDir, name) : undefined;
    if (clockFile) writeFileSync(clockFile, "0", { mode: 0o600 });
    const path = join(configDir, `${name}.json`);
    // The local network runs on the development CA, which servers refuse unless told; and every
    // party of it (tests, CLIs, load generators) connects from one loopback address.
    // Each has an ops listener on loopback: its gRPC port + 1000 on fixed ports (npm start:
    // 8400, 8501, 8502, 8600), any free port otherwise.
    const grpcPort = typeof config.port === "number" ? config.port : 0;
    const local = {
      allowDevelopmentCa: true,
      connections: { maxConnectionsPerAddress: 10_000 },
      ops: { port: grpcPort > 0 ? grpcPort + 1000 : 0 },
    };
    writeFileSync(path, `${JSON.stringify({ ...local, ...config }, null, 2)}\n`);
    return new ServerProcess(name, role, path, logLevel, {
      ...(opts.nodeArgs && { nodeArgs: opts.nodeArgs }),
      ...(opts.launcher && { launcher: opts.launcher }),
      ...(opts.onLine && { onLine: opts.onLine }),
      ...(clockFile && { clockFile }),
    });
  };
  const procs: ServerProcess[] = [];
  const stop = async () => {
    for (const ch of channels) ch.close();
    await Promise.all(procs.map((p) => p.stop()));
  };

  try {
    const root = serverProcess("root", "root", {
      port: ports.root,
      dataDir: join(dir, "root"),
      tls: tlsConfig("root"),
      admins: ["admin"],
      signingKey: devSigningKeyPaths(pkiDir, "root").keyFile,
      ...opts.overrides?.root,
    });
    procs.push(root);
    await root.start();

    const dp = (id: "eu" | "us" | "fed", port: number) =>
      serverProcess(`dp-${id}`, "authoritative", {
        port,
        dpId: id,
        dataDir: join(dir, `dp-${id}`),
        tls: tlsConfig(`dp-${id}`),
        rootEndpoints: [root.address],
        admins: ["admin"],
        signingKey: devSigningKeyPaths(pkiDir, `dp-${id}`).keyFile,
        rootPublicKey,
        ...(opts.privateLookups && { privateLookups: { enabled: true } }),
        ...opts.overrides?.authoritative,
      });
    const eu = dp("eu", ports.eu);
    const us = dp("us", ports.us);
    const fed = opts.thirdParty ? dp("fed", ports.fed ?? 0) : undefined;
    const dps = { eu, us, ...(fed && { fed }) };
    procs.push(...Object.values(dps));
    await Promise.all(Object.values(dps).map((p) => p.start()));

    // Each DP made its private-lookup key at start (oprf-key.json); the registry publishes it.
    const privateKey = (id: string) => {
      if (!opts.privateLookups) return undefined;
      // Its keys, oldest first (private-keys.ts): the newest is the one to publish.
      const { keys } = JSON.parse(readFileSync(join(dir, `dp-${id}`, "oprf-key.json"), "utf8")) as {
        keys: { epoch: number; publicKey: string }[];
      };
      const k = keys[keys.length - 1] as { epoch: number; publicKey: string };
      return { epoch: k.epoch, publicKey: new Uint8Array(Buffer.from(k.publicKey, "hex")) };
    };
    if (opts.demo !== false) await loadRegistry(channel(root.address, "admin"), dps, signingKey, privateKey);

    const resolver = serverProcess("resolver", "resolver", {
      port: ports.resolver,
      dataDir: join(dir, "resolver"),
      tls: tlsConfig("resolver"),
      rootEndpoints: [root.address],
      rootPublicKey,
      admins: ["admin"],
      // Lookup budgets: the demo MSPs (and the CLI) have users enough for tests and benchmarks;
      // an identity not listed gets one user's budget (quotas.ts).
      quotas: {
        enrolledUsers: {
          "msp-bluebird": 2_000_000,
          "msp-wirechat": 1_000_000,
          "msp-parrot": 100_000,
          cli: 100_000,
        },
      },
      ...opts.overrides?.resolver,
    });
    procs.push(resolver);
    await resolver.start();

    if (opts.demo !== false) {
      const serial =
        (await channel(root.address, "cli").client(pb.RootService).getSnapshot({})).snapshot?.serial ?? 0n;
      for (const dp of Object.values(dps)) {
        await loadMappings(
          channel(dp.address, "admin"),
          serial,
          (identity) => channel(dp.address, identity),
          signingKey,
        );
      }
    }
    await waitUntilResolving(channel(resolver.address, "cli"));
    return {
      dir,
      pkiDir,
      root,
      dps,
      resolver,
      channel,
      signingKey,
      process: serverProcess,
      tlsConfig,
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}

/**
 * Servers refuse data folders and files that others may open. Folders an earlier version of
 * the local network made 0755 (with 0644 stores) belong to this network, so it makes them
 * private instead of refusing to start.
 */
function makeDataPrivate(dir: string): void {
  for (const name of ["root", "dp-eu", "dp-us", "dp-fed", "resolver"]) {
    const folder = join(dir, name);
    if (!existsSync(folder)) continue;
    chmodSync(folder, 0o700);
    for (const e of readdirSync(folder, { withFileTypes: true }))
      if (e.isFile()) chmodSync(join(folder, e.name), 0o600);
  }
}
