// Integration harness: starts the real network (separate processes, mutual TLS, SQLite
// files in a temp folder, ports chosen by the OS) through the same launcher `npm start`
// uses, keeps every process's log, and prints the logs when a scenario fails.
// Tests speak gRPC (or run the CLI) only; they never import server internals.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { DiscoveryError, pb, silenceIpServernameWarning } from "@mimi/core";
import { type Network, type NetworkOptions, startNetwork } from "../deploy/local/network.js";

const REPO = resolve(fileURLToPath(import.meta.url), "../..");
silenceIpServernameWarning();

/** A network for one test file, started in `before` and stopped in `after`. */
export interface TestNetwork {
  /** The running network; valid inside tests. */
  readonly net: Network;
  /** Resolves through the resolver as an MSP would. */
  resolve(csi: string, options?: { mspFilter?: string[]; compact?: boolean }): Promise<pb.ResolveResponse>;
  /** How many lookups a DP has answered so far. */
  lookupsServed(dp: "eu" | "us"): Promise<bigint>;
  /** Runs the mimi CLI against this network; resolves with exit code and output. */
  cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }>;
  /**
   * Re-registers a demo DP at the root with these endpoints (`mimi root dp put`), asserting the
   * command succeeds; returns its output (with the serial, for resolverApplied).
   */
  putDp(dp: "eu" | "us", endpoints: string[]): Promise<string>;
  /** Every process's log lines, for diagnosis. */
  logs(): string;
  /**
   * Waits until the resolver has applied the registry change a mimi command reported
   * ("(serial N)" in its output), and the eviction that follows on its next turn.
   */
  resolverApplied(cliStdout: string): Promise<void>;
}

/** Starts a network for the enclosing test file. */
export function useNetwork(overrides?: NetworkOptions["overrides"], logLevel?: string): TestNetwork {
  let net: Network | undefined;
  const dir = mkdtempSync(join(tmpdir(), "mimi-it-"));
  const lines: string[] = [];
  before(async () => {
    net = await startNetwork({
      dir,
      logLevel: logLevel ?? process.env.LOG_LEVEL ?? "info",
      onLine: (name, line) => {
        lines.push(`${name}: ${line}`);
        if (lines.length > 5000) lines.splice(0, 2500);
      },
      ...(overrides ? { overrides } : {}),
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
          {
            csi,
            options: {
              format: o.compact ? pb.AnswerFormat.COMPACT : pb.AnswerFormat.VERBOSE,
              mspFilter: o.mspFilter ?? [],
            },
          },
          { timeoutMs: 5_000 },
        );
    },
    async lookupsServed(dp) {
      const n = the();
      const s = await n
        .channel(n.dps[dp].address, "admin")
        .client(pb.AuthoritativeAdminService)
        .getStatus({});
      return s.lookupsServed;
    },
    cli(args) {
      return new Promise((done) => {
        execFile(
          process.execPath,
          [join(REPO, "packages/core/bin/mimi.js"), ...args, "--pki", the().pkiDir],
          { timeout: 20_000 },
          (err, stdout, stderr) => done({ code: err ? Number(err.code ?? 1) : 0, stdout, stderr }),
        );
      });
    },
    async putDp(dp, endpoints) {
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
        "--root",
        the().root.address,
      ]);
      assert.equal(r.code, 0, r.stderr);
      return r.stdout;
    },
    logs: () => lines.join("\n"),
    async resolverApplied(cliStdout) {
      const serial = /serial (\d+)/.exec(cliStdout)?.[1];
      if (!serial) throw new Error(`no serial in: ${cliStdout}`);
      const applied = new RegExp(`^resolver: .*"serial":"${serial}".*"registry change applied"`, "m");
      await eventually(async () => {
        if (!applied.test(lines.join("\n"))) throw new Error(`the resolver has not applied serial ${serial}`);
      });
      await new Promise((r) => setTimeout(r, 50));
    },
  };
}

/** A test that prints the network's logs when it fails. */
export function scenario(t: TestNetwork, name: string, fn: () => Promise<void>): void {
  test(name, async () => {
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

/** Retries `check` until it passes or `timeoutMs` elapses (for effects that cross processes). */
export async function eventually(check: () => Promise<void>, timeoutMs = 5_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    try {
      await check();
      return;
    } catch (err) {
      if (Date.now() > end) throw err;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}
