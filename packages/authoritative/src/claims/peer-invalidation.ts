// A peer DP's first-mapping request (R18): the DP the registry now delegates a CSI to stored
// its first holder-proven mapping, and older mappings of other holders here are de-listed: at
// once when the new proof is stricter, else through a conflict their MSPs may contest.
import {
  csiHash,
  DiscoveryError,
  decodeMappingRecord,
  invalidArgument,
  type Mapping,
  mappingProblem,
  parseRequestCsi,
  registryKeys,
} from "@mimi/core";
import { type ClaimsContext, PEER_REQUESTS } from "./context.js";
import { openConflict, removeRows, settleDefault } from "./effects.js";
import { olderThanPeerMapping } from "./rules.js";
import type { InvalidateOlderResult } from "./types.js";

/** ErrorInfo's reason when a peer identity sent more first-mapping requests than PEER_REQUESTS. */
export const PEER_RATE = "PEER_RATE";

/** Checks who asks and what it sends, then de-lists older mappings of other holders. */
export function invalidateOlder(
  ctx: ClaimsContext,
  callerIdentity: string,
  csiText: string,
  m: Mapping,
): InvalidateOlderResult {
  const { store, registry } = ctx;
  const caller = registry.allDps().find((d) => d.tlsIdentity === callerIdentity);
  if (!caller || caller.id === ctx.dpId) {
    throw new DiscoveryError(
      "permission_denied",
      `identity "${callerIdentity}" is not another DP of the root registry`,
    );
  }
  // Then, before anything it asks costs: each registry DP's share (only they are remembered).
  const refusal = ctx.peerRequests.take(caller.id, ctx.clock());
  if (refusal) {
    throw new DiscoveryError(
      "resource_exhausted",
      `DP "${caller.id}" sent more than ${PEER_REQUESTS.limit} first-mapping requests a minute; ` +
        `try again in ${Math.ceil(refusal.retryAfterMs / 1000)} s`,
      { details: { retryAfterMs: refusal.retryAfterMs, reason: PEER_RATE } },
    );
  }
  const csi = parseRequestCsi(csiText);
  const d = registry.find(csi.key);
  if (d?.dpId !== caller.id) {
    throw new DiscoveryError(
      "permission_denied",
      `DP "${caller.id}" is not delegated this CSI (the registry delegates it to ${d ? `"${d.dpId}"` : "no DP"}); only that DP may ask peers to de-list older mappings`,
    );
  }
  // A federated DP of the range holds live mappings of its own beside the delegated DP's (D4);
  // R18's de-listing is for mappings left from before a range was carved out, not for those.
  if ((d.federatedDpIds ?? []).includes(ctx.dpId)) {
    throw new DiscoveryError(
      "failed_precondition",
      `this DP ("${ctx.dpId}") is a federated DP of ${d.id}: its mappings there are its own and are not de-listed by the range's DP`,
    );
  }
  const problem = mappingProblem(csi.uri, m, registryKeys(registry), ctx.clock());
  if (problem) throw invalidArgument(`the new mapping does not verify: ${problem}`);
  const r = decodeMappingRecord((m.signed as { record: Uint8Array }).record);
  if (r.dpId !== caller.id)
    throw invalidArgument(`the new mapping is countersigned for DP "${r.dpId}", not the caller`);
  if (r.proofMethod === "bulk") {
    throw invalidArgument(
      "a bulk mapping carries no proof by the holder, so it cannot de-list other holders' mappings",
    );
  }
  return ctx.tx(() => {
    const { weaker, contestable } = olderThanPeerMapping(store.mappings(csi.uri), r, ctx.policy.proofRanking);
    removeRows(
      ctx,
      weaker,
      `the identifier's new holder proved possession more strictly at DP "${caller.id}"`,
    );
    // Repeated requests do not open a second conflict over the same mappings.
    const pending = new Set(
      store
        .openConflicts(csi.uri)
        .flatMap((c) => store.conflictTargets(c.id).map((t) => `${t.mspId}\0${t.ssi}`)),
    );
    const fresh = contestable.filter((x) => !pending.has(`${x.mspId}\0${x.ssi}`));
    if (fresh.length > 0) {
      openConflict(
        ctx,
        { csi: csi.uri, claimantMsp: r.mspId, newMsp: "", newSsi: "", replace: true, makeDefault: false },
        fresh,
      );
    }
    settleDefault(ctx, csi.uri);
    ctx.log.info(
      { csi: csiHash(csi.uri), peer: caller.id, removed: weaker.length, contested: contestable.length },
      "older mappings de-listed at a peer's request",
    );
    return { removed: weaker.length, contested: contestable.length };
  });
}
