// Bulk registration (G4): an MSP trusted for it sends MSP-signed records with the "bulk" proof
// method. Every record of a batch is checked before any is written, the batch is one
// transaction, and the session's committed count is stored with it, so an import resumes
// exactly where it stopped and a batch sent twice changes nothing.
import {
  DiscoveryError,
  decodeMappingRecord,
  invalidArgument,
  type MappingRecord,
  SIGNING_CONTEXT,
  verifyWith,
} from "@mimi/core";
import type { EnrolledMsp } from "../store/rows.js";
import type { ClaimsContext } from "./context.js";
import { settleDefault } from "./effects.js";
import { checkRecordTimes, checkSsi, checkTags } from "./input.js";
import { decideBulk } from "./rules.js";
import type { BulkAck } from "./types.js";

/** Largest batch one bulk message may carry. */
const MAX_BULK_BATCH = 10_000;

/** Opens (or resumes) a session; returns how many of its records are committed. */
export function bulkResume(ctx: ClaimsContext, caller: EnrolledMsp, sessionId: string): number {
  if (!caller.mayBulk) {
    throw new DiscoveryError(
      "permission_denied",
      `MSP "${caller.mspId}" is not enrolled for bulk registration`,
    );
  }
  if (sessionId.length < 1 || sessionId.length > 128)
    throw invalidArgument("session_id must be 1 to 128 characters");
  return ctx.store.bulkCommitted(caller.mspId, sessionId);
}

/** Checks and stores one batch starting at record `firstIndex` of the session. */
export function bulkBatch(
  ctx: ClaimsContext,
  caller: EnrolledMsp,
  sessionId: string,
  firstIndex: number,
  records: readonly { record: Uint8Array; mspSignature: Uint8Array }[],
): BulkAck {
  const { store } = ctx;
  if (records.length > MAX_BULK_BATCH)
    throw invalidArgument(`a batch may hold at most ${MAX_BULK_BATCH} records`);
  const committed = store.bulkCommitted(caller.mspId, sessionId);
  if (firstIndex > committed) {
    throw new DiscoveryError(
      "failed_precondition",
      `batch starts at record ${firstIndex} but the session has ${committed} committed; resend from ${committed}`,
    );
  }
  const skip = committed - firstIndex;
  const now = ctx.clock();
  // Check every record before writing any, so a batch is stored whole or not at all.
  const fresh = records.slice(Math.min(skip, records.length)).map((x, i) => {
    try {
      return { r: checkBulkRecord(ctx, caller, x, now), x };
    } catch (err) {
      if (err instanceof DiscoveryError)
        throw new DiscoveryError(err.code, `record ${firstIndex + skip + i}: ${err.message}`);
      throw err;
    }
  });
  const ack: BulkAck = { committed: 0, stored: 0, unchanged: 0, optedOut: 0 };
  ctx.tx(() => {
    for (const { r, x } of fresh) {
      const rows = store.mappings(r.csi);
      // One read per record: an opted-out CSI has no mappings, so the marker is only looked up
      // for CSIs that have none.
      const optedOut = rows.length === 0 && store.optedOutAt(r.csi) !== undefined;
      const d = decideBulk(rows, r, x.record, optedOut, ctx.policy.proofRanking, now);
      if (d.kind === "opted_out") {
        ack.optedOut++;
        continue;
      }
      if (d.kind === "unchanged") {
        ack.unchanged++;
        continue;
      }
      store.putMapping({
        csi: r.csi,
        mspId: r.mspId,
        ssi: r.ssi,
        isDefault: d.isDefault,
        precedence: d.precedence,
        expiresAtMs: r.expiresAtMs,
        record: x.record,
        userSig: new Uint8Array(0),
        mspSig: x.mspSignature,
        dpSig: ctx.dpSign(d.isDefault, x.record),
      });
      ack.stored++;
      if (d.settle) settleDefault(ctx, r.csi);
    }
    ack.committed = Math.max(committed, firstIndex + records.length);
    store.setBulkCommitted(caller.mspId, sessionId, ack.committed, now);
  });
  return ack;
}

function checkBulkRecord(
  ctx: ClaimsContext,
  caller: EnrolledMsp,
  x: { record: Uint8Array; mspSignature: Uint8Array },
  now: number,
): MappingRecord {
  const r = decodeMappingRecord(x.record);
  if (r.mspId !== caller.mspId) {
    throw new DiscoveryError(
      "permission_denied",
      `the record is for MSP "${r.mspId}"; an MSP registers only its own users`,
    );
  }
  if (r.dpId !== ctx.dpId)
    throw invalidArgument(`the record names DP "${r.dpId}", not this DP ("${ctx.dpId}")`);
  if (r.proofMethod !== "bulk" || r.userPublicKey.length !== 0) {
    throw invalidArgument('bulk records must use proof method "bulk" and carry no user key');
  }
  const csi = ctx.requireDelegated(r.csi);
  if (csi.uri !== r.csi)
    throw invalidArgument(`the CSI must be written in canonical form ("${csi.type}:...")`);
  checkSsi(r.ssi);
  checkTags(r.tags);
  checkRecordTimes(r, now, ctx.policy.mappingLifetimeMs);
  if (
    !verifyWith(caller.signingPublicKey, SIGNING_CONTEXT.mappingMsp, x.mspSignature, [x.record], {
      registryKey: true,
    })
  ) {
    throw invalidArgument("msp_signature does not verify with the MSP's enrolled signing key");
  }
  return r;
}
