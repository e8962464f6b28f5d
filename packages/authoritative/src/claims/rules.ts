// The claim rules as plain functions (R7, R16, R17, R18, R19, D2, G4): given the stored
// mappings of one CSI and what happened, decide what changes. No store, no clock, no keys:
// effects.ts and the flows around it apply the decisions inside one transaction.
import { decodeMappingRecord, type MappingRecord } from "@mimi/core";
import type { MappingRow } from "../store/rows.js";

/** Proof methods from weakest to strongest (R17's "stricter proof"); unknown methods rank lowest. */
export type ProofRanking = readonly string[];

/** The strength of a proof method: its place in the ranking, -1 when it is not ranked. */
export function rankOf(ranking: ProofRanking, method: string): number {
  return ranking.indexOf(method);
}

/** The holder's key a stored mapping carries (empty for bulk records). */
function holderOf(row: MappingRow): Uint8Array {
  return decodeMappingRecord(row.record).userPublicKey;
}

/** The proof method of a stored mapping. */
function proofOf(row: MappingRow): string {
  return decodeMappingRecord(row.record).proofMethod;
}

/** Two holder keys are one holder; an empty key (a bulk record's) is no holder at all. */
function sameHolder(a: Uint8Array, b: Uint8Array): boolean {
  return a.length > 0 && a.length === b.length && Buffer.from(a).equals(b);
}

/** A mapping's identity within its CSI. */
export interface MappingKey {
  readonly mspId: string;
  readonly ssi: string;
}

const sameMapping = (a: MappingKey, b: MappingKey) => a.mspId === b.mspId && a.ssi === b.ssi;

/** A change of one mapping's default flag. */
export interface DefaultChange {
  readonly row: MappingRow;
  readonly isDefault: boolean;
}

/**
 * Keeps exactly one default per CSI (R7); returns the flags that must change. `preferred` is a
 * holder's explicit choice. Without one, a single default stays unless it never asked to be
 * default and another mapping proven at least as strongly (`ranking`) did: a bulk record's
 * request, its MSP's word with no user behind it, does not take the default from a mapping
 * whose holder proved the number. Otherwise the choice is made once, deterministically: among
 * the mappings that asked for it (else the current defaults when several, else all) the best
 * precedence, then MSP, then SSI.
 */
export function defaultChanges(
  rows: readonly MappingRow[],
  ranking: ProofRanking,
  preferred?: MappingKey,
): DefaultChange[] {
  if (rows.length === 0) return [];
  const defaults = rows.filter((r) => r.isDefault);
  const records = new Map(rows.map((r) => [r, decodeMappingRecord(r.record)]));
  const proof = (r: MappingRow) => rankOf(ranking, records.get(r)?.proofMethod ?? "");
  const only = defaults.length === 1 ? defaults[0] : undefined;
  const asked = rows.filter(
    (r) => records.get(r)?.defaultRequested && (!only || r === only || proof(r) >= proof(only)),
  );
  let target = preferred && rows.find((r) => sameMapping(r, preferred));
  if (!target && only && (asked.length === 0 || asked.includes(only))) return [];
  if (!target) {
    const pool = asked.length > 0 ? asked : defaults.length > 1 ? defaults : rows;
    target = [...pool].sort(byPrecedence)[0] as MappingRow;
  }
  return rows.filter((r) => r.isDefault !== (r === target)).map((r) => ({ row: r, isDefault: r === target }));
}

function byPrecedence(a: MappingRow, b: MappingRow): number {
  return a.precedence - b.precedence || cmp(a.mspId, b.mspId) || cmp(a.ssi, b.ssi);
}

/**
 * The precedence that puts `key` ahead of every other mapping of its CSI (R17: a stricter
 * proof, or a lapsed conflict, supersedes); undefined when it is already alone at the top.
 */
export function promotedPrecedence(rows: readonly MappingRow[], key: MappingKey): number | undefined {
  const row = rows.find((r) => sameMapping(r, key));
  if (!row || rows.length === 0) return undefined;
  const top = Math.min(...rows.map((r) => r.precedence));
  const shared = rows.some((r) => !sameMapping(r, key) && r.precedence === top);
  return row.precedence > top || shared ? top - 1 : undefined;
}

