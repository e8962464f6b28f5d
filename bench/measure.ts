// How the benchmark measures: load processes started at one moment, CPU-seconds and RSS of
// each server process read from /proc around the run, latency percentiles merged from the
// load processes' samples, and the table row each run prints.
import { execFileSync, spawn } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { type Network, startNetwork } from "@mimi/devnet";
import { gcTraceWriter } from "./gc-trace.js";
import type { KeySpec, LoadResult, LoadSpec } from "./load.js";
import { printRow, type RunResult, round } from "./report.js";

export { fmtCount, HEADER, type RunResult, round } from "./report.js";

const HERE = dirname(fileURLToPath(import.meta.url));

export interface Options {
  mappings: number;
  quick: boolean;
  durationMs: number;
  workers: number;
  concurrency: number;
  streamConcurrency: number;
  rate: number;
  authSizes: number[];
  memoryEntries: number;
  /** Signed records the bulk run registers. */
  bulkRecords: number;
  /** Mapping writes per second in the propagation run. */
  changeRate: number;
  scenarios: string[];
  out: string;
  dataDir: string;
  /** The Unbound+NSD reference script the anchor scenario runs (bench/anchor.ts). */
  anchorScript: string;
  /** When set, servers run under node --cpu-prof and write profiles here. */
  profileDir: string | undefined;
  /** When set, servers run under node --trace-gc-nvp, their traces kept here (bench/gc-trace.ts). */
  gcTraceDir: string | undefined;
  /** Options of node for every server process (--node-args). */
  nodeArgs: readonly string[];
  /** Rounds of the echo reference and the warm runs, alternating (their ratios' median is reported). */
  rounds: number;
  /** The references' runs load their servers at the same time as the warm run of their shape (--paired). */
  paired: boolean;
  /** The echo references to run (bench/echo-server.ts's modes). */
  echoes: readonly ("bare" | "options" | "core" | "fast")[];
  /** False: the resolver runs without its ops listener, so without metrics (to price them). */
  metrics: boolean;
  /**
   * Lookups a second the overload runs offer (--overload-rate); undefined: twice the sustained
   * rate. For A/B runs: the sustained rate moves from run to run, and the offered rate with it.
   */
  overloadRate?: number | undefined;
  /** The resolver's verifyThreads; undefined keeps its default. */
  verifyThreads?: number | undefined;
  /** The DPs' answerCacheMegabytes (0: off, every lookup read from the store); undefined keeps their default. */
  dpAnswerCacheMb?: number | undefined;
  /** The DPs' sealBatchWaitMs (0: every turn signs what it read); undefined keeps their default. */
  dpSealWaitMs?: number | undefined;
  /** CPU pinning (--pin): servers on `servers` (a taskset list such as "0"), load processes on `load` ("1"). */
  pin?: { servers: string; load: string } | undefined;
}

const CLK_TCK = (() => {
  try {
    return Number(execFileSync("getconf", ["CLK_TCK"]).toString().trim()) || 100;
  } catch {
    return 100;
  }
})();

/** The process and its descendants (a clustered resolver's workers), from /proc. */
export function processTree(pid: number): number[] {
  const out = [pid];
  for (let i = 0; i < out.length && out.length < 1_024; i++) {
    try {
      const p = out[i] as number;
      for (const task of readdirSync(`/proc/${p}/task`)) {
        const children = readFileSync(`/proc/${p}/task/${task}/children`, "utf8").trim();
        if (children) out.push(...children.split(" ").map(Number));
      }
    } catch {
      // Gone meanwhile.
    }
  }
  return out;
}

