// Conflicts (R17, G3): the existing holders' MSPs may contest within the window; when it
// passes uncontested, the claimant's mapping takes precedence (and replaces theirs when asked).
import { DiscoveryError } from "@mimi/core";
import type { ConflictRow, EnrolledMsp, MappingRow } from "../store/rows.js";
import type { ClaimsContext } from "./context.js";
import { promote, removeRows, settleDefault } from "./effects.js";

/** The caller's MSP contests an open conflict about one of its users' mappings. */
export function contestConflict(ctx: ClaimsContext, caller: EnrolledMsp, conflictId: string): void {
  const { store } = ctx;
  const c = store.conflict(conflictId);
  const concerned = c && store.conflictTargets(c.id).some((t) => t.mspId === caller.mspId);
  if (!c || !concerned) {
    throw new DiscoveryError(
      "not_found",
      `no conflict "${conflictId.slice(0, 64)}" concerns this MSP's users`,
    );
  }
  if (c.state !== "open" || ctx.clock() > c.deadlineMs) {
    throw new DiscoveryError(
      "failed_precondition",
      `the conflict is ${c.state === "open" ? "past its deadline" : c.state}`,
    );
  }
  ctx.tx(() => {
    store.setConflictState(c.id, "contested");
    ctx.notify(c.claimantMsp, {
      kind: "conflict_closed",
      csi: c.csi,
      ssi: c.newSsi,
      conflictId: c.id,
      reason: "contested by the existing holder; the older mapping keeps precedence",
    });
  });
  ctx.log.info({ conflict: c.id, msp: caller.mspId }, "conflict contested");
}

/** Applies a conflict whose window passed uncontested; in the caller's transaction. */
function settleConflict(ctx: ClaimsContext, c: ConflictRow): void {
  const { store } = ctx;
  const rows = store.mappings(c.csi);
  const targets = store
    .conflictTargets(c.id)
    .map((t) => rows.find((r) => r.mspId === t.mspId && r.ssi === t.ssi))
    .filter((r): r is MappingRow => r !== undefined);
  const claimed = c.newMsp ? rows.find((r) => r.mspId === c.newMsp && r.ssi === c.newSsi) : undefined;
  if (c.newMsp && !claimed) {
    // The claimant's mapping went meanwhile: nothing is left to take effect.
    store.setConflictState(c.id, "void");
    return;
  }
  if (claimed) promote(ctx, c.csi, claimed);
  if (c.replace) {
    removeRows(ctx, targets, "replaced: the CSI's holder claimed it elsewhere and the contest window passed");
  } else {
    for (const t of targets) {
      ctx.notify(t.mspId, {
        kind: "precedence_lost",
        csi: c.csi,
        ssi: t.ssi,
        conflictId: c.id,
        reason: "the conflict was not contested; another mapping now takes precedence",
      });
    }
  }
  settleDefault(ctx, c.csi, claimed && c.makeDefault ? claimed : undefined);
  store.setConflictState(c.id, "lapsed");
  ctx.notify(c.claimantMsp, {
    kind: "conflict_closed",
    csi: c.csi,
    ssi: c.newSsi,
    conflictId: c.id,
    reason: "not contested; the change took effect",
  });
}

/** Conflicts settled per sweep, and expired mappings removed per sweep. */
const SWEEP_CONFLICTS = 100;
const SWEEP_EXPIRED = 1_000;

/**
 * Settles conflicts past their deadline (each in its own transaction), removes expired
 * mappings and old challenges and notices; returns the conflicts settled.
 */
export function sweep(ctx: ClaimsContext): number {
  const { store } = ctx;
  const now = ctx.clock();
  const due = store.dueConflicts(now, SWEEP_CONFLICTS);
  for (const c of due) ctx.tx(() => settleConflict(ctx, c));
  ctx.tx(() => {
    for (const r of store.expired(now, SWEEP_EXPIRED)) {
      removeRows(ctx, [r], "expired; re-verify to restore it");
      settleDefault(ctx, r.csi);
    }
    store.deleteChallengesBefore(now - 86_400_000);
    store.deleteNoticesBefore(now - ctx.policy.noticeRetentionMs);
  });
  if (due.length > 0) ctx.log.info({ settled: due.length }, "conflicts settled");
  return due.length;
}
