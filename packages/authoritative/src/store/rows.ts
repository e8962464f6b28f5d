// The rows of a DP's store as the rest of the DP sees them (the SQL shapes are in sql-rows.ts),
// and the one mapper from a stored mapping to the domain Mapping that answers carry.
import { decodeMappingRecord, type Mapping, type OptOutProof } from "@mimi/core";

/** An MSP enrolled at this DP (G1). */
export interface EnrolledMsp {
  readonly mspId: string;
  readonly tlsIdentity: string;
  readonly enrolledUsers: number;
  readonly enrolledAtMs: number;
  /** Ed25519 key the MSP signs mappings with. */
  readonly signingPublicKey: Uint8Array;
  /** Trusted to register mappings in bulk (G4). */
  readonly mayBulk: boolean;
}

/** A stored mapping: the signed record with the DP's current ordering and default decision. */
export interface MappingRow {
  readonly csi: string;
  readonly mspId: string;
  readonly ssi: string;
  readonly isDefault: boolean;
  /** Sort key among the CSI's mappings: lower takes precedence (R17). */
  readonly precedence: number;
  readonly expiresAtMs: number;
  readonly record: Uint8Array;
  readonly userSig: Uint8Array;
  readonly mspSig: Uint8Array;
  readonly dpSig: Uint8Array;
  /**
   * A claim waiting for its conflict: stored, never served or made default, so that the
   * existing holders' MSPs do not learn who claimed (R17's notice names nobody).
   */
  readonly withheld?: boolean;
}

/** A proof-of-possession challenge; only a keyed hash of its code is kept. */
export interface ChallengeRow {
  readonly id: string;
  readonly mspId: string;
  readonly csi: string;
  readonly action: "claim" | "invalidate" | "opt_out";
  /** Action parameters not in the statement (JSON). */
  readonly params: string;
  readonly statement: Uint8Array;
  readonly codeHash: Uint8Array;
  readonly attempts: number;
  readonly expiresAtMs: number;
  readonly state: "open" | "used" | "exhausted";
}

/** A pending change other holders' MSPs may contest (R17, G3). */
export interface ConflictRow {
  readonly id: string;
  readonly csi: string;
  readonly claimantMsp: string;
  /** The claimant's new mapping; empty for an invalidation of other holders' mappings. */
  readonly newMsp: string;
  readonly newSsi: string;
  readonly replace: boolean;
  readonly makeDefault: boolean;
  readonly openedAtMs: number;
  readonly deadlineMs: number;
  readonly state: "open" | "contested" | "lapsed" | "void";
  /** An opt-out's conflict: when it lapses, the CSI is opted out once no mapping is left. */
  readonly optOut?: boolean;
  /** An opt-out's conflict: the holder's signed opt-out, kept for the opt-out it leads to. */
  readonly optOutEvidence?: OptOutEvidence;
}

/**
 * The holder's signed opt-out as the DP verified it, kept so that OPTED_OUT answers can prove
 * the holder's choice (OptOutProof in common.proto).
 */
export interface OptOutEvidence extends OptOutProof {
  /** The MSP key that verified it; once the registry publishes another, it proves nothing. */
  readonly mspKey: Uint8Array;
}

/** A CSI's opt-out: when, and the holder's signed statement (absent for opt-outs from before v6). */
export interface OptOutRow {
  readonly atMs: number;
  readonly evidence?: OptOutEvidence;
}

/** A notice to an MSP about one of its users' mappings. */
export interface NoticeRow {
  readonly seq: number;
  readonly mspId: string;
  readonly atMs: number;
  readonly body: NoticeBody;
}
export interface NoticeBody {
  readonly kind:
    | "conflict_opened"
    | "conflict_closed"
    | "precedence_lost"
    | "mapping_removed"
    | "default_changed";
  readonly csi: string;
  readonly ssi: string;
  readonly conflictId?: string;
  readonly deadlineMs?: number;
  readonly reason: string;
}

/** A first-mapping invalidation request waiting to reach a peer DP (R18). */
export interface PeerRequestRow {
  readonly id: number;
  readonly peerDp: string;
  /** The new mapping, by key; it is read when sent, so the peer sees its current signatures. */
  readonly csi: string;
  readonly mspId: string;
  readonly ssi: string;
  readonly createdAtMs: number;
  readonly attempts: number;
  readonly nextAtMs: number;
  readonly lastError: string;
}

/** One event of the change log: something about this CSI's mappings or opt-out changed. */
export interface ChangeRow {
  readonly seq: number;
  readonly csi: string;
  readonly atMs: number;
}

/** The domain form of a stored mapping: what lookups answer and peers are sent. */
export function mappingOfRow(row: MappingRow): Mapping {
  const r = decodeMappingRecord(row.record);
  return {
    mspId: row.mspId,
    ssi: row.ssi,
    isDefault: row.isDefault,
    tags: r.tags,
    createdAtMs: r.createdAtMs,
    proofMethod: r.proofMethod,
    expiresAtMs: row.expiresAtMs,
    signed: {
      record: row.record,
      userSignature: row.userSig,
      mspSignature: row.mspSig,
      dpSignature: row.dpSig,
    },
  };
}

/** A CSI's entry in the private-lookup table of one key epoch (private-table.ts). */
export interface PrivateEntryRow {
  readonly csi: string;
  /** 32 bits of the PRF output: the bucket is its top bits. */
  readonly position: number;
  readonly tag: Uint8Array;
  readonly entryKey: Uint8Array;
  /** Digest of the answer without its seal times. */
  readonly content: Uint8Array;
  /** The sealed entry as buckets hold it. */
  readonly entry: Uint8Array;
  /** When the answer sealed inside it expires. */
  readonly sealedUntilMs: number;
}
