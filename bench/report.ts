// The benchmark's results and the table rows it prints as it goes (bench/measure.ts records them).

/** One measured run of one scenario. */
export interface RunResult {
  scenario: string;
  variant: string;
  lookups: number;
  errors: number;
  firstError?: string;
  /** When the first error came, from the start of the run (ms). */
  firstErrorAfterMs?: number;
  lookupsPerSec: number;
  latencyMs: { p50: number; p90: number; p99: number; p999: number; max: number };
  cpuSeconds: Record<string, number>;
  /**
   * The load processes' CPU over the run (their own measure, in seconds): where they share the
   * servers' cores (no --pin), what they take is not the servers'.
   */
  loadCpuSeconds?: number;
  rssMb: Record<string, number>;
  lookupsPerResolverCpuSecond?: number;
  /** The authoritative alone: lookups per CPU-second of the DP loaded. */
  lookupsPerDpCpuSecond?: number;
  lookupsPerServerCpuSecond: number;
  /** Failures by status and reason, e.g. "RESOURCE_EXHAUSTED/RESOLVER_OVERLOADED". */
  errorsByKind?: Record<string, number>;
  /** The first failure's message of each kind (one worker's). */
  errorSamples?: Record<string, string>;
  /** How fast failures came: the worst worker's p50 and p99 (ms). */
  failureMs?: { p50: number; p99: number };
  /** Open loop: the same from when each call was sent, not when it was due. */
  failureFromSendMs?: { p50: number; p99: number };
  extra?: Record<string, number>;
  /** When the load started (ISO 8601), to find the run in a server's profile or log. */
  startedAt?: string;
  /** How long the load ran (ms), from startedAt. */
  durationMs?: number;
  /** Which round of the alternating reference and warm runs, when there are rounds. */
  round?: number;
}

export function round(v: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(v * f) / f;
}

/** A count as the table prints it: 2k, 1M. */
export function fmtCount(n: number): string {
  return n >= 1e6 ? `${n / 1e6}M` : n >= 1e3 ? `${n / 1e3}k` : String(n);
}

export const HEADER =
  "scenario       variant                 lookups/s   p50 ms   p90 ms   p99 ms  p99.9 ms   max ms  res CPU-s  all CPU-s  /res CPU-s  /all CPU-s  res RSS MB";

/** A latency cell: "-" for one not measured (NaN). */
const ms = (v: number, digits: number) => (Number.isFinite(v) ? v.toFixed(digits) : "-");

/** Prints a result as a row of the table under HEADER. */
export function printRow(r: RunResult): void {
  const cpuAll = Object.values(r.cpuSeconds).reduce((a, b) => a + b, 0);
  const cells = [
    r.scenario.padEnd(14),
    r.variant.padEnd(22),
    String(r.lookupsPerSec).padStart(10),
    ms(r.latencyMs.p50, 3).padStart(8),
    ms(r.latencyMs.p90, 3).padStart(8),
    ms(r.latencyMs.p99, 3).padStart(8),
    ms(r.latencyMs.p999, 3).padStart(9),
    ms(r.latencyMs.max, 1).padStart(8),
    (r.cpuSeconds.resolver ?? 0).toFixed(2).padStart(10),
    cpuAll.toFixed(2).padStart(10),
    String(r.lookupsPerResolverCpuSecond ?? "-").padStart(11),
    String(r.lookupsPerServerCpuSecond).padStart(11),
    String(r.rssMb.resolver ?? 0).padStart(11),
  ];
  const failed = r.errorsByKind
    ? Object.entries(r.errorsByKind)
        .map(([k, n]) => `${k}=${n}`)
        .join(" ")
    : "";
  const failFast = r.failureMs ? `, failures p50 ${r.failureMs.p50} ms p99 ${r.failureMs.p99} ms` : "";
  process.stdout.write(
    `${cells.join(" ")}${r.errors ? `  errors=${r.errors} (${failed}${failFast}; first: ${r.firstError})` : ""}\n`,
  );
}
