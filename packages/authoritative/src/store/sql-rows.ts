// The rows of a DP's store as SQLite returns them, and their conversion to the rows of rows.ts.
// Only store.ts reads them; they are apart so that store.ts stays one screenful of statements.
import type {
  ChallengeRow,
  ConflictRow,
  EnrolledMsp,
  MappingRow,
  OptOutEvidence,
  OptOutRow,
  PeerRequestRow,
  PrivateEntryRow,
} from "./rows.js";

/** A row of `mappings`. */
export interface MappingSqlRow {
  csi: string;
  msp_id: string;
  ssi: string;
  is_default: number;
  precedence: number;
  expires_at_ms: number;
  record: Buffer;
  user_sig: Buffer;
  msp_sig: Buffer;
  dp_sig: Buffer;
  withheld: number;
}

/** A row of `enrolled_msps`. */
export interface MspRow {
  msp_id: string;
  tls_identity: string;
  enrolled_users: number;
  enrolled_at_ms: number;
  signing_key: Buffer;
  may_bulk: number;
}

/** A row of `peer_requests`. */
export interface PeerSqlRow {
  id: number;
  peer_dp: string;
  csi: string;
  msp_id: string;
  ssi: string;
  created_at_ms: number;
  attempts: number;
  next_at_ms: number;
  last_error: string;
}

/** A row of `change_log`. */
export interface PrivateSqlRow {
  epoch: number;
  csi: string;
  position: number;
  tag: Uint8Array;
  entry_key: Uint8Array;
  content: Uint8Array;
  entry: Uint8Array;
  sealed_until_ms: number;
}

export interface ChangeSqlRow {
  seq: number;
  csi: string;
  at_ms: number;
}

/** A row of `challenges`. */
export interface ChallengeSqlRow {
  id: string;
  msp_id: string;
  csi: string;
  action: string;
  params: string;
  statement: Buffer;
  code_hash: Buffer;
  attempts: number;
  expires_at_ms: number;
  state: string;
}

/** A row of `conflicts`. */
export interface ConflictSqlRow {
  id: string;
  csi: string;
  claimant_msp: string;
  new_msp: string;
  new_ssi: string;
  replace: number;
  make_default: number;
  opened_at_ms: number;
  deadline_ms: number;
  state: string;
  opt_out: number;
  opt_out_statement: Buffer;
  opt_out_user_sig: Buffer;
  opt_out_msp_sig: Buffer;
  opt_out_msp_key: Buffer;
}

/** A row of `opt_outs`. */
export interface OptOutSqlRow {
  at_ms: number;
  statement: Buffer;
  user_sig: Buffer;
  msp_sig: Buffer;
  msp_key: Buffer;
}

/** Evidence from its four columns; undefined when the statement is empty (kept from before v6). */
function evidenceOf(
  statement: Buffer,
  userSig: Buffer,
  mspSig: Buffer,
  mspKey: Buffer,
): OptOutEvidence | undefined {
  if (statement.length === 0) return undefined;
  return {
    statement: new Uint8Array(statement),
    userSignature: new Uint8Array(userSig),
    mspSignature: new Uint8Array(mspSig),
    mspKey: new Uint8Array(mspKey),
  };
}

/** The opt-out an `opt_outs` row holds. */
export function optOutOf(r: OptOutSqlRow): OptOutRow {
  const evidence = evidenceOf(r.statement, r.user_sig, r.msp_sig, r.msp_key);
  return { atMs: r.at_ms, ...(evidence && { evidence }) };
}

/** The SQL parameters of opt-out evidence; empty blobs for none. */
export function evidenceParams(e: OptOutEvidence | undefined) {
  const none = new Uint8Array(0);
  return {
    statement: e?.statement ?? none,
    userSig: e?.userSignature ?? none,
    mspSig: e?.mspSignature ?? none,
    mspKey: e?.mspKey ?? none,
  };
}

/** The conflict a `conflicts` row holds. */
export function conflictOf(r: ConflictSqlRow): ConflictRow {
  return {
    id: r.id,
    csi: r.csi,
    claimantMsp: r.claimant_msp,
    newMsp: r.new_msp,
    newSsi: r.new_ssi,
    replace: r.replace === 1,
    makeDefault: r.make_default === 1,
    openedAtMs: r.opened_at_ms,
    deadlineMs: r.deadline_ms,
    state: r.state as ConflictRow["state"],
    optOut: r.opt_out === 1,
    ...optional(evidenceOf(r.opt_out_statement, r.opt_out_user_sig, r.opt_out_msp_sig, r.opt_out_msp_key)),
  };
}

