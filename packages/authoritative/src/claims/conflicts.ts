// Conflicts (R17, G3): the existing holders' MSPs may contest within the window; when it
// passes uncontested, the claimant's mapping takes precedence (and replaces theirs when asked).
import {
  DiscoveryError,
  decodeMappingRecord,
  encodeContestStatement,
  invalidArgument,
  parseCsi,
  proofMethodFor,
  SIGNING_CONTEXT,
  verifyWith,
} from "@mimi/core";
import type { ConflictRow, EnrolledMsp, MappingRow } from "../store/rows.js";
import type { ClaimsContext } from "./context.js";
import { promote, release, removeRows, settleDefault } from "./effects.js";
import { splitByProof } from "./rules.js";

/** A contest: the caller's user whose mapping the conflict is about, and the holder's fresh consent. */
export interface Contest {
  readonly conflictId: string;
  readonly ssi: string;
  readonly holderSignature: Uint8Array;
}

/**
 * The caller's MSP contests an open conflict about one of its users' mappings, with the
 * holder's signature over the conflict (the key in that mapping's record; for a bulk mapping,
 * which has none, the MSP's key). A contest is final: the claimant's withheld mapping goes, an
 * opt-out does not take effect, and the conflict cannot be contested or lapse again.
 */
export function contestConflict(ctx: ClaimsContext, caller: EnrolledMsp, contest: Contest): void {
  const { store } = ctx;
  const c = store.conflict(contest.conflictId);
  const targets = c ? store.conflictTargets(c.id).filter((t) => t.mspId === caller.mspId) : [];
  if (!c || targets.length === 0) {
    throw new DiscoveryError(
      "not_found",
      `no conflict "${contest.conflictId.slice(0, 64)}" concerns this MSP's users`,
    );
  }
  if (c.state !== "open" || ctx.clock() > c.deadlineMs) {
    throw new DiscoveryError(
      "failed_precondition",
      `the conflict is ${c.state === "open" ? "past its deadline" : c.state}; a contest is final`,
    );
  }
  if (!targets.some((t) => t.ssi === contest.ssi)) {
    throw invalidArgument(`the conflict is not about this MSP's user "${contest.ssi.slice(0, 64)}"`);
  }
  // A contest writes to the CSI (it removes the withheld claim): only while it is delegated here.
  ctx.requireDelegated(c.csi);
  const held = store.mapping(c.csi, caller.mspId, contest.ssi);
  if (!held) throw new DiscoveryError("failed_precondition", "the mapping the conflict is about is gone");
  const holderKey = decodeMappingRecord(held.record).userPublicKey;
  const key = holderKey.length > 0 ? holderKey : caller.signingPublicKey;
  const statement = encodeContestStatement({
    conflictId: c.id,
    csi: c.csi,
    mspId: caller.mspId,
    ssi: contest.ssi,
  });
  if (!verifyWith(key, SIGNING_CONTEXT.contestHolder, contest.holderSignature, [statement])) {
    throw new DiscoveryError(
      "permission_denied",
      holderKey.length > 0
        ? "a contest needs the holder's fresh consent: a signature by the key in the mapping's record over the contest statement"
        : "a contest of a bulk mapping needs the MSP's signature, by its registry key, over the contest statement",
    );
  }
  ctx.tx(() => {
    store.setConflictState(c.id, "contested");
    // The claimant's mapping was withheld for this conflict; the holder kept theirs, so it goes.
    const claimed = c.newMsp ? store.mapping(c.csi, c.newMsp, c.newSsi) : undefined;
    if (claimed?.withheld) {
      removeRows(ctx, [claimed], "contested", c.newMsp);
      settleDefault(ctx, c.csi);
    }
    ctx.notify(c.claimantMsp, {
      kind: "conflict_closed",
      csi: c.csi,
      ssi: c.newSsi,
      conflictId: c.id,
      reason: claimed?.withheld
        ? "contested by the existing holder with fresh consent; the claimed mapping was not kept"
        : "contested by the existing holder with fresh consent; the older mapping keeps precedence",
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
  if (claimed) {
    release(ctx, claimed);
    promote(ctx, c.csi, claimed);
  }
  if (c.replace) {
    removeRows(
      ctx,
      targets,
      c.optOut
        ? "removed: the CSI's holder opted out of discovery and the contest window passed"
        : "replaced: the CSI's holder claimed it elsewhere and the contest window passed",
    );
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
  let reason = "not contested; the change took effect";
  if (c.optOut) {
    // Mappings with a weaker proof than the holder's (bulk ones an MSP added while the window
    // ran) go too; the CSI is opted out only once no holder's mapping is left, and the holder's
    // MSP is told truthfully when a newer claim stands.
    const proof = proofMethodFor(parseCsi(c.csi).type);
    removeRows(
      ctx,
      splitByProof(store.mappings(c.csi), ctx.policy.proofRanking, proof).weaker,
      "removed: the CSI's holder opted out of discovery",
    );
    if (store.mappings(c.csi).length === 0) store.setOptOut(c.csi, ctx.clock(), c.optOutEvidence);
    else
      reason =
        "not contested; the mappings were removed, but a newer claim stands, so the CSI is not opted out";
  }
  settleDefault(ctx, c.csi, claimed && c.makeDefault ? claimed : undefined);
  store.setConflictState(c.id, "lapsed");
  ctx.notify(c.claimantMsp, { kind: "conflict_closed", csi: c.csi, ssi: c.newSsi, conflictId: c.id, reason });
}

/** Conflicts settled per sweep, and expired mappings removed per sweep. */
const SWEEP_CONFLICTS = 100;
const SWEEP_EXPIRED = 1_000;
/** Settled conflicts and idle bulk sessions dropped per sweep at most. */
const SWEEP_PRUNE = 1_000;

/**
 * Settles conflicts past their deadline (each in its own transaction), removes expired
 * mappings, old challenges and notices, and conflicts and bulk sessions no notice refers to any
 * more; returns the conflicts settled.
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
    // What nobody can act on once its notices are gone: settled conflicts, idle bulk sessions.
    const retained = now - ctx.policy.noticeRetentionMs;
    store.deleteNoticesBefore(retained);
    store.deleteSettledConflictsBefore(retained, SWEEP_PRUNE);
    store.deleteIdleBulkSessions(retained, SWEEP_PRUNE);
  });
  if (due.length > 0) ctx.log.info({ settled: due.length }, "conflicts settled");
  return due.length;
}
