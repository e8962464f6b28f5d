// The cluster scenario (the performance issue): the same warm runs against a resolver of 1 worker
// and of one worker per core (config `workers`), each on a fresh network, reporting lookups per
// second, per resolver CPU-second (the primary and its workers together) and the ratio of the
// many-worker run to the one-worker run measured minutes apart. Each worker has its own cache,
// so fill runs (unmeasured, random hits over the warm set from several connections, until 99%
// are hits) precede the measured ones; the runs' hit ratio is reported from the resolver's counters.
// On a machine whose cores also run the load processes and the DPs, the ratio says what a
// second worker buys when the cores are shared, not what a dedicated machine would give.
import { availableParallelism } from "node:os";
import { warmKeys } from "./keys.js";
import {
  type Bench,
  cacheEntriesFor,
  type Options,
  prewarm,
  type RunResult,
  withNetwork,
} from "./measure.js";
import { resolverCounters } from "./ops-counters.js";

export async function clusterScenario(
  o: Options,
  bench: Bench,
  netDir: string,
  warmCount: number,
  log: (s: string) => void,
): Promise<void> {
  const cacheEntries = cacheEntriesFor(o);
  const warm = () => warmKeys(warmCount);
  const cores = availableParallelism();
  const byWorkers = new Map<number, RunResult[]>();
  for (const workers of [1, cores]) {
    await withNetwork(
      bench,
      netDir,
      cacheEntries,
      async (net) => {
        await prewarm(bench, net, o, warmCount);
        // Each worker fills its own cache: random hits over the warm set from several
        // connections, repeated until nearly all are hits (at most 8 runs), not kept as results.
        for (let fill = 0; fill < 8; fill++) {
          const before = await hitsAndMisses(net.resolver.opsPort);
          await bench.measure(net, "cluster-fill", `workers=${workers}`, {
            service: "resolver",
            api: "stream",
            concurrency: o.streamConcurrency,
            keys: warm,
            workers: Math.max(o.workers, 4),
          });
          bench.results.pop();
          const after = await hitsAndMisses(net.resolver.opsPort);
          const misses = after.misses - before.misses;
          if (!net.resolver.opsPort || misses <= 0.01 * (after.hits - before.hits + misses)) break;
        }
        const runs: RunResult[] = [];
        for (const [api, concurrency] of [
          ["unary", o.concurrency],
          ["stream", o.streamConcurrency],
        ] as const) {
          const before = await hitsAndMisses(net.resolver.opsPort);
          const r = await bench.measure(net, "cluster", `workers=${workers} ${api} c=${concurrency}`, {
            service: "resolver",
            api,
            concurrency,
            keys: warm,
            workers: Math.max(o.workers, 4),
          });
          const after = await hitsAndMisses(net.resolver.opsPort);
          const hits = after.hits - before.hits;
          const misses = after.misses - before.misses;
          r.extra = { workers, hitPercent: Math.round((1000 * hits) / Math.max(1, hits + misses)) / 10 };
          runs.push(r);
        }
        byWorkers.set(workers, runs);
      },
      { resolver: { workers, quotas: { enrolledUsers: { "msp-bluebird": 100_000_000 } } } },
    );
  }
  const one = byWorkers.get(1) ?? [];
  const many = byWorkers.get(cores) ?? [];
  for (const [i, r] of many.entries()) {
    const base = one[i];
    if (!base || cores === 1) continue;
    const ratio = (a: number, b: number) => (b > 0 ? (a / b).toFixed(2) : "-");
    log(
      `cluster ${r.variant.replace(/^workers=\d+ /, "")}: ${cores} workers ${r.lookupsPerSec}/s vs 1 worker ${base.lookupsPerSec}/s ` +
        `(${ratio(r.lookupsPerSec, base.lookupsPerSec)}x); per resolver CPU-s ${r.lookupsPerResolverCpuSecond} vs ` +
        `${base.lookupsPerResolverCpuSecond} (${ratio(r.lookupsPerResolverCpuSecond ?? 0, base.lookupsPerResolverCpuSecond ?? 0)}x); ` +
        `hits ${r.extra?.hitPercent}% vs ${base.extra?.hitPercent}%; p99 ${r.latencyMs.p99} ms vs ${base.latencyMs.p99} ms`,
    );
  }
}

/** The resolver's cache hits and misses over all its workers (ops listener). */
async function hitsAndMisses(opsPort: number): Promise<{ hits: number; misses: number }> {
  const c = await resolverCounters(opsPort, ["cache_hits_total", "cache_misses_total"]);
  return { hits: c.cache_hits_total ?? 0, misses: c.cache_misses_total ?? 0 };
}
