// Serve-stale (RFC 8767): an expired answer served when its DP could not be asked in time.
// After the DP's failure (a timeout, an outage, an answer that failed verification) the stale
// answer is kept for the stale TTL, RFC 8767's failure recheck timer, so the failed DP is not
// asked again for every request. After a failure a caller's deadline decided (the gate's, no
// time left to wait: gate-refusals.ts) it is served to the callers that failure reached and
// kept for nobody else: a caller with a short deadline must not make a CSI stale for everyone.
import {
  type Csi,
  csiHash,
  DiscoveryError,
  type Logger,
  type LookupOutcome,
  type SealStatement,
} from "@mimi/core";
import { CachedAnswer } from "./cached-answer.js";
import type { LookupTrace, Resolution, ResolverStats, Verified } from "./lookup-context.js";
import type { ResolverServiceOptions } from "./service-options.js";

/** What serve-stale reads and writes of the resolver service. */
export interface StaleDeps
  extends Pick<ResolverServiceOptions, "cache" | "verify" | "staleAnswerTtlSeconds"> {
  readonly stats: ResolverStats;
  readonly log: Logger;
  readonly encodingRegistry: ConstructorParameters<typeof CachedAnswer>[3];
  /** Seconds until `sealed` expires (an answer is never cached past its seal). */
  readonly sealLeftSeconds: (sealed: SealStatement | undefined) => number;
}

export function createStaleAnswers(d: StaleDeps) {
  /** The seal of an answer that verifies now, or false (and the answer is dropped). */
  const verifiedNow = async (csi: Csi, outcome: LookupOutcome): Promise<Verified | false> => {
    try {
      return await d.verify(csi, outcome);
    } catch (err) {
      d.cache.delete(csi.uri);
      d.log.warn(
        { csi: csiHash(csi.uri), err: (err as Error).message },
        "stale answer no longer verifies; not served",
      );
      return false;
    }
  };

  /**
   * The stale answer served for a lookup that failed with `err` at DP `dpId`, or `err` when
   * there is none to serve. A refusal (a budget, a DP's limit or capacity) is the caller's
   * answer, never papered over. With `keep` it is kept for the stale TTL.
   */
  const served = async (
    csi: Csi,
    dpId: string,
    err: unknown,
    trace: LookupTrace | undefined,
    keep: boolean,
  ): Promise<Resolution> => {
    if (err instanceof DiscoveryError && err.code === "resource_exhausted") throw err;
    const e = err as DiscoveryError;
    const stale = d.cache.getStale(csi.uri);
    // Only an answer from the DP that holds the range today may be served stale, and only
    // while it still verifies against today's registry (keys rotate, records and seals expire).
    const staleOutcome = stale && stale.dpId === dpId ? stale.outcome : undefined;
    const verified = staleOutcome ? await verifiedNow(csi, staleOutcome) : false;
    if (!staleOutcome || verified === false) throw err;
    d.stats.stale++;
    d.log.warn({ csi: csiHash(csi.uri), dp: dpId, err: e.message }, "serving stale answer");
    const answer = new CachedAnswer(staleOutcome, csi.key, true, d.encodingRegistry);
    const ttlSeconds = keep
      ? d.cache.set(csi.uri, answer, d.staleAnswerTtlSeconds, d.sealLeftSeconds(verified))
      : Math.max(0, d.cache.ttlFor(d.staleAnswerTtlSeconds, d.sealLeftSeconds(verified)));
    if (trace) Object.assign(trace, { cache: "stale", failure: e.message });
    return { outcome: staleOutcome, ttlSeconds, stale: true, source: "stale", answer };
  };

  // One fallback per failure and CSI, shared by every caller of the CSI it reached (one
  // verification of the stale answer, one count), as the joiners of a failed lookup share its
  // failure. By CSI too: one failure may end the lookups of several CSIs (a private batch).
  const after = new WeakMap<object, Map<string, Promise<Resolution>>>();
  return {
    served,
    /** served(), once per failure `err` (an object) and CSI: the callers it reached share it. */
    once(
      csi: Csi,
      dpId: string,
      err: unknown,
      trace: LookupTrace | undefined,
      keep: boolean,
    ): Promise<Resolution> {
      if (typeof err !== "object" || err === null) return served(csi, dpId, err, trace, keep);
      let byCsi = after.get(err);
      if (!byCsi) {
        byCsi = new Map();
        after.set(err, byCsi);
      }
      let r = byCsi.get(csi.uri);
      if (!r) {
        r = served(csi, dpId, err, undefined, keep);
        byCsi.set(csi.uri, r);
      }
      // Each caller's own explanation says it was served stale, and why.
      return trace
        ? r.then((res) => {
            Object.assign(trace, { cache: "stale", failure: (err as Error).message });
            return res;
          })
        : r;
    },
  };
}