/** CPU seconds (user + system) of a process and its descendants so far. */
export function cpuSecondsOf(pid: number | undefined): number {
  if (!pid) return 0;
  let total = 0;
  for (const p of processTree(pid)) {
    try {
      const stat = readFileSync(`/proc/${p}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      total += (Number(fields[11]) + Number(fields[12])) / CLK_TCK; // utime + stime
    } catch {
      // Gone meanwhile.
    }
  }
  return total;
}

/** Resident memory of a process and its descendants, in MB. */
export function rssMbOf(pid: number | undefined): number {
  if (!pid) return 0;
  let kb = 0;
  for (const p of processTree(pid)) {
    try {
      const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${p}/status`, "utf8"));
      kb += m ? Number(m[1]) : 0;
    } catch {
      // Gone meanwhile.
    }
  }
  return kb / 1024;
}

export function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return 0;
  return (sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? 0) / 1000;
}

/** The command that runs node with `args`, on the CPUs `cpus` (a taskset list) when given. */
export function nodeCommand(args: readonly string[], cpus?: string): [string, string[]] {
  return cpus ? ["taskset", ["-c", cpus, process.execPath, ...args]] : [process.execPath, [...args]];
}

function spawnWorker(spec: LoadSpec): Promise<LoadResult> {
  return new Promise((done, reject) => {
    // stdin is a pipe the worker watches: it ends when the benchmark does, however it ends.
    const [command, args] = nodeCommand(
      ["--import", "tsx", join(HERE, "load.ts"), JSON.stringify(spec)],
      spec.pin,
    );
    const child = spawn(command, args, {
      stdio: ["pipe", "pipe", "pipe"],
      env: { ...process.env, LOG_LEVEL: "silent" },
    });
    let out = "";
    let err = "";
    child.stdout.on("data", (d) => {
      out += d;
    });
    child.stderr.on("data", (d) => {
      err += d;
    });
    child.on("exit", (code) => {
      if (code !== 0) return reject(new Error(`load worker failed (${code}): ${err.slice(-2000)}`));
      try {
        done(JSON.parse(out.trim().split("\n").pop() ?? "{}") as LoadResult);
      } catch {
        reject(new Error(`load worker printed no result: ${out.slice(-500)} ${err.slice(-500)}`));
      }
    });
  });
}

/** Fills the resolver's cache with CSIs [0, warmCount), as the warm, mixed, abuse and overload runs expect (no result). */
export async function prewarm(bench: Bench, net: Network, o: Options, warmCount: number): Promise<void> {
  await bench.measure(net, "prewarm", `${warmCount} CSIs`, {
    service: "resolver",
    api: "stream",
    concurrency: 64,
    keys: (w) => ({
      mode: "cold",
      warmCount,
      cold: split([0, warmCount], o.workers)[w] ?? [0, 0],
      absent: [0, 0],
      universe: 0,
    }),
    durationMs: 120_000,
  });
  bench.results.pop();
}

/** Splits [a, b) into n contiguous parts. */
export function split([a, b]: [number, number], n: number): [number, number][] {
  const size = Math.floor((b - a) / n);
  return Array.from({ length: n }, (_, i) => [a + i * size, i === n - 1 ? b : a + (i + 1) * size]);
}

export class Bench {
  readonly results: RunResult[] = [];
  /** Extra node arguments for every server (e.g. --cpu-prof when profiling). */
  nodeArgs: string[] = [];
  /** The round the runs being measured belong to (recorded with their results). */
  round: number | undefined;
  private coldCursor: number;
  private absentCursor = 0;

  constructor(
    readonly o: Options,
    private readonly tmp: string,
    warmCount: number,
  ) {
    this.coldCursor = warmCount;
  }

  /** Takes the next `count` never-asked existing CSIs (bounded by the data set). */
  takeCold(count: number): [number, number] {
    const start = Math.min(this.coldCursor, this.o.mappings);
    const end = Math.min(start + count, this.o.mappings);
    this.coldCursor = end;
    return [start, end];
  }

  takeAbsent(count: number): [number, number] {
    const r: [number, number] = [this.absentCursor, this.absentCursor + count];
    this.absentCursor += count;
    return r;
  }

  /** Keeps a result and prints its row. */
  record(result: RunResult): void {
    this.results.push(result);
    printRow(result);
  }

