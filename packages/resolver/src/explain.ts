// `ResolveRequest.explain`: how the resolver found an answer, for an operator asking "why is the
// answer this?" (DNS's extended errors and LoST's path answer the same question). It names the
// delegation and DP, the endpoint that answered, how the cache took part, each signature checked
// against the registry in use, and the time of each step. Built only for calls that ask.
import {
  type Csi,
  DiscoveryError,
  decodeMappingRecord,
  delegationId,
  type LookupOutcome,
  mappingProblem,
  pb,
  type RegistryView,
  registryTrust,
  verifyOutcome,
} from "@mimi/core";
import type { CacheState, LookupTrace } from "./lookup-context.js";

const CACHE: Record<CacheState, pb.Explanation_CacheState> = {
  hit: pb.Explanation_CacheState.HIT,
  miss: pb.Explanation_CacheState.MISS,
  stale: pb.Explanation_CacheState.STALE,
  prefetched: pb.Explanation_CacheState.PREFETCHED,
  joined: pb.Explanation_CacheState.JOINED,
};

/** The first 8 hex digits of a key, as `mimi root show` prints them; "none" without one. */
const keyId = (key: Uint8Array | undefined) =>
  key && key.length > 0 ? Buffer.from(key.subarray(0, 4)).toString("hex") : "none";

type Check = Omit<pb.SignatureCheck, "$typeName">;

/**
 * Each signature of `outcome` checked against `registry` at `nowMs`: the DP's seal over the
 * answer, then per mapping its MSP's and its holder's signature. A failed check names itself
 * (ok false); the resolver verified the whole answer before caching it, so a failure here means
 * the registry changed since (a key rotated) or the answer was served stale.
 */
export function signatureChecks(
  csi: Csi,
  outcome: LookupOutcome,
  registry: RegistryView,
  nowMs: number,
): Check[] {
  const trust = registryTrust(registry);
  const checks: Check[] = [];
  if (!outcome.seal) return checks;
  const dpId = outcome.dpId;
  // The seal holds when the DP's key is published and the whole answer verifies, or when what
  // fails is not the seal (a mapping's own signature, shown below).
  let sealOk = trust.dpKey(dpId) !== undefined;
  try {
    verifyOutcome(csi, outcome, trust, nowMs);
  } catch (err) {
    sealOk &&= !/seal|signing key for DP|sealed by DP|delegates this CSI/.test((err as Error).message);
  }
  checks.push({ what: "answer seal", signer: `dp:${dpId}`, keyId: keyId(trust.dpKey(dpId)), ok: sealOk });
  if (outcome.kind !== "answer") return checks;
  for (const m of outcome.mappings) {
    const problem = mappingProblem(csi.uri, m, trust, nowMs, { countersignature: false }) ?? "";
    checks.push({
      what: `mapping at ${m.mspId}: MSP signature`,
      signer: `msp:${m.mspId}`,
      keyId: keyId(trust.mspKey(m.mspId)),
      ok: trust.mspKey(m.mspId) !== undefined && !/MSP's signature|no signing key for MSP/.test(problem),
    });
    if (m.proofMethod === "bulk") continue;
    let userKey: Uint8Array | undefined;
    try {
      userKey = m.signed ? decodeMappingRecord(m.signed.record).userPublicKey : undefined;
    } catch {
      userKey = undefined;
    }
    checks.push({
      what: `mapping at ${m.mspId}: holder signature`,
      signer: "user",
      keyId: keyId(userKey),
      ok: !/holder/.test(problem),
    });
  }
  return checks;
}

/** What explain reports about one call. */
export interface ExplainInput {
  readonly csi: Csi;
  readonly trace: LookupTrace;
  /** The lookup's outcome and TTL as served, when it succeeded. */
  readonly outcome?: LookupOutcome;
  readonly ttlSeconds?: number;
  readonly totalMs: number;
  readonly failure?: string;
}

/** The Explanation of one call. */
export function explanation(
  registry: RegistryView,
  nowMs: number,
  e: ExplainInput,
): Omit<pb.Explanation, "$typeName" | "signatures" | "steps"> & { signatures: Check[]; steps: pb.Step[] } {
  const delegation = registry.find(e.csi.key);
  const micros = (ms: number | undefined) => BigInt(Math.max(0, Math.round((ms ?? 0) * 1000)));
  const { trace } = e;
  const steps = [
    ...(trace.upstreamMs !== undefined ? [{ name: "upstream", micros: micros(trace.upstreamMs) }] : []),
    ...(trace.verifyMs !== undefined ? [{ name: "verify", micros: micros(trace.verifyMs) }] : []),
    { name: "total", micros: micros(e.totalMs) },
  ].map((s) => ({ ...s, $typeName: "mimi.discovery.v1.Step" as const }));
  return {
    delegation: delegation ? delegationId(delegation.key) : "",
    dpId: delegation?.dpId ?? "",
    endpoint: trace.cache === "miss" ? (trace.endpoint ?? "") : "",
    cache: trace.cache ? CACHE[trace.cache] : pb.Explanation_CacheState.UNSPECIFIED,
    ttlSeconds: Math.max(0, Math.floor(e.ttlSeconds ?? 0)),
    registrySerial: registry.serial,
    signatures: e.outcome ? signatureChecks(e.csi, e.outcome, registry, nowMs) : [],
    steps,
    // Capped: it travels in a status detail, whose whole trailer a client reads up to 16 KiB.
    failure: (e.failure || trace.failure || "").slice(0, 1024),
  };
}

/** `err` with the explanation of its call attached (google.rpc.Status detail). */
export function withExplanation(err: unknown, bytes: Uint8Array): unknown {
  if (!(err instanceof DiscoveryError)) return err;
  return new DiscoveryError(err.code, err.message, { details: { ...err.details, explanation: bytes } });
}
