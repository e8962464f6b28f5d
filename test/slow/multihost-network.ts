// The local network spread over hosts (netns.ts): root, a read-only root secondary, the DPs eu
// and us, and a resolver, each the built server in its own network namespace with its own
// address and a certificate naming it; the test process reaches them as the MSP host does,
// through a relay running there. The demo data is loaded as `npm start` loads it, with the
// registry listing each DP at its hosts' addresses.
//
//   LAN a 10.231.X.0/25:   root .2  eu .3  us .4  secondary .5  resolver .6  eu2 .7  eu3 .8  msp .9
//   LAN b 10.231.X.128/25: root .130  us .132  secondary .133  resolver .134  msp .137
//
// LAN b carries the secondary's watch of the primary (the primary is reachable there even when
// its LAN a link is cut) and us's second endpoint; everything else goes over LAN a. The hosts eu2
// and eu3 stay idle until startEuReplicas makes them secondaries of eu (issue 17).
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { keyToProto, loadSigningKey, parseDelegationKeyText, pb } from "@mimi/core";
import {
  devSigningKeyPaths,
  devTlsPaths,
  ensureDevPki,
  ensureDevSigningKeys,
  IDENTITIES,
  loadDemo,
  loadMappings,
  type Role,
  ServerProcess,
  SIGNING_KEYS,
  waitUntilResolving,
} from "@mimi/devnet";
import { type Channel, channelCredentials, loadTls, openChannel } from "@mimi/rpc";
import { eventually, writeParrotMapping } from "../harness.js";
import {
  alive,
  type HostSpec,
  type Lab,
  type Relay,
  type RunResult,
  runOnHost,
  startRelay,
  stopAll,
} from "./netns.js";

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), "../..");

/** The hosts and their last octets per LAN. */
export const HOSTS: readonly HostSpec[] = [
  { name: "root", lans: { a: 2, b: 130 } },
  { name: "eu", lans: { a: 3 } },
  { name: "us", lans: { a: 4, b: 132 } },
  { name: "sec", lans: { a: 5, b: 133 } },
  { name: "res", lans: { a: 6, b: 134 } },
  { name: "eu2", lans: { a: 7 } },
  { name: "eu3", lans: { a: 8 } },
  { name: "msp", lans: { a: 9, b: 137 } },
];

/** Every host has a network of its own, so every server keeps the port `npm start` gives it. */
const PORTS = { root: 7400, sec: 7400, eu: 7501, us: 7502, res: 7600 } as const;

/** eu's secondaries, started by startEuReplicas. */
export interface EuReplicas {
  readonly eu2: ServerProcess;
  readonly eu3: ServerProcess;
}

/** The DP answers' TTLs: long, so that only a pushed change (or a moved clock) ends them. */
export const ANSWER_TTL_SECONDS = 300;
export const NEGATIVE_TTL_SECONDS = 600;
/** The resolver serves an expired answer of an unreachable DP with this TTL. */
export const STALE_ANSWER_TTL_SECONDS = 30;

/** The network across hosts, started by startHostNetwork. */
export interface HostNetwork {
  readonly lab: Lab;
  readonly dir: string;
  readonly servers: {
    readonly root: ServerProcess;
    readonly sec: ServerProcess;
    readonly eu: ServerProcess;
    readonly us: ServerProcess;
    readonly resolver: ServerProcess;
  };
  /** Addresses ("ip:port") of the servers as the registry and configs name them. */
  readonly at: {
    readonly root: string;
    readonly rootBackbone: string;
    readonly sec: string;
    readonly eu: string;
    readonly us: string;
    readonly usSecond: string;
    readonly resolver: string;
    readonly eu2: string;
    readonly eu3: string;
  };
  /** A channel from the MSP host to `target`, authenticated as `identity`. */
  channel(target: string, identity: string): Channel;
  /** Resolves through the resolver as an MSP on the MSP host would. */
  resolve(csi: string): Promise<pb.ResolveResponse>;
  stats(): Promise<pb.GetStatsResponse>;
  subscription(dp: "eu" | "us"): Promise<pb.SubscriptionStatus>;
  /** Drops the resolver's cached answer for a CSI (ResolverAdminService.Flush). */
  flush(csi: string): Promise<void>;
  /** How many lookups a DP has answered, asked at `address` (default its first endpoint). */
  lookupsServed(dp: "eu" | "us", address?: string): Promise<bigint>;
  /** Runs the mimi CLI on a host (with the network's PKI folder). */
  cli(host: string, args: readonly string[]): Promise<RunResult>;
  /** Commits one mapping at the DP at `address` as parrot (a bulk-trusted MSP), from the MSP host. */
  write(dp: "eu" | "us", address: string, csi: string, ssi: string): Promise<void>;
  /** Claims `csi` for a bluebird user at a DP, running `mimi claim run` on `host`. */
  claim(host: string, dp: "eu" | "us", dpAddress: string, csi: string, ssi: string): Promise<void>;
  /**
   * Makes eu a primary with two secondaries on the hosts eu2 and eu3 (each knowing the other two
   * endpoints as peers), waits until both serve, and lists all three in the registry.
   */
  startEuReplicas(): Promise<EuReplicas>;
  /** Rewrites a server's config with `patch` (merged one level deep) and restarts it on its port. */
  reconfigure(proc: ServerProcess, patch: Record<string, Record<string, unknown>>): Promise<void>;
  /** Every server's log lines, for diagnosis. */
  logs(): string;
  /** Asserts that a log line matching `pattern` was written (polled: it may still be in a pipe). */
  logged(pattern: RegExp, what?: string): Promise<void>;
  /** Stops the servers and relay by PID, removes the namespaces and the folder. */
  stop(): Promise<void>;
}

