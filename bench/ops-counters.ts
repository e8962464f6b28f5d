// Counters read from the servers' ops listeners (Prometheus text), for what a run's figures
// cannot show from outside: cache hits, seal batches, refusals by kind.
import type { Network } from "@mimi/devnet";

/** The text of a server's ops listener's /metrics (Prometheus exposition). */
export async function opsMetrics(opsPort: number): Promise<string> {
  const url = `http://127.0.0.1:${opsPort}/metrics`;
  return (await fetch(url, { signal: AbortSignal.timeout(5_000) })).text();
}

/**
 * A server's counters `names` (without their `prefix`) now, summed over their label sets (a
 * clustered resolver's workers); empty when it runs without an ops listener.
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
    const m = /^([a-z_]+)(?:\{[^}]*\})? (\S+)$/.exec(line.slice(prefix.length));
    if (m && names.includes(m[1] as string)) out[m[1] as string] = (out[m[1] as string] ?? 0) + Number(m[2]);
  }
  return out;
}

/** The resolver's counters `names` (without their mimi_resolver_ prefix) now. */
export function resolverCounters(opsPort: number, names: readonly string[]): Promise<Record<string, number>> {
  return counters(opsPort, "mimi_resolver_", names);
}

/** Lookups the network's DPs answered, and signatures they made to seal them (seal batches). */
export async function dpSealCounts(net: Network): Promise<{ lookups: number; signatures: number }> {
  const each = await Promise.all(
    Object.values(net.dps).map((dp) =>
      counters(dp.opsPort, "mimi_dp_", ["lookups_total", "seal_signatures_total"]),
    ),
  );
  return {
    lookups: each.reduce((n, c) => n + (c.lookups_total ?? 0), 0),
    signatures: each.reduce((n, c) => n + (c.seal_signatures_total ?? 0), 0),
  };
}

/** The DPs' answer-cache hits and misses now (the DP's answer-cache.ts), summed over the DPs. */
export async function dpAnswerCacheCounts(net: Network): Promise<{ hits: number; misses: number }> {
  const out = { hits: 0, misses: 0 };
  for (const dp of Object.values(net.dps)) {
    if (!dp.opsPort) continue;
    for (const line of (await opsMetrics(dp.opsPort)).split("\n")) {
      const m = /^mimi_dp_answer_cache_lookups_total\{result="(hit|miss)"\} (\S+)$/.exec(line);
      if (m) out[m[1] === "hit" ? "hits" : "misses"] += Number(m[2]);
    }
  }
  return out;
}