  /** Runs one load configuration and records the result. */
  async measure(net: Network, scenario: string, variant: string, load: Load): Promise<RunResult> {
    const [r] = await this.measureSideBySide(net, scenario, [{ variant, load }]);
    return r as RunResult;
  }

  /**
   * Runs several load configurations at once (their workers start at the same moment) and
   * records one result per configuration, under its own scenario name where it has one; the
   * servers' CPU is the whole run's, in each.
   */
  async measureSideBySide(
    net: Network,
    scenario: string,
    groups: readonly { variant: string; load: Load; scenario?: string }[],
  ): Promise<RunResult[]> {
    const startAtMs = Date.now() + 1_500;
    const specsOf = (load: Load, g: number): LoadSpec[] => {
      const workers = load.workers ?? this.o.workers;
      const target =
        load.target?.address ?? (load.service === "resolver" ? net.resolver.address : net.dps.eu.address);
      return Array.from({ length: workers }, (_, w) => ({
        target,
        service: load.service,
        api: load.api,
        pkiDir: net.pkiDir,
        identity: load.identity ?? (load.service === "resolver" ? "msp-bluebird" : "resolver"),
        startAtMs,
        durationMs: load.durationMs ?? this.o.durationMs,
        concurrency: Math.max(1, Math.round(load.concurrency / workers)),
        ratePerSec: (load.rate ?? 0) / workers,
        deadlineMs: load.deadlineMs ?? 10_000,
        ...(load.connections && { connections: load.connections }),
        keys: load.keys(w),
        ...(load.request && { request: load.request }),
        ...(this.o.pin && { pin: this.o.pin.load }),
        latFile: join(this.tmp, `lat-${this.results.length}-${g}-${w}.bin`),
      }));
    };
    const specs = groups.map((g, i) => specsOf(g.load, i));
    const procs: Record<string, { readonly pid: number | undefined }> = {
      root: net.root,
      "dp-eu": net.dps.eu,
      "dp-us": net.dps.us,
      resolver: net.resolver,
      ...Object.assign({}, ...groups.map((g) => g.load.extraServers ?? {})),
    };
    // Servers loaded instead of the resolver (the echo references), by group.
    groups.forEach((g, i) => {
      if (g.load.target) procs[`target-${i}`] = g.load.target;
    });
    const running = Promise.all(specs.map((group) => Promise.all(group.map(spawnWorker))));
    await new Promise((r) => setTimeout(r, Math.max(0, startAtMs - Date.now())));
    const cpu0 = Object.fromEntries(Object.entries(procs).map(([k, p]) => [k, cpuSecondsOf(p.pid)]));
    const outcomes = await running;
    const cpu1 = Object.fromEntries(Object.entries(procs).map(([k, p]) => [k, cpuSecondsOf(p.pid)]));
    const cpuAll = Object.fromEntries(
      Object.keys(procs).map((k) => [k, round((cpu1[k] ?? 0) - (cpu0[k] ?? 0), 2)]),
    );
    const rssAll = Object.fromEntries(Object.entries(procs).map(([k, p]) => [k, round(rssMbOf(p.pid), 1)]));
    // Each group's view: a group loading a target counts that server's CPU and RSS where the
    // resolver's would be; the other groups' targets are not its servers.
    const viewOf = (all: Record<string, number>, i: number) => {
      const own = groups[i]?.load.target ? all[`target-${i}`] : all.resolver;
      const view = Object.fromEntries(Object.entries(all).filter(([k]) => !k.startsWith("target-")));
      view.resolver = own ?? 0;
      return view;
    };
    return groups.map((g, i) => {
      const result: RunResult = resultOf(
        g.scenario ?? scenario,
        g.variant,
        g.load,
        specs[i] as LoadSpec[],
        outcomes[i] as LoadResult[],
        viewOf(cpuAll, i),
        viewOf(rssAll, i),
      );
      result.startedAt = new Date(startAtMs).toISOString();
      // What the load processes were told (every spec of a group runs as long).
      result.durationMs = (specs[i] as LoadSpec[])[0]?.durationMs ?? this.o.durationMs;
      if (this.round !== undefined) result.round = this.round;
      this.record(result);
      return result;
    });
  }
}

