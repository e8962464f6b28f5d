// The read-path scenarios: cache hits, cold walks to the DPs, negative answers, a mix of the
// three, the authoritative alone at large sizes, and the resolver's memory per cached answer.
import { execFileSync } from "node:child_process";
import { existsSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Network } from "@mimi/devnet";
import { ensureGenerated } from "./generate.js";
import { warmKeys } from "./keys.js";
import type { KeySpec } from "./load.js";
import {
  type Bench,
  cacheEntriesFor,
  fmtCount,
  type Load,
  type Options,
  prewarm,
  type RunResult,
  round,
  rssMbOf,
  split,
  withNetwork,
} from "./measure.js";
import { dpCounts } from "./ops-counters.js";
import { echoReference, pairedReferences, shapeLoad, warmShapes } from "./references.js";

const HERE = dirname(fileURLToPath(import.meta.url));

/**
 * bench.measure, also counting the lookups the DPs sealed per signature during the run (their
 * seal batches, ARCHITECTURE): kept as `dpLookupsPerSignature` and printed.
 */
function withSealBatches(bench: Bench, net: Network) {
  return async (scenario: string, variant: string, load: Load): Promise<RunResult> => {
    const before = await dpCounts(net);
    const r = await bench.measure(net, scenario, variant, load);
    const after = await dpCounts(net);
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
    const keys = (over: Partial<KeySpec>) => (): KeySpec => ({ ...warmKeys(warmCount), ...over });
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

    // The references and the warm runs alternate, round after round, or run at once
    // (--paired): this machine's speed drifts by tens of percent within minutes, and a ratio is
    // only as good as the moment its two runs shared (bench/references.ts).
    if (o.paired && want("echo") && want("warm")) {
      await pairedReferences(o, bench, net, keys({}));
    } else {
      for (let round = 1; round <= (want("echo") && want("warm") ? o.rounds : 1); round++) {
        bench.round = round;
        if (want("echo")) await echoReference(o, bench, net, keys({}));
        if (!want("warm")) continue;
        for (const shape of warmShapes(o))
          await bench.measure(net, "warm", shape.variant, shapeLoad(shape, keys({})));
      }
      bench.round = undefined;
    }
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
      // The echo references' shapes (their ratios in the report), the stream being what
      // resolvers ask a DP with: LookupStream.
      for (const shape of warmShapes(o)) {
        const variant = `${fmtCount(size)} ${shape.variant}`;
        const before = await dpCounts(net);
        const r = await bench.measure(net, "authoritative", variant, {
          ...shapeLoad(shape, k),
          service: "authoritative",
        });
        // How many lookups the DP's answer cache answered (the shapes run in turn over the same
        // keys, so the later ones find more of them there), and how many a seal signature covered.
        const after = await dpCounts(net);
        const read = after.hits - before.hits + after.misses - before.misses;
        const signatures = after.signatures - before.signatures;
        // With the cache off (--dp-answer-cache-mb 0) the DP counts no hits or misses.
        const said: string[] = [];
        if (read > 0) {
          const share = round((after.hits - before.hits) / read, 3);
          r.extra = { ...r.extra, dpAnswerCacheHitShare: share };
          said.push(`${round(100 * share, 1)}% of lookups answered from the DP's answer cache`);
        }
        if (signatures > 0) {
          const perSignature = round((after.lookups - before.lookups) / signatures, 2);
          r.extra = { ...r.extra, dpLookupsPerSignature: perSignature };
          said.push(`${perSignature} lookups a seal signature`);
        }
        if (said.length > 0) log(`authoritative ${variant}: ${said.join(", ")}`);
        if (shape.variant === `unary c=${o.concurrency}`) {
          r.extra = {
            ...r.extra,
            storeBytesPerMapping: round(storeBytes / size, 0),
            startupSeconds,
            generationSeconds: round(s, 1),
          };
        }
      }
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