/**
 * A `mappings` row as the lookup statement reads it (SQL.mappings, in raw mode): the record and
 * its three signatures in one blob, after their first three lengths.
 */
export type MappingLookupSqlRow = [
  msp_id: string,
  ssi: string,
  is_default: number,
  precedence: number,
  expires_at_ms: number,
  withheld: number,
  record_bytes: number,
  user_sig_bytes: number,
  msp_sig_bytes: number,
  signed: Buffer,
];

/** The mapping of `csi` a lookup row holds; its byte fields are views of the row's blob. */
export function mappingOfLookup(csi: string, r: MappingLookupSqlRow): MappingRow {
  const [
    mspId,
    ssi,
    isDefault,
    precedence,
    expiresAtMs,
    withheld,
    recordBytes,
    userSigBytes,
    mspSigBytes,
    b,
  ] = r;
  const userSigAt = recordBytes;
  const mspSigAt = userSigAt + userSigBytes;
  const dpSigAt = mspSigAt + mspSigBytes;
  const view = (from: number, to: number) => new Uint8Array(b.buffer, b.byteOffset + from, to - from);
  return {
    csi,
    mspId,
    ssi,
    isDefault: isDefault === 1,
    precedence,
    expiresAtMs,
    record: view(0, userSigAt),
    userSig: view(userSigAt, mspSigAt),
    mspSig: view(mspSigAt, dpSigAt),
    dpSig: view(dpSigAt, b.byteLength),
    ...(withheld === 1 ? { withheld: true } : {}),
  };
}

/** The mapping a `mappings` row holds; its byte fields are views of the row's buffers, not copies. */
export function mappingOf(r: MappingSqlRow): MappingRow {
  return {
    csi: r.csi,
    mspId: r.msp_id,
    ssi: r.ssi,
    isDefault: r.is_default === 1,
    precedence: r.precedence,
    expiresAtMs: r.expires_at_ms,
    record: new Uint8Array(r.record.buffer, r.record.byteOffset, r.record.byteLength),
    userSig: new Uint8Array(r.user_sig.buffer, r.user_sig.byteOffset, r.user_sig.byteLength),
    mspSig: new Uint8Array(r.msp_sig.buffer, r.msp_sig.byteOffset, r.msp_sig.byteLength),
    dpSig: new Uint8Array(r.dp_sig.buffer, r.dp_sig.byteOffset, r.dp_sig.byteLength),
    ...(r.withheld === 1 ? { withheld: true } : {}),
  };
}

/** The enrolled MSP an `enrolled_msps` row holds. */
export function mspOf(r: MspRow): EnrolledMsp {
  return {
    mspId: r.msp_id,
    tlsIdentity: r.tls_identity,
    enrolledUsers: r.enrolled_users,
    enrolledAtMs: r.enrolled_at_ms,
    signingPublicKey: new Uint8Array(r.signing_key),
    mayBulk: r.may_bulk === 1,
  };
}

function optional(optOutEvidence: OptOutEvidence | undefined) {
  return optOutEvidence ? { optOutEvidence } : {};
}

/** The challenge a `challenges` row holds. */
export function challengeOf(r: ChallengeSqlRow): ChallengeRow {
  return {
    id: r.id,
    mspId: r.msp_id,
    csi: r.csi,
    action: r.action as ChallengeRow["action"],
    params: r.params,
    statement: new Uint8Array(r.statement),
    codeHash: new Uint8Array(r.code_hash),
    attempts: r.attempts,
    expiresAtMs: r.expires_at_ms,
    state: r.state as ChallengeRow["state"],
  };
}

/** The queued peer request a `peer_requests` row holds. */
export function peerRequestOf(r: PeerSqlRow): PeerRequestRow {
  return {
    id: r.id,
    peerDp: r.peer_dp,
    csi: r.csi,
    mspId: r.msp_id,
    ssi: r.ssi,
    createdAtMs: r.created_at_ms,
    attempts: r.attempts,
    nextAtMs: r.next_at_ms,
    lastError: r.last_error,
  };
}

/** The private-table entry a `private_entries` row holds. */
export function privateEntryOf(r: PrivateSqlRow): PrivateEntryRow {
  return {
    csi: r.csi,
    position: r.position,
    tag: r.tag,
    entryKey: r.entry_key,
    content: r.content,
    entry: r.entry,
    sealedUntilMs: r.sealed_until_ms,
  };
}