/** One load configuration of a run. */
export interface Load {
  service: "resolver" | "authoritative";
  api: "unary" | "stream";
  concurrency: number;
  rate?: number;
  /** Each call's deadline; default 10 s. */
  deadlineMs?: number;
  /** Connections per load process (default 1). */
  connections?: number;
  keys: (worker: number) => KeySpec;
  durationMs?: number;
  workers?: number;
  /** The certificate the workers present (default: msp-bluebird at a resolver, resolver at a DP). */
  identity?: string;
  /** Another server with the resolver's API to load instead (the echo reference); its CPU counts as the resolver's. */
  target?: { readonly address: string; readonly pid: number | undefined };
  /** More fields of every Resolve request (the federation and private-lookup scenarios). */
  request?: LoadSpec["request"];
  /** More server processes whose CPU counts among the servers' (federated DPs), by name. */
  extraServers?: Readonly<Record<string, { readonly pid: number | undefined }>>;
}

function resultOf(
  scenario: string,
  variant: string,
  load: Load,
  specs: readonly LoadSpec[],
  outcomes: readonly LoadResult[],
  cpuSeconds: Record<string, number>,
  rssMb: Record<string, number>,
): RunResult {
  const parts = specs.map((s) => new Float64Array(new Uint8Array(readFileSync(s.latFile)).buffer));
  const all = new Float64Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    all.set(p, off);
    off += p.length;
  }
  all.sort();
  const lookups = all.length;
  const elapsedS = Math.max(...outcomes.map((o) => o.elapsedMs)) / 1000;
  const serverCpu = Object.values(cpuSeconds).reduce((a, b) => a + b, 0);
  const errors = outcomes.reduce((n, o) => n + o.errors, 0);
  const firstError = outcomes.find((o) => o.firstError)?.firstError;
  const errorTimes = outcomes.flatMap((o) =>
    o.firstErrorAfterMs === undefined ? [] : [o.firstErrorAfterMs],
  );
  const errorsByKind: Record<string, number> = {};
  for (const o of outcomes)
    for (const [k, n] of Object.entries(o.errorsByKind)) errorsByKind[k] = (errorsByKind[k] ?? 0) + n;
  // The worst worker's percentiles (each worker's own; not merged).
  const worst = (of: ({ p50: number; p99: number } | undefined)[]) => {
    const f = of.filter((x) => x !== undefined);
    return f.length === 0
      ? undefined
      : { p50: round(Math.max(...f.map((x) => x.p50)), 3), p99: round(Math.max(...f.map((x) => x.p99)), 3) };
  };
  const failureMs = worst(outcomes.map((o) => o.failureMs));
  const failureFromSendMs = worst(outcomes.map((o) => o.failureFromSendMs));
  return {
    scenario,
    variant,
    lookups,
    errors,
    ...(firstError ? { firstError } : {}),
    ...(errorTimes.length > 0 ? { firstErrorAfterMs: round(Math.min(...errorTimes), 1) } : {}),
    ...(errors > 0 && {
      errorsByKind,
      errorSamples: Object.assign({}, ...outcomes.map((o) => o.errorSamples)) as Record<string, string>,
    }),
    ...(failureMs && { failureMs }),
    ...(failureFromSendMs && { failureFromSendMs }),
    lookupsPerSec: round(lookups / elapsedS, 0),
    loadCpuSeconds: round(
      outcomes.reduce((n, o) => n + o.cpuSeconds, 0),
      2,
    ),
    latencyMs: {
      p50: round(percentile(all, 50), 3),
      p90: round(percentile(all, 90), 3),
      p99: round(percentile(all, 99), 3),
      p999: round(percentile(all, 99.9), 3),
      max: round((all[all.length - 1] ?? 0) / 1000, 3),
    },
    cpuSeconds,
    rssMb,
    ...(load.service === "resolver" && (cpuSeconds.resolver ?? 0) > 0
      ? { lookupsPerResolverCpuSecond: round(lookups / (cpuSeconds.resolver ?? 1), 0) }
      : {}),
    // The authoritative alone is loaded at eu.
    ...(load.service === "authoritative" && (cpuSeconds["dp-eu"] ?? 0) > 0
      ? { lookupsPerDpCpuSecond: round(lookups / (cpuSeconds["dp-eu"] ?? 1), 0) }
      : {}),
    lookupsPerServerCpuSecond: serverCpu > 0 ? round(lookups / serverCpu, 0) : 0,
  };
}

