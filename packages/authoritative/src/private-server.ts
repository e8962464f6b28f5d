// gRPC binding of PrivateLookupService (private-table.ts): resolvers only. Evaluate is the
// metered step, one lookup of the caller's and the rate context's budgets per element, like a
// lookup but with no CSI to watch; a bucket is the same for every caller and costs one lookup of
// the caller's own budget (a read and a signature). Nothing here names or logs a CSI: the DP
// never sees one.
import type * as grpc from "@grpc/grpc-js";
import {
  DiscoveryError,
  invalidArgument,
  type Logger,
  MAX_OPRF_BATCH,
  OPRF_ELEMENT_BYTES,
  pb,
} from "@mimi/core";
import { addService } from "@mimi/rpc";
import type { LookupLimits } from "./lookup-limits.js";
import type { KeyState, KeyStatus, PrivateKeys } from "./private-keys.js";
import type { PrivateTable } from "./private-table.js";

/**
 * What one evaluation costs this DP's CPU, in plain lookups (about 2 ms against 0.1 ms): it
 * counts this much against the endpoint's capacity and the caller's rate, so a resolver cannot
 * use its lookup rate to make the DP evaluate twenty times what it can, while the MSPs' budgets
 * (rate contexts) count it as the one lookup it is.
 */
export const EVALUATION_LOAD = 20;

/**
 * Registers PrivateLookupService on `server`; `keys` is undefined until the tables exist (or
 * when private lookups are off). Every call names the key epoch it is for (during a rotation the
 * DP serves two); the parameters default to the current key.
 */
export function bindPrivateServer(
  server: grpc.Server,
  keys: () => PrivateKeys | undefined,
  opts: {
    log: Logger;
    limits: LookupLimits;
    now: () => number;
    enabled: boolean;
    /** Whether the DP's evaluation queue is full (oprf-pool.ts): refused before anything is charged. */
    atCapacity: () => boolean;
    /**
     * Why this endpoint may not answer from its store now (no usable registry copy; a secondary
     * copying, never caught up, or placed outside its jurisdiction), as plain lookups are refused.
     */
    notServing?: () => string | undefined;
  },
): { readonly evaluated: number; readonly buckets: number } {
  const { log, limits, now } = opts;
  const counts = { evaluated: 0, buckets: 0 };
  const ready = (epoch: number | undefined): PrivateTable => {
    if (!opts.enabled)
      throw new DiscoveryError("failed_precondition", "this DP does not offer private lookups");
    const notServing = opts.notServing?.();
    if (notServing) throw new DiscoveryError("not_ready", `${notServing}; try again shortly`);
    const k = keys();
    if (!k) throw new DiscoveryError("not_ready", "this DP has no registry copy yet; try again shortly");
    const t = k.table(epoch);
    const problem = t.notReady();
    if (problem) throw new DiscoveryError("not_ready", `this DP's ${problem}; try again shortly`);
    return t;
  };
  addService(
    server,
    pb.PrivateLookupService,
    {
      async getPrivateParameters(req) {
        return ready(req.epoch).parameters();
      },
      async evaluate(req, ctx) {
        const n = req.blinded.length;
        if (n === 0 || n > MAX_OPRF_BATCH)
          throw invalidArgument(`blinded holds 1 to ${MAX_OPRF_BATCH} elements, not ${n}`, "blinded");
        if (req.blinded.some((b) => b.length !== OPRF_ELEMENT_BYTES))
          throw invalidArgument(`each blinded element is ${OPRF_ELEMENT_BYTES} bytes`, "blinded");
        // Charged before the work, like a lookup: a refused evaluation costs the DP nothing. A
        // full queue refuses first, so it charges no budget either.
        const t = ready(req.epoch);
        if (opts.atCapacity())
          throw new DiscoveryError(
            "not_ready",
            "this DP's private-lookup evaluations are at capacity; retry shortly",
            { details: { retryAfterMs: 1_000, reason: "EVALUATIONS_AT_CAPACITY" } },
          );
        limits.admit(ctx.peer.name, req.rateContext, undefined, now(), n, n * EVALUATION_LOAD);
        const r = await t.evaluate(req.epoch, req.blinded, ctx.signal);
        counts.evaluated += n;
        return r;
      },
      async getBucket(req, ctx) {
        const t = ready(req.epoch);
        // Buckets are the same for every caller, but each costs a read and a signature: one of
        // the caller's own lookups (its budget without a rate context) per bucket.
        limits.admit(ctx.peer.name, new Uint8Array(0), undefined, now(), 1);
        // Not older than the store (a change just replicated to this endpoint, or just logged),
        // unless that would take long; the response says which change it had applied.
        const wait = t.caughtUp();
        if (wait) {
          await wait;
          // The wait may have seen the key retired or replaced, or the endpoint stop serving.
          if (ready(req.epoch) !== t)
            throw new DiscoveryError("not_ready", "this DP's private-lookup key changed; try again");
        }
        const { logId, seq } = t.applied();
        const b = t.bucket(req.epoch, req.bucket);
        counts.buckets++;
        return {
          data: b.data,
          statement: b.statement,
          signature: b.signature,
          logId,
          appliedSeq: BigInt(seq),
        };
      },
    },
    { log, roles: ["resolver"] },
  );
  return counts;
}

const KEY_STATE: Record<KeyState, pb.PrivateLookupKeyState> = {
  building: pb.PrivateLookupKeyState.BUILDING,
  ready: pb.PrivateLookupKeyState.READY,
  current: pb.PrivateLookupKeyState.CURRENT,
  previous: pb.PrivateLookupKeyState.PREVIOUS,
  retiring: pb.PrivateLookupKeyState.RETIRING,
};

/** A held key as GetStatus and RollPrivateLookupKey report it. */
export function keyStatusToProto(k: KeyStatus) {
  return {
    epoch: k.epoch,
    publicKey: k.publicKey,
    state: KEY_STATE[k.state],
    built: k.built,
    scanning: k.scanning,
    bucketBits: k.layout.bucketBits,
    bucketBytes: k.layout.bucketBytes,
    retireAtMs: BigInt(k.retireAtMs ?? 0),
  };
}
