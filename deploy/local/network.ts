// Starts a whole local network (root, two regional authoritatives, a resolver) as
// separate processes on loopback with a development PKI, and loads demo data.
// `npm start` runs it with fixed ports; the integration tests run it with port 0.
import { type ChildProcess, spawn } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import {
  bulkRecord,
  bulkRegister,
  type Channel,
  channelCredentials,
  covers,
  DiscoveryError,
  keyFromProto,
  keyToProto,
  loadSigningKey,
  loadTls,
  openChannel,
  parseCsi,
  parseDelegationKeyText,
  pb,
  type SigningKey,
} from "@mimi/core";
import { devSigningKeyPaths, devTlsPaths, ensureDevPki, ensureDevSigningKeys } from "@mimi/core/dev-pki";

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const DEMO_FILE = join(REPO, "deploy/local/demo.json");

/** Every certificate identity the local network uses. */
export const IDENTITIES = [
  "root",
  "dp-eu",
  "dp-us",
  "resolver",
  "admin",
  "cli",
  "msp-bluebird",
  "msp-wirechat",
  "msp-parrot",
];

/** Names of the Ed25519 signing keys the local network uses (the root, DPs, MSPs). */
export const SIGNING_KEYS = ["root", "dp-eu", "dp-us", "msp-bluebird", "msp-wirechat", "msp-parrot"];

/** The demo data file's shape. */
export interface Demo {
  dps: { id: string; tlsIdentity: string; jurisdiction: string }[];
  delegations: { key: string; dp: string }[];
  msps: { id: string; name: string; tlsIdentity: string }[];
  mappings: { csi: string; msp: string; ssi: string; default?: boolean; tags?: string[] }[];
}

/** Loads deploy/local/demo.json. */
export function loadDemo(): Demo {
  return JSON.parse(readFileSync(DEMO_FILE, "utf8")) as Demo;
}

type Role = "root" | "authoritative" | "resolver";

/** How long a server may take to bind before start() gives up. */
const START_TIMEOUT_MS = 30_000;

/** One server process, with the port it bound and its recent log lines. */
export class ServerProcess {
  port = 0;
  readonly lines: string[] = [];
  private child: ChildProcess | undefined;
  private exited: Promise<number | null> = Promise.resolve(null);
  private stopping = false;
  /** Called when the process exits without stop() having been asked for. */
  onUnexpectedExit: ((name: string, code: number | null, signal: string | null) => void) | undefined;

  constructor(
    readonly name: string,
    private readonly role: Role,
    readonly configPath: string,
    private readonly logLevel: string,
    private readonly onLine?: (name: string, line: string) => void,
    private readonly nodeArgs: readonly string[] = [],
  ) {}

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  /** Process id while running, for CPU and memory accounting. */
  get pid(): number | undefined {
    return this.running ? this.child?.pid : undefined;
  }

