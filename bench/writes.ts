// The write-path scenarios: bulk registration (G4) and change propagation (G6, R20), both
// measured from the MSP's side of the DP with the signing done in this process, as at an MSP.
import { join } from "node:path";
import { bulkRegister } from "@mimi/client";
import { bulkRecord, pb } from "@mimi/core";
import {
  type Bench,
  cpuSecondsOf,
  fmtCount,
  type Options,
  percentile,
  type RunResult,
  round,
  rssMbOf,
  withNetwork,
} from "./measure.js";

/** One MSP bulk-registers `o.bulkRecords` signed records at a fresh DP. */
export async function bulkScenario(
  o: Options,
  bench: Bench,
  tmp: string,
  log: (s: string) => void,
): Promise<void> {
  // Bulk registration (G4): one MSP streams signed records to a fresh DP, which verifies
  // each MSP signature, countersigns and commits per batch. The MSP's own signing runs in
  // this process, as it would at the MSP; the rate counts records committed per second.
  const dir = join(tmp, "bulk");
  await withNetwork(bench, dir, 10_000, async (net) => {
    const key = net.signingKey("msp-bluebird");
    const now = Date.now();
    const n = o.bulkRecords;
    const recordsFrom = (first: number, count: number) =>
      Array.from({ length: count }, (_, k) =>
        bulkRecord(
          {
            csi: `tel:+4479${String(first + k).padStart(8, "0")}`,
            mspId: "bluebird.example",
            ssi: `b${first + k}@bluebird.example`,
            defaultRequested: true,
            tags: [],
            createdAtMs: now,
            dpId: "eu",
            expiresAtMs: now + 300 * 86_400_000,
          },
          key,
        ),
      );
    const procs = { root: net.root, "dp-eu": net.dps.eu, "dp-us": net.dps.us, resolver: net.resolver };
    const cpu0 = Object.fromEntries(Object.entries(procs).map(([k, p]) => [k, cpuSecondsOf(p.pid)]));
    const started = performance.now();
    const done = await bulkRegister(net.channel(net.dps.eu.address, "msp-bluebird").client(pb.ClaimService), {
      sessionId: "bench",
      total: n,
      recordsFrom,
      batchSize: 2_000,
    });
    const elapsedS = (performance.now() - started) / 1000;
    const cpuSeconds = Object.fromEntries(
      Object.entries(procs).map(([k, p]) => [k, round(cpuSecondsOf(p.pid) - (cpu0[k] ?? 0), 2)]),
    );
    const dpCpu = cpuSeconds["dp-eu"] ?? 0;
    const result: RunResult = {
      scenario: "bulk",
      variant: `${fmtCount(n)} signed records`,
      lookups: done.stored,
      errors: n - done.stored,
      lookupsPerSec: round(done.stored / elapsedS, 0),
      latencyMs: { p50: 0, p90: 0, p99: 0, p999: 0, max: 0 },
      cpuSeconds,
      rssMb: Object.fromEntries(Object.entries(procs).map(([k, p]) => [k, round(rssMbOf(p.pid), 1)])),
      lookupsPerServerCpuSecond: dpCpu > 0 ? round(done.stored / dpCpu, 0) : 0,
      extra: {
        recordsPerSecond: round(done.stored / elapsedS, 0),
        dpCpuMicrosPerRecord: round((dpCpu * 1e6) / Math.max(1, done.stored), 1),
      },
    };
    bench.results.push(result);
    log(
      `bulk: ${done.stored} signed mappings registered in ${elapsedS.toFixed(1)} s = ${result.extra?.recordsPerSecond} mappings/s; DP CPU ${dpCpu.toFixed(1)} s (${result.extra?.dpCpuMicrosPerRecord} µs per mapping)`,
    );
  });
}

/**
 * Change propagation (G6, R20): mappings are written at the eu DP at `changeRate` per second
 * (bulk batches every 10 ms) for CSIs the resolver has cached as NOT_FOUND. For one write in
 * ten the benchmark polls the resolver every millisecond until the mapping is visible; the
 * latency runs from the DP's acknowledgement of the committed batch to the first FOUND answer,
 * so it covers the change event's trip, the eviction and the fresh lookup.
 */
