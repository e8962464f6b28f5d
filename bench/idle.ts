// The idle scenario: what each server costs while nobody asks it anything (its timers,
// keepalives, reconnects, sweeps), beside echo-bare's process, idle in the same window. Every
// resolver and DP pays it all day, and it counts in each figure measured below a server's
// ceiling (the paired runs, bench/references.ts). It found a metrics timer that woke every
// server 100 times a second and a resolver reconnecting to endpoints its registry copy no
// longer listed (bench/README).

import { warmKeys } from "./keys.js";
import {
  type Bench,
  cacheEntriesFor,
  cpuSecondsOf,
  type Options,
  round,
  rssMbOf,
  withNetwork,
} from "./measure.js";
import { cachedAnswerHex, startEcho } from "./references.js";

/**
 * Seconds the network and the echo are left alone before the measured window. Long enough for
 * V8's memory reducer, which runs two full collections some 15 s after a process's allocation
 * rate falls at start-up: at 1M mappings they cost the resolver about 100 ms of CPU (its heap
 * holds about 50 MB then), a one-off that a short window read as a steady cost (bench/README).
 */
const SETTLE_SECONDS = 25;

export async function idleScenario(
  o: Options,
  bench: Bench,
  netDir: string,
  warmCount: number,
  log: (s: string) => void,
): Promise<void> {
  await withNetwork(bench, netDir, cacheEntriesFor(o), async (net) => {
    const keys = () => warmKeys(warmCount);
    const echo = await startEcho(o, bench, net, "bare", await cachedAnswerHex(net), keys);
    try {
      const procs: Record<string, number | undefined> = {
        root: net.root.pid,
        "dp-eu": net.dps.eu.pid,
        "dp-us": net.dps.us.pid,
        resolver: net.resolver.pid,
        "echo-bare": echo.target.pid,
      };
      // A quick run checks that the scenario works, not what it measures.
      await new Promise((r) => setTimeout(r, (o.quick ? 1 : SETTLE_SECONDS) * 1000));
      const startedAt = new Date().toISOString();
      const cpu0 = Object.fromEntries(Object.entries(procs).map(([k, pid]) => [k, cpuSecondsOf(pid)]));
      await new Promise((r) => setTimeout(r, o.durationMs));
      const cpuSeconds = Object.fromEntries(
        Object.entries(procs).map(([k, pid]) => [k, round(cpuSecondsOf(pid) - (cpu0[k] ?? 0), 2)]),
      );
      const msPerSecond = Object.fromEntries(
        Object.entries(cpuSeconds).map(([k, s]) => [k, round((s * 1000) / (o.durationMs / 1000), 1)]),
      );
      bench.results.push({
        scenario: "idle",
        variant: `${o.durationMs / 1000} s`,
        lookups: 0,
        errors: 0,
        lookupsPerSec: 0,
        latencyMs: { p50: 0, p90: 0, p99: 0, p999: 0, max: 0 },
        cpuSeconds,
        rssMb: Object.fromEntries(Object.entries(procs).map(([k, pid]) => [k, round(rssMbOf(pid), 1)])),
        lookupsPerServerCpuSecond: 0,
        extra: msPerSecond,
        startedAt,
      });
      log(
        `idle: ms of CPU a second, over ${o.durationMs / 1000} s: ${Object.entries(msPerSecond)
          .map(([k, v]) => `${k} ${v}`)
          .join(", ")}`,
      );
    } finally {
      await echo.stop();
    }
  });
}