/** Builds the hosts and starts the network on them. */
export async function startHostNetwork(lab: Lab): Promise<HostNetwork> {
  // Folders of runs that died (their PID is gone) are removed, as their namespaces are.
  for (const name of readdirSync(tmpdir())) {
    const pid = /^mimi-mh-(\d+)-/.exec(name)?.[1];
    if (pid && !alive(Number(pid))) rmSync(join(tmpdir(), name), { recursive: true, force: true });
  }
  const dir = mkdtempSync(join(tmpdir(), `mimi-mh-${process.pid}-`));
  const lines: string[] = [];
  const onLine = (name: string, line: string) => {
    lines.push(`${name}: ${line}`);
    if (lines.length > 10_000) lines.splice(0, 5_000);
  };
  const channels: Channel[] = [];
  const procs: ServerProcess[] = [];
  const stop = async () => {
    for (const ch of channels.splice(0)) ch.close();
    await Promise.all(procs.map((p) => p.stop()));
    await stopAll();
    lab.destroy();
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    lab.build(HOSTS);
    const at = {
      root: `${lab.ip("root")}:${PORTS.root}`,
      rootBackbone: `${lab.ip("root", "b")}:${PORTS.root}`,
      sec: `${lab.ip("sec")}:${PORTS.sec}`,
      eu: `${lab.ip("eu")}:${PORTS.eu}`,
      us: `${lab.ip("us")}:${PORTS.us}`,
      usSecond: `${lab.ip("us", "b")}:${PORTS.us}`,
      resolver: `${lab.ip("res")}:${PORTS.res}`,
      eu2: `${lab.ip("eu2")}:${PORTS.eu}`,
      eu3: `${lab.ip("eu3")}:${PORTS.eu}`,
    };
    const pkiDir = join(dir, "pki");
    const both = (host: string) => [lab.ip(host, "a"), lab.ip(host, "b")];
    await ensureDevPki(pkiDir, [...IDENTITIES, "root-secondary"], {
      root: both("root"),
      "root-secondary": both("sec"),
      "dp-eu": [lab.ip("eu"), lab.ip("eu2"), lab.ip("eu3")],
      "dp-us": both("us"),
      resolver: both("res"),
    });
    ensureDevSigningKeys(pkiDir, SIGNING_KEYS);
    const signingKey = (name: string) => loadSigningKey(devSigningKeyPaths(pkiDir, name).keyFile);
    const rootPublicKey = devSigningKeyPaths(pkiDir, "root").publicKeyFile;
    mkdirSync(join(dir, "config"));
    mkdirSync(join(dir, "sockets"));

    const server = (name: string, host: string, role: Role, port: number, config: object, clock = false) => {
      const path = join(dir, "config", `${name}.json`);
      // Servers bind every address of their host; the ops listener stays on its loopback.
      const common = { host: "0.0.0.0", port, allowDevelopmentCa: true, ops: { port: 0 } };
      writeFileSync(path, `${JSON.stringify({ ...common, ...config }, null, 2)}\n`);
      const clockFile = join(dir, `${name}.clock`);
      if (clock) writeFileSync(clockFile, "0", { mode: 0o600 });
      // devnet's server process, launched inside its host's namespace (ip netns exec execs node
      // in place, so the PID is the server's).
      const proc = new ServerProcess(name, role, path, process.env.LOG_LEVEL ?? "info", {
        launcher: ["ip", "netns", "exec", lab.ns(host)],
        address: `${lab.ip(host)}:${port}`,
        onLine,
        ...(clock && { clockFile }),
      });
      procs.push(proc);
      return proc;
    };
    const tls = (identity: string) => devTlsPaths(pkiDir, identity);
    const reconfigure = async (proc: ServerProcess, patch: Record<string, Record<string, unknown>>) => {
      const config = JSON.parse(readFileSync(proc.configPath, "utf8")) as Record<
        string,
        Record<string, unknown>
      >;
      for (const [k, v] of Object.entries(patch)) config[k] = { ...config[k], ...v };
      writeFileSync(proc.configPath, `${JSON.stringify(config, null, 2)}\n`);
      if (proc.running) await proc.stop();
      await proc.start({ samePort: true });
    };
    const rootEndpoints = [at.root, at.sec];

    const root = server("root", "root", "root", PORTS.root, {
      dataDir: join(dir, "root"),
      tls: tls("root"),
      admins: ["admin"],
      signingKey: devSigningKeyPaths(pkiDir, "root").keyFile,
    });
    const sec = server("root-secondary", "sec", "root", PORTS.sec, {
      dataDir: join(dir, "root-secondary"),
      tls: tls("root-secondary"),
      primary: { endpoints: [at.rootBackbone], rootPublicKey },
    });
    const dp = (id: "eu" | "us", host: string = id, replication?: object) =>
      server(host === id ? `dp-${id}` : `dp-${host}`, host, "authoritative", PORTS[id], {
        dpId: id,
        dataDir: join(dir, host === id ? `dp-${id}` : `dp-${host}`),
        ...(replication && { replication }),
        tls: tls(`dp-${id}`),
        rootEndpoints,
        admins: ["admin"],
        signingKey: devSigningKeyPaths(pkiDir, `dp-${id}`).keyFile,
        rootPublicKey,
        answerTtlSeconds: ANSWER_TTL_SECONDS,
        negativeTtlSeconds: NEGATIVE_TTL_SECONDS,
      });
    const eu = dp("eu");
    const us = dp("us");
    const resolver = server(
      "resolver",
      "res",
      "resolver",
      PORTS.res,
      {
        dataDir: join(dir, "resolver"),
        tls: tls("resolver"),
        rootEndpoints,
        rootPublicKey,
        admins: ["admin"],
        quotas: { enrolledUsers: { "msp-bluebird": 2_000_000, "msp-parrot": 100_000, cli: 100_000 } },
        cache: {
          negativeMaxTtlSeconds: NEGATIVE_TTL_SECONDS,
          staleWindowSeconds: 3_600,
          staleAnswerTtlSeconds: STALE_ANSWER_TTL_SECONDS,
        },
      },
      true,
    );

    const relay: Relay = await startRelay(
      lab.ns("msp"),
      join(REPO, "test", "slow", "relay.ts"),
      join(dir, "sockets"),
      [at.root, at.sec, at.eu, at.us, at.usSecond, at.resolver, at.eu2, at.eu3],
      onLine,
    );
    const open = new Map<string, Channel>();
    const channel = (target: string, identity: string) => {
      let ch = open.get(`${target} ${identity}`);
      if (!ch) {
        ch = openChannel(relay.via(target), channelCredentials(loadTls(tls(identity))));
        open.set(`${target} ${identity}`, ch);
        channels.push(ch);
      }
      return ch;
    };

    await root.start();
    await Promise.all([sec.start(), eu.start(), us.start()]);
    await seedRegistry(channel(at.root, "admin"), { eu: [at.eu], us: [at.us, at.usSecond] }, signingKey);
    const serial =
      (await channel(at.root, "cli").client(pb.RootService).getSnapshot({})).snapshot?.serial ?? 0n;
    for (const address of [at.eu, at.us])
      await loadMappings(channel(address, "admin"), serial, (id) => channel(address, id), signingKey);
    await resolver.start();
    await waitUntilResolving(channel(at.resolver, "cli"));
    const health = channel(at.sec, "cli").client(pb.Health);
    await eventually(async () => {
      const r = await health.check({ service: "" }, { timeoutMs: 2_000 });
      assert.equal(r.status, pb.HealthCheckResponse_ServingStatus.SERVING, "the secondary serves");
    });

    const admin = channel(at.resolver, "admin").client(pb.ResolverAdminService);
    const stats = () => admin.getStats({}, { timeoutMs: 5_000 });
    const dpAddress = { eu: at.eu, us: at.us };
    const cli = (host: string, args: readonly string[]) =>
      runOnHost(lab.ns(host), [join(REPO, "packages/cli/bin/mimi.js"), ...args, "--pki", pkiDir]);
    return {
      lab,
      dir,
      servers: { root, sec, eu, us, resolver },
      at,
      channel,
      resolve: (csi) =>
        channel(at.resolver, "msp-bluebird")
          .client(pb.ResolverService)
          .resolve({ csi, options: { format: pb.AnswerFormat.VERBOSE } }, { timeoutMs: 10_000 }),
      stats,
      async subscription(id) {
        const s = (await stats()).subscriptions.find((x) => x.dpId === id);
        assert.ok(s, `a subscription to ${id}`);
        return s;
      },
      async flush(csi) {
        await admin.flush({ scope: { case: "csi", value: csi } }, { timeoutMs: 5_000 });
      },
      async lookupsServed(id, address = dpAddress[id]) {
        const c = channel(address, "admin").client(pb.AuthoritativeAdminService);
        return (await c.getStatus({}, { timeoutMs: 5_000 })).lookupsServed;
      },
      cli,
      async write(id, address, csi, ssi) {
        const claims = channel(address, "msp-parrot").client(pb.ClaimService);
        await writeParrotMapping(claims, signingKey("msp-parrot"), id, csi, ssi);
      },
      async claim(host, id, address, csi, ssi) {
        const r = await cli(host, [
          "claim",
          "run",
          csi,
          "--ssi",
          ssi,
          "--as",
          "msp-bluebird",
          "--dp",
          address,
          "--dp-id",
          id,
          "--outbox",
          join(dir, `dp-${id}`, "outbox"),
        ]);
        assert.equal(r.code, 0, `mimi claim run on ${host}: ${r.stderr}`);
      },
      reconfigure,
      async startEuReplicas() {
        const others = (me: string) => [at.eu, at.eu2, at.eu3].filter((a) => a !== me);
        // Each endpoint knows its address as the registry lists it: a secondary follows only once
        // the registry places that endpoint in its jurisdiction, and a candidate tells voters.
        const replication = (me: string) => ({ peers: others(me), jurisdiction: "EU", endpoint: me });
        // The registry lists the new endpoints first (an endpoint it does not publish gets no copy).
        const put = await cli("msp", [
          "root",
          "dp",
          "put",
          "eu",
          "--endpoint",
          at.eu,
          at.eu2,
          at.eu3,
          "--tls-identity",
          "dp-eu",
          "--jurisdiction",
          "EU",
          "--root",
          at.root,
        ]);
        assert.equal(put.code, 0, put.stderr);
        const serial = /serial (\d+)/.exec(put.stdout)?.[1];
        assert.ok(serial, `no serial in: ${put.stdout}`);
        const replica = (host: "eu2" | "eu3") =>
          dp("eu", host, { role: "secondary", ...replication(at[host]) });
        const replicas = { eu2: replica("eu2"), eu3: replica("eu3") };
        await Promise.all([replicas.eu2.start(), replicas.eu3.start()]);
        // The primary learns its peers (to check their epochs before it writes).
        await reconfigure(eu, { replication: replication(at.eu) });
        const health = (address: string) => channel(address, "cli").client(pb.Health);
        for (const address of [at.eu2, at.eu3]) {
          await eventually(async () => {
            const r = await health(address).check({ service: "" }, { timeoutMs: 2_000 });
            assert.equal(r.status, pb.HealthCheckResponse_ServingStatus.SERVING, `${address} serves`);
          });
        }
        await eventually(async () => assert.ok((await stats()).registrySerial >= BigInt(serial)));
        return replicas;
      },
      logs: () => lines.join("\n"),
      logged: (pattern, what) =>
        eventually(async () =>
          assert.match(lines.join("\n"), pattern, what ?? `a log line matching ${pattern}`),
        ),
      stop,
    };
  } catch (err) {
    process.stderr.write(`\n--- logs of the multi-host network ---\n${lines.slice(-150).join("\n")}\n`);
    await stop();
    throw err;
  }
}

/**
 * Registers the demo DPs at their hosts' addresses, the demo MSPs and delegations, as
 * devnet's loadRegistry does for the loopback network.
 */
async function seedRegistry(
  ch: Channel,
  endpoints: { eu: string[]; us: string[] },
  signingKey: (name: string) => { publicKey: Uint8Array },
): Promise<void> {
  const demo = loadDemo();
  const admin = ch.client(pb.RegistryAdminService);
  // The third-party DP (federation) is not one of this network's hosts.
  for (const d of demo.dps.filter((x) => !x.thirdParty)) {
    await admin.putDp({
      dp: {
        id: d.id,
        endpoints: endpoints[d.id as "eu" | "us"],
        tlsIdentity: d.tlsIdentity,
        jurisdiction: d.jurisdiction,
        signingPublicKey: signingKey(d.tlsIdentity).publicKey,
      },
    });
  }
  for (const m of demo.msps)
    await admin.putMsp({ id: m.id, name: m.name, signingPublicKey: signingKey(m.tlsIdentity).publicKey });
  for (const d of demo.delegations)
    await admin.createDelegation({ key: keyToProto(parseDelegationKeyText(d.key)), dpId: d.dp });
}
