// Printing a resolver's Explanation (`mimi resolve --explain`): where the answer came from,
// how the cache took part, each signature checked and the time of each step.
import { fromBinary } from "@bufbuild/protobuf";
import { DiscoveryError, pb } from "@mimi/core";
import { out } from "./output.js";

const CACHE_TEXT: Record<number, string> = {
  [pb.Explanation_CacheState.HIT]: "HIT (a fresh cached answer)",
  [pb.Explanation_CacheState.MISS]: "MISS (the DP was asked)",
  [pb.Explanation_CacheState.STALE]: "STALE (the DP could not be reached; an expired answer was served)",
  [pb.Explanation_CacheState.PREFETCHED]:
    "PREFETCHED (a cached answer near expiry; refreshed in the background)",
  [pb.Explanation_CacheState.JOINED]: "JOINED (shared a lookup of the same CSI already in flight)",
};

/** The explanation a failed call carried, when it asked for one. */
export function explanationOf(err: unknown): pb.Explanation | undefined {
  const bytes = err instanceof DiscoveryError ? err.details?.explanation : undefined;
  if (!bytes) return undefined;
  try {
    return fromBinary(pb.ExplanationSchema, bytes);
  } catch {
    return undefined;
  }
}

/** The explanation as JSON (for --json). */
export function explanationJson(e: pb.Explanation) {
  return {
    delegation: e.delegation,
    dpId: e.dpId,
    endpoint: e.endpoint,
    cache: pb.Explanation_CacheState[e.cache] ?? String(e.cache),
    ttlSeconds: e.ttlSeconds,
    registrySerial: e.registrySerial.toString(),
    signatures: e.signatures.map(({ what, signer, keyId, ok }) => ({ what, signer, keyId, ok })),
    steps: Object.fromEntries(e.steps.map((s) => [s.name, Number(s.micros) / 1000])),
    ...(e.failure && { failure: e.failure }),
  };
}

/** Prints the explanation under an answer. */
export function printExplanation(e: pb.Explanation): void {
  const ms = (micros: bigint) => `${(Number(micros) / 1000).toFixed(2)} ms`;
  out("explain:");
  out(
    e.delegation
      ? `  delegation  ${e.delegation} -> DP ${e.dpId}${e.endpoint ? ` (answered by ${e.endpoint})` : ""}`
      : "  delegation  none covers this CSI (the registry itself is the negative answer)",
  );
  out(`  cache       ${CACHE_TEXT[e.cache] ?? "unknown"}; ttl ${e.ttlSeconds}s`);
  out(`  registry    serial ${e.registrySerial}`);
  if (e.signatures.length === 0) out("  signatures  none (no DP seal to check)");
  e.signatures.forEach((s, i) => {
    const head = i === 0 ? "  signatures  " : "              ";
    out(`${head}${s.ok ? "ok  " : "FAIL"}  ${s.what}  (${s.signer}, key ${s.keyId})`);
  });
  out(`  steps       ${e.steps.map((s) => `${s.name} ${ms(s.micros)}`).join(", ")}`);
  if (e.failure) out(`  failure     ${e.failure}`);
}
