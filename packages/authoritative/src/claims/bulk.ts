// Bulk registration (G4): an MSP trusted for it sends MSP-signed records with the "bulk" proof
// method. Every record of a batch is checked before any is written, the batch is one
// transaction, and the session's committed count is stored with it, so an import resumes
// exactly where it stopped and a batch sent twice changes nothing.
import { setImmediate as yieldToEventLoop } from "node:timers/promises";
import { DiscoveryError, decodeMappingRecord, invalidArgument, type MappingRecord } from "@mimi/core";
import { type BulkVerifier, type SignedBulkRecord, verifyInline } from "../bulk-verifier.js";
import type { EnrolledMsp } from "../store/rows.js";
import type { ClaimsContext } from "./context.js";
import { settleDefault } from "./effects.js";
import { checkRecordTimes, checkSsi, checkTags } from "./input.js";
import { capBroken, decideBulk } from "./rules.js";
import type { BulkAck } from "./types.js";

/** Largest batch one bulk message may carry. */
const MAX_BULK_BATCH = 10_000;
/** Records checked on the event loop between two yields to it (some 3 ms of work). */
const CHECK_SLICE = 256;

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

/** Checks and stores one batch starting at record `firstIndex` of the session, all on this thread. */
export function bulkBatch(
  ctx: ClaimsContext,
  caller: EnrolledMsp,
  sessionId: string,
  firstIndex: number,
  records: readonly SignedBulkRecord[],
): BulkAck {
  const b = openBatch(ctx, caller, sessionId, firstIndex, records);
  const c = newChecks();
  checkSome(ctx, caller, b, c, b.fresh.length);
  // Only the records before the first failing one: a bad batch costs no more than it did.
  throwFirstFailure(b, c, verifyInline(caller.signingPublicKey, b.fresh.slice(0, c.records.length)));
  return commitBatch(ctx, caller, sessionId, b, c.records);
}

/**
 * Checks and stores one batch like bulkBatch, with the signatures checked by `verifier` (on
 * worker threads) while the other checks run here in slices that yield to the event loop, so
 * lookups keep being answered. A full verifier queue refuses the batch before any work.
 */
export async function bulkBatchAsync(
  ctx: ClaimsContext,
  verifier: BulkVerifier,
  caller: EnrolledMsp,
  sessionId: string,
  firstIndex: number,
  records: readonly SignedBulkRecord[],
): Promise<BulkAck> {
  const b = openBatch(ctx, caller, sessionId, firstIndex, records);
  const verifying = verifier.verify(caller.signingPublicKey, b.fresh);
  const checking = (async () => {
    const c = newChecks();
    while (c.failure === undefined && c.records.length < b.fresh.length) {
      checkSome(ctx, caller, b, c, CHECK_SLICE);
      await yieldToEventLoop();
    }
    return c;
  })();
  const [valid, c] = await Promise.all([verifying, checking]);
  throwFirstFailure(b, c, valid);
  return commitBatch(ctx, caller, sessionId, b, c.records);
}

/** A batch past its size and position checks: the records not yet committed, and what they were checked against. */
interface OpenBatch {
  readonly firstIndex: number;
  readonly size: number;
  readonly committed: number;
  readonly skip: number;
  readonly fresh: readonly SignedBulkRecord[];
  readonly now: number;
  readonly registrySerial: bigint;
}

function openBatch(
  ctx: ClaimsContext,
  caller: EnrolledMsp,
  sessionId: string,
  firstIndex: number,
  records: readonly SignedBulkRecord[],
): OpenBatch {
  if (records.length > MAX_BULK_BATCH)
    throw invalidArgument(`a batch may hold at most ${MAX_BULK_BATCH} records`);
  // An empty batch would write the session (and replicate it) for nothing.
  if (records.length === 0)
    throw invalidArgument("a batch needs at least one record; BulkStart alone says where the session stands");
  const committed = ctx.store.bulkCommitted(caller.mspId, sessionId);
  if (firstIndex > committed) {
    throw new DiscoveryError(
      "failed_precondition",
      `batch starts at record ${firstIndex} but the session has ${committed} committed; resend from ${committed}`,
    );
  }
  const skip = committed - firstIndex;
  return {
    firstIndex,
    size: records.length,
    committed,
    skip,
    fresh: records.slice(Math.min(skip, records.length)),
    now: ctx.clock(),
    registrySerial: ctx.registry.serial,
  };
}

