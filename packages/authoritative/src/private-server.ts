// gRPC binding of PrivateLookupService (private-table.ts): resolvers only. Evaluate is the
// metered step, one lookup of the caller's and the rate context's budgets per element, like a
// lookup but with no CSI to watch; a bucket is the same for every caller and costs one lookup of
// the caller's own budget (a read and a signature). Nothing here names or logs a CSI: the DP
// never sees one.
import type * as grpc from "@grpc/grpc-js";
import { DiscoveryError, type Logger, MAX_OPRF_BATCH, OPRF_ELEMENT_BYTES, pb } from "@mimi/core";
import { addService } from "@mimi/rpc";
import type { LookupLimits } from "./lookup-limits.js";
import type { PrivateTable } from "./private-table.js";

/**
 * What one evaluation costs this DP's CPU, in plain lookups (about 2 ms against 0.1 ms): it
 * counts this much against the endpoint's capacity and the caller's rate, so a resolver cannot
 * use its lookup rate to make the DP evaluate twenty times what it can, while the MSPs' budgets
 * (rate contexts) count it as the one lookup it is.
 */
export const EVALUATION_LOAD = 20;

/** Registers PrivateLookupService on `server`; `table` is undefined until it exists (or when private lookups are off). */
export function bindPrivateServer(
  server: grpc.Server,
  table: () => PrivateTable | undefined,
  opts: { log: Logger; limits: LookupLimits; now: () => number },
): { readonly evaluated: number; readonly buckets: number } {
  const { log, limits, now } = opts;
  const counts = { evaluated: 0, buckets: 0 };
  const ready = (): PrivateTable => {
    const t = table();
    if (!t) throw new DiscoveryError("failed_precondition", "this DP does not offer private lookups");
    const problem = t.notReady();
    if (problem) throw new DiscoveryError("not_ready", `${problem}; try again shortly`);
    return t;
  };
  addService(
    server,
    pb.PrivateLookupService,
    {
      async getPrivateParameters() {
        return ready().parameters();
      },
      async evaluate(req, ctx) {
        const t = ready();
        const n = req.blinded.length;
        if (n === 0 || n > MAX_OPRF_BATCH)
          throw new DiscoveryError(
            "invalid_argument",
            `blinded holds 1 to ${MAX_OPRF_BATCH} elements, not ${n}`,
          );
        if (req.blinded.some((b) => b.length !== OPRF_ELEMENT_BYTES))
          throw new DiscoveryError("invalid_argument", `each blinded element is ${OPRF_ELEMENT_BYTES} bytes`);
        // Charged before the work, like a lookup: a refused evaluation costs the DP nothing.
        t.checkEpoch(req.epoch);
        limits.admit(ctx.peer.name, req.rateContext, undefined, now(), n, n * EVALUATION_LOAD);
        const r = t.evaluate(req.epoch, req.blinded);
        counts.evaluated += n;
        return r;
      },
      async getBucket(req, ctx) {
        const t = ready();
        t.checkEpoch(req.epoch);
        // Buckets are the same for every caller, but each costs a read and a signature: one of
        // the caller's own lookups (its budget without a rate context) per bucket.
        limits.admit(ctx.peer.name, new Uint8Array(0), undefined, now(), 1);
        const b = t.bucket(req.epoch, req.bucket);
        counts.buckets++;
        return b;
      },
    },
    { log, roles: ["resolver"] },
  );
  return counts;
}
