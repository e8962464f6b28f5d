// A holder's removals after a new proof (R16, R19): invalidating mappings, or opting out of
// discovery. The holder's own mappings go at once; other holders' only through a conflict they
// may contest, like a claim that asks to replace them (R17).
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

/** Removes every mapping of the CSI and marks it opted out (R14); in the caller's transaction. */
export function applyOptOut(ctx: ClaimsContext, caller: EnrolledMsp, s: ActionStatement): CompleteResult {
  const { store } = ctx;
  const rows = store.mappings(s.csi);
  removeRows(ctx, rows, "the holder opted out of discovery", caller.mspId);
  for (const c of store.openConflicts(s.csi)) store.setConflictState(c.id, "void");
  store.setOptOut(s.csi, ctx.clock());
  ctx.log.info({ csi: csiHash(s.csi), msp: caller.mspId, removed: rows.length }, "holder opted out");
  return {
    hasPrecedence: false,
    existingMsps: [],
    conflictId: "",
    contestDeadlineMs: 0,
    removed: rows.length,
  };
}
