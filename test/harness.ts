// Integration harness: starts the real network (separate processes, mutual TLS, SQLite files in
// a temp folder, ports chosen by the OS, a test clock per server) through the same launcher
// `npm start` uses, keeps every process's log, and prints the logs when a scenario fails.
// Tests speak gRPC (or run the CLI) only; they never import server internals. They wait by
// polling state with a deadline, never by sleeping, and move servers' clocks instead of
// waiting for time to pass.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { bulkRegister } from "@mimi/client";
import { bulkRecord, DiscoveryError, pb } from "@mimi/core";
import { type Network, type NetworkOptions, type ServerProcess, startNetwork } from "@mimi/devnet";
import { silenceIpServernameWarning } from "@mimi/rpc";

const REPO = resolve(fileURLToPath(import.meta.url), "../..");
silenceIpServernameWarning(process);

/** How long `eventually` polls by default: generous, so a loaded machine is slow, not failing. */
const DEFAULT_WAIT_MS = 20_000;

/** A network for one test file, started in `before` and stopped in `after`. */
export interface TestNetwork {
  /** The running network; valid inside tests. */
  readonly net: Network;
  /** Resolves through the resolver as an MSP would. */
  resolve(csi: string, options?: { mspFilter?: string[]; compact?: boolean }): Promise<pb.ResolveResponse>;
  /** How many lookups a DP has answered so far. */
  lookupsServed(dp: "eu" | "us" | "fed"): Promise<bigint>;
  /** The resolver's counters (ResolverAdminService.GetStats). */
  stats(): Promise<pb.GetStatsResponse>;
  /** Runs the mimi CLI against this network; resolves with exit code and output. */
  cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }>;
  /**
   * Re-registers a demo DP at the root with these endpoints and further `flags` (`mimi root dp
   * put`), asserting the command succeeds; returns its output (with the serial, for
   * resolverApplied).
   */
  putDp(dp: "eu" | "us", endpoints: string[], ...flags: string[]): Promise<string>;
  /** Every process's log lines, for diagnosis. */
  logs(): string;
  /**
   * Asserts that a process logged a line matching `pattern`: the line an operator reads about
   * something the test has already observed through the API. It was written before that, but
   * may still be in the pipe, so the collected lines are polled with a deadline. Never a way
   * to wait for progress: tests wait by polling state.
   */
  logged(pattern: RegExp, what?: string): Promise<void>;
  /**
   * Waits until the resolver has applied the registry change a mimi command reported
   * ("(serial N)" in its output): its registry serial in GetStats is at least N.
   */
  resolverApplied(cliStdout: string): Promise<void>;
  /** Moves a server's clock `ms` further ahead (it reads the clock file at every reading). */
  advanceClock(proc: ServerProcess, ms: number): void;
  /** Puts every server's clock back on the wall clock. */
  resetClocks(): void;
}

