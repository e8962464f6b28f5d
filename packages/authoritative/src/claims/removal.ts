// A holder's removals after a new proof (R16, R19): invalidating mappings, or opting out of
// discovery. The holder's own mappings go at once, and so do other holders' with a weaker proof
// than the holder's (bulk, against a code: R17's stricter proof supersedes); the rest only
// through a conflict they may contest, like a claim that asks to replace them (R17). An opt-out
// follows the same rules, and counts as the holder contesting the conflicts about their own
// mappings: an opt-out must not publish the claim it was waiting on.
import { type ActionStatement, csiHash, DiscoveryError, parseCsi, proofMethodFor } from "@mimi/core";
import type { EnrolledMsp, MappingRow, OptOutEvidence } from "../store/rows.js";
import type { ClaimsContext } from "./context.js";
import { existingMsps, openConflict, removeRows, settleDefault } from "./effects.js";
import { invalidationTargets, splitByHolder, splitByProof } from "./rules.js";
import type { CompleteResult } from "./types.js";

/** The holder's own rows, and other holders' split by the strength of the holder's proof. */
function splitForRemoval(
  ctx: ClaimsContext,
  caller: EnrolledMsp,
  s: ActionStatement,
  rows: readonly MappingRow[],
) {
  const { own, foreign } = splitByHolder(rows, caller.mspId, s.userPublicKey);
  const proof = proofMethodFor(parseCsi(s.csi).type);
  const { weaker, contestable } = splitByProof(foreign, ctx.policy.proofRanking, proof);
  return { own, weaker, contestable };
}

/**
 * Removes the holder's own rows and weaker ones at once and opens a conflict (an opt-out's when
 * `optOut`) over the contestable rest; returns the result and how many wait for the conflict.
 */
function removeAsHolder(
  ctx: ClaimsContext,
  caller: EnrolledMsp,
  s: ActionStatement,
  rows: readonly MappingRow[],
  optOut: OptOutEvidence | undefined,
): CompleteResult {
  const { own, weaker, contestable } = splitForRemoval(ctx, caller, s, rows);
  const what = optOut ? "opted out of discovery" : "invalidated it";
  removeRows(
    ctx,
    own,
    optOut ? "the holder opted out of discovery" : "invalidated by the holder",
    caller.mspId,
  );
  removeRows(ctx, weaker, `removed: the CSI's holder proved possession and ${what}`);
  const result: CompleteResult = {
    hasPrecedence: false,
    existingMsps: existingMsps(ctx, contestable),
    conflictId: "",
    contestDeadlineMs: 0,
    removed: own.length + weaker.length,
  };
  if (contestable.length > 0) {
    const c = openConflict(
      ctx,
      {
        csi: s.csi,
        claimantMsp: caller.mspId,
        newMsp: "",
        newSsi: "",
        replace: true,
        makeDefault: false,
        optOut: optOut !== undefined,
        ...(optOut && { optOutEvidence: optOut }),
      },
      contestable,
    );
    result.conflictId = c.id;
    result.contestDeadlineMs = c.deadlineMs;
  } else if (optOut) {
    ctx.store.setOptOut(s.csi, ctx.clock(), optOut);
  }
  settleDefault(ctx, s.csi);
  ctx.log.info(
    { csi: csiHash(s.csi), msp: caller.mspId, removed: result.removed, pending: contestable.length },
    optOut ? "holder opted out" : "mappings invalidated",
  );
  return result;
}

/** Removes the targeted mappings of the statement's CSI; in the caller's transaction. */
export function applyInvalidate(ctx: ClaimsContext, caller: EnrolledMsp, s: ActionStatement): CompleteResult {
  const targets = invalidationTargets(ctx.store.mappings(s.csi), s);
  if (targets.length === 0)
    throw new DiscoveryError("not_found", "no mapping of this CSI matches the target");
  return removeAsHolder(ctx, caller, s, targets, undefined);
}

/**
 * Opts the CSI out of discovery (R14) under the removal rules above. With no other holder's
 * mapping left, the CSI is opted out at once; otherwise an opt_out conflict opts it out when it
 * lapses. Claims withheld for conflicts about the holder's own mappings are dropped first (the
 * holder acted, as a contest would), so they are not counted as other holders' mappings. Other
 * open conflicts stay as they are. `evidence` (the statement as signed) is kept with the opt-out,
 * so OPTED_OUT answers prove the holder's choice. In the caller's transaction.
 */
export function applyOptOut(
  ctx: ClaimsContext,
  caller: EnrolledMsp,
  s: ActionStatement,
  evidence: OptOutEvidence,
): CompleteResult {
  const { store } = ctx;
  dropClaimsAgainst(ctx, s.csi, splitByHolder(store.mappings(s.csi), caller.mspId, s.userPublicKey).own);
  return removeAsHolder(ctx, caller, s, store.mappings(s.csi), evidence);
}

/** Open conflicts about `rows` end as contested by their holder: the claims withheld for them go. */
function dropClaimsAgainst(ctx: ClaimsContext, csi: string, rows: readonly MappingRow[]): void {
  const { store } = ctx;
  const mine = new Set(rows.map((r) => `${r.mspId}\0${r.ssi}`));
  for (const c of store.openConflicts(csi)) {
    if (!c.newMsp || !store.conflictTargets(c.id).some((t) => mine.has(`${t.mspId}\0${t.ssi}`))) continue;
    const claimed = store.mapping(csi, c.newMsp, c.newSsi);
    store.setConflictState(c.id, "contested");
    if (claimed?.withheld) removeRows(ctx, [claimed], "contested", c.newMsp);
    ctx.notify(c.claimantMsp, {
      kind: "conflict_closed",
      csi,
      ssi: c.newSsi,
      conflictId: c.id,
      reason:
        "the existing holder acted on their mapping with a fresh proof; the claimed mapping was not kept",
    });
  }
}
