// `npm run bench`: measures the network the way operators judge it. Starts root, two
// authoritatives holding N generated mappings, and a resolver (TLS, separate processes,
// SQLite files), drives them from separate load processes, and reports per scenario:
// lookups/s, latency percentiles, CPU-seconds of each server process, and RSS.
// Writes a table to stdout and a JSON file per run. `--quick` is the tiny mode npm test runs.
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { availableParallelism, cpus, totalmem } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { silenceIpServernameWarning } from "@mimi/rpc";
import { Command } from "commander";
import { abuseScenario } from "./abuse.js";
import { anchorScenario } from "./anchor.js";
import { clusterScenario } from "./cluster.js";
import { federationScenario } from "./federation.js";
import { ensureGenerated } from "./generate.js";
import { idleScenario } from "./idle.js";
import { Bench, HEADER, type Options, round } from "./measure.js";
import { overloadScenario } from "./overload.js";
import { privateScenario } from "./private.js";
import { ECHO_MODES, type EchoMode, printDpRatios, printReferenceRatios } from "./references.js";
import { replicationScenario } from "./replication.js";
import { authoritativeScenario, memoryScenario, resolverScenarios } from "./scenarios.js";
import { bulkScenario, propagationScenario } from "./writes.js";

const HERE = dirname(fileURLToPath(import.meta.url));
const REPO = resolve(HERE, "..");

const ALL_SCENARIOS = [
  "echo",
  "warm",
  "cold",
  "negative",
  "mixed",
  "anchor",
  "abuse",
  "overload",
  "cluster",
  "federation",
  "private",
  "authoritative",
  "memory",
  "idle",
  "bulk",
  "propagation",
  "replication",
];

/** Servers on the first half of the cores, load on the rest (one core each on a 2-core machine). */
function pinning(cores: number): { servers: string; load: string } {
  if (cores < 2) throw new Error("--pin needs at least 2 cores");
  const half = Math.floor(cores / 2);
  return { servers: `0-${half - 1}`, load: `${half}-${cores - 1}` };
}

async function main(o: Options): Promise<void> {
  silenceIpServernameWarning(process);
  const log = (s: string) => process.stdout.write(`${s}\n`);
  const tmp = join(o.dataDir, "tmp");
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  const machine = {
    cpuModel: cpus()[0]?.model ?? "unknown",
    cores: cpus().length,
    memoryGb: round(totalmem() / 2 ** 30, 1),
    node: process.version,
  };
  log(`machine: ${machine.cores} x ${machine.cpuModel}, ${machine.memoryGb} GiB, node ${machine.node}`);
  if (o.pin) log(`pinned: servers on CPUs ${o.pin.servers}, load processes on CPUs ${o.pin.load}`);
  const netDir = join(o.dataDir, `net-${o.mappings}`);
  const genSeconds = await ensureGenerated(netDir, o.mappings, log);
  log(
    genSeconds > 0
      ? `generated ${o.mappings} mappings in ${genSeconds.toFixed(1)} s`
      : `reusing ${o.mappings} generated mappings`,
  );
  const warmCount = Math.min(o.quick ? 200 : 10_000, o.mappings);
  const bench = new Bench(o, tmp, warmCount);
  bench.nodeArgs = [...o.nodeArgs];
  if (o.nodeArgs.length > 0) log(`servers run with node ${o.nodeArgs.join(" ")}`);
  if (o.profileDir) {
    mkdirSync(o.profileDir, { recursive: true });
    bench.nodeArgs.push("--cpu-prof", "--cpu-prof-dir", resolve(o.profileDir));
    log(
      `profiling servers into ${o.profileDir} (summarize: node --import tsx bench/profile-summary.ts ${o.profileDir})`,
    );
  }
  if (o.gcTraceDir) {
    bench.nodeArgs.push("--trace-gc-nvp");
    log(
      `tracing the servers' collections into ${o.gcTraceDir} (summarize: node --import tsx bench/gc-trace.ts ${o.gcTraceDir} <result .json>)`,
    );
  }
  const want = (s: string) => o.scenarios.includes(s);
  log(HEADER);
  if (["echo", "warm", "cold", "negative", "mixed"].some(want))
    await resolverScenarios(o, bench, netDir, warmCount, want);
  const referenceRatios = printReferenceRatios(bench, log);
  // Right after our lookups, so that the two are measured in the same hour.
  const anchorRatios = want("anchor") ? await anchorScenario(o, bench, o.anchorScript, log) : [];
  if (want("abuse")) await abuseScenario(o, bench, netDir, warmCount, log);
  if (want("overload")) await overloadScenario(o, bench, netDir, warmCount, log);
  if (want("cluster")) await clusterScenario(o, bench, netDir, warmCount, log);
  if (want("federation")) await federationScenario(o, bench, netDir, log);
  if (want("private")) await privateScenario(o, bench, netDir, log);
  if (want("authoritative")) {
    await authoritativeScenario(o, bench, log);
    referenceRatios.push(...printDpRatios(bench, log));
  }
  if (want("memory")) await memoryScenario(o, bench, netDir, log);
  if (want("idle")) await idleScenario(o, bench, netDir, warmCount, log);
  if (want("bulk")) await bulkScenario(o, bench, tmp, log);
  if (want("propagation")) await propagationScenario(o, bench, join(tmp, "propagation"), log);
  if (want("replication")) await replicationScenario(o, bench, netDir, log);

  mkdirSync(o.out, { recursive: true });
  const file = join(o.out, `bench-${new Date().toISOString().replace(/[:.]/g, "-")}.json`);
  const { dataDir: _d, out: _o, ...parameters } = o;
  writeFileSync(
    file,
    `${JSON.stringify({ machine, parameters, referenceRatios, anchorRatios, results: bench.results }, null, 2)}\n`,
  );
  log(`results: ${file}`);
  rmSync(tmp, { recursive: true, force: true });
}

