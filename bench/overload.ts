// The overload scenario: the resolver's sustainable rate of lookups that each need a DP (new
// contacts, half of them unknown), measured closed-loop at a high concurrency without the guard
// and with a 10 s deadline (so it is the resolver's capacity, not what a deadline or the guard
// let through), then an open loop at twice that rate (or --overload-rate's, for A/B runs) with
// the 1 s deadline an MSP would set:
// once without the resolver's event-loop guard (the default) and once with it
// (maxEventLoopDelayMs 100), on fresh networks. Reports what was answered per second, what was
// refused and how fast, and what ran out of time. With --pin the load processes run on cores
// of their own, so their timers keep time while the servers are overloaded.
// Misses, not hits: on a 2-core machine the load processes share the servers' cores, and a
// unary call costs its client about what a cache hit costs the resolver, so an open loop of
// hits at twice the resolver's rate overloads the load processes first (their deadlines fire
// late, the servers idle). A miss costs the resolver several times what it costs the client.
import { warmKeys } from "./keys.js";
import type { KeySpec } from "./load.js";
import {
  type Bench,
  cacheEntriesFor,
  type Load,
  type Options,
  prewarm,
  type RunResult,
  split,
  withNetwork,
} from "./measure.js";
import { opsMetrics, resolverCounters } from "./ops-counters.js";

/** An MSP's deadline for one lookup. */
const DEADLINE_MS = 1_000;

export async function overloadScenario(
  o: Options,
  bench: Bench,
  netDir: string,
  warmCount: number,
  log: (s: string) => void,
): Promise<void> {
  const cacheEntries = cacheEntriesFor(o);
  const base = warmKeys(warmCount);
  const misses = (lookups: number) => {
    const cold = split(bench.takeCold(Math.ceil(lookups / 2)), o.workers);
    const absent = split(bench.takeAbsent(lookups), o.workers);
    return (w: number): KeySpec => ({
      ...base,
      mode: "misses",
      cold: cold[w] ?? [0, 0],
      absent: absent[w] ?? [0, 0],
      absentStride: 20_001,
    });
  };
  let sustainable = 0;
  // Lookups answered per resolver CPU-second in that run.
  let sustainedPerCpu = 0;
  // The sustainable rate is measured without the guard (which refuses while the loop is late)
  // and with a long deadline, so the closed loop finds the resolver's capacity, not a refusal rate.
  for (const guard of [false, true]) {
    const label = guard ? "guard" : "no guard";
    await withNetwork(
      bench,
      netDir,
      cacheEntries,
      async (net) => {
        await prewarm(bench, net, o, warmCount);
        if (sustainable === 0) {
          const closed = await bench.measure(net, "overload", `sustainable c=${o.streamConcurrency}`, {
            service: "resolver",
            api: "unary",
            concurrency: o.streamConcurrency,
            deadlineMs: 10_000,
            keys: misses(Math.ceil((4_000 * o.durationMs) / 1000)),
          });
          sustainable = Math.max(10, closed.lookupsPerSec);
          sustainedPerCpu = closed.lookupsPerResolverCpuSecond ?? 0;
        }
        const rate = o.overloadRate ?? 2 * sustainable;
        const load: Load = {
          service: "resolver",
          api: "unary",
          concurrency: 1,
          rate,
          deadlineMs: DEADLINE_MS,
          // Enough connections for every call of a deadline's worth in flight, at a server's 100
          // streams per connection: past that the calls would wait in the load's own client,
          // where the resolver cannot see them, let alone refuse them.
          connections: Math.ceil((rate * DEADLINE_MS) / 1000 / 100 / o.workers),
          keys: misses(Math.ceil((rate * o.durationMs) / 1000)),
        };
        const before = await resolverCounters(net.resolver.opsPort, COUNTERS);
        const handledBefore = await handled(net.resolver.opsPort);
        // Where lookups waited: the DP windows' gauges, sampled through the run (their peaks).
        const peaks: Record<string, number> = {};
        // And a timeline of them with the counters' growth, one line a second, in the log.
        const timeline: string[] = [];
        let sampling = true;
        const sampler = (async () => {
          const t0 = Date.now();
          let last: Record<string, number> = before;
          while (sampling) {
            const g: Record<string, number> = await resolverCounters(net.resolver.opsPort, [
              ...GAUGES,
              ...COUNTERS,
            ]).catch(() => ({}));
            for (const k of GAUGES) peaks[`peak_${k}`] = Math.max(peaks[`peak_${k}`] ?? 0, g[k] ?? 0);
            const grew = (k: string) => (g[k] ?? 0) - (last[k] ?? 0);
            timeline.push(
              `${((Date.now() - t0) / 1000).toFixed(1)}s in ${g.upstream_inflight ?? "-"} q ${g.upstream_queued ?? "-"} w ${g.upstream_window ?? "-"} ` +
                `lag ${Math.round(g.event_loop_delay_peak_ms ?? 0)} +miss ${grew("cache_misses_total")} +ref ${grew("upstream_refusals_total")} ` +
                `+ovl ${grew("overload_refusals_total")} +aband ${grew("lookups_abandoned_total")}`,
            );
            last = g;
            await new Promise((r) => setTimeout(r, 1_000));
          }
        })();
        let r: RunResult;
        try {
          r = await bench.measure(net, "overload", `open ${rate}/s, ${label}`, load);
        } finally {
          sampling = false;
          await sampler;
        }
        const after = await resolverCounters(net.resolver.opsPort, COUNTERS);
        const handledAfter = await handled(net.resolver.opsPort);
        // What the resolver did with the load, from its own counters (ops listener).
        r.extra = {
          ...Object.fromEntries(COUNTERS.map((c) => [c, (after[c] ?? 0) - (before[c] ?? 0)])),
          ...Object.fromEntries(
            Object.entries(handledAfter).map(([k, v]) => [`resolve_${k}`, v - (handledBefore[k] ?? 0)]),
          ),
          ...peaks,
        };
        log(`timeline (${label}): ${timeline.join("; ")}`);
        log(`${summary(r, rate, sustainable, sustainedPerCpu, label)}; resolver: ${JSON.stringify(r.extra)}`);
      },
      {
        resolver: {
          maxEventLoopDelayMs: guard ? 100 : 0,
          quotas: { enrolledUsers: { "msp-bluebird": 100_000_000 } },
        },
      },
    );
  }
}

