// The references the warm runs are read against (bench/echo-server.ts): servers with the
// resolver's API over the same mutual TLS that do no work and answer a real cached answer's
// bytes: `echo-bare` (grpc-js alone) and `echo-core` (with the project's gRPC framework), and on
// request (--echoes) `echo-options` (grpc-js with the framework's server options and raw
// handlers) and `echo-fast` (the framework's fast path answering every request with the same
// bytes, with the resolver's call metrics). They are set beside the warm runs in one of two ways:
// - in turn (the default): rounds of echo-bare's runs, echo-core's, then the warm runs, so a
//   round's ratio is taken between runs a minute or two apart;
// - at once (--paired): each shape's warm run and the references' runs load their servers in
//   the same seconds, on the same cores, each from load processes of its own, so the machine's
//   drift moves all of them alike.
// Either way each round's ratio is kept, and the median over the rounds reported.
import { spawn } from "node:child_process";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { toBinary } from "@bufbuild/protobuf";
import { pb } from "@mimi/core";
import type { Network } from "@mimi/devnet";
import { gcTraceWriter } from "./gc-trace.js";
import { existingCsi } from "./keys.js";
import type { KeySpec } from "./load.js";
import { type Bench, type Load, nodeCommand, type Options, round } from "./measure.js";

const HERE = dirname(fileURLToPath(import.meta.url));

/** The warm runs' shapes, which the references repeat. */
export function warmShapes(
  o: Options,
): { variant: string; api: "unary" | "stream"; concurrency: number; workers?: number }[] {
  return [
    { variant: "unary c=1", api: "unary", concurrency: 1, workers: 1 },
    { variant: `unary c=${o.concurrency}`, api: "unary", concurrency: o.concurrency },
    { variant: `stream c=${o.streamConcurrency}`, api: "stream", concurrency: o.streamConcurrency },
  ];
}

type Shape = ReturnType<typeof warmShapes>[number];

/** A shape's load at the resolver, or at `target` (an echo) instead. */
export function shapeLoad(shape: Shape, keys: () => KeySpec, target?: Load["target"]): Load {
  return {
    service: "resolver",
    api: shape.api,
    concurrency: shape.concurrency,
    keys,
    ...(shape.workers !== undefined && { workers: shape.workers }),
    ...(target && { target }),
  };
}

/** The echo references there are (bench/echo-server.ts). */
export const ECHO_MODES = ["bare", "options", "core", "fast"] as const;
export type EchoMode = (typeof ECHO_MODES)[number];

interface Echo {
  readonly scenario: string;
  readonly target: { readonly address: string; readonly pid: number | undefined };
  stop(): Promise<void>;
}

/** A real cached answer's bytes (hex), which the echoes send back to every lookup. */
export async function cachedAnswerHex(net: Network): Promise<string> {
  const res = await net
    .channel(net.resolver.address, "msp-bluebird")
    .client(pb.ResolverService)
    .resolve({ csi: existingCsi(0) }, { timeoutMs: 10_000 });
  return Buffer.from(toBinary(pb.ResolveResponseSchema, res)).toString("hex");
}

/**
 * Starts an echo of `mode` and warms it up, unmeasured: a fresh process runs cold (JIT, first
 * handshakes) while the resolver has served for a while.
 */
export async function startEcho(
  o: Options,
  bench: Bench,
  net: Network,
  mode: EchoMode,
  responseHex: string,
  keys: () => KeySpec,
): Promise<Echo> {
  const spec = { mode, pkiDir: net.pkiDir, responseHex };
  const gc = o.gcTraceDir === undefined ? undefined : gcTraceWriter(o.gcTraceDir);
  // Pinned like the servers it stands for (--pin).
  const [command, args] = nodeCommand(
    [...bench.nodeArgs, "--import", "tsx", join(HERE, "echo-server.ts"), JSON.stringify(spec)],
    o.pin?.servers,
  );
  const child = spawn(command, args, { stdio: ["pipe", "pipe", "inherit"] });
  // Ending the stdin of a process that has just died fails with EPIPE: nothing to tell.
  child.stdin.on("error", () => {});
  const exited = new Promise<void>((done) => child.once("exit", () => done()));
  const stop = async () => {
    // Never started (spawn failed), or already gone: nothing to wait for.
    if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
    // Closing its stdin ends it cleanly (a profile, when asked for, is written on exit).
    child.stdin.end();
    const timer = setTimeout(() => child.kill(), 10_000);
    await exited;
    clearTimeout(timer);
  };
  try {
    const port = await new Promise<number>((done, fail) => {
      const timer = setTimeout(
        () => settle(() => fail(new Error("the echo reference did not listen within 60 s"))),
        60_000,
      );
      // Once: listening, or the first of failing to start, exiting and timing out.
      let settled = false;
      const settle = (f: () => void) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        child.stdout.removeListener("data", scan);
        // Its other output is drained from here on: unread, or with --gc-trace its collections
        // kept beside the servers' (echo-<mode>.log), to set the resolver's beside its reference's;
        // those of its start-up, read with the port, are left out.
        if (gc) createInterface({ input: child.stdout }).on("line", (line) => gc(`echo-${mode}`, line));
        else child.stdout.resume();
        f();
      };
      // Its other output (--node-args=--trace-gc's lines, written unbuffered or not) is skipped;
      // a bounded tail is searched.
      let out = "";
      const scan = (d: Buffer) => {
        out = (out + d).slice(-65_536);
        const m = /\{"port":(\d+)\}/.exec(out);
        if (m) settle(() => done(Number(m[1])));
      };
      child.stdout.on("data", scan);
      child.once("error", (err) =>
        settle(() => fail(new Error(`the echo reference did not start: ${err.message}`))),
      );
      child.once("exit", (code) =>
        settle(() => fail(new Error(`the echo reference exited (${code}) before listening`))),
      );
    });
    const echo: Echo = {
      scenario: `echo-${mode}`,
      target: { address: `127.0.0.1:${port}`, pid: child.pid },
      stop,
    };
    for (const shape of warmShapes(o).slice(1)) {
      await bench.measure(net, `${echo.scenario}-warmup`, shape.api, {
        ...shapeLoad(shape, keys, echo.target),
        durationMs: Math.min(2_000, o.durationMs),
      });
      bench.results.pop();
    }
    return echo;
  } catch (err) {
    await stop();
    throw err;
  }
}