/** The decoded records that passed so far, in order, and the first that did not. */
interface Checks {
  readonly records: MappingRecord[];
  failure: { index: number; err: unknown } | undefined;
}

function newChecks(): Checks {
  return { records: [], failure: undefined };
}

/** Checks up to `count` more fresh records, stopping at the first that fails. */
function checkSome(ctx: ClaimsContext, caller: EnrolledMsp, b: OpenBatch, c: Checks, count: number): void {
  const end = Math.min(b.fresh.length, c.records.length + count);
  while (c.failure === undefined && c.records.length < end) {
    try {
      c.records.push(checkBulkRecord(ctx, caller, b.fresh[c.records.length] as SignedBulkRecord, b.now));
    } catch (err) {
      c.failure = { index: c.records.length, err };
    }
  }
}

// The error the batch is refused with is the one a record-by-record pass finds first: a
// record's own checks come before its signature, and both before any later record.
function throwFirstFailure(b: OpenBatch, c: Checks, valid: Uint8Array): void {
  const badSignature = valid.subarray(0, c.records.length).indexOf(0);
  if (badSignature >= 0) {
    throw recordError(
      b,
      badSignature,
      invalidArgument("msp_signature does not verify with the MSP's enrolled signing key"),
    );
  }
  if (c.failure) throw recordError(b, c.failure.index, c.failure.err);
}

function recordError(b: OpenBatch, freshIndex: number, err: unknown): unknown {
  if (!(err instanceof DiscoveryError)) return err;
  return new DiscoveryError(err.code, `record ${b.firstIndex + b.skip + freshIndex}: ${err.message}`);
}

function commitBatch(
  ctx: ClaimsContext,
  caller: EnrolledMsp,
  sessionId: string,
  b: OpenBatch,
  checked: readonly MappingRecord[],
): BulkAck {
  const { store } = ctx;
  const ack: BulkAck = { committed: 0, stored: 0, unchanged: 0, optedOut: 0, overLimit: 0 };
  const caps = { perCsi: ctx.policy.maxMappingsPerCsi, perMsp: ctx.policy.maxMappingsPerCsiPerMsp };
  ctx.tx(() => {
    // Read again: another stream of the same session may have committed while this batch was
    // verified; the records it committed are skipped, as if this batch had come after it.
    const committed = store.bulkCommitted(caller.mspId, sessionId);
    // A CSI is written only while the registry copy says this DP holds its range: checked
    // again if the copy changed while the batch was verified.
    const recheck = ctx.registry.serial !== b.registrySerial;
    for (let i = committed - b.committed; i < checked.length; i++) {
      const r = checked[i] as MappingRecord;
      const x = b.fresh[i] as SignedBulkRecord;
      if (recheck) {
        try {
          ctx.requireDelegated(r.csi);
        } catch (err) {
          throw recordError(b, i, err);
        }
      }
      const rows = store.mappings(r.csi);
      // One read per record: an opted-out CSI has no mappings, so the marker is only looked up
      // for CSIs that have none.
      const optedOut = rows.length === 0 && store.optedOutAt(r.csi) !== undefined;
      const d = decideBulk(rows, r, x.record, optedOut, ctx.policy.proofRanking, b.now);
      if (d.kind === "opted_out") {
        ack.optedOut++;
        continue;
      }
      if (d.kind === "unchanged") {
        ack.unchanged++;
        continue;
      }
      // A record that would break a cap is left out and counted, as an opted-out CSI's is: it
      // depends on what others stored for the CSI, which the MSP cannot know, so it must not
      // stop the session the way a malformed record does.
      if (capBroken(rows, r, caps)) {
        ack.overLimit++;
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
    ack.committed = Math.max(committed, b.firstIndex + b.size);
    store.setBulkCommitted(caller.mspId, sessionId, ack.committed, b.now);
  });
  if (ack.overLimit > 0) {
    ctx.log.info(
      { msp: caller.mspId, session: sessionId, overLimit: ack.overLimit },
      "bulk records over the mapping caps left out",
    );
  }
  return ack;
}

// Everything about one record but its signature, which the verifier checks.
function checkBulkRecord(
  ctx: ClaimsContext,
  caller: EnrolledMsp,
  x: SignedBulkRecord,
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
  return r;
}