const cli = new Command("bench")
  .description("benchmark the discovery network on this machine")
  .option("--quick", "tiny run that only checks every scenario works (used by npm test)")
  .option("--mappings <n>", "mappings in the network (both DPs)", "1000000")
  .option("--duration <s>", "seconds per measured run", "10")
  .option("--workers <n>", "load-generating processes", "2")
  .option("--concurrency <n>", "closed-loop concurrency for unary runs", "64")
  .option("--stream-concurrency <n>", "outstanding requests per ResolveStream run", "256")
  .option("--rate <n>", "requests per second for open-loop runs", "2000")
  .option("--rounds <n>", "rounds of the echo reference and warm runs, alternating (median ratio)", "3")
  .option("--echoes <list>", `echo references to run, of ${ECHO_MODES.join(",")}`, "bare,core")
  .option(
    "--paired",
    "run each warm run and the echo references' runs of its shape at once, on the same cores, instead of in turn (ratios the machine's drift cannot move)",
  )
  .option("--auth-sizes <list>", "mapping counts for the authoritative-alone runs", "1000000,10000000")
  .option("--memory-entries <n>", "answers to cache in the memory run", "1000000")
  .option("--bulk-records <n>", "signed mappings the bulk run registers", "200000")
  .option("--change-rate <n>", "mapping writes per second in the propagation run", "1000")
  .option("--scenarios <list>", `subset of ${ALL_SCENARIOS.join(",")}`, ALL_SCENARIOS.join(","))
  .option("--out <dir>", "folder for the JSON result", join(REPO, "bench/results"))
  .option("--data <dir>", "folder for generated data (reused across runs)", join(REPO, "data/bench"))
  .option(
    "--anchor <script>",
    "the Unbound+NSD reference run by the anchor scenario",
    resolve(REPO, "../shared/anchors/enum/run.sh"),
  )
  .option("--profile <dir>", "run the servers under node --cpu-prof, writing profiles to <dir>")
  .option(
    "--gc-trace <dir>",
    "run the servers under node --trace-gc-nvp, keeping each one's collections in <dir>/<server>.log",
  )
  .option(
    "--node-args <args>",
    "options of node for every server process, space-separated (e.g. --node-args=--max-semi-space-size=32)",
  )
  .option("--no-metrics", "run the resolver without its ops listener and metrics (to price them)")
  .option(
    "--overload-rate <n>",
    "lookups a second the overload runs offer (default: twice the sustained rate); for A/B runs, where the sustained rate's own noise would move it",
  )
  .option(
    "--verify-threads <n>",
    "the resolver's verifyThreads (default: its own, cores - 1; 0 checks on the event loop)",
  )
  .option(
    "--dp-answer-cache-mb <n>",
    "the DPs' answerCacheMegabytes (default: their own, 64; 0 reads every lookup from the store)",
  )
  .option(
    "--dp-seal-wait-ms <n>",
    "the DPs' sealBatchWaitMs (default: their own, 1; 0 signs what each turn read)",
  )
  .option(
    "--pin",
    "run the servers on the first half of the cores and the load processes on the rest (taskset), so load cannot steal the servers' CPU",
  )
  .action(async (raw: Record<string, string | boolean>) => {
    const quick = raw.quick === true;
    const num = (k: string, q: number) => (quick ? q : Number(raw[k]));
    const o: Options = {
      quick,
      mappings: num("mappings", 2_000),
      durationMs: num("duration", 0.4) * 1000,
      workers: num("workers", 1),
      concurrency: num("concurrency", 4),
      streamConcurrency: num("streamConcurrency", 16),
      rate: num("rate", 200),
      rounds: num("rounds", 2),
      authSizes: quick ? [1_000] : String(raw.authSizes).split(",").map(Number),
      memoryEntries: num("memoryEntries", 1_000),
      bulkRecords: num("bulkRecords", 2_000),
      changeRate: num("changeRate", 200),
      scenarios: String(raw.scenarios).split(","),
      out: String(raw.out),
      dataDir: String(raw.data),
      anchorScript: String(raw.anchor),
      profileDir: typeof raw.profile === "string" ? raw.profile : undefined,
      gcTraceDir: typeof raw.gcTrace === "string" ? resolve(raw.gcTrace) : undefined,
      nodeArgs: typeof raw.nodeArgs === "string" ? raw.nodeArgs.split(" ").filter(Boolean) : [],
      metrics: raw.metrics !== false,
      verifyThreads: raw.verifyThreads === undefined ? undefined : Number(raw.verifyThreads),
      dpAnswerCacheMb: raw.dpAnswerCacheMb === undefined ? undefined : Number(raw.dpAnswerCacheMb),
      dpSealWaitMs: raw.dpSealWaitMs === undefined ? undefined : Number(raw.dpSealWaitMs),
      overloadRate: raw.overloadRate === undefined ? undefined : Number(raw.overloadRate),
      pin: raw.pin === true ? pinning(availableParallelism()) : undefined,
      paired: raw.paired === true,
      echoes: [
        ...new Set(
          String(raw.echoes)
            .split(",")
            .map((m) => m.trim())
            .filter(Boolean)
            .map((m) => {
              if (!(ECHO_MODES as readonly string[]).includes(m))
                throw new Error(`--echoes: ${m} is not one of ${ECHO_MODES.join(",")}`);
              return m as EchoMode;
            }),
        ),
      ],
    };
    if (o.echoes.length === 0) throw new Error(`--echoes needs one of ${ECHO_MODES.join(",")}`);
    if (o.paired && !(o.scenarios.includes("echo") && o.scenarios.includes("warm")))
      throw new Error("--paired pairs the echo and warm scenarios: --scenarios must include both");
    for (const [k, flag] of [
      ["verifyThreads", "--verify-threads"],
      ["dpAnswerCacheMb", "--dp-answer-cache-mb"],
      ["dpSealWaitMs", "--dp-seal-wait-ms"],
    ] as const) {
      const v = o[k];
      if (v !== undefined && !(Number.isInteger(v) && v >= 0))
        throw new Error(`${flag} must be an integer >= 0`);
    }
    // Those may be 0; every other number must be positive.
    const zeroable = new Set(["verifyThreads", "dpAnswerCacheMb", "dpSealWaitMs"]);
    for (const [k, v] of Object.entries(o)) {
      if (!zeroable.has(k) && typeof v === "number" && !(Number.isFinite(v) && v > 0))
        throw new Error(`--${k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)} must be a positive number`);
    }
    // The open loop spreads over a connection per 100 calls a second (bench/overload.ts).
    if (o.overloadRate !== undefined && o.overloadRate > 100_000) {
      throw new Error("--overload-rate must be at most 100000");
    }
    await main(o);
  });

cli.parseAsync().catch((err) => {
  process.stderr.write(`bench: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
