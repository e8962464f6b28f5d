// The benchmark's outside reference (issue 14): ENUM over a real DNS hierarchy, NSD servers
// delegating by country code with Unbound as the caching resolver, loaded by dnsperf
// (`../shared/anchors/enum/run.sh`, all from Debian's packages). Run inside the benchmark, so
// that our warm, cold and negative lookups read as ratios of what DNS does for the same job
// on this machine in the same hour, per CPU-second of all servers: theirs are unbound and the
// seven nsd processes, ours the resolver, the DPs and the root.
//
// Skipped, saying why, when the script or its programs are missing (`apt-get install -y nsd
// unbound dnsperf bind9-dnsutils`) and in --quick runs: it takes minutes and the DNS port on
// 127.0.0.10-16. The script waits for a quiet machine before each measurement and discards a
// run that other processes disturbed, so it runs between our scenarios, never beside one.
import { spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { type Bench, type Options, type RunResult, round } from "./measure.js";

/** The programs run.sh needs on the PATH. */
const NEEDS = ["nsd", "unbound", "unbound-control", "dnsperf", "dig", "python3", "bc", "ss"];

/** Longest the anchor may take: data generation, three fresh Unbounds, waits for quiet. */
const ANCHOR_LIMIT_MS = 40 * 60_000;

/** Our runs each anchor kind is set beside: the loaded ones (dnsperf keeps 200 queries in flight). */
function counterparts(o: Shapes): Record<string, { scenario: string; variants: string[] }> {
  const unary = `unary c=${o.concurrency}`;
  const stream = `stream c=${o.streamConcurrency}`;
  return {
    warm: { scenario: "warm", variants: [unary, stream] },
    cold: { scenario: "cold", variants: [unary, stream] },
    neg: { scenario: "negative", variants: [unary] },
  };
}

type Shapes = Pick<Options, "concurrency" | "streamConcurrency">;

export interface AnchorRatio {
  /** The anchor's kind: warm (cache hits), cold (a walk to the authoritative), neg (NXDOMAIN). */
  kind: string;
  /** Our run set beside it. */
  ours: string;
  /** Our lookups per CPU-second of all servers over Unbound+NSD's queries per CPU-second of theirs. */
  ratio: number;
}

/** Why the anchor cannot run here, or undefined when it can. */
function missing(script: string): string | undefined {
  if (!existsSync(script)) return `no anchor script at ${script}`;
  const path = (process.env.PATH ?? "").split(":");
  const absent = NEEDS.filter((p) => !path.some((d) => d && existsSync(join(d, p))));
  if (absent.length > 0)
    return `${absent.join(", ")} not installed (apt-get install -y nsd unbound dnsperf bind9-dnsutils bc iproute2)`;
  return undefined;
}

/** Runs the anchor's quick form; returns its results folder (it logs "results in DIR"). */
function runScript(script: string, o: Options, log: (line: string) => void): Promise<string> {
  const seconds = Math.max(10, Math.round(o.durationMs / 1000));
  const env = {
    ...process.env,
    THREADS_LIST: "1",
    REPS: "1",
    DURATION: String(seconds),
    LATENCY: "0",
    WORK: join(o.dataDir, "anchor"),
  };
  return new Promise((done, fail) => {
    // A process group of its own, so that ending it ends the script and what it started: its
    // trap stops NSD and Unbound on SIGTERM. Ended at the time limit, and when the benchmark is
    // interrupted (a signal to the benchmark alone would not reach it, and the script, its
    // stderr pipe broken, would die at its next line without stopping them).
    const child = spawn("bash", [script], { env, detached: true, stdio: ["ignore", "ignore", "pipe"] });
    const stop = (signal: NodeJS.Signals) => {
      try {
        process.kill(-(child.pid as number), signal);
      } catch {
        // already gone
      }
    };
    const onSignal = (signal: NodeJS.Signals) => {
      process.removeListener("SIGINT", onSignal);
      process.removeListener("SIGTERM", onSignal);
      stop("SIGTERM");
      process.kill(process.pid, signal); // the benchmark ends as if it had not caught the signal
    };
    process.once("SIGINT", onSignal);
    process.once("SIGTERM", onSignal);
    let timedOut = false;
    let killer: NodeJS.Timeout | undefined;
    const timer = setTimeout(() => {
      timedOut = true;
      stop("SIGTERM");
      killer = setTimeout(() => stop("SIGKILL"), 30_000); // its trap had half a minute
    }, ANCHOR_LIMIT_MS);
    let tail = "";
    let partial = "";
    let resultsDir: string | undefined;
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (chunk: string) => {
      tail = (tail + chunk).slice(-4_000);
      const lines = (partial + chunk).split("\n");
      partial = lines.pop() ?? ""; // a line cut between two chunks waits for its end
      for (const line of lines) {
        const m = /results in (\S+)/.exec(line);
        if (m) resultsDir = m[1];
        if (/ qps=| attempt |WARNING/.test(line)) log(`anchor: ${line.replace(/^\[[^\]]*\]\s*/, "").trim()}`);
      }
    });
    const settle = (err: Error | undefined) => {
      clearTimeout(timer);
      clearTimeout(killer);
      process.removeListener("SIGINT", onSignal);
      process.removeListener("SIGTERM", onSignal);
      if (err) fail(err);
      else done(resultsDir as string);
    };
    child.on("error", (err) => settle(err));
    // "close", not "exit": the results line may still be in the pipe when the process exits.
    child.on("close", (code, signal) => {
      if (code === 0 && resultsDir) settle(undefined);
      else {
        const why = timedOut
          ? `timed out after ${ANCHOR_LIMIT_MS / 60_000} min`
          : `ended with ${signal ?? code}`;
        settle(new Error(`anchor script ${why}: ${tail.slice(-1_000)}`));
      }
    });
  });
}