export async function propagationScenario(
  o: Options,
  bench: Bench,
  dir: string,
  log: (s: string) => void,
): Promise<void> {
  await withNetwork(bench, dir, 100_000, async (net) => {
    const key = net.signingKey("msp-parrot");
    const total = Math.max(10, Math.round((o.changeRate * o.durationMs) / 1000));
    const csiOf = (i: number) => `tel:+4478${String(i).padStart(8, "0")}`;
    const resolver = net.channel(net.resolver.address, "msp-bluebird").client(pb.ResolverService);
    const claim = net.channel(net.dps.eu.address, "msp-parrot").client(pb.ClaimService);
    // Cache NOT_FOUND for every CSI the run will write: the case negative caching alone gets wrong.
    for (let i = 0; i < total; i += 256) {
      await Promise.all(
        Array.from({ length: Math.min(256, total - i) }, (_, k) => resolver.resolve({ csi: csiOf(i + k) })),
      );
    }
    const procs = { root: net.root, "dp-eu": net.dps.eu, "dp-us": net.dps.us, resolver: net.resolver };
    const cpu0 = Object.fromEntries(Object.entries(procs).map(([k, p]) => [k, cpuSecondsOf(p.pid)]));
    const latencies: number[] = [];
    let missed = 0;
    const watchers: Promise<void>[] = [];
    const visibleAfter = async (csi: string, fromMs: number) => {
      for (;;) {
        const r = await resolver.resolve({ csi });
        if (r.answer?.status === pb.LookupStatus.FOUND) {
          latencies.push((performance.now() - fromMs) * 1000); // µs, as percentile() expects
          return;
        }
        if (performance.now() - fromMs > 10_000) {
          missed++;
          return;
        }
        await new Promise((res) => setTimeout(res, 1));
      }
    };
    const { writeSeconds, firstError } = await writeAtRate({
      claim,
      key,
      total,
      rate: o.changeRate,
      csiOf,
      sessionPrefix: "propagation",
      ssiPrefix: "p",
      onAcked(first, count) {
        const acked = performance.now();
        for (let k = 0; k < count; k++) {
          if ((first + k) % 10 === 0) watchers.push(visibleAfter(csiOf(first + k), acked));
        }
      },
    });
    await Promise.all(watchers);
    const cpuSeconds = Object.fromEntries(
      Object.entries(procs).map(([k, p]) => [k, round(cpuSecondsOf(p.pid) - (cpu0[k] ?? 0), 2)]),
    );
    const sorted = Float64Array.from(latencies).sort();
    const q = (p: number) => round(percentile(sorted, p), 2);
    const result: RunResult = {
      scenario: "propagation",
      variant: `${o.changeRate} changes/s`,
      lookups: latencies.length,
      errors: missed + (firstError ? 1 : 0),
      ...(firstError ? { firstError } : {}),
      lookupsPerSec: round(total / writeSeconds, 0),
      latencyMs: { p50: q(50), p90: q(90), p99: q(99), p999: q(99.9), max: q(100) },
      cpuSeconds,
      rssMb: Object.fromEntries(Object.entries(procs).map(([k, p]) => [k, round(rssMbOf(p.pid), 1)])),
      lookupsPerServerCpuSecond: 0,
      extra: { changesPerSecond: round(total / writeSeconds, 0), samples: latencies.length },
    };
    bench.results.push(result);
    log(
      `propagation: ${total} writes at ${result.extra?.changesPerSecond}/s; write -> visible at the resolver (${latencies.length} samples): p50 ${q(50)} ms, p99 ${q(99)} ms, max ${q(100)} ms${missed ? `; ${missed} never seen within 10 s` : ""}`,
    );
  });
}

/**
 * Writes `total` mappings as parrot at the eu DP, `rate` per second, in bulk batches every 10 ms
 * paced against the start (a slow tick is caught up rather than lowering the rate). Sessions
 * are named per run, so a reused network never skips one it committed before.
 */
export async function writeAtRate(w: {
  claim: Parameters<typeof bulkRegister>[0];
  key: Parameters<typeof bulkRecord>[1];
  total: number;
  rate: number;
  csiOf: (i: number) => string;
  sessionPrefix: string;
  ssiPrefix: string;
  onAcked?: (first: number, count: number) => void;
}): Promise<{ writeSeconds: number; firstError: string | undefined }> {
  const perTick = Math.max(1, Math.round(w.rate / 100));
  const run = Date.now().toString(36);
  const started = performance.now();
  let written = 0;
  let tick = 0;
  let firstError: string | undefined;
  const writes: Promise<void>[] = [];
  while (written < w.total) {
    const first = written;
    const count = Math.min(perTick, w.total - written);
    written += count;
    const now = Date.now();
    const records = Array.from({ length: count }, (_, k) =>
      bulkRecord(
        {
          csi: w.csiOf(first + k),
          mspId: "parrot.example",
          ssi: `${w.ssiPrefix}${first + k}`,
          defaultRequested: false,
          tags: [],
          createdAtMs: now,
          dpId: "eu",
          expiresAtMs: now + 86_400_000,
        },
        w.key,
      ),
    );
    // A batch the DP refuses with a retry-after (its verification at capacity on a busy
    // machine) is sent again after it by bulkRegister itself, as an MSP's would be; a loader
    // that keeps a hundred sessions a second going perseveres longer than the default three.
    const write = bulkRegister(w.claim, {
      sessionId: `${w.sessionPrefix}-${run}-${tick}`,
      total: count,
      recordsFrom: () => records,
      retries: 10,
    });
    writes.push(
      write.then(
        () => w.onAcked?.(first, count),
        (err: Error) => {
          firstError ??= err.message;
        },
      ),
    );
    tick++;
    const wait = started + tick * 10 - performance.now();
    if (wait > 0) await new Promise((res) => setTimeout(res, wait));
  }
  await Promise.all(writes);
  return { writeSeconds: (performance.now() - started) / 1000, firstError };
}
