// The authoritative's store in SQLite (WAL), kept on the DP's own disk in its jurisdiction
// (H2): signed mappings, enrolled MSPs, challenges (code hashes only), conflicts, notices,
// opt-outs and bulk sessions. Lookups are one prepared statement on the primary key.

import {
  createPrivateFile,
  DiscoveryError,
  restrictFile,
  schemaDriftBetween,
  sqliteFilesOf,
} from "@mimi/core";
import Database, { type Statement } from "better-sqlite3";
import type { Durability, MappingStore, MappingStoreOptions } from "./mapping-store.js";
import type { NoticeBody } from "./rows.js";
import { MIGRATIONS } from "./schema.js";
import { SQL } from "./sql.js";
import {
  type ChallengeSqlRow,
  type ChangeSqlRow,
  type ConflictSqlRow,
  challengeOf,
  conflictOf,
  evidenceParams,
  type MappingLookupSqlRow,
  type MappingSqlRow,
  type MspRow,
  mappingOf,
  mappingOfLookup,
  mspOf,
  type OptOutSqlRow,
  optOutOf,
  type PeerSqlRow,
  type PrivateSqlRow,
  peerRequestOf,
  privateEntryOf,
} from "./sql-rows.js";
import { writerState } from "./writer/store.js";

export type { Durability, MappingStore, MappingStoreOptions };

/**
 * Opens (creating when absent) the store at `path`; ":memory:" for tests. A new store file is
 * made 0600 before SQLite opens it, and its -wal and -shm are set to 0600 after.
 */