/** What a completed claim does beside the CSI's other mappings (R17, R18). */
export interface ClaimDecision {
  /** The claimant's own earlier mapping (same MSP and SSI), which the claim replaces. */
  readonly same: MappingRow | undefined;
  /** Mappings of other holders (bulk mappings have no holder, so they are always others). */
  readonly others: readonly MappingRow[];
  /**
   * "sole": no other holder's mapping; "stricter": the claim's proof outranks every one of
   * theirs, so it supersedes them at once; "conflict": they keep precedence unless the
   * conflict lapses.
   */
  readonly outcome: "sole" | "stricter" | "conflict";
  /** The default flag and precedence the claimant's mapping is stored with. */
  readonly isDefault: boolean;
  readonly precedence: number;
  /** The CSI had no mapping here: peers that may hold older ones are told (R18). */
  readonly first: boolean;
}

/** Decides a claim of `record`, completed at `nowMs`, beside the CSI's stored mappings. */
export function decideClaim(
  rows: readonly MappingRow[],
  record: MappingRecord,
  ranking: ProofRanking,
  nowMs: number,
): ClaimDecision {
  const same = rows.find((x) => sameMapping(x, record));
  const others = rows.filter((x) => x !== same && !sameHolder(holderOf(x), record.userPublicKey));
  const stricter =
    others.length > 0 &&
    Math.max(...others.map((x) => rankOf(ranking, proofOf(x)))) < rankOf(ranking, record.proofMethod);
  return {
    same,
    others,
    outcome: others.length === 0 ? "sole" : stricter ? "stricter" : "conflict",
    isDefault: same?.isDefault ?? rows.length === 0,
    precedence: same?.precedence ?? nowMs,
    first: rows.length === 0,
  };
}

/** The mappings an invalidation names: one MSP's (and one SSI's) or, with an empty MSP, all. */
export function invalidationTargets(
  rows: readonly MappingRow[],
  target: { targetMspId: string; targetSsi: string },
): MappingRow[] {
  return rows.filter(
    (x) =>
      (target.targetMspId === "" || x.mspId === target.targetMspId) &&
      (target.targetSsi === "" || x.ssi === target.targetSsi),
  );
}

/**
 * Splits mappings into the acting holder's own (at the acting MSP, or under the holder's key),
 * which go at once, and other holders', which only a lapsed conflict removes (R17, R19).
 */
export function splitByHolder(
  rows: readonly MappingRow[],
  actingMspId: string,
  holderKey: Uint8Array,
): { own: MappingRow[]; foreign: MappingRow[] } {
  const own = rows.filter((x) => x.mspId === actingMspId || sameHolder(holderOf(x), holderKey));
  return { own, foreign: rows.filter((x) => !own.includes(x)) };
}

/**
 * Splits other holders' mappings by the strength of the acting holder's proof (R17's "stricter
 * proof supersedes"): those with a weaker proof (bulk, against a code) go at once, the rest only
 * through a conflict. Without this, an MSP that registers numbers in bulk could veto every
 * holder's removal or opt-out by contesting with its own key.
 */
export function splitByProof(
  rows: readonly MappingRow[],
  ranking: ProofRanking,
  actionProof: string,
): { weaker: MappingRow[]; contestable: MappingRow[] } {
  const rank = rankOf(ranking, actionProof);
  const weaker = rows.filter((x) => rankOf(ranking, proofOf(x)) < rank);
  return { weaker, contestable: rows.filter((x) => !weaker.includes(x)) };
}

/** A provider's report about an identifier (R16, D2). */
export interface ProviderEvent {
  readonly event: "disconnected" | "reassigned" | "ported";
  readonly effectiveAtMs: number;
  /** For "ported": the MSP of the operator the number left. */
  readonly donorMspId: string;
}