/** The saturating runs of a results folder's runs.tsv, as benchmark results. */
export function anchorResults(runsTsv: string): RunResult[] {
  const [header, ...lines] = runsTsv.trim().split("\n");
  const names = (header ?? "").split("\t");
  const out: RunResult[] = [];
  for (const line of lines) {
    const cells = line.split("\t");
    const f = (name: string) => Number(cells[names.indexOf(name)]);
    const tag = cells[names.indexOf("tag")] ?? "";
    const kind = /-(warm|cold|neg)-/.exec(tag)?.[1];
    if (!kind || cells[names.indexOf("mode")] !== "sat") continue;
    const runSeconds = f("run_s");
    const unbound = (f("ub_cpu_pct") / 100) * runSeconds;
    const nsd = (f("nsd_cpu_pct") / 100) * runSeconds;
    const qps = f("qps");
    const completed = f("completed");
    if (![runSeconds, unbound, nsd, qps, completed].every(Number.isFinite) || unbound + nsd <= 0) continue;
    const avg = f("avg_ms");
    out.push({
      scenario: "anchor",
      variant: `unbound+nsd ${kind}`,
      lookups: completed,
      errors: f("lost") || 0,
      lookupsPerSec: Math.round(qps),
      // dnsperf's saturating runs report the mean only; the percentiles are not measured.
      latencyMs: { p50: avg, p90: Number.NaN, p99: Number.NaN, p999: Number.NaN, max: Number.NaN },
      // Unbound is the resolver here and the nsd processes the authoritatives (the table's columns).
      cpuSeconds: { resolver: round(unbound, 2), authoritative: round(nsd, 2) },
      rssMb: { resolver: round(f("ub_rss_kb") / 1024, 1) },
      lookupsPerResolverCpuSecond: Math.round(completed / unbound),
      lookupsPerServerCpuSecond: Math.round(completed / (unbound + nsd)),
      extra: { avgLatencyMs: avg },
    });
  }
  return out;
}

/** Our runs beside the anchor's of the same kind, per CPU-second of all servers. */
export function anchorRatios(results: readonly RunResult[], o: Shapes): AnchorRatio[] {
  const out: AnchorRatio[] = [];
  const shapes = counterparts(o);
  for (const a of results.filter((r) => r.scenario === "anchor")) {
    const kind = a.variant.split(" ").pop() ?? "";
    const c = shapes[kind];
    if (!c) continue;
    for (const variant of c.variants) {
      // The last run of the shape (the warm runs come in rounds).
      const ours = results.filter((r) => r.scenario === c.scenario && r.variant === variant).pop();
      if (!ours?.lookupsPerServerCpuSecond) continue;
      out.push({
        kind,
        ours: `${ours.scenario} ${ours.variant}`,
        ratio: round(ours.lookupsPerServerCpuSecond / a.lookupsPerServerCpuSecond, 3),
      });
    }
  }
  return out;
}

/** The anchor scenario: runs the script where it can, records its runs, prints our ratios to it. */
export async function anchorScenario(
  o: Options,
  bench: Bench,
  script: string,
  log: (line: string) => void,
): Promise<AnchorRatio[]> {
  const why = o.quick ? "not in --quick runs" : missing(script);
  if (why) {
    log(`anchor (Unbound+NSD): skipped, ${why}`);
    return [];
  }
  log(`anchor (Unbound+NSD): running ${script} (quick form, a few minutes)`);
  let results: RunResult[];
  try {
    const dir = await runScript(script, o, log);
    results = anchorResults(readFileSync(join(dir, "runs.tsv"), "utf8"));
  } catch (err) {
    // The rest of the benchmark stands without it (e.g. no right to bind the DNS port).
    log(`anchor (Unbound+NSD): failed, ${(err as Error).message}`);
    return [];
  }
  for (const r of results) bench.record(r);
  const ratios = anchorRatios(bench.results, o);
  for (const r of ratios) {
    log(`${r.ours}: ${r.ratio}x Unbound+NSD ${r.kind}'s lookups per CPU-second of all servers`);
  }
  return ratios;
}
