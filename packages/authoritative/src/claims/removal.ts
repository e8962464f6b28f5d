// A holder's removals after a new proof (R16, R19): invalidating mappings, or opting out of
// discovery. The holder's own mappings go at once; other holders' only through a conflict they
// may contest, like a claim that asks to replace them (R17); an opt-out follows the same rules.
import { type ActionStatement, csiHash, DiscoveryError } from "@mimi/core";
import type { EnrolledMsp } from "../store/rows.js";
import type { ClaimsContext } from "./context.js";
import { existingMsps, openConflict, removeRows, settleDefault } from "./effects.js";
import { invalidationTargets, splitByHolder } from "./rules.js";
import type { CompleteResult } from "./types.js";

/** Removes the targeted mappings of the statement's CSI; in the caller's transaction. */
export function applyInvalidate(ctx: ClaimsContext, caller: EnrolledMsp, s: ActionStatement): CompleteResult {
  const targets = invalidationTargets(ctx.store.mappings(s.csi), s);
  if (targets.length === 0)
    throw new DiscoveryError("not_found", "no mapping of this CSI matches the target");
  const { own, foreign } = splitByHolder(targets, caller.mspId, s.userPublicKey);
  removeRows(ctx, own, "invalidated by the holder", caller.mspId);
  const result: CompleteResult = {
    hasPrecedence: false,
    existingMsps: existingMsps(ctx, foreign),
    conflictId: "",
    contestDeadlineMs: 0,
    removed: own.length,
  };
  if (foreign.length > 0) {
    const c = openConflict(
      ctx,
      { csi: s.csi, claimantMsp: caller.mspId, newMsp: "", newSsi: "", replace: true, makeDefault: false },
      foreign,
    );
    result.conflictId = c.id;
    result.contestDeadlineMs = c.deadlineMs;
  }
  settleDefault(ctx, s.csi);
  ctx.log.info(
    { csi: csiHash(s.csi), msp: caller.mspId, removed: own.length, pending: foreign.length },
    "mappings invalidated",
  );
  return result;
}

/**
 * Opts the CSI out of discovery (R14) under the same precedence rules as a removal: the holder's
 * own mappings (at the acting MSP, or under the holder's key) go at once; other holders'
 * mappings only through a conflict they may contest, which opts the CSI out when it lapses.
 * Open conflicts stay as they are. With no other holder's mapping, the CSI is opted out at
 * once. In the caller's transaction.
 */
export function applyOptOut(ctx: ClaimsContext, caller: EnrolledMsp, s: ActionStatement): CompleteResult {
  const { store } = ctx;
  const { own, foreign } = splitByHolder(store.mappings(s.csi), caller.mspId, s.userPublicKey);
  removeRows(ctx, own, "the holder opted out of discovery", caller.mspId);
  const result: CompleteResult = {
    hasPrecedence: false,
    existingMsps: existingMsps(ctx, foreign),
    conflictId: "",
    contestDeadlineMs: 0,
    removed: own.length,
  };
  if (foreign.length === 0) {
    store.setOptOut(s.csi, ctx.clock());
  } else {
    const c = openConflict(
      ctx,
      {
        csi: s.csi,
        claimantMsp: caller.mspId,
        newMsp: "",
        newSsi: "",
        replace: true,
        makeDefault: false,
        optOut: true,
      },
      foreign,
    );
    result.conflictId = c.id;
    result.contestDeadlineMs = c.deadlineMs;
    settleDefault(ctx, s.csi);
  }
  ctx.log.info(
    { csi: csiHash(s.csi), msp: caller.mspId, removed: own.length, pending: foreign.length },
    foreign.length === 0
      ? "holder opted out"
      : "holder opted out; other holders' mappings go through a conflict",
  );
  return result;
}
