// Counters read from the servers' ops listeners (Prometheus text), for what a run's figures
// cannot show from outside: cache hits, seal batches, refusals by kind.
import type { Network } from "@mimi/devnet";

/** The text of a server's ops listener's /metrics (Prometheus exposition). */
export async function opsMetrics(opsPort: number): Promise<string> {
  const url = `http://127.0.0.1:${opsPort}/metrics`;
  return (await fetch(url, { signal: AbortSignal.timeout(5_000) })).text();
}

/**
 * A server's counters `names` (without their `prefix`) now: a bare name sums its label sets (a
 * clustered resolver's workers), a name with its labels as exposed (`x_total{result="hit"}`)
 * reads that set; empty when the server runs without an ops listener.
 */
async function counters(
  opsPort: number,
  prefix: string,
  names: readonly string[],
): Promise<Record<string, number>> {
  if (!opsPort) return {};
  const body = await opsMetrics(opsPort);
  const out: Record<string, number> = {};
  for (const line of body.split("\n")) {
    if (!line.startsWith(prefix)) continue;
    const m = /^([a-z_]+)(\{[^}]*\})? (\S+)$/.exec(line.slice(prefix.length));
    if (!m) continue;
    for (const key of [m[1] as string, `${m[1]}${m[2] ?? ""}`]) {
      if (names.includes(key)) out[key] = (out[key] ?? 0) + Number(m[3]);
      if (!m[2]) break;
    }
  }
  return out;
}

/** The resolver's counters `names` (without their mimi_resolver_ prefix) now. */
export function resolverCounters(opsPort: number, names: readonly string[]): Promise<Record<string, number>> {
  return counters(opsPort, "mimi_resolver_", names);
}

const DP_COUNTERS = {
  lookups: "lookups_total",
  signatures: "seal_signatures_total",
  hits: 'answer_cache_lookups_total{result="hit"}',
  misses: 'answer_cache_lookups_total{result="miss"}',
} as const;

/**
 * What the network's DPs counted so far: lookups answered, signatures made to seal them (seal
 * batches), and lookups answered from their answer caches (answer-cache.ts) or the store.
 */
export async function dpCounts(net: Network): Promise<Record<keyof typeof DP_COUNTERS, number>> {
  const names = Object.values(DP_COUNTERS);
  const each = await Promise.all(Object.values(net.dps).map((dp) => counters(dp.opsPort, "mimi_dp_", names)));
  const sum = (name: string) => each.reduce((n, c) => n + (c[name] ?? 0), 0);
  return {
    lookups: sum(DP_COUNTERS.lookups),
    signatures: sum(DP_COUNTERS.signatures),
    hits: sum(DP_COUNTERS.hits),
    misses: sum(DP_COUNTERS.misses),
  };
}
