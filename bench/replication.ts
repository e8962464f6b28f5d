// Authoritative replicas (issue 17): a secondary of eu started beside the network. What it costs
// to bring one up on the store at hand (a whole copy, every mapping's signatures checked), its
// lookups per CPU-second beside the primary's, and how far it trails the primary while mappings
// are written at `changeRate` per second (from the primary's commit of each change to its
// arrival on a resolver's WatchChanges stream at the secondary).
import { rmSync } from "node:fs";
import { join } from "node:path";
import { pb } from "@mimi/core";
import { startDpSecondary, waitUntilServing } from "@mimi/devnet";
import type { KeySpec } from "./load.js";
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
import { writeAtRate } from "./writes.js";

export async function replicationScenario(
  o: Options,
  bench: Bench,
  netDir: string,
  log: (s: string) => void,
): Promise<void> {
  await withNetwork(bench, netDir, 10_000, async (net) => {
    const name = "dp-eu-bench-secondary";
    // A new secondary every run: the bring-up is a whole copy.
    rmSync(join(net.dir, name), { recursive: true, force: true });
    const started = performance.now();
    const secondary = await startDpSecondary(net, { name });
    try {
      await waitUntilServing(net, secondary, 3_600_000);
      const bringUpSeconds = (performance.now() - started) / 1000;
      const bringUpCpu = cpuSecondsOf(secondary.pid);
      const status = await net
        .channel(secondary.address, "admin")
        .client(pb.AuthoritativeAdminService)
        .getStatus({});
      const mappings = Number(status.mappingCount);
      bench.results.push({
        scenario: "replication",
        variant: `bring-up, ${fmtCount(mappings)} mappings`,
        lookups: mappings,
        errors: 0,
        lookupsPerSec: round(mappings / bringUpSeconds, 0),
        latencyMs: { p50: 0, p90: 0, p99: 0, p999: 0, max: 0 },
        cpuSeconds: { secondary: round(bringUpCpu, 2) },
        rssMb: { secondary: round(rssMbOf(secondary.pid), 1) },
        lookupsPerServerCpuSecond: bringUpCpu > 0 ? round(mappings / bringUpCpu, 0) : 0,
        extra: {
          bringUpSeconds: round(bringUpSeconds, 2),
          mappingsPerCpuSecond: round(mappings / bringUpCpu, 0),
        },
      });
      log(
        `replication: a new secondary of eu served ${mappings} mappings ${bringUpSeconds.toFixed(1)} s after start, ` +
          `${bringUpCpu.toFixed(1)} CPU-s (${round(mappings / bringUpCpu, 0)} mappings verified and stored per CPU-s)`,
      );

      // Lookups: the same closed loop at the primary, then at the secondary.
      const keys = (): KeySpec => ({
        mode: "eu-random",
        warmCount: 0,
        cold: [0, 0],
        absent: [0, 0],
        universe: o.mappings,
      });
      const perOwnCpu = (r: RunResult, key: string) =>
        round(r.lookups / Math.max(1e-9, r.cpuSeconds[key] ?? 0), 0);
      const atPrimary = await bench.measure(net, "replication", `primary unary c=${o.concurrency}`, {
        service: "authoritative",
        api: "unary",
        concurrency: o.concurrency,
        keys,
      });
      const atSecondary = await bench.measure(net, "replication", `secondary unary c=${o.concurrency}`, {
        service: "authoritative",
        api: "unary",
        concurrency: o.concurrency,
        keys,
        target: secondary,
      });
      const p = perOwnCpu(atPrimary, "dp-eu");
      // The secondary stands where the resolver's CPU is counted (Load.target).
      const s = perOwnCpu(atSecondary, "resolver");
      atSecondary.extra = { lookupsPerOwnCpuSecond: s, primaryLookupsPerOwnCpuSecond: p };
      log(
        `replication: lookups per CPU-second of the DP answering: primary ${p}, secondary ${s} (${round(s / p, 2)}x)`,
      );

      // Lag while the primary takes `changeRate` writes per second.
      const lags: number[] = [];
      const watch = new AbortController();
      let startSeq = -1n;
      const events = (async () => {
        const stream = net
          .channel(secondary.address, "resolver")
          .client(pb.AuthoritativeService)
          .watchChanges({}, { signal: watch.signal });
        try {
          for await (const m of stream) {
            if (m.event.case === "start") startSeq = m.event.value.seq;
            else if (m.event.case === "change" && m.event.value.seq > startSeq) {
              lags.push((Date.now() - Number(m.event.value.atMs)) * 1000); // µs, as percentile() expects
            }
          }
        } catch {
          // Ended by the abort below.
        }
      })();
      const total = Math.max(10, Math.round((o.changeRate * o.durationMs) / 1000));
      const cpu0 = { primary: cpuSecondsOf(net.dps.eu.pid), secondary: cpuSecondsOf(secondary.pid) };
      const { writeSeconds, firstError } = await writeAtRate({
        claim: net.channel(net.dps.eu.address, "msp-parrot").client(pb.ClaimService),
        key: net.signingKey("msp-parrot"),
        total,
        rate: o.changeRate,
        csiOf: (i) => `tel:+4477${String(i).padStart(8, "0")}`,
        sessionPrefix: "replication",
        ssiPrefix: "r",
      });
      // Every write's event, or 10 s.
      for (let waited = 0; lags.length < total && waited < 10_000; waited += 10) {
        await new Promise((res) => setTimeout(res, 10));
      }
      watch.abort();
      await events;
      const cpu = {
        primary: round(cpuSecondsOf(net.dps.eu.pid) - cpu0.primary, 2),
        secondary: round(cpuSecondsOf(secondary.pid) - cpu0.secondary, 2),
      };
      const sorted = Float64Array.from(lags).sort();
      const q = (pc: number) => round(percentile(sorted, pc), 2);
      bench.results.push({
        scenario: "replication",
        variant: `lag at ${o.changeRate} writes/s`,
        lookups: lags.length,
        errors: total - Math.min(total, lags.length) + (firstError ? 1 : 0),
        ...(firstError ? { firstError } : {}),
        lookupsPerSec: round(total / writeSeconds, 0),
        latencyMs: { p50: q(50), p90: q(90), p99: q(99), p999: q(99.9), max: q(100) },
        cpuSeconds: cpu,
        rssMb: { primary: round(rssMbOf(net.dps.eu.pid), 1), secondary: round(rssMbOf(secondary.pid), 1) },
        lookupsPerServerCpuSecond: 0,
        extra: {
          writesPerSecond: round(total / writeSeconds, 0),
          secondaryCpuMicrosPerChange: round((cpu.secondary * 1e6) / Math.max(1, lags.length), 0),
        },
      });
      log(
        `replication: ${total} writes at ${round(total / writeSeconds, 0)}/s; primary commit -> event at the secondary ` +
          `(${lags.length} changes): p50 ${q(50)} ms, p99 ${q(99)} ms, max ${q(100)} ms; secondary ${cpu.secondary} CPU-s ` +
          `(${round((cpu.secondary * 1e6) / Math.max(1, lags.length), 0)} µs per change)${firstError ? `; first error: ${firstError}` : ""}`,
      );
    } finally {
      await secondary.stop();
    }
  });
}
