// The read-path scenarios: cache hits, cold walks to the DPs, negative answers, a mix of the
// three, the authoritative alone at large sizes, and the resolver's memory per cached answer.
import { execFileSync, spawn } from "node:child_process";
import { existsSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { toBinary } from "@bufbuild/protobuf";
import { pb } from "@mimi/core";
import type { Network } from "@mimi/devnet";
import { ensureGenerated } from "./generate.js";
import { existingCsi } from "./keys.js";
import type { KeySpec } from "./load.js";
import {
  type Bench,
  cacheEntriesFor,
  dpSealCounts,
  fmtCount,
  type Load,
  nodeCommand,
  type Options,
  prewarm,
  type RunResult,
  round,
  rssMbOf,
  split,
  withNetwork,
} from "./measure.js";

const HERE = dirname(fileURLToPath(import.meta.url));

/**
 * The reference measured in the same run (bench/echo-server.ts): the resolver's API over the same
 * TLS and framework, answering every lookup with a real cached answer's bytes and doing nothing
 * else. Run with the warm runs' shapes, so each warm figure reads as a ratio of it.
 */
async function echoReference(o: Options, bench: Bench, net: Network, keys: () => KeySpec): Promise<void> {
  const res = await net
    .channel(net.resolver.address, "msp-bluebird")
    .client(pb.ResolverService)
    .resolve({ csi: existingCsi(0) }, { timeoutMs: 10_000 });
  const responseHex = Buffer.from(toBinary(pb.ResolveResponseSchema, res)).toString("hex");
  for (const mode of ["bare", "core"] as const) {
    const spec = { mode, pkiDir: net.pkiDir, responseHex };
    // Pinned like the servers it stands for (--pin).
    const [command, args] = nodeCommand(
      [...bench.nodeArgs, "--import", "tsx", join(HERE, "echo-server.ts"), JSON.stringify(spec)],
      o.pin?.servers,
    );
    const echo = spawn(command, args, { stdio: ["pipe", "pipe", "inherit"] });
    try {
      const port = await new Promise<number>((done, fail) => {
        let out = "";
        echo.stdout.on("data", (d) => {
          out += d;
          if (out.includes("\n")) done((JSON.parse(out.split("\n")[0] ?? "") as { port: number }).port);
        });
        echo.once("exit", (code) => fail(new Error(`the echo reference exited (${code}) before listening`)));
      });
      const target = { address: `127.0.0.1:${port}`, pid: echo.pid };
      const shape = (api: "unary" | "stream", concurrency: number, workers?: number) => ({
        service: "resolver" as const,
        api,
        concurrency,
        keys,
        target,
        ...(workers !== undefined && { workers }),
      });
      const scenario = `echo-${mode}`;
      // A fresh process runs cold (JIT, first handshakes) while the resolver has served for a
      // while: warm it up, unmeasured, so the reference's first run is not the slowest.
      for (const api of ["unary", "stream"] as const) {
        await bench.measure(net, `${scenario}-warmup`, api, {
          ...shape(api, api === "unary" ? o.concurrency : o.streamConcurrency),
          durationMs: Math.min(2_000, o.durationMs),
        });
        bench.results.pop();
      }
      await bench.measure(net, scenario, "unary c=1", shape("unary", 1, 1));
      await bench.measure(net, scenario, `unary c=${o.concurrency}`, shape("unary", o.concurrency));
      await bench.measure(
        net,
        scenario,
        `stream c=${o.streamConcurrency}`,
        shape("stream", o.streamConcurrency),
      );
    } finally {
      // Closing its stdin ends it cleanly (a profile, when asked for, is written on exit).
      const exited = new Promise((done) => echo.once("exit", done));
      echo.stdin.end();
      const timer = setTimeout(() => echo.kill(), 10_000);
      await exited;
      clearTimeout(timer);
    }
  }
}

/**
 * Each warm run shape as a ratio of the echo reference's run of the same shape: the ratio of
 * each round (runs minutes apart at most), then the median over the rounds. Returns them.
 */
export function printReferenceRatios(
  bench: Bench,
  log: (line: string) => void,
): { reference: string; variant: string; cpu: number; p50: number; rounds: number[] }[] {
  const out: ReturnType<typeof printReferenceRatios> = [];
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

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
}

/**
 * bench.measure, also counting the lookups the DPs sealed per signature during the run (their
 * seal batches, ARCHITECTURE): kept as `dpLookupsPerSignature` and printed.
 */
function withSealBatches(bench: Bench, net: Network) {
  return async (scenario: string, variant: string, load: Load): Promise<RunResult> => {
    const before = await dpSealCounts(net);
    const r = await bench.measure(net, scenario, variant, load);
    const after = await dpSealCounts(net);
    const signatures = after.signatures - before.signatures;
    if (signatures > 0) {
      const perSignature = round((after.lookups - before.lookups) / signatures, 2);
      r.extra = { ...r.extra, dpLookupsPerSignature: perSignature };
      process.stdout.write(`${scenario} ${variant}: the DPs sealed ${perSignature} lookups per signature\n`);
    }
    return r;
  };
}

/** warm, cold, negative and mixed runs against one network holding `o.mappings` mappings. */
export async function resolverScenarios(
  o: Options,
  bench: Bench,
  netDir: string,
  warmCount: number,
  want: (s: string) => boolean,
): Promise<void> {
  const c = o.concurrency;
  const cacheEntries = cacheEntriesFor(o);
  await withNetwork(bench, netDir, cacheEntries, async (net) => {
    const keys = (over: Partial<KeySpec>) => (): KeySpec => ({
      mode: "warm",
      warmCount,
      cold: [0, 0],
      absent: [0, 0],
      universe: 0,
      ...over,
    });
    const coldFor = (count: number) => {
      const parts = split(bench.takeCold(count), o.workers);
      return (w: number) => keys({ mode: "cold", cold: parts[w] ?? [0, 0] })();
    };
    const absentFor = (count: number) => {
      const parts = split(bench.takeAbsent(count), o.workers);
      return (w: number) => keys({ mode: "absent", absent: parts[w] ?? [0, 0] })();
    };
    // Prewarm the CSIs the warm and mixed scenarios hit.
    await prewarm(bench, net, o, warmCount);
    // Each run that consumes never-asked CSIs gets what its rate could use, but at most a
    // sixth of the data set, so later runs (cold, mixed) still find unused CSIs.
    const budget = (rate: number) =>
      Math.min(Math.ceil((rate * o.durationMs) / 1000), Math.floor((o.mappings - warmCount) / 6));

    // The reference and the warm runs alternate, round after round: this machine's speed
    // drifts by tens of percent within minutes, and a ratio is only as good as the moment
    // its two runs shared (printReferenceRatios takes the median of the rounds).
    for (let round = 1; round <= (want("echo") && want("warm") ? o.rounds : 1); round++) {
      bench.round = round;
      if (want("echo")) await echoReference(o, bench, net, keys({}));
      if (!want("warm")) continue;
      await bench.measure(net, "warm", "unary c=1", {
        service: "resolver",
        api: "unary",
        concurrency: 1,
        keys: keys({}),
        workers: 1,
      });
      await bench.measure(net, "warm", `unary c=${c}`, {
        service: "resolver",
        api: "unary",
        concurrency: c,
        keys: keys({}),
      });
      await bench.measure(net, "warm", `stream c=${o.streamConcurrency}`, {
        service: "resolver",
        api: "stream",
        concurrency: o.streamConcurrency,
        keys: keys({}),
      });
    }
    bench.round = undefined;
    if (want("warm")) {
      await bench.measure(net, "warm", `open ${o.rate}/s`, {
        service: "resolver",
        api: "unary",
        concurrency: 1,
        rate: o.rate,
        keys: keys({}),
      });
    }
    if (want("cold")) {
      const sealed = withSealBatches(bench, net);
      await sealed("cold", "unary c=1", {
        service: "resolver",
        api: "unary",
        concurrency: 1,
        keys: coldFor(budget(5_000)),
        workers: 1,
      });
      await sealed("cold", `unary c=${c}`, {
        service: "resolver",
        api: "unary",
        concurrency: c,
        keys: coldFor(budget(30_000)),
      });
      await sealed("cold", `stream c=${o.streamConcurrency}`, {
        service: "resolver",
        api: "stream",
        concurrency: o.streamConcurrency,
        keys: coldFor(budget(40_000)),
      });
    }
    if (want("negative")) {
      await bench.measure(net, "negative", `unary c=${c}`, {
        service: "resolver",
        api: "unary",
        concurrency: c,
        keys: absentFor(budget(30_000)),
      });
    }
    if (want("mixed")) {
      const mixedKeys = () => {
        const cold = split(bench.takeCold(budget(3_000)), o.workers);
        const absent = split(bench.takeAbsent(budget(1_000)), o.workers);
        return (w: number) => keys({ mode: "mixed", cold: cold[w] ?? [0, 0], absent: absent[w] ?? [0, 0] })();
      };
      await bench.measure(net, "mixed", `unary c=${c}`, {
        service: "resolver",
        api: "unary",
        concurrency: c,
        keys: mixedKeys(),
      });
      await bench.measure(net, "mixed", `open ${o.rate}/s`, {
        service: "resolver",
        api: "unary",
        concurrency: 1,
        rate: o.rate,
        keys: mixedKeys(),
      });
    }
  });
}

/** The authoritative alone, at each size of `o.authSizes`. */
export async function authoritativeScenario(
  o: Options,
  bench: Bench,
  log: (s: string) => void,
): Promise<void> {
  const c = o.concurrency;
  for (const size of o.authSizes) {
    // One DP holding `size` mappings (eu; us holds none).
    const dir = join(o.dataDir, `eu-${size}`);
    const s = await ensureGenerated(dir, size, log, { euOnly: true });
    if (s > 0) log(`generated ${size} mappings at eu in ${s.toFixed(1)} s`);
    // What a DP of this size costs at rest: its files per mapping, and how long the network took
    // to start serving (its slowest server is this DP, opening the store).
    const store = join(dir, "dp-eu", "mappings.sqlite");
    const storeBytes = [store, `${store}-wal`].reduce(
      (n, f) => n + (existsSync(f) ? statSync(f).size : 0),
      0,
    );
    const t0 = performance.now();
    await withNetwork(bench, dir, 10_000, async (net) => {
      const startupSeconds = round((performance.now() - t0) / 1000, 2);
      log(
        `authoritative ${fmtCount(size)}: store ${round(storeBytes / size, 0)} bytes per mapping ` +
          `(${round(storeBytes / 1e9, 2)} GB), network serving ${startupSeconds} s after start`,
      );
      const k = (): KeySpec => ({
        mode: "eu-random",
        warmCount: 0,
        cold: [0, 0],
        absent: [0, 0],
        universe: 2 * size,
      });
      await bench.measure(net, "authoritative", `${fmtCount(size)} unary c=1`, {
        service: "authoritative",
        api: "unary",
        concurrency: 1,
        keys: k,
        workers: 1,
      });
      const r = await bench.measure(net, "authoritative", `${fmtCount(size)} unary c=${c}`, {
        service: "authoritative",
        api: "unary",
        concurrency: c,
        keys: k,
      });
      r.extra = {
        storeBytesPerMapping: round(storeBytes / size, 0),
        startupSeconds,
        generationSeconds: round(s, 1),
      };
    });
  }
}

/** The resolver's memory per cached answer after a fill of `o.memoryEntries` answers. */
export async function memoryScenario(
  o: Options,
  bench: Bench,
  netDir: string,
  log: (s: string) => void,
): Promise<void> {
  // First the cache's own heap per answer, in a process of its own with full collections
  // around the fill (bench/cache-memory.ts): the figure to size cache.maxEntries by.
  const probeAnswers = o.quick ? 20_000 : Math.min(o.memoryEntries, 200_000);
  for (const perAnswer of [1, 2]) {
    const out = execFileSync(
      process.execPath,
      [
        "--expose-gc",
        "--import",
        "tsx",
        join(HERE, "cache-memory.ts"),
        String(probeAnswers),
        String(perAnswer),
      ],
      { encoding: "utf8" },
    );
    const p = JSON.parse(out) as Record<string, number>;
    bench.results.push({
      scenario: "memory",
      variant: `cache heap, ${perAnswer} mapping${perAnswer > 1 ? "s" : ""} per answer`,
      lookups: p.answers ?? 0,
      errors: 0,
      lookupsPerSec: 0,
      latencyMs: { p50: 0, p90: 0, p99: 0, p999: 0, max: 0 },
      cpuSeconds: {},
      rssMb: {},
      lookupsPerServerCpuSecond: 0,
      extra: p,
    });
    log(
      `memory: the resolver's cache holds ${p.heapBytesPerAnswer} bytes of V8 heap and ${p.externalBytesPerAnswer} external bytes (the answer's encoding, ${p.answerWireBytes} bytes on the wire) per cached answer of ${perAnswer} signed mapping(s), ${p.answers} answers`,
    );
  }
  // RSS after a fast fill is mostly allocator high-water (heap committed during the fill,
  // HTTP/2 and TLS buffers). The live heap after V8's idle "reduce" collection, read from
  // --trace-gc, is what the cached answers themselves hold.
  const gc: { liveHeapMb: number | undefined } = { liveHeapMb: undefined };
  // Assigned by the log watcher below; read through a call so flow analysis does not pin it.
  const liveHeap = (): number | undefined => gc.liveHeapMb;
  const gcLine = /Mark-Compact \(reduce\) [\d.]+ \([\d.]+\) -> ([\d.]+) \(/;
  const watchGc = (name: string, line: string) => {
    const m = name === "resolver" ? gcLine.exec(line) : null;
    if (m) gc.liveHeapMb = Number(m[1]);
  };
  await withNetwork(
    bench,
    netDir,
    Math.min(o.memoryEntries, o.mappings) + 10_000,
    async (net) => {
      const entries = Math.min(o.memoryEntries, o.mappings);
      const before = rssMbOf(net.resolver.pid);
      const r = await bench.measure(net, "memory", `fill ${fmtCount(entries)}`, {
        service: "resolver",
        api: "stream",
        concurrency: o.streamConcurrency,
        keys: (w) => ({
          mode: "cold",
          warmCount: 0,
          cold: split([0, entries], o.workers)[w] ?? [0, 0],
          absent: [0, 0],
          universe: 0,
        }),
        durationMs: 3_600_000,
      });
      const after = rssMbOf(net.resolver.pid);
      // Wait (bounded) for the idle collection that follows the fill.
      gc.liveHeapMb = undefined;
      for (let waited = 0; liveHeap() === undefined && waited < (o.quick ? 3_000 : 60_000); waited += 250) {
        await new Promise((resolve) => setTimeout(resolve, 250));
      }
      const live = liveHeap();
      const perAnswer = (mb: number) => (r.lookups > 0 ? Math.round((mb * 2 ** 20) / r.lookups) : 0);
      r.extra = {
        cachedAnswers: r.lookups,
        rssBeforeMb: round(before, 1),
        rssAfterMb: round(after, 1),
        bytesPerCachedAnswer: perAnswer(after - before),
        ...(live !== undefined ? { liveHeapMb: live, liveHeapBytesPerCachedAnswer: perAnswer(live) } : {}),
      };
      log(
        `memory: resolver RSS ${before.toFixed(0)} MB -> ${after.toFixed(0)} MB for ${r.lookups} cached answers = ${r.extra.bytesPerCachedAnswer} bytes per answer (RSS); ` +
          (live !== undefined
            ? `live heap after GC ${live} MB = ${r.extra.liveHeapBytesPerCachedAnswer} bytes per answer, baseline included`
            : "no idle GC seen, live heap unknown"),
      );
    },
    { nodeArgs: ["--trace-gc"], onLine: watchGc },
  );
}
