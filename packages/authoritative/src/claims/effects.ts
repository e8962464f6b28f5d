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
}

/** Keeps exactly one default for `csi` (R7; see defaultChanges), re-signing every flag it changes. */
export function settleDefault(ctx: ClaimsContext, csi: string, preferred?: MappingKey): void {
  for (const { row: r, isDefault } of defaultChanges(ctx.store.mappings(csi), preferred)) {
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
      reason: c.replace
        ? "someone who proved possession of this CSI asks to replace this mapping; contest before the deadline to keep it"
        : "someone who proved possession of this CSI claimed it at another service; contest before the deadline to keep precedence",
    });
  }
  return conflict;
}

/** The MSPs holding `rows`, as the registry names them, for a claimant to read. */
export function existingMsps(ctx: ClaimsContext, rows: readonly MappingRow[]): MspInfo[] {
  const ids = [...new Set(rows.map((r) => r.mspId))].sort();
  return ids.map(
    (id) => ctx.registry.msp(id) ?? { id, name: id, index: -1, signingPublicKey: new Uint8Array(0) },
  );
}