  get running(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  /**
   * Starts the process and resolves once it logged "listening" (its port), rejects if it exits
   * first. A restart binds a new port unless `samePort` asks for the one it had.
   */
  start(opts: { samePort?: boolean } = {}): Promise<void> {
    const script = join(REPO, "packages", this.role, "dist", "main.js");
    const portEnv = `${this.role.toUpperCase()}_PORT`;
    const child = spawn(process.execPath, [...this.nodeArgs, script, "--config", this.configPath], {
      stdio: ["ignore", "pipe", "pipe"],
      env: {
        ...process.env,
        LOG_LEVEL: this.logLevel,
        ...(opts.samePort && this.port !== 0 ? { [portEnv]: String(this.port) } : {}),
      },
    });
    this.child = child;
    this.stopping = false;
    this.exited = new Promise((r) =>
      child.once("exit", (code, signal) => {
        if (!this.stopping && this.port !== 0) this.onUnexpectedExit?.(this.name, code, signal);
        r(code);
      }),
    );
    return new Promise((resolveStart, reject) => {
      const keep = (line: string) => {
        this.lines.push(line);
        if (this.lines.length > 2000) this.lines.splice(0, 1000);
        this.onLine?.(this.name, line);
      };
      createInterface({ input: child.stdout as NodeJS.ReadableStream }).on("line", (line) => {
        keep(line);
        if (line.includes('"listening"')) {
          try {
            const rec = JSON.parse(line) as { msg?: string; port?: number };
            if (rec.msg === "listening" && typeof rec.port === "number") {
              this.port = rec.port;
              clearTimeout(timer);
              resolveStart();
            }
          } catch {
            // Not a log record; kept above for diagnosis.
          }
        }
      });
      createInterface({ input: child.stderr as NodeJS.ReadableStream }).on("line", keep);
      child.once("exit", (code, signal) => {
        clearTimeout(timer);
        reject(
          new Error(
            `${this.name} exited (${signal ?? code}) before listening:\n${this.lines.slice(-20).join("\n")}`,
          ),
        );
      });
      const timer = setTimeout(() => {
        child.kill("SIGKILL");
        reject(new Error(`${this.name} did not log "listening" within ${START_TIMEOUT_MS} ms`));
      }, START_TIMEOUT_MS);
    });
  }

  /** Kills the process at once (SIGKILL), as a crash would, and waits for it to be gone. */
  async kill(): Promise<void> {
    const child = this.child;
    if (!child || !this.running) return;
    this.stopping = true;
    child.kill("SIGKILL");
    await this.exited;
  }

  /** Sends SIGTERM and waits for exit; SIGKILL after `graceMs`. */
  async stop(graceMs = 5_000): Promise<void> {
    const child = this.child;
    if (!child || !this.running) return;
    this.stopping = true;
    child.kill("SIGTERM");
    const t = setTimeout(() => child.kill("SIGKILL"), graceMs);
    await this.exited;
    clearTimeout(t);
  }
}

/** Port choices; 0 lets the OS pick. */
export interface NetworkPorts {
  root: number;
  eu: number;
  us: number;
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
}

/** A running network. */
export interface Network {
  readonly dir: string;
  readonly pkiDir: string;
  readonly root: ServerProcess;
  readonly dps: { readonly eu: ServerProcess; readonly us: ServerProcess };
  readonly resolver: ServerProcess;
  /** A channel to `address` authenticated as `identity`; closed by stop(). */
  channel(address: string, identity: string): Channel;
  /** A development signing key by name (see SIGNING_KEYS). */
  signingKey(name: string): SigningKey;
  stop(): Promise<void>;
}

/** Starts root, authoritatives eu and us, and a resolver; loads the demo data. */
export async function startNetwork(opts: NetworkOptions): Promise<Network> {
  const dir = resolve(opts.dir);
  const pkiDir = join(dir, "pki");
  const configDir = join(dir, "config");
  mkdirSync(configDir, { recursive: true });
  await ensureDevPki(pkiDir, IDENTITIES);
  ensureDevSigningKeys(pkiDir, SIGNING_KEYS);
  const signingKey = (name: string) => loadSigningKey(devSigningKeyPaths(pkiDir, name).keyFile);
  const rootPublicKey = devSigningKeyPaths(pkiDir, "root").publicKeyFile;
  const ports = opts.ports ?? { root: 0, eu: 0, us: 0, resolver: 0 };
  const logLevel = opts.logLevel ?? "info";
  const tls = (identity: string) => {
    const p = devTlsPaths(pkiDir, identity);
    return { caFile: p.caFile, certFile: p.certFile, keyFile: p.keyFile };
  };
  const writeConfig = (name: string, config: object) => {
    const path = join(configDir, `${name}.json`);
    writeFileSync(path, `${JSON.stringify(config, null, 2)}\n`);
    return path;
  };
  const channels: Channel[] = [];
  const channel = (address: string, identity: string) => {
    const ch = openChannel(address, channelCredentials(loadTls(devTlsPaths(pkiDir, identity))));
    channels.push(ch);
    return ch;
  };
  const procs: ServerProcess[] = [];
  const stop = async () => {
    for (const ch of channels) ch.close();
    await Promise.all(procs.map((p) => p.stop()));
  };

  try {
    const root = new ServerProcess(
      "root",
      "root",
      writeConfig("root", {
        port: ports.root,
        dataDir: join(dir, "root"),
        tls: tls("root"),
        admins: ["admin"],
        signingKey: devSigningKeyPaths(pkiDir, "root").keyFile,
        ...opts.overrides?.root,
      }),
      logLevel,
      opts.onLine,
      opts.nodeArgs,
    );
    procs.push(root);
    await root.start();

    const dp = (id: "eu" | "us", port: number) =>
      new ServerProcess(
        `dp-${id}`,
        "authoritative",
        writeConfig(`dp-${id}`, {
          port,
          dpId: id,
          dataDir: join(dir, `dp-${id}`),
          tls: tls(`dp-${id}`),
          rootEndpoints: [root.address],
          admins: ["admin"],
          signingKey: devSigningKeyPaths(pkiDir, `dp-${id}`).keyFile,
          rootPublicKey,
          ...opts.overrides?.authoritative,
        }),
        logLevel,
        opts.onLine,
        opts.nodeArgs,
      );
    const eu = dp("eu", ports.eu);
    const us = dp("us", ports.us);
    procs.push(eu, us);
    await Promise.all([eu.start(), us.start()]);

    if (opts.demo !== false) await loadRegistry(channel(root.address, "admin"), { eu, us }, signingKey);

    const resolver = new ServerProcess(
      "resolver",
      "resolver",
      writeConfig("resolver", {
        port: ports.resolver,
        dataDir: join(dir, "resolver"),
        tls: tls("resolver"),
        rootEndpoints: [root.address],
        rootPublicKey,
        admins: ["admin"],
        ...opts.overrides?.resolver,
      }),
      logLevel,
      opts.onLine,
      opts.nodeArgs,
    );
    procs.push(resolver);
    await resolver.start();

    if (opts.demo !== false) {
      const serial =
        (await channel(root.address, "cli").client(pb.RootService).getSnapshot({})).snapshot?.serial ?? 0n;
      for (const dp of [eu, us]) {
        await loadMappings(
          channel(dp.address, "admin"),
          serial,
          (identity) => channel(dp.address, identity),
          signingKey,
        );
      }
    }
    await waitUntilResolving(channel(resolver.address, "cli"));
    return { dir, pkiDir, root, dps: { eu, us }, resolver, channel, signingKey, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

/** Registers the demo DPs (at their current ports), delegations and MSPs; keeps what already exists. */
async function loadRegistry(
  ch: Channel,
  dps: { eu: ServerProcess; us: ServerProcess },
  signingKey: (name: string) => SigningKey,
): Promise<void> {
  const demo = loadDemo();
  const admin = ch.client(pb.RegistryAdminService);
  const snap = (await ch.client(pb.RootService).getSnapshot({})).snapshot;
  for (const d of demo.dps) {
    const endpoint = dps[d.id as "eu" | "us"].address;
    const key = signingKey(d.tlsIdentity).publicKey;
    const have = snap?.dps.find((x) => x.id === d.id);
    const same = have?.endpoints.length === 1 && have.endpoints[0] === endpoint;
    if (same && Buffer.from(have.signingPublicKey).equals(key)) continue;
    await admin.putDp({
      dp: {
        id: d.id,
        endpoints: [endpoint],
        tlsIdentity: d.tlsIdentity,
        jurisdiction: d.jurisdiction,
        signingPublicKey: key,
      },
    });
  }
  for (const m of demo.msps) {
    const key = signingKey(m.tlsIdentity).publicKey;
    const have = snap?.msps.find((x) => x.id === m.id);
    if (!have || !Buffer.from(have.signingPublicKey).equals(key)) {
      await admin.putMsp({ id: m.id, name: m.name, signingPublicKey: key });
    }
  }
  // Demo delegations are created on a first start only; an admin may have changed them since.
  if ((snap?.delegations.length ?? 0) > 0) return;
  for (const d of demo.delegations) {
    try {
      await admin.createDelegation({ key: keyToProto(parseDelegationKeyText(d.key)), dpId: d.dp });
    } catch (err) {
      // A re-run keeps delegations an admin may have changed since.
      if (!(err instanceof DiscoveryError && err.code === "already_exists")) throw err;
    }
  }
}

/**
 * Enrols the demo MSPs at a DP (trusted for bulk) and has each register its demo mappings
 * delegated to that DP in bulk, signed with its key. The "demo" session makes this a no-op
 * on later starts.
 */
async function loadMappings(
  ch: Channel,
  minSerial: bigint,
  channelAs: (identity: string) => Channel,
  signingKey: (name: string) => SigningKey,
): Promise<void> {
  const demo = loadDemo();
  const admin = ch.client(pb.AuthoritativeAdminService);
  let status = await admin.getStatus({});
  for (let i = 0; status.registrySerial < minSerial; i++) {
    if (i > 200) throw new Error(`DP ${status.dpId} did not sync the registry to serial ${minSerial}`);
    await new Promise((r) => setTimeout(r, 50));
    status = await admin.getStatus({});
  }
  const now = Date.now();
  for (const m of demo.msps) {
    const key = signingKey(m.tlsIdentity);
    await admin.enrolMsp({
      mspId: m.id,
      tlsIdentity: m.tlsIdentity,
      enrolledUsers: 1000n,
      signingPublicKey: key.publicKey,
      mayBulk: true,
    });
    const mine = demo.mappings.filter(
      (x) =>
        x.msp === m.id && status.delegations.some((d) => covers(keyFromProto(d.key), parseCsi(x.csi).key)),
    );
    const records = mine.map((x) =>
      bulkRecord(
        {
          csi: parseCsi(x.csi).uri,
          mspId: x.msp,
          ssi: x.ssi,
          defaultRequested: x.default === true,
          tags: x.tags ?? [],
          createdAtMs: now,
          dpId: status.dpId,
          expiresAtMs: now + 300 * 86_400_000,
        },
        key,
      ),
    );
    await bulkRegister(channelAs(m.tlsIdentity).client(pb.ClaimService), {
      sessionId: "demo",
      total: records.length,
      recordsFrom: (first, count) => records.slice(first, first + count),
    });
  }
}

/** A CSI no demo data or test uses, for readiness probes that must not warm the cache. */
const PROBE_CSI = "tel:+19995550100";

/** Waits until the resolver has its registry copy and answers (it says UNAVAILABLE until then). */
async function waitUntilResolving(ch: Channel): Promise<void> {
  const resolver = ch.client(pb.ResolverService);
  for (let attempt = 0; ; attempt++) {
    try {
      await resolver.resolve({ csi: PROBE_CSI }, { timeoutMs: 2_000 });
      return;
    } catch (err) {
      const transient = err instanceof DiscoveryError && err.code === "upstream_unavailable";
      if (!transient || attempt >= 200) throw err;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}
