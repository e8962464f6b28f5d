// The benchmark's Unbound+NSD reference (bench/anchor.ts): what it reads from the anchor
// script's runs.tsv and how our runs are set beside it. The script itself runs only in
// `npm run bench` (it needs NSD, Unbound, dnsperf and the DNS port).
import assert from "node:assert/strict";
import { test } from "node:test";
import { anchorRatios, anchorResults } from "../bench/anchor.js";
import type { RunResult } from "../bench/measure.js";

const HEADER =
  "tag\tmode\tsent\tcompleted\tlost\trun_s\tqps\tavg_ms\tp50_ms\tp90_ms\tp99_ms\tp999_ms\tmax_ms\tnoerror\tnxdomain\tservfail\tcachehits\tcachemiss\tub_cpu_pct\tnsd_cpu_pct\tdnsperf_cpu_pct\tmachine_busy_pct\tsteal_pct\tsoftirq_pct\tforeign_pct\tub_rss_kb\tub_pss_kb";

/** A runs.tsv row: `qps` over `runS` seconds with unbound and nsd at the given % of a core. */
function row(tag: string, mode: string, qps: number, runS: number, ub: number, nsd: number): string {
  const completed = qps * runS;
  return [tag, mode, completed, completed, 0, runS, qps, 0.5, "-", "-", "-", "-", "-", completed, 0, 0, 0, 0]
    .concat([ub, nsd, 40, 90, 0, 1, 0, 51_200, 40_960])
    .join("\t");
}

test("the anchor's saturating runs become results per CPU-second of unbound and nsd", () => {
  const tsv = [
    HEADER,
    row("t1-warm-r1", "sat", 80_000, 10, 100, 0),
    row("t1-cold-r1", "sat", 10_000, 10, 90, 30),
    row("t1-cold-v", "satv", 9_000, 10, 90, 30), // a latency run: not a throughput figure
    row("t1-neg-r1", "sat", 9_000, 10, 100, 20),
  ].join("\n");
  const results = anchorResults(tsv);
  assert.deepEqual(
    results.map((r) => [
      r.variant,
      r.lookupsPerSec,
      r.lookupsPerServerCpuSecond,
      r.lookupsPerResolverCpuSecond,
    ]),
    [
      ["unbound+nsd warm", 80_000, 80_000, 80_000],
      ["unbound+nsd cold", 10_000, 8_333, 11_111],
      ["unbound+nsd neg", 9_000, 7_500, 9_000],
    ],
  );
  assert.deepEqual(results[1]?.cpuSeconds, { resolver: 9, authoritative: 3 });
  assert.equal(results[1]?.rssMb.resolver, 50);
});

test("our runs are set beside the anchor's of the same kind, per CPU-second of all servers", () => {
  const ours = (scenario: string, variant: string, perCpu: number): RunResult => ({
    scenario,
    variant,
    lookups: 1,
    errors: 0,
    lookupsPerSec: 1,
    latencyMs: { p50: 1, p90: 1, p99: 1, p999: 1, max: 1 },
    cpuSeconds: {},
    rssMb: {},
    lookupsPerServerCpuSecond: perCpu,
  });
  const anchor = anchorResults([HEADER, row("t1-cold-r1", "sat", 10_000, 10, 90, 30)].join("\n"));
  const ratios = anchorRatios(
    [
      ours("warm", "unary c=64", 12_000), // no warm anchor run: not compared
      ours("cold", "unary c=64", 833),
      ours("cold", "unary c=1", 400), // a latency run, not the loaded one
      ours("cold", "stream c=256", 1_666),
      ...anchor,
    ],
    { concurrency: 64, streamConcurrency: 256 },
  );
  assert.deepEqual(ratios, [
    { kind: "cold", ours: "cold unary c=64", ratio: 0.1 },
    { kind: "cold", ours: "cold stream c=256", ratio: 0.2 },
  ]);
});