/** One round in turn: each echo's runs of every shape (bench.round set by the caller). */
export async function echoReference(
  o: Options,
  bench: Bench,
  net: Network,
  keys: () => KeySpec,
): Promise<void> {
  const responseHex = await cachedAnswerHex(net);
  for (const mode of o.echoes) {
    const echo = await startEcho(o, bench, net, mode, responseHex, keys);
    try {
      for (const shape of warmShapes(o)) {
        await bench.measure(net, echo.scenario, shape.variant, shapeLoad(shape, keys, echo.target));
      }
    } finally {
      await echo.stop();
    }
  }
}

/** All `o.rounds` rounds at once (--paired): each shape's warm run beside the echoes' runs. */
export async function pairedReferences(
  o: Options,
  bench: Bench,
  net: Network,
  keys: () => KeySpec,
): Promise<void> {
  const responseHex = await cachedAnswerHex(net);
  const echoes: Echo[] = [];
  try {
    for (const mode of o.echoes) echoes.push(await startEcho(o, bench, net, mode, responseHex, keys));
    for (let r = 1; r <= o.rounds; r++) {
      bench.round = r;
      for (const shape of warmShapes(o)) {
        await bench.measureSideBySide(net, "warm", [
          { variant: shape.variant, load: shapeLoad(shape, keys) },
          ...echoes.map((e) => ({
            scenario: e.scenario,
            variant: shape.variant,
            load: shapeLoad(shape, keys, e.target),
          })),
        ]);
      }
    }
  } finally {
    bench.round = undefined;
    await Promise.all(echoes.map((e) => e.stop()));
  }
}

/** A figure over an echo reference's of the same shape: CPU per lookup and p50 latency. */
export interface ReferenceRatio {
  reference: string;
  variant: string;
  cpu: number;
  p50: number;
  rounds: number[];
}

/**
 * Each warm run shape as a ratio of the echo reference's run of the same shape: the ratio of
 * each round, then the median over the rounds. Returns them.
 */

export function printReferenceRatios(bench: Bench, log: (line: string) => void): ReferenceRatio[] {
  const out: ReferenceRatio[] = [];
  const shapes = new Set(
    bench.results.filter((r) => r.scenario.startsWith("echo-")).map((r) => `${r.scenario}|${r.variant}`),
  );
  for (const shape of shapes) {
    const [reference = "", variant = ""] = shape.split("|");
    const cpu: number[] = [];
    const p50: number[] = [];
    for (const echo of bench.results.filter((r) => r.scenario === reference && r.variant === variant)) {
      const warm = bench.results.find(
        (r) => r.scenario === "warm" && r.variant === variant && r.round === echo.round,
      );
      if (!warm?.lookupsPerResolverCpuSecond || !echo.lookupsPerResolverCpuSecond) continue;
      cpu.push(warm.lookupsPerResolverCpuSecond / echo.lookupsPerResolverCpuSecond);
      p50.push(warm.latencyMs.p50 / Math.max(echo.latencyMs.p50, 0.001));
    }
    if (cpu.length === 0) continue;
    const r = {
      reference,
      variant,
      cpu: round(median(cpu), 2),
      p50: round(median(p50), 2),
      rounds: cpu.map((x) => round(x, 2)),
    };
    out.push(r);
    const each = cpu.length > 1 ? ` (rounds: ${r.rounds.join(", ")})` : "";
    log(`warm ${variant}: ${r.cpu}x ${reference}'s calls per CPU-second${each}; p50 latency ${r.p50}x`);
  }
  return out;
}

/**
 * The authoritative alone, per CPU-second of its DP, against each echo reference of the same
 * shape in this run: the median of the echo's runs, since it does not run in rounds beside them.
 */
export function printDpRatios(bench: Bench, log: (line: string) => void): ReferenceRatio[] {
  const out: ReferenceRatio[] = [];
  const references = new Set(
    bench.results.filter((r) => r.scenario.startsWith("echo-")).map((r) => r.scenario),
  );
  for (const dp of bench.results.filter((r) => r.scenario === "authoritative" && r.lookupsPerDpCpuSecond)) {
    const variant = dp.variant.slice(dp.variant.indexOf(" ") + 1); // "20k unary c=64" -> "unary c=64"
    for (const reference of references) {
      const runs = bench.results.filter(
        (r) => r.scenario === reference && r.variant === variant && r.lookupsPerResolverCpuSecond,
      );
      if (runs.length === 0) continue;
      const r = {
        reference,
        variant: `authoritative ${dp.variant}`,
        cpu: round(
          (dp.lookupsPerDpCpuSecond as number) /
            median(runs.map((e) => e.lookupsPerResolverCpuSecond as number)),
          2,
        ),
        p50: round(dp.latencyMs.p50 / Math.max(median(runs.map((e) => e.latencyMs.p50)), 0.001), 2),
        rounds: [],
      };
      out.push(r);
      log(
        `authoritative ${dp.variant}: ${dp.lookupsPerDpCpuSecond} lookups per DP CPU-second, ${r.cpu}x ${reference}'s calls per CPU-second; p50 latency ${r.p50}x`,
      );
    }
  }
  return out;
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
}
