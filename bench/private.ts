// The private-lookup scenario (issue 16): the DPs build their private-lookup tables from the
// generated mappings (a new key each run, so the build is measured, not taken from an earlier
// run), then cold lookups of eu's numbers are asked plainly and privately on the same network.
// Reported: the table build's CSIs per CPU-second of one DP (start-up included), and for both
// kinds of lookup, lookups per CPU-second of eu and of the resolver, and for private lookups
// the bucket bytes received per lookup (from the resolver's metrics).
import { rmSync } from "node:fs";
import { join } from "node:path";
import { pb } from "@mimi/core";
import type { Network } from "@mimi/devnet";
import type { KeySpec } from "./load.js";
import { type Bench, cacheEntriesFor, cpuSecondsOf, type Options, round, withNetwork } from "./measure.js";

/** The longest a table build may take before the scenario gives up (500,000 CSIs took 871 CPU-seconds here). */
const BUILD_LIMIT_MS = 3 * 3_600_000;

export async function privateScenario(
  o: Options,
  bench: Bench,
  netDir: string,
  log: (s: string) => void,
): Promise<void> {
  for (const dp of ["dp-eu", "dp-us"]) rmSync(join(netDir, dp, "oprf-key.json"), { force: true });
  // Lookups per run: eu's numbers never asked before, so each is a miss at the resolver.
  const perRun = o.quick ? 100 : Math.min(3_000, Math.floor(o.mappings / 2 / 8));
  let cursor = 1_000_000; // clear of the federation scenario's numbers
  const cold = (): KeySpec => {
    const from = cursor;
    cursor += perRun;
    return { mode: "eu-cold", warmCount: 0, cold: [from, from + perRun], absent: [0, 0], universe: 0 };
  };
  await withNetwork(
    bench,
    netDir,
    cacheEntriesFor(o),
    async (net) => {
      const started = performance.now();
      await builtAt(net, "eu");
      const seconds = (performance.now() - started) / 1000;
      const dpCpu = cpuSecondsOf(net.dps.eu.pid);
      await builtAt(net, "us");
      const status = await net
        .channel(net.dps.eu.address, "admin")
        .client(pb.AuthoritativeAdminService)
        .getStatus({});
      const csis = Number(status.mappingCount);
      const perCpu = round(csis / Math.max(dpCpu, 0.01), 0);
      log(
        `private table: ${csis} mappings at eu in ${round(seconds, 1)} s and ${round(dpCpu, 1)} CPU-s of eu (start-up included): ${perCpu} per CPU-second`,
      );
      bench.results.push({
        scenario: "private",
        variant: "table build",
        lookups: 0,
        errors: 0,
        lookupsPerSec: 0,
        latencyMs: { p50: 0, p90: 0, p99: 0, p999: 0, max: 0 },
        cpuSeconds: { "dp-eu": round(dpCpu, 2) },
        rssMb: {},
        lookupsPerServerCpuSecond: 0,
        extra: { csis, seconds: round(seconds, 1), csisPerCpuSecond: perCpu },
      });
      for (const [variant, privacy] of [
        ["plain", pb.PrivacyMode.PLAIN],
        ["private", pb.PrivacyMode.PRIVATE],
      ] as const) {
        const keys = cold();
        const before = await resolverCounts(net);
        const r = await bench.measure(net, "private", `${variant} cold lookups`, {
          service: "resolver",
          api: "stream",
          concurrency: o.quick ? 8 : 32,
          keys: () => keys,
          workers: 1,
          request: { privacy },
        });
        const after = await resolverCounts(net);
        const bytes = after.bucketBytes - before.bucketBytes;
        const evaluations = after.evaluations - before.evaluations;
        r.extra = {
          perDpCpuSecond: round(r.lookups / Math.max(r.cpuSeconds["dp-eu"] ?? 0, 0.01), 0),
          perResolverCpuSecond: round(r.lookups / Math.max(r.cpuSeconds.resolver ?? 0, 0.01), 0),
          ...(variant === "private" &&
            Number.isFinite(bytes) && {
              bucketBytesPerLookup: round(bytes / Math.max(r.lookups, 1), 0),
              // How many lookups shared an Evaluate (and its proof), on average.
              lookupsPerEvaluate: round(r.lookups / Math.max(evaluations, 1), 1),
              bucketHits: after.bucketHits - before.bucketHits,
            }),
        };
        log(
          `private ${variant}: ${r.lookupsPerSec}/s, ${r.extra.perDpCpuSecond} per CPU-s of eu, ${r.extra.perResolverCpuSecond} per CPU-s of the resolver` +
            (r.extra.bucketBytesPerLookup === undefined
              ? ""
              : `, ${r.extra.bucketBytesPerLookup} bucket bytes per lookup, ${r.extra.lookupsPerEvaluate} lookups per Evaluate, ${r.extra.bucketHits} from kept buckets`),
        );
      }
    },
    { privateLookups: true },
  );
}

/** Waits until DP `id` serves its private-lookup parameters (its first table build is done). */
async function builtAt(net: Network, id: "eu" | "us"): Promise<void> {
  const dp = net.channel(net.dps[id].address, "resolver").client(pb.PrivateLookupService);
  const end = performance.now() + BUILD_LIMIT_MS;
  for (;;) {
    try {
      await dp.getPrivateParameters({});
      return;
    } catch (err) {
      if (performance.now() > end) throw err;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

/** The resolver's private-lookup counters so far (its metrics; NaN without them). */
async function resolverCounts(
  net: Network,
): Promise<{ bucketBytes: number; evaluations: number; bucketHits: number }> {
  // A rendering serves scrapes for a second: wait it out so the figure is current.
  await new Promise((r) => setTimeout(r, 1_100));
  try {
    const body = await (await fetch(`http://127.0.0.1:${net.resolver.opsPort}/metrics`)).text();
    const value = (name: string) =>
      Number(
        body
          .split("\n")
          .find((l) => l.startsWith(`${name} `))
          ?.split(" ")[1] ?? Number.NaN,
      );
    return {
      bucketBytes: value("mimi_resolver_private_bucket_bytes_total"),
      evaluations: value("mimi_resolver_private_evaluations_total"),
      bucketHits: value("mimi_resolver_private_bucket_hits_total"),
    };
  } catch {
    return { bucketBytes: Number.NaN, evaluations: Number.NaN, bucketHits: Number.NaN };
  }
}