/**
 * The mappings an event makes outdated: only those created before it (a new holder's claim
 * survives a late feed), and for a port only the donor operator's.
 */
export function outdatedBy(rows: readonly MappingRow[], e: ProviderEvent): MappingRow[] {
  return rows.filter((r) => {
    if (decodeMappingRecord(r.record).createdAtMs >= e.effectiveAtMs) return false;
    return e.event !== "ported" || (e.donorMspId !== "" && r.mspId === e.donorMspId);
  });
}

/** A new holder is not bound by the previous holder's opt-out; a port keeps the holder. */
export function eventClearsOptOut(e: ProviderEvent, optedOutAtMs: number | undefined): boolean {
  return e.event !== "ported" && optedOutAtMs !== undefined && optedOutAtMs < e.effectiveAtMs;
}

/** What one bulk record does (G4). */
export type BulkDecision =
  | { readonly kind: "opted_out" }
  | { readonly kind: "unchanged" }
  | {
      readonly kind: "store";
      readonly isDefault: boolean;
      readonly precedence: number;
      readonly settle: boolean;
    };

/**
 * Decides a bulk record beside the CSI's stored mappings: an opted-out CSI takes none; the same
 * record again, or one the holder proved themselves, stays as it is; otherwise the record is
 * stored, keeping the earlier mapping's place, and a record that asks to be default but is not
 * makes the default be settled again. Precedence follows arrival, so bulk never overtakes.
 */
export function decideBulk(
  rows: readonly MappingRow[],
  record: MappingRecord,
  bytes: Uint8Array,
  optedOut: boolean,
  ranking: ProofRanking,
  nowMs: number,
): BulkDecision {
  if (rows.length === 0 && optedOut) return { kind: "opted_out" };
  const same = rows.find((m) => sameMapping(m, record));
  if (same && Buffer.from(same.record).equals(bytes)) return { kind: "unchanged" };
  // A holder's own proof outranks the MSP's bulk assertion of the same mapping.
  if (same && rankOf(ranking, proofOf(same)) > rankOf(ranking, "bulk")) return { kind: "unchanged" };
  const isDefault = same?.isDefault ?? rows.length === 0;
  return {
    kind: "store",
    isDefault,
    precedence: same?.precedence ?? nowMs,
    settle: !isDefault && record.defaultRequested,
  };
}

/** The most mappings one CSI holds at a DP: in all, and of one MSP (ClaimPolicy). */
export interface MappingCaps {
  readonly perCsi: number;
  readonly perMsp: number;
}

/**
 * Which cap a new mapping `key` would break beside the CSI's `rows` (the mappings that stay),
 * if any: "msp" when its MSP holds `perMsp` of them already, "csi" when the CSI holds `perCsi`.
 * A mapping already stored (a renewal, a re-registration) adds nothing and breaks none, so a
 * CSI over a lowered cap keeps its mappings and may renew them.
 */
export function capBroken(
  rows: readonly MappingRow[],
  key: MappingKey,
  caps: MappingCaps,
): "msp" | "csi" | undefined {
  if (rows.some((r) => sameMapping(r, key))) return undefined;
  if (rows.filter((r) => r.mspId === key.mspId).length >= caps.perMsp) return "msp";
  if (rows.length >= caps.perCsi) return "csi";
  return undefined;
}

/**
 * What a peer DP's first mapping (R18) does to older mappings of other holders here: those
 * with a weaker proof go at once, the rest only through a conflict.
 */
export function olderThanPeerMapping(
  rows: readonly MappingRow[],
  record: MappingRecord,
  ranking: ProofRanking,
): { weaker: MappingRow[]; contestable: MappingRow[] } {
  const older = rows.filter(
    (x) =>
      !sameHolder(holderOf(x), record.userPublicKey) &&
      decodeMappingRecord(x.record).createdAtMs < record.createdAtMs,
  );
  const weaker = older.filter((x) => rankOf(ranking, proofOf(x)) < rankOf(ranking, record.proofMethod));
  return { weaker, contestable: older.filter((x) => !weaker.includes(x)) };
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