/** The resolver gauges sampled during an open-loop run (summed over DPs). */
const GAUGES = ["upstream_inflight", "upstream_queued", "upstream_window", "event_loop_delay_peak_ms"];

/** The resolver counters the overload runs report (without their mimi_resolver_ prefix). */
const COUNTERS = [
  "cache_misses_total",
  "overload_refusals_total",
  "upstream_refusals_total",
  "lookups_abandoned_total",
  "verify_batches_total",
  "verify_inline_total",
];

function summary(
  r: RunResult,
  rate: number,
  sustainable: number,
  sustainedPerCpu: number,
  label: string,
): string {
  const seconds = (r.lookups + r.errors) / rate;
  const perSec = (n: number) => Math.round(n / Math.max(seconds, 0.001));
  const kinds = Object.entries(r.errorsByKind ?? {})
    .map(([k, n]) => `${k} ${perSec(n)}/s`)
    .join(", ");
  return (
    `overload (${label}): asked ${rate}/s (${(rate / sustainable).toFixed(2)}x the ${sustainable}/s sustained closed-loop); answered ${r.lookupsPerSec}/s ` +
    `(${(r.lookupsPerSec / sustainable).toFixed(2)}x sustainable), p50 ${r.latencyMs.p50} ms, p99 ${r.latencyMs.p99} ms; ` +
    `failed ${kinds || "none"}${failureTimes(r)}; ` +
    cpuShares(r, sustainedPerCpu)
  );
}

/**
 * How long failures took, from when each call was due and from when it was sent: a load process
 * behind its schedule makes failures look slow from their due time, however fast the refusal.
 */
function failureTimes(r: RunResult): string {
  if (!r.failureMs) return "";
  const sent = r.failureFromSendMs;
  return (
    `, failures came after p50 ${r.failureMs.p50} ms, p99 ${r.failureMs.p99} ms` +
    (sent ? ` (from sending: p50 ${sent.p50} ms, p99 ${sent.p99} ms)` : "")
  );
}

/**
 * Where the CPU went: the resolver's and the load processes' share of a core, and what was
 * answered per resolver CPU-second as a share of the sustained run's. Where the load shares the
 * servers' cores (no --pin), twice the rate costs the load about twice the CPU, and what it takes
 * the resolver lacks; the last ratio sets that aside, since refusals are paid from it too.
 */
function cpuShares(r: RunResult, sustainedPerCpu: number): string {
  const seconds = r.lookupsPerSec > 0 ? r.lookups / r.lookupsPerSec : 0;
  if (seconds === 0) return "no lookup answered";
  const core = (cpu: number) => (cpu / seconds).toFixed(2);
  const perCpu = r.lookupsPerResolverCpuSecond ?? 0;
  return (
    `cores used: resolver ${core(r.cpuSeconds.resolver ?? 0)}, load ${core(r.loadCpuSeconds ?? 0)}; ` +
    `answered per resolver CPU-s ${perCpu} (${sustainedPerCpu > 0 ? (perCpu / sustainedPerCpu).toFixed(2) : "-"}x the sustained run's)`
  );
}

/**
 * The resolver's Resolve calls by the status it sent (grpc_server_handled_total): set beside what
 * the load counted, they show what was answered in time at the resolver but late at the load.
 */
async function handled(opsPort: number): Promise<Record<string, number>> {
  if (!opsPort) return {};
  const body = await opsMetrics(opsPort);
  const out: Record<string, number> = {};
  for (const line of body.split("\n")) {
    const m = /^grpc_server_handled_total\{([^}]*)\} (\S+)$/.exec(line);
    if (!m || !/grpc_method="Resolve"/.test(m[1] as string)) continue;
    const code = /grpc_code="([A-Z_]+)"/.exec(m[1] as string)?.[1] ?? "?";
    out[code] = (out[code] ?? 0) + Number(m[2]);
  }
  return out;
}
