// The writes the claim rules decide, applied to the store with their notices: removing
// mappings, settling the default (re-signed whenever its flag changes), promoting a mapping,
// opening a conflict. Each runs inside the caller's transaction.
import { randomBytes } from "node:crypto";
import type { MspInfo } from "@mimi/core";
import type { ConflictRow, MappingRow } from "../store/rows.js";
import type { ClaimsContext } from "./context.js";
import { defaultChanges, type MappingKey, promotedPrecedence } from "./rules.js";

/** Deletes mappings and tells their MSPs (except `except`, the MSP that asked for it). */
export function removeRows(
  ctx: ClaimsContext,
  rows: readonly MappingRow[],
  reason: string,
  except?: string,
): void {
  for (const r of rows) {
    if (ctx.store.deleteMapping(r.csi, r.mspId, r.ssi) && r.mspId !== except) {
      ctx.notify(r.mspId, { kind: "mapping_removed", csi: r.csi, ssi: r.ssi, reason });
    }
  }
  for (const csi of new Set(rows.map((r) => r.csi))) releaseOrphanedClaims(ctx, csi);
}

/** Serves a withheld claim from now on (its flags and countersignature stay as they are). */
export function release(ctx: ClaimsContext, row: MappingRow): void {
  if (!row.withheld) return;
  ctx.store.updateMapping(row.csi, row.mspId, row.ssi, {
    isDefault: row.isDefault,
    precedence: row.precedence,
    dpSig: row.dpSig,
    withheld: false,
  });
}

/**
 * A claim withheld for a conflict whose mappings are all gone (removed by their holder, a
 * feed, expiry) has nothing left to wait for: it is served, and the conflict is void.
 */
function releaseOrphanedClaims(ctx: ClaimsContext, csi: string): void {
  const { store } = ctx;
  for (const c of store.openConflicts(csi)) {
    if (!c.newMsp) continue;
    const rows = store.mappings(csi);
    const targets = store.conflictTargets(c.id);
    if (targets.some((t) => rows.some((r) => r.mspId === t.mspId && r.ssi === t.ssi))) continue;
    const claimed = rows.find((r) => r.mspId === c.newMsp && r.ssi === c.newSsi);
    if (claimed) release(ctx, claimed);
    store.setConflictState(c.id, "void");
    ctx.notify(c.claimantMsp, {
      kind: "conflict_closed",
      csi,
      ssi: c.newSsi,
      conflictId: c.id,
      reason: "the mappings the conflict was about are gone; the claim took effect",
    });
  }
}

/** Keeps exactly one default for `csi` (R7; see defaultChanges), re-signing every flag it changes. */
export function settleDefault(ctx: ClaimsContext, csi: string, preferred?: MappingKey): void {
  // A withheld claim is nobody's default until its conflict lapses.
  const served = ctx.store.mappings(csi).filter((r) => !r.withheld);
  for (const { row: r, isDefault } of defaultChanges(served, ctx.policy.proofRanking, preferred)) {
    ctx.store.updateMapping(r.csi, r.mspId, r.ssi, {
      isDefault,
      precedence: r.precedence,
      dpSig: ctx.dpSign(isDefault, r.record),
    });
    ctx.notify(r.mspId, {
      kind: "default_changed",
      csi,
      ssi: r.ssi,
      reason: isDefault ? "this mapping is now the default" : "this mapping is no longer the default",
    });
  }
}

/** Moves the mapping ahead of every other mapping of its CSI (R17). */
export function promote(ctx: ClaimsContext, csi: string, key: MappingKey): void {
  const rows = ctx.store.mappings(csi);
  const precedence = promotedPrecedence(rows, key);
  const row = rows.find((r) => r.mspId === key.mspId && r.ssi === key.ssi);
  if (precedence === undefined || !row) return;
  ctx.store.updateMapping(csi, row.mspId, row.ssi, {
    isDefault: row.isDefault,
    precedence,
    dpSig: row.dpSig,
  });
}

/**
 * Opens a conflict over `targets` with the contest window of the policy, and tells each
 * target's MSP; the notice names the recipient's own user and nothing about the claimant (R17).
 */
export function openConflict(
  ctx: ClaimsContext,
  c: Omit<ConflictRow, "id" | "state" | "openedAtMs" | "deadlineMs">,
  targets: readonly MappingRow[],
): ConflictRow {
  const asks = c.optOut
    ? "someone who proved possession of this CSI opted out of discovery and asks to remove this mapping; contest before the deadline to keep it"
    : c.replace
      ? "someone who proved possession of this CSI asks to replace this mapping; contest before the deadline to keep it"
      : "someone who proved possession of this CSI claimed it at another service; contest before the deadline to keep precedence";
  const now = ctx.clock();
  const conflict: ConflictRow = {
    ...c,
    id: `cf_${randomBytes(12).toString("base64url")}`,
    openedAtMs: now,
    deadlineMs: now + ctx.policy.contestWindowMs,
    state: "open",
  };
  ctx.store.insertConflict(conflict, targets);
  for (const t of targets) {
    ctx.notify(t.mspId, {
      kind: "conflict_opened",
      csi: c.csi,
      ssi: t.ssi,
      conflictId: conflict.id,
      deadlineMs: conflict.deadlineMs,
      reason: asks,
    });
  }
  return conflict;
}

/** The MSPs holding `rows`, as the registry names them, for a claimant to read. */
export function existingMsps(ctx: ClaimsContext, rows: readonly MappingRow[]): MspInfo[] {
  // A withheld claim's MSP is not named: that would tell a later claimant who claimed before.
  const ids = [...new Set(rows.filter((r) => !r.withheld).map((r) => r.mspId))].sort();
  return ids.map(
    (id) => ctx.registry.msp(id) ?? { id, name: id, index: -1, signingPublicKey: new Uint8Array(0) },
  );
}
