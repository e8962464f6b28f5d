// A CSI's stored state as replication carries it (CsiState in replication.proto): read from
// the primary's store, checked by the secondary against the registry's keys, and applied so
// that the secondary's store holds exactly what the primary holds for that CSI.
import type { MessageInitShape } from "@bufbuild/protobuf";
import {
  decodeActionStatement,
  type KeyDirectory,
  mappingProblem,
  parseCsi,
  type pb,
  recordDp,
  SIGNING_CONTEXT,
  verifyWith,
} from "@mimi/core";
import { type MappingRow, mappingOfRow, type OptOutRow } from "../store/rows.js";
import type { MappingStore } from "../store/store.js";

/** One CSI's state: every stored mapping (withheld ones too) and its opt-out. */
export interface CsiStateRows {
  readonly csi: string;
  readonly mappings: readonly MappingRow[];
  readonly optOut?: OptOutRow;
}

/** Compares as SQLite orders TEXT: by the bytes of the UTF-8 encoding. */
export function byteOrder(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

/** The CSI's state as the store holds it now. */
export function csiStateOf(store: MappingStore, csi: string): CsiStateRows {
  const optOut = store.optOut(csi);
  return { csi, mappings: store.mappings(csi), ...(optOut && { optOut }) };
}

/**
 * Up to `limit` CSIs after `after`, in key order, that have mappings or an opt-out (a page of a
 * copy). Two index reads merged, so it costs the page, not the store.
 */
export function csisAfter(store: MappingStore, after: string, limit: number): string[] {
  const merged = [...new Set([...store.csisAfter(after, limit), ...store.csisAfter(after, limit, true)])];
  // SQLite's order (bytes of UTF-8), not JavaScript's (UTF-16 units): they differ past the BMP.
  return merged.sort(byteOrder).slice(0, limit);
}

export function csiStateToProto(s: CsiStateRows): MessageInitShape<typeof pb.CsiStateSchema> {
  return {
    csi: s.csi,
    mappings: s.mappings.map((m) => ({
      mspId: m.mspId,
      ssi: m.ssi,
      isDefault: m.isDefault,
      precedence: BigInt(m.precedence),
      expiresAtMs: BigInt(m.expiresAtMs),
      record: m.record,
      userSignature: m.userSig,
      mspSignature: m.mspSig,
      dpSignature: m.dpSig,
      withheld: m.withheld === true,
    })),
    ...(s.optOut && {
      optOut: {
        atMs: BigInt(s.optOut.atMs),
        statement: s.optOut.evidence?.statement ?? new Uint8Array(0),
        userSignature: s.optOut.evidence?.userSignature ?? new Uint8Array(0),
        mspSignature: s.optOut.evidence?.mspSignature ?? new Uint8Array(0),
        mspKey: s.optOut.evidence?.mspKey ?? new Uint8Array(0),
      },
    }),
  };
}

/** What checking a received state found: the rows to store, and why any were left out. */
export interface CheckedState {
  readonly state: CsiStateRows;
  /** Rows that did not verify (a mapping, an opt-out), each with its reason. */
  readonly refused: readonly string[];
  /** Why a row cannot be checked yet (the registry copy lacks its MSP's key): try again later. */
  readonly retry?: string;
}

/**
 * Checks a received state: each mapping must be a mapping of this CSI, of this DP, signed by its
 * MSP (with the registry's key) and, unless it is a bulk record, by its holder; and
 * each opt-out's evidence must carry the holder's and the MSP's signatures. What fails is left
 * out, so a secondary never stores (and so never serves) what the MSPs and the DP did not sign.
 * Mappings already expired are left out silently: nobody serves them.
 */
export function checkCsiState(s: pb.CsiState, dpId: string, keys: KeyDirectory, nowMs: number): CheckedState {
  const refused: string[] = [];
  const mappings: MappingRow[] = [];
  let canonical: string | undefined;
  try {
    canonical = parseCsi(s.csi).uri;
  } catch {
    canonical = undefined;
  }
  if (canonical !== s.csi) {
    // Nothing of a CSI that is not written canonically is stored (lookups would never reach it).
    return { state: { csi: s.csi, mappings: [] }, refused: ["a state of a CSI not in canonical form"] };
  }
  for (const m of s.mappings) {
    const expiresAtMs = Number(m.expiresAtMs);
    if (expiresAtMs <= nowMs) continue;
    const row: MappingRow = {
      csi: s.csi,
      mspId: m.mspId,
      ssi: m.ssi,
      isDefault: m.isDefault,
      precedence: Number(m.precedence),
      expiresAtMs,
      record: m.record,
      userSig: m.userSignature,
      mspSig: m.mspSignature,
      dpSig: m.dpSignature,
      ...(m.withheld && { withheld: true }),
    };
    let problem: string | undefined;
    try {
      const mapping = mappingOfRow(row);
      // Not the DP's countersignature: this endpoint holds the DP's key itself, so a primary
      // could make one as easily as it does, and answers are sealed here with that key anyway.
      problem = mappingProblem(s.csi, mapping, keys, nowMs, { countersignature: false });
      const named = problem === undefined ? recordDp(mapping) : dpId;
      if (named !== dpId) problem = `its record names DP "${named}"`;
    } catch (err) {
      problem = (err as Error).message;
    }
    if (problem?.startsWith("the registry publishes no signing key")) {
      return { state: { csi: s.csi, mappings: [] }, refused: [], retry: problem };
    }
    if (problem) refused.push(`mapping: ${problem}`);
    else mappings.push(row);
  }
  let optOut: OptOutRow | undefined;
  if (s.optOut) {
    const o = s.optOut;
    const problem = o.statement.length === 0 ? undefined : optOutEvidenceProblem(s.csi, dpId, o);
    if (problem) refused.push(`opt-out: ${problem}`);
    else {
      optOut = {
        atMs: Number(o.atMs),
        ...(o.statement.length > 0 && {
          evidence: {
            statement: o.statement,
            userSignature: o.userSignature,
            mspSignature: o.mspSignature,
            mspKey: o.mspKey,
          },
        }),
      };
    }
  }
  return { state: { csi: s.csi, mappings, ...(optOut && { optOut }) }, refused };
}

/** Why an opt-out's evidence fails: it must be this CSI's opt-out at this DP, signed by both. */
function optOutEvidenceProblem(csi: string, dpId: string, o: pb.StoredOptOut): string | undefined {
  let st: ReturnType<typeof decodeActionStatement>;
  try {
    st = decodeActionStatement(o.statement);
  } catch (err) {
    return (err as Error).message;
  }
  if (st.action !== "opt_out" || st.csi !== csi || st.dpId !== dpId) {
    return "its statement is not an opt-out of this CSI at this DP";
  }
  if (!verifyWith(o.mspKey, SIGNING_CONTEXT.actionMsp, o.mspSignature, [o.statement])) {
    return "the MSP's signature does not verify";
  }
  if (!verifyWith(st.userPublicKey, SIGNING_CONTEXT.actionUser, o.userSignature, [o.statement])) {
    return "the holder's signature does not verify";
  }
  return undefined;
}

/**
 * Makes the store hold exactly `s` for its CSI: mappings not in it are deleted, the others
 * written as received, the opt-out set or cleared. The caller runs it in a transaction.
 */
export function applyCsiState(store: MappingStore, s: CsiStateRows): void {
  const keep = new Set(s.mappings.map((m) => `${m.mspId}\u0000${m.ssi}`));
  for (const old of store.mappings(s.csi)) {
    if (!keep.has(`${old.mspId}\u0000${old.ssi}`)) store.deleteMapping(s.csi, old.mspId, old.ssi);
  }
  for (const m of s.mappings) store.putMapping(m);
  if (s.optOut) store.setOptOut(s.csi, s.optOut.atMs, s.optOut.evidence);
  else if (store.optedOutAt(s.csi) !== undefined) store.clearOptOut(s.csi);
}

/**
 * Deletes every CSI the store holds in (`after`, `through`] (`through` undefined: to the end)
 * that `keep` does not hold: a copy page's key range is then exactly the page.
 */
export function dropCsisBetween(
  store: MappingStore,
  after: string,
  through: string | undefined,
  keep: ReadonlySet<string>,
): void {
  let cursor = after;
  for (;;) {
    const page = csisAfter(store, cursor, 512);
    for (const csi of page) {
      if (through !== undefined && byteOrder(csi, through) > 0) return;
      if (!keep.has(csi)) applyCsiState(store, { csi, mappings: [] });
    }
    if (page.length < 512) return;
    cursor = page[page.length - 1] as string;
  }
}