/** Starts a network for the enclosing test file. */
export function useNetwork(
  overrides?: NetworkOptions["overrides"],
  logLevel?: string,
  extra: Pick<NetworkOptions, "thirdParty" | "privateLookups"> = {},
): TestNetwork {
  let net: Network | undefined;
  const dir = mkdtempSync(join(tmpdir(), "mimi-it-"));
  const lines: string[] = [];
  const offsets = new Map<ServerProcess, number>();
  before(async () => {
    net = await startNetwork({
      dir,
      logLevel: logLevel ?? process.env.LOG_LEVEL ?? "info",
      testClock: true,
      onLine: (name, line) => {
        lines.push(`${name}: ${line}`);
        if (lines.length > 5000) lines.splice(0, 2500);
      },
      ...(overrides ? { overrides } : {}),
      ...extra,
    });
  });
  after(async () => {
    await net?.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  const the = () => {
    if (!net) throw new Error("network not started");
    return net;
  };
  const stats = () => {
    const n = the();
    return n.channel(n.resolver.address, "admin").client(pb.ResolverAdminService).getStats({});
  };
  return {
    get net() {
      return the();
    },
    resolve(csi, o = {}) {
      const n = the();
      return n
        .channel(n.resolver.address, "msp-bluebird")
        .client(pb.ResolverService)
        .resolve(
          // Options only when asked for, as most clients send: such requests can be answered
          // from the cache by the resolver's fast path, so every test exercises it.
          o.compact || o.mspFilter
            ? {
                csi,
                options: {
                  format: o.compact ? pb.AnswerFormat.COMPACT : pb.AnswerFormat.VERBOSE,
                  mspFilter: o.mspFilter ?? [],
                },
              }
            : { csi },
          { timeoutMs: 10_000 },
        );
    },
    async lookupsServed(dp) {
      const n = the();
      const proc = n.dps[dp];
      if (!proc) throw new Error(`DP ${dp} is not running in this network`);
      const s = await n.channel(proc.address, "admin").client(pb.AuthoritativeAdminService).getStatus({});
      return s.lookupsServed;
    },
    stats,
    cli(args) {
      return new Promise((done) => {
        execFile(
          process.execPath,
          [join(REPO, "packages/cli/bin/mimi.js"), ...args, "--pki", the().pkiDir],
          { timeout: 60_000 },
          (err, stdout, stderr) => done({ code: err ? Number(err.code ?? 1) : 0, stdout, stderr }),
        );
      });
    },
    async putDp(dp, endpoints, ...flags) {
      const r = await this.cli([
        "root",
        "dp",
        "put",
        dp,
        "--endpoint",
        ...endpoints,
        "--tls-identity",
        `dp-${dp}`,
        "--jurisdiction",
        dp.toUpperCase(),
        ...flags,
        "--root",
        the().root.address,
      ]);
      assert.equal(r.code, 0, r.stderr);
      return r.stdout;
    },
    logs: () => lines.join("\n"),
    logged: (pattern, what) =>
      eventually(async () =>
        assert.match(lines.join("\n"), pattern, what ?? `a log line matching ${pattern}`),
      ),
    async resolverApplied(cliStdout) {
      const serial = /serial (\d+)/.exec(cliStdout)?.[1];
      if (!serial) throw new Error(`no serial in: ${cliStdout}`);
      // A GetStats that sees the serial is handled after the change was applied, and so after
      // the eviction it scheduled for that turn of the resolver's event loop.
      await eventually(async () => {
        const s = await stats();
        if (s.registrySerial < BigInt(serial))
          throw new Error(`the resolver is at serial ${s.registrySerial}, not yet ${serial}`);
      });
    },
    advanceClock(proc, ms) {
      const next = (offsets.get(proc) ?? 0) + ms;
      offsets.set(proc, next);
      proc.setClockOffset(next);
    },
    resetClocks() {
      for (const proc of offsets.keys()) proc.setClockOffset(0);
      offsets.clear();
    },
  };
}

/** A test that prints the network's logs when it fails; `timeoutMs` overrides --test-timeout. */
export function scenario(
  t: TestNetwork,
  name: string,
  fn: () => Promise<void>,
  options: { timeoutMs?: number } = {},
): void {
  test(name, options.timeoutMs ? { timeout: options.timeoutMs } : {}, async () => {
    try {
      await fn();
    } catch (err) {
      process.stderr.write(
        `\n--- logs for failed scenario "${name}" ---\n${t.logs().split("\n").slice(-150).join("\n")}\n`,
      );
      throw err;
    }
  });
}

/** Asserts that `p` fails with a DiscoveryError carrying this gRPC status; returns it. */
export async function rejectsWith(
  p: Promise<unknown>,
  status: number,
  message?: RegExp,
): Promise<DiscoveryError> {
  try {
    await p;
  } catch (err) {
    if (!(err instanceof DiscoveryError)) throw err;
    if (err.remoteStatus !== status) {
      throw new Error(`expected status ${status}, got ${err.remoteStatus}: ${err.message}`);
    }
    if (message && !message.test(err.message))
      throw new Error(`message "${err.message}" does not match ${message}`);
    return err;
  }
  throw new Error(`expected status ${status}, but the call succeeded`);
}

/**
 * Polls `check` until it passes, for effects that cross processes; fails with the last
 * error once `timeoutMs` has passed. Nothing is asserted about how long it took.
 */
export async function eventually<T>(check: () => Promise<T>, timeoutMs = DEFAULT_WAIT_MS): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await check();
    } catch (err) {
      if (Date.now() > end) throw err;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

let bulkSession = 0;

/**
 * Commits one mapping at a DP as a bulk-trusted demo MSP (parrot) would: one signed record in
 * its own bulk session, one transaction.
 */
export async function writeMapping(
  t: TestNetwork,
  dp: "eu" | "us" | "fed",
  csi: string,
  ssi: string,
): Promise<void> {
  const proc = t.net.dps[dp];
  if (!proc) throw new Error(`DP ${dp} is not running in this network`);
  const claims = t.net.channel(proc.address, "msp-parrot").client(pb.ClaimService);
  await writeParrotMapping(claims, t.net.signingKey("msp-parrot"), dp, csi, ssi);
}

/** writeMapping over any ClaimService client of a DP (`dpId`), with parrot's signing key. */
export async function writeParrotMapping(
  claims: Parameters<typeof bulkRegister>[0],
  parrotKey: Parameters<typeof bulkRecord>[1],
  dpId: string,
  csi: string,
  ssi: string,
): Promise<void> {
  const now = Date.now();
  const record = bulkRecord(
    {
      csi,
      mspId: "parrot.example",
      ssi,
      defaultRequested: false,
      tags: [],
      createdAtMs: now,
      dpId,
      expiresAtMs: now + 86_400_000,
    },
    parrotKey,
  );
  await bulkRegister(claims, {
    sessionId: `test-write-${process.pid}-${++bulkSession}`,
    total: 1,
    recordsFrom: () => [record],
  });
}

/**
 * The value of one series (name with its labels, as Prometheus prints it) on an ops listener's
 * /metrics, or NaN when it is not there. A rendering serves scrapes for a second: poll for changes.
 */
export async function metricValue(opsPort: number, series: string): Promise<number> {
  const body = await (await fetch(`http://127.0.0.1:${opsPort}/metrics`)).text();
  const line = body.split("\n").find((l) => l.startsWith(`${series} `));
  return Number(line?.split(" ")[1] ?? Number.NaN);
}