export function openMappingStore(path: string, options: MappingStoreOptions = {}): MappingStore {
  let db: Database.Database;
  try {
    if (path !== ":memory:") createPrivateFile(path);
    db = new Database(path);
    db.pragma("journal_mode = WAL");
    db.pragma(`synchronous = ${options.durability === "normal" ? "NORMAL" : "FULL"}`);
    // Lookups join a mapping's blobs as TEXT (sql.ts): byte for byte only in a UTF-8 database
    // (UTF-16 would drop an odd last byte). A new store is UTF-8; one made otherwise is refused.
    const encoding = db.pragma("encoding", { simple: true });
    if (encoding !== "UTF-8") throw new Error(`its text encoding is ${String(encoding)}, not UTF-8`);
    if (path !== ":memory:") for (const f of sqliteFilesOf(path).slice(1)) restrictFile(f);
    migrate(db);
  } catch (err) {
    throw new DiscoveryError(
      "store_failure",
      `cannot open mapping store ${path}: ${(err as Error).message}`,
      {
        cause: err,
      },
    );
  }
  const q = {
    mappings: db.prepare<[string], MappingLookupSqlRow>(SQL.mappings).raw(true),
    mapping: db.prepare<[string, string, string], MappingSqlRow>(SQL.mapping),
    putMapping: db.prepare(SQL.putMapping),
    updateMapping: db.prepare(SQL.updateMapping),
    deleteMapping: db.prepare<[string, string, string]>(SQL.deleteMapping),
    expired: db.prepare<[number, number], MappingSqlRow>(SQL.expired),
    mappedCsisAfter: db.prepare<[string, number], { csi: string }>(SQL.mappedCsisAfter),
    optedOutCsisAfter: db.prepare<[string, number], { csi: string }>(SQL.optedOutCsisAfter),
    count: db.prepare<[], { n: number }>(SQL.count),
    legacyCount: db.prepare<[], { n: number }>(SQL.legacyCount),
    optedOut: db.prepare<[string], OptOutSqlRow>(SQL.optedOut),
    setOptOut: db.prepare(SQL.setOptOut),
    clearOptOut: db.prepare<[string]>(SQL.clearOptOut),
    insertChallenge: db.prepare(SQL.insertChallenge),
    challenge: db.prepare<[string], ChallengeSqlRow>(SQL.challenge),
    updateChallenge: db.prepare<[number, string, string]>(SQL.updateChallenge),
    deleteChallenges: db.prepare<[number]>(SQL.deleteChallenges),
    insertConflict: db.prepare(SQL.insertConflict),
    insertTarget: db.prepare<[string, string, string]>(SQL.insertTarget),
    conflict: db.prepare<[string], ConflictSqlRow>(SQL.conflict),
    targets: db.prepare<[string], { msp_id: string; ssi: string }>(SQL.targets),
    setConflictState: db.prepare<[string, string]>(SQL.setConflictState),
    openConflictCount: db.prepare<[], { n: number }>(SQL.openConflictCount),
    dueConflicts: db.prepare<[number, number], ConflictSqlRow>(SQL.dueConflicts),
    openConflicts: db.prepare<[string], ConflictSqlRow>(SQL.openConflicts),
    settledConflictsBefore: db.prepare<[number, number], { id: string }>(SQL.settledConflictsBefore),
    deleteConflictTargets: db.prepare<[string]>(SQL.deleteConflictTargets),
    deleteConflict: db.prepare<[string]>(SQL.deleteConflict),
    deleteIdleBulkSessions: db.prepare<[number, number]>(SQL.deleteIdleBulkSessions),
    addNotice: db.prepare<[string, number, string]>(SQL.addNotice),
    noticesSince: db.prepare<
      [string, number, number],
      { seq: number; msp_id: string; at_ms: number; body: string }
    >(SQL.noticesSince),
    oldestNotices: db.prepare<[number], { seq: number; at_ms: number }>(SQL.oldestNotices),
    deleteNoticesThrough: db.prepare<[number]>(SQL.deleteNoticesThrough),
    bulkCommitted: db.prepare<[string, string], { committed: number }>(SQL.bulkCommitted),
    setBulk: db.prepare<[string, string, number, number]>(SQL.setBulk),
    enrol: db.prepare(SQL.enrol),
    enrolled: db.prepare<[string], MspRow>(SQL.enrolled),
    byIdentity: db.prepare<[string], MspRow>(SQL.byIdentity),
    listEnrolled: db.prepare<[], MspRow>(SQL.listEnrolled),
    addPeer: db.prepare(SQL.addPeer),
    duePeers: db.prepare<[number, number], PeerSqlRow>(SQL.duePeers),
    reschedulePeer: db.prepare<[number, number, string, number]>(SQL.reschedulePeer),
    deletePeer: db.prepare<[number]>(SQL.deletePeer),
    countPeers: db.prepare<[], { n: number }>(SQL.countPeers),
    logId: db.prepare<[], { value: string }>(SQL.logId),
    latestSeq: db.prepare<[], { seq: number }>(SQL.latestSeq),
    oldestSeq: db.prepare<[], { seq: number | null }>(SQL.oldestSeq),
    changeAt: db.prepare<[number], ChangeSqlRow>(SQL.changeAt),
    changesSince: db.prepare<[number, number], ChangeSqlRow>(SQL.changesSince),
    oldestChanges: db.prepare<[number], { seq: number; at_ms: number }>(SQL.oldestChanges),
    pruneChangesThrough: db.prepare<[number]>(SQL.pruneChangesThrough),
    logChange: db.prepare<[string, number]>(SQL.logChange),
    logChangeAt: db.prepare<[number, string, number]>(SQL.logChangeAt),
    forgetLogSeq: db.prepare(SQL.forgetLogSeq),
    setLogSeq: db.prepare<[number]>(SQL.setLogSeq),
    meta: db.prepare<[string], { value: string }>(SQL.meta),
    setMeta: db.prepare<[string, string]>(SQL.setMeta),
    deleteMeta: db.prepare<[string]>(SQL.deleteMeta),
    privateEntry: db.prepare<[number, string], PrivateSqlRow>(SQL.privateEntry),
    putPrivateEntry: db.prepare(SQL.putPrivateEntry),
    deletePrivateEntry: db.prepare<[number, string]>(SQL.deletePrivateEntry),
    privateBucket: db.prepare<[number, number, number], { entry: Uint8Array }>(SQL.privateBucket),
    clearPrivate: db.prepare<[number, number, number]>(SQL.clearPrivate),
    privateDue: db.prepare<[number, number, number, number], { csi: string }>(SQL.privateDue),
    privateEpochAfter: db.prepare<[number], { epoch: number }>(SQL.privateEpochAfter),
  };
  const latestSeq = () => q.latestSeq.get()?.seq ?? 0;
  const writer = writerState(db);
  // Bumped whenever the change log is replaced (a secondary's copy), so watchers of the old one stop.
  let generation = 0;
  // Watchers are told after commit, never from inside a transaction that may still roll back;
  // those of the change log and of the writer log (replication) apart.
  const listeners: (() => void)[] = [];
  const writerListeners: (() => void)[] = [];
  let announced = latestSeq();
  let writerAnnounced = writer.latest();
  const announce = () => {
    if (db.inTransaction) return;
    if (listeners.length > 0 && latestSeq() !== announced) {
      announced = latestSeq();
      for (const l of listeners) l();
    }
    if (writerListeners.length > 0 && writer.latest() !== writerAnnounced) {
      writerAnnounced = writer.latest();
      for (const l of writerListeners) l();
    }
  };
  // Told of every write to a CSI's mappings or opt-out as it is made, before its commit: for
  // what keeps copies of answers to drop them (a write rolled back only costs a re-read).
  const touchListeners: ((csi: string) => void)[] = [];
  const touched = (csi: string) => {
    for (const l of touchListeners) l(csi);
  };
  const wrap = <T>(what: string, f: () => T): T => {
    try {
      return f();
    } catch (err) {
      if (err instanceof DiscoveryError) throw err;
      throw new DiscoveryError("store_failure", `${what} failed: ${(err as Error).message}`, { cause: err });
    }
  };
  const w =
    <A extends unknown[], T>(what: string, f: (...a: A) => T) =>
    (...a: A) =>
      wrap(what, () => f(...a));
  // Writes that may touch mappings or opt-outs (the change log) or the writer's tables (its log).
  // A secondary's store takes only its primary's changes (applyReplicated): a local write
  // there would be logged nowhere and never reach the others, so it is refused.
  let replica = q.meta.get("replica") !== undefined;
  let applying = 0;
  const logged =
    <A extends unknown[], T>(what: string, f: (...a: A) => T) =>
    (...a: A) => {
      if (replica && applying === 0) {
        throw new DiscoveryError(
          "failed_precondition",
          `${what} refused: this store is a secondary's, written only by replication`,
        );
      }
      const r = wrap(what, () => f(...a));
      announce();
      return r;
    };
  return {
    mappings: w("lookup", (csi) => q.mappings.all(csi).map((r) => mappingOfLookup(csi, r))),
    mapping: w("lookup", (csi, msp, ssi) => {
      const r = q.mapping.get(csi, msp, ssi);
      return r && mappingOf(r);
    }),
    putMapping: logged("store", (m) => {
      touched(m.csi);
      q.putMapping.run({
        csi: m.csi,
        msp_id: m.mspId,
        ssi: m.ssi,
        is_default: m.isDefault ? 1 : 0,
        precedence: m.precedence,
        expires_at_ms: m.expiresAtMs,
        record: m.record,
        user_sig: m.userSig,
        msp_sig: m.mspSig,
        dp_sig: m.dpSig,
        withheld: m.withheld ? 1 : 0,
      });
    }),
    updateMapping: logged("store", (csi, msp, ssi, f) => {
      touched(csi);
      q.updateMapping.run({
        csi,
        msp_id: msp,
        ssi,
        is_default: f.isDefault ? 1 : 0,
        precedence: f.precedence,
        dp_sig: f.dpSig,
        withheld: f.withheld === undefined ? null : f.withheld ? 1 : 0,
      });
    }),
    deleteMapping: logged("delete", (csi, msp, ssi) => {
      touched(csi);
      return q.deleteMapping.run(csi, msp, ssi).changes > 0;
    }),
    expired: w("expiry scan", (now, limit) => q.expired.all(now, limit).map(mappingOf)),
    csisAfter: w("filter build", (after, limit, optedOut = false) =>
      (optedOut ? q.optedOutCsisAfter : q.mappedCsisAfter).all(after, limit).map((r) => r.csi),
    ),
    count: () => q.count.get()?.n ?? 0,
    legacyCount: () => q.legacyCount.get()?.n ?? 0,
    optedOutAt: (csi) => q.optedOut.get(csi)?.at_ms,
    optOut: (csi) => {
      const r = q.optedOut.get(csi);
      return r && optOutOf(r);
    },
    setOptOut: logged("opt-out", (csi, atMs, e) => {
      touched(csi);
      q.setOptOut.run({ csi, atMs, ...evidenceParams(e) });
    }),
    clearOptOut: logged("opt-out", (csi) => {
      touched(csi);
      q.clearOptOut.run(csi);
    }),
    insertChallenge: logged(
      "challenge",
      (c) => void q.insertChallenge.run({ ...c, statement: c.statement, codeHash: c.codeHash }),
    ),
    challenge: (id) => {
      const r = q.challenge.get(id);
      return r && challengeOf(r);
    },
    updateChallenge: logged(
      "challenge",
      (id, attempts, state) => void q.updateChallenge.run(attempts, state, id),
    ),
    deleteChallengesBefore: logged("challenge cleanup", (ms) => q.deleteChallenges.run(ms).changes),
    insertConflict: logged("conflict", (c, targets) => {
      const { optOutEvidence, ...fields } = c;
      q.insertConflict.run({
        ...fields,
        replace: c.replace ? 1 : 0,
        makeDefault: c.makeDefault ? 1 : 0,
        optOut: c.optOut ? 1 : 0,
        ...evidenceParams(optOutEvidence),
      });
      for (const t of targets) q.insertTarget.run(c.id, t.mspId, t.ssi);
    }),
    conflict: (id) => {
      const r = q.conflict.get(id);
      return r && conflictOf(r);
    },
    conflictTargets: (id) => q.targets.all(id).map((t) => ({ mspId: t.msp_id, ssi: t.ssi })),
    setConflictState: logged("conflict", (id, state) => void q.setConflictState.run(state, id)),
    dueConflicts: (now, limit) => q.dueConflicts.all(now, limit).map(conflictOf),
    openConflictCount: () => q.openConflictCount.get()?.n ?? 0,
    openConflicts: (csi) => q.openConflicts.all(csi).map(conflictOf),
    deleteSettledConflictsBefore: logged("conflict cleanup", (ms, limit) => {
      const ids = q.settledConflictsBefore.all(ms, limit);
      for (const { id } of ids) {
        q.deleteConflictTargets.run(id);
        q.deleteConflict.run(id);
      }
      return ids.length;
    }),
    deleteIdleBulkSessions: logged(
      "bulk session cleanup",
      (ms, limit) => q.deleteIdleBulkSessions.run(ms, limit).changes,
    ),
    addNotice: logged("notice", (msp, at, body) =>
      Number(q.addNotice.run(msp, at, JSON.stringify(body)).lastInsertRowid),
    ),
    noticesSince: (msp, seq, limit) =>
      q.noticesSince.all(msp, seq, limit).map((r) => ({
        seq: r.seq,
        mspId: r.msp_id,
        atMs: r.at_ms,
        body: JSON.parse(r.body) as NoticeBody,
      })),
    deleteNoticesBefore: logged("notice cleanup", (ms) =>
      prunePrefix(q.oldestNotices, q.deleteNoticesThrough, ms, NOTICE_PRUNE_BATCH),
    ),
    bulkCommitted: (msp, session) => q.bulkCommitted.get(msp, session)?.committed ?? 0,
    setBulkCommitted: logged("bulk", (msp, session, n, at) => void q.setBulk.run(msp, session, n, at)),
    enrol: logged(
      "enrolment",
      (msp) =>
        void q.enrol.run({
          ...msp,
          signingKey: Buffer.from(msp.signingPublicKey),
          mayBulk: msp.mayBulk ? 1 : 0,
        }),
    ),
    enrolled: (id) => {
      const r = q.enrolled.get(id);
      return r && mspOf(r);
    },
    enrolledByIdentity: (identity) => q.byIdentity.all(identity).map(mspOf),
    listEnrolled: () => q.listEnrolled.all().map(mspOf),
    addPeerRequest: logged("peer request", (r) => void q.addPeer.run(r)),
    duePeerRequests: (now, limit) => q.duePeers.all(now, limit).map(peerRequestOf),
    reschedulePeerRequest: logged(
      "peer request",
      (id, attempts, next, error) => void q.reschedulePeer.run(attempts, next, error, id),
    ),
    deletePeerRequest: logged("peer request", (id) => void q.deletePeer.run(id)),
    peerRequestCount: () => q.countPeers.get()?.n ?? 0,
    meta: w("store settings", (key) => q.meta.get(key)?.value),
    setMeta: w("store settings", (key, value) => {
      if (value === undefined) q.deleteMeta.run(key);
      else q.setMeta.run(key, value);
      if (key === "replica") replica = value !== undefined;
    }),
    applyReplicated: (f) => {
      applying++;
      try {
        const r = wrap("replication", () => db.transaction(f)());
        announce();
        return r;
      } finally {
        applying--;
      }
    },
    logChange: logged("change log", (csi, atMs) => void q.logChange.run(csi, atMs)),
    logChangeAt: logged("change log", (seq, csi, atMs) => void q.logChangeAt.run(seq, csi, atMs)),
    logGeneration: () => generation,
    resetLog: logged("change log", (latest) =>
      db.transaction(() => {
        generation++;
        q.pruneChangesThrough.run(Number.MAX_SAFE_INTEGER);
        q.forgetLogSeq.run();
        q.setLogSeq.run(latest);
      })(),
    ),
    privateEntry: w("private table", (epoch, csi) => {
      const r = q.privateEntry.get(epoch, csi);
      return r && privateEntryOf(r);
    }),
    putPrivateEntry: w("private table", (epoch, r) => void q.putPrivateEntry.run({ epoch, ...r })),
    deletePrivateEntry: w("private table", (epoch, csi) => q.deletePrivateEntry.run(epoch, csi).changes > 0),
    clearPrivate: w("private table", (epoch, limit) => q.clearPrivate.run(epoch, epoch, limit).changes),
    privateEpochAfter: w("private table", (after) => q.privateEpochAfter.get(after)?.epoch),
    privateBucket: w("private table", (epoch, first, last) =>
      q.privateBucket.all(epoch, first, last).map((r) => r.entry),
    ),
    privateDue: w("private table", (epoch, before, limit, offset = 0) =>
      q.privateDue.all(epoch, before, limit, offset).map((r) => r.csi),
    ),
    logId: () => q.logId.get()?.value ?? "",
    logBounds: () => {
      const latest = latestSeq();
      return { oldest: q.oldestSeq.get()?.seq ?? latest + 1, latest };
    },
    changeAt: (seq) => {
      const r = q.changeAt.get(seq);
      return r && { seq: r.seq, csi: r.csi, atMs: r.at_ms };
    },
    changesSince: (seq, limit) =>
      q.changesSince.all(seq, limit).map((r) => ({ seq: r.seq, csi: r.csi, atMs: r.at_ms })),
    pruneChangesBefore: w("change log pruning", (ms, limit) =>
      prunePrefix(q.oldestChanges, q.pruneChangesThrough, ms, limit),
    ),
    onMappingsTouched: (l) => void touchListeners.push(l),
    onChangeLogged: (l) => {
      announced = latestSeq();
      listeners.push(l);
    },
    writer,
    onWriterLogged: (l) => {
      writerAnnounced = writer.latest();
      writerListeners.push(l);
    },
    inTransaction: () => db.inTransaction,
    transaction: (f) => {
      const r = wrap("transaction", () => db.transaction(f)());
      announce();
      return r;
    },
    durability: () => ((db.pragma("synchronous", { simple: true }) as number) >= 2 ? "full" : "normal"),
    close: () => db.close(),
  };
}

