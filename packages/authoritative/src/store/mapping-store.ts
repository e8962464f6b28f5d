// The store's interface as the rest of the DP uses it (store.ts implements it over SQLite).
import type {
  ChallengeRow,
  ChangeRow,
  ConflictRow,
  EnrolledMsp,
  MappingRow,
  NoticeBody,
  NoticeRow,
  OptOutEvidence,
  OptOutRow,
  PeerRequestRow,
  PrivateEntryRow,
} from "./rows.js";
import type { WriterState } from "./writer/store.js";

/** The DP's store. Writes that must happen together run inside `transaction`. */
export interface MappingStore {
  /** Mappings of one canonical CSI, by preference: default first, then precedence, MSP, SSI. */
  mappings(csi: string): MappingRow[];
  mapping(csi: string, mspId: string, ssi: string): MappingRow | undefined;
  /** Inserts or replaces a mapping. */
  putMapping(row: MappingRow): void;
  /** Changes the ordering fields (and the countersignature that covers the default flag). */
  updateMapping(
    csi: string,
    mspId: string,
    ssi: string,
    fields: { isDefault: boolean; precedence: number; dpSig: Uint8Array; withheld?: boolean },
  ): void;
  deleteMapping(csi: string, mspId: string, ssi: string): boolean;
  /** Mappings that expired at `nowMs`, at most `limit`. */
  expired(nowMs: number, limit: number): MappingRow[];
  /** Up to `limit` CSIs after `after` (in key order) that have mappings, or (`optedOut`) an opt-out. */
  csisAfter(after: string, limit: number, optedOut?: boolean): string[];
  count(): number;
  /** Mappings of the v1 schema that are kept but not served. */
  legacyCount(): number;
  optedOutAt(csi: string): number | undefined;
  /** The CSI's opt-out with the holder's signed statement, when it has one. */
  optOut(csi: string): OptOutRow | undefined;
  setOptOut(csi: string, atMs: number, evidence?: OptOutEvidence): void;
  clearOptOut(csi: string): void;
  insertChallenge(c: ChallengeRow): void;
  challenge(id: string): ChallengeRow | undefined;
  updateChallenge(id: string, attempts: number, state: ChallengeRow["state"]): void;
  deleteChallengesBefore(ms: number): number;
  insertConflict(c: ConflictRow, targets: readonly { mspId: string; ssi: string }[]): void;
  conflict(id: string): ConflictRow | undefined;
  conflictTargets(id: string): { mspId: string; ssi: string }[];
  setConflictState(id: string, state: ConflictRow["state"]): void;
  dueConflicts(nowMs: number, limit: number): ConflictRow[];
  /** Conflicts still open (metrics). */
  openConflictCount(): number;
  openConflicts(csi: string): ConflictRow[];
  /** Drops at most `limit` conflicts settled before `ms`, with their targets; returns how many. */
  deleteSettledConflictsBefore(ms: number, limit: number): number;
  /** Drops at most `limit` bulk sessions last written before `ms`; returns how many. */
  deleteIdleBulkSessions(ms: number, limit: number): number;
  addNotice(mspId: string, atMs: number, body: NoticeBody): number;
  noticesSince(mspId: string, seq: number, limit: number): NoticeRow[];
  /** Drops the oldest notices while they are older than `ms` (a prefix by seq; at most 10,000 a call). */
  deleteNoticesBefore(ms: number): number;
  bulkCommitted(mspId: string, sessionId: string): number;
  setBulkCommitted(mspId: string, sessionId: string, committed: number, atMs: number): void;
  enrol(msp: EnrolledMsp): void;
  enrolled(mspId: string): EnrolledMsp | undefined;
  enrolledByIdentity(tlsIdentity: string): EnrolledMsp[];
  listEnrolled(): EnrolledMsp[];
  /** Identity of this store's change log; a new store gets a new one. */
  logId(): string;
  /** Last sequence number given (0 for none) and the oldest still held (latest + 1 when empty). */
  logBounds(): { oldest: number; latest: number };
  changeAt(seq: number): ChangeRow | undefined;
  changesSince(seq: number, limit: number): ChangeRow[];
  /**
   * Drops the oldest events while they are older than `ms` (a prefix of the log: it stops at the
   * first younger one, so pruning never leaves a hole), at most `limit`; returns how many.
   */
  pruneChangesBefore(ms: number, limit: number): number;
  /**
   * Calls `listener` with the CSI at each write to its mappings or opt-out, when it is made
   * (inside its transaction, which may still roll back): what holds copies of a CSI's answer
   * drops them there, before any later read.
   */
  onMappingsTouched(listener: (csi: string) => void): void;
  /** Calls `listener` after each commit that added to the change log. */
  onChangeLogged(listener: () => void): void;
  /** The writer's own tables and their log, by row (replication of the writer's state). */
  readonly writer: WriterState;
  /** Calls `listener` after each commit that added to the writer log. */
  onWriterLogged(listener: () => void): void;
  addPeerRequest(r: Omit<PeerRequestRow, "id" | "attempts" | "lastError">): void;
  duePeerRequests(nowMs: number, limit: number): PeerRequestRow[];
  reschedulePeerRequest(id: number, attempts: number, nextAtMs: number, error: string): void;
  deletePeerRequest(id: number): void;
  peerRequestCount(): number;
  /** A value of the store's own settings (store_meta), and setting one (undefined removes it). */
  meta(key: string): string | undefined;
  setMeta(key: string, value: string | undefined): void;
  /** Adds a change event for `csi` (the private table's, once a CSI's entry caught up). */
  logChange(csi: string, atMs: number): void;
  /** A secondary's copy of the primary's event `seq` (the store is marked a replica, so no trigger logs). */
  logChangeAt(seq: number, csi: string, atMs: number): void;
  /** Empties the change log and makes `latest` its last sequence number (a secondary after a copy). */
  resetLog(latest: number): void;
  /** How many times this process replaced the change log (resetLog): a watcher's stream ends when it moves. */
  logGeneration(): number;
  /** The private-lookup table of key epoch `epoch` (private-table.ts). */
  privateEntry(epoch: number, csi: string): PrivateEntryRow | undefined;
  putPrivateEntry(epoch: number, row: PrivateEntryRow): void;
  deletePrivateEntry(epoch: number, csi: string): boolean;
  /** Deletes up to `limit` entries of `epoch`; returns how many went. */
  clearPrivate(epoch: number, limit: number): number;
  /** The least key epoch above `after` that has private-lookup entries (an index seek). */
  privateEpochAfter(after: number): number | undefined;
  /** The sealed entries whose position is in [first, last] (one bucket). */
  privateBucket(epoch: number, first: number, last: number): Uint8Array[];
  /** Up to `limit` CSIs whose entry's seal ends before `beforeMs`, soonest first. */
  privateDue(epoch: number, beforeMs: number, limit: number, offset?: number): string[];
  /**
   * Runs `f` in one transaction as replication (a secondary applying its primary's changes):
   * the only way a secondary's mappings, opt-outs, logs and writer tables change.
   */
  applyReplicated<T>(f: () => T): T;
  /** Runs `f` in one transaction (nested calls join the outer one). */
  transaction<T>(f: () => T): T;
  /** Whether a transaction is open: what is read now may still be rolled back. */
  inTransaction(): boolean;
  /** The durability SQLite runs with, read back from it. */
  durability(): Durability;
  close(): void;
}

/**
 * How a commit reaches the disk. "full" (the default): WAL with synchronous=FULL, the WAL is
 * synced at every commit, so a claim, removal, feed message or bulk batch acknowledged to its
 * caller survives a power loss or an OS crash (one fsync per transaction). "normal": the WAL is
 * synced only at checkpoints, so a power loss may undo the last commits (never corrupt the
 * store): acknowledged mappings vanish and their change-log sequence numbers are given again
 * to other events (resolvers see "behind" or "diverged" and resync), and notice sequence
 * numbers an MSP has seen are reused, so it skips the new notices that get them.
 */
export type Durability = "full" | "normal";

/** Options of openMappingStore. */
export interface MappingStoreOptions {
  /** Default "full". */
  readonly durability?: Durability;
}