export async function withNetwork<T>(
  bench: Bench,
  dir: string,
  cacheEntries: number,
  fn: (net: Network) => Promise<T>,
  extra: {
    nodeArgs?: string[];
    onLine?: (name: string, line: string) => void;
    /** More of the resolver's config (top-level keys replace the local network's). */
    resolver?: Record<string, unknown>;
    /** DPs build private-lookup tables, and the registry publishes their keys (NetworkOptions). */
    privateLookups?: boolean;
  } = {},
): Promise<T> {
  const gc = bench.o.gcTraceDir === undefined ? undefined : gcTraceWriter(bench.o.gcTraceDir);
  const onLine =
    gc && extra.onLine
      ? (name: string, line: string) => {
          extra.onLine?.(name, line);
          gc(name, line);
        }
      : (gc ?? extra.onLine);
  const net = await startNetwork({
    dir,
    nodeArgs: [...bench.nodeArgs, ...(extra.nodeArgs ?? [])],
    ...(bench.o.pin && { launcher: ["taskset", "-c", bench.o.pin.servers] }),
    ...(onLine ? { onLine } : {}),
    logLevel: "warn",
    ...(extra.privateLookups && { privateLookups: true }),
    overrides: {
      // Answers stay cached for the whole run; the benchmark measures the cache, not expiry.
      authoritative: {
        answerTtlSeconds: 3600,
        negativeTtlSeconds: 3600,
        ...(bench.o.dpAnswerCacheMb === undefined ? {} : { answerCacheMegabytes: bench.o.dpAnswerCacheMb }),
        ...(bench.o.dpSealWaitMs === undefined ? {} : { sealBatchWaitMs: bench.o.dpSealWaitMs }),
      },
      // lru-cache preallocates for maxEntries, so size it to what the run can cache.
      resolver: {
        cache: { maxEntries: cacheEntries, negativeMaxTtlSeconds: 3600 },
        // No ops section, no metrics: what the metrics cost is the difference (--no-metrics).
        ...(bench.o.metrics ? {} : { ops: undefined }),
        ...(bench.o.verifyThreads === undefined ? {} : { verifyThreads: bench.o.verifyThreads }),
        ...extra.resolver,
      },
    },
  });
  // A server that dies mid-run says why here; the run then fails with the lookups' errors.
  for (const p of [net.root, net.dps.eu, net.dps.us, net.resolver]) {
    p.onUnexpectedExit = (name, code, signal) => {
      process.stderr.write(
        `bench: ${name} exited during the run (${signal ?? code}); its last lines:\n${p.lines.slice(-20).join("\n")}\n`,
      );
    };
  }
  try {
    return await fn(net);
  } finally {
    await net.stop();
  }
}

/**
 * What a run's resolver cache can hold: the prewarm set plus the cold and absent CSIs the runs
 * consume (bounded by the data set), not the data set itself, which may be 100M. lru-cache
 * preallocates for its bound, so it is sized to what is used.
 */
export function cacheEntriesFor(o: Options): number {
  return Math.max(10_000, Math.min(2 * o.mappings, 4_000_000));
}