/** How the schema of the store at `path`, migrated to this build, differs from a new store's. */
export function schemaDriftOf(path: string): string[] {
  const fresh = new Database(":memory:");
  migrate(fresh);
  return schemaDriftBetween(fresh, new Database(path, { readonly: true, fileMustExist: true }));
}

function migrate(db: Database.Database): void {
  const version = db.pragma("user_version", { simple: true }) as number;
  if (version > MIGRATIONS.length) {
    throw new Error(`store schema version ${version} is newer than this build knows (${MIGRATIONS.length})`);
  }
  db.transaction(() => {
    for (let v = version; v < MIGRATIONS.length; v++) db.exec(MIGRATIONS[v] as string);
    db.pragma(`user_version = ${MIGRATIONS.length}`);
  })();
}

/** Notices one sweep deletes at most (the next sweep goes on). */
const NOTICE_PRUNE_BATCH = 10_000;

/**
 * Deletes the oldest rows of a log table (by seq) while they are older than `ms`, at most
 * `limit`: a prefix, so a reader's position never falls into a hole, and a sweep with nothing
 * old reads one row. Returns how many went.
 */
function prunePrefix(
  oldest: Statement<[number], { seq: number; at_ms: number }>,
  deleteThrough: Statement<[number]>,
  ms: number,
  limit: number,
): number {
  const first = oldest.get(1);
  if (!first || first.at_ms >= ms) return 0;
  let through = 0;
  for (const r of oldest.iterate(limit)) {
    if (r.at_ms >= ms) break;
    through = r.seq;
  }
  return deleteThrough.run(through).changes;
}
