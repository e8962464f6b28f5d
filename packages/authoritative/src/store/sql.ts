// Every statement the mapping store prepares, by name. store.ts prepares them with their row
// types; sql.test.ts reads each one's query plan, so none of them can scan a large table.
export const SQL = {
  // Lookups read a CSI's mappings with the record and its signatures in one blob, split by
  // their lengths (sql-rows.ts mappingOfLookup): SQLite hands back one buffer a row instead of
  // four, each with its own allocation for the collector to free. The concatenation is TEXT
  // in SQLite, which copies the bytes unchecked, and the cast makes it a BLOB again.
  mappings: `SELECT msp_id, ssi, is_default, precedence, expires_at_ms, withheld,
      length(record), length(user_sig), length(msp_sig), CAST(record || user_sig || msp_sig || dp_sig AS BLOB)
    FROM mappings WHERE csi = ? ORDER BY is_default DESC, precedence, msp_id, ssi`,
  mapping: "SELECT * FROM mappings WHERE csi = ? AND msp_id = ? AND ssi = ?",
  // An upsert, not REPLACE: the row count's triggers see an insert or an update, never a hidden delete.
  putMapping: `INSERT INTO mappings (csi, msp_id, ssi, is_default, precedence, expires_at_ms, record, user_sig, msp_sig, dp_sig, withheld)
    VALUES (@csi, @msp_id, @ssi, @is_default, @precedence, @expires_at_ms, @record, @user_sig, @msp_sig, @dp_sig, @withheld)
    ON CONFLICT (csi, msp_id, ssi) DO UPDATE SET is_default = excluded.is_default, precedence = excluded.precedence,
      expires_at_ms = excluded.expires_at_ms, record = excluded.record, user_sig = excluded.user_sig,
      msp_sig = excluded.msp_sig, dp_sig = excluded.dp_sig, withheld = excluded.withheld`,
  updateMapping:
    "UPDATE mappings SET is_default = @is_default, precedence = @precedence, dp_sig = @dp_sig, withheld = coalesce(@withheld, withheld) WHERE csi = @csi AND msp_id = @msp_id AND ssi = @ssi",
  deleteMapping: "DELETE FROM mappings WHERE csi = ? AND msp_id = ? AND ssi = ?",
  expired: "SELECT * FROM mappings WHERE expires_at_ms <= ? ORDER BY expires_at_ms LIMIT ?",
  // The CSI filter's build (csi-filter.ts): CSIs with mappings or an opt-out, in pages, by key order.
  mappedCsisAfter: "SELECT DISTINCT csi FROM mappings WHERE csi > ? ORDER BY csi LIMIT ?",
  optedOutCsisAfter: "SELECT csi FROM opt_outs WHERE csi > ? ORDER BY csi LIMIT ?",
  count: "SELECT n FROM row_counts WHERE name = 'mappings'",
  legacyCount: "SELECT count(*) AS n FROM legacy_unsigned_mappings",
  optedOut: "SELECT * FROM opt_outs WHERE csi = ?",
  setOptOut:
    "INSERT OR REPLACE INTO opt_outs (csi, at_ms, statement, user_sig, msp_sig, msp_key) VALUES (@csi, @atMs, @statement, @userSig, @mspSig, @mspKey)",
  clearOptOut: "DELETE FROM opt_outs WHERE csi = ?",
  insertChallenge:
    "INSERT INTO challenges (id, msp_id, csi, action, params, statement, code_hash, attempts, expires_at_ms, state) VALUES (@id, @mspId, @csi, @action, @params, @statement, @codeHash, @attempts, @expiresAtMs, @state)",
  challenge: "SELECT * FROM challenges WHERE id = ?",
  updateChallenge: "UPDATE challenges SET attempts = ?, state = ? WHERE id = ?",
  deleteChallenges: "DELETE FROM challenges WHERE expires_at_ms < ?",
  insertConflict:
    "INSERT INTO conflicts (id, csi, claimant_msp, new_msp, new_ssi, replace, make_default, opened_at_ms, deadline_ms, state, opt_out, opt_out_statement, opt_out_user_sig, opt_out_msp_sig, opt_out_msp_key) VALUES (@id, @csi, @claimantMsp, @newMsp, @newSsi, @replace, @makeDefault, @openedAtMs, @deadlineMs, @state, @optOut, @statement, @userSig, @mspSig, @mspKey)",
  insertTarget: "INSERT OR IGNORE INTO conflict_targets (conflict_id, msp_id, ssi) VALUES (?, ?, ?)",
  conflict: "SELECT * FROM conflicts WHERE id = ?",
  targets: "SELECT msp_id, ssi FROM conflict_targets WHERE conflict_id = ? ORDER BY msp_id, ssi",
  setConflictState: "UPDATE conflicts SET state = ? WHERE id = ?",
  openConflictCount: "SELECT count(*) AS n FROM conflicts WHERE state = 'open'",
  dueConflicts:
    "SELECT * FROM conflicts WHERE state = 'open' AND deadline_ms <= ? ORDER BY deadline_ms LIMIT ?",
  openConflicts: "SELECT * FROM conflicts WHERE state = 'open' AND csi = ? ORDER BY opened_at_ms",
  // Conflicts settled (contested, lapsed, void) before the notice retention: their notices are
  // gone, so nobody can act on them any more.
  settledConflictsBefore:
    "SELECT id FROM conflicts WHERE state IN ('contested', 'lapsed', 'void') AND deadline_ms < ? LIMIT ?",
  deleteConflictTargets: "DELETE FROM conflict_targets WHERE conflict_id = ?",
  deleteConflict: "DELETE FROM conflicts WHERE id = ?",
  // Bulk sessions idle past the notice retention: a session resumed after that starts over.
  deleteIdleBulkSessions:
    "DELETE FROM bulk_sessions WHERE rowid IN (SELECT rowid FROM bulk_sessions WHERE updated_at_ms < ? LIMIT ?)",
  addNotice: "INSERT INTO notices (msp_id, at_ms, body) VALUES (?, ?, ?)",
  noticesSince: "SELECT * FROM notices WHERE msp_id = ? AND seq > ? ORDER BY seq LIMIT ?",
  oldestNotices: "SELECT seq, at_ms FROM notices ORDER BY seq LIMIT ?",
  deleteNoticesThrough: "DELETE FROM notices WHERE seq <= ?",
  bulkCommitted: "SELECT committed FROM bulk_sessions WHERE msp_id = ? AND session_id = ?",
  setBulk:
    "INSERT INTO bulk_sessions (msp_id, session_id, committed, updated_at_ms) VALUES (?, ?, ?, ?) ON CONFLICT (msp_id, session_id) DO UPDATE SET committed = excluded.committed, updated_at_ms = excluded.updated_at_ms",
  enrol:
    "INSERT INTO enrolled_msps (msp_id, tls_identity, enrolled_users, enrolled_at_ms, signing_key, may_bulk) VALUES (@mspId, @tlsIdentity, @enrolledUsers, @enrolledAtMs, @signingKey, @mayBulk) ON CONFLICT (msp_id) DO UPDATE SET tls_identity = excluded.tls_identity, enrolled_users = excluded.enrolled_users, signing_key = excluded.signing_key, may_bulk = excluded.may_bulk",
  enrolled: "SELECT * FROM enrolled_msps WHERE msp_id = ?",
  byIdentity: "SELECT * FROM enrolled_msps WHERE tls_identity = ?",
  listEnrolled: "SELECT * FROM enrolled_msps ORDER BY msp_id",
  addPeer:
    "INSERT INTO peer_requests (peer_dp, csi, msp_id, ssi, created_at_ms, attempts, next_at_ms, last_error) VALUES (@peerDp, @csi, @mspId, @ssi, @createdAtMs, 0, @nextAtMs, '')",
  duePeers: "SELECT * FROM peer_requests WHERE next_at_ms <= ? ORDER BY next_at_ms LIMIT ?",
  reschedulePeer: "UPDATE peer_requests SET attempts = ?, next_at_ms = ?, last_error = ? WHERE id = ?",
  deletePeer: "DELETE FROM peer_requests WHERE id = ?",
  countPeers: "SELECT count(*) AS n FROM peer_requests",
  logId: "SELECT value FROM store_meta WHERE key = 'log_id'",
  latestSeq: "SELECT seq FROM sqlite_sequence WHERE name = 'change_log'",
  oldestSeq: "SELECT min(seq) AS seq FROM change_log",
  changeAt: "SELECT * FROM change_log WHERE seq = ?",
  changesSince: "SELECT * FROM change_log WHERE seq > ? ORDER BY seq LIMIT ?",
  // Pruning deletes a prefix by seq (prunePrefix below), never a hole behind a reader.
  oldestChanges: "SELECT seq, at_ms FROM change_log ORDER BY seq LIMIT ?",
  pruneChangesThrough: "DELETE FROM change_log WHERE seq <= ?",
  // An event the private table adds when a CSI's entry changed after the change that caused it.
  logChange: "INSERT INTO change_log (csi, at_ms) VALUES (?, ?)",
  // A secondary's copy of the primary's event, with the primary's number and time (replication/).
  logChangeAt: "INSERT INTO change_log (seq, csi, at_ms) VALUES (?, ?, ?)",
  // A secondary's log after a copy: empty, its next event the one after the copy's position.
  forgetLogSeq: "DELETE FROM sqlite_sequence WHERE name = 'change_log'",
  setLogSeq: "INSERT INTO sqlite_sequence (name, seq) VALUES ('change_log', ?)",
  meta: "SELECT value FROM store_meta WHERE key = ?",
  setMeta:
    "INSERT INTO store_meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
  deleteMeta: "DELETE FROM store_meta WHERE key = ?",
  privateEntry: "SELECT * FROM private_entries WHERE epoch = ? AND csi = ?",
  putPrivateEntry:
    "INSERT OR REPLACE INTO private_entries (epoch, csi, position, tag, entry_key, content, entry, sealed_until_ms) VALUES (@epoch, @csi, @position, @tag, @entryKey, @content, @entry, @sealedUntilMs)",
  deletePrivateEntry: "DELETE FROM private_entries WHERE epoch = ? AND csi = ?",
  privateBucket: "SELECT entry FROM private_entries WHERE epoch = ? AND position BETWEEN ? AND ?",
  clearPrivate:
    "DELETE FROM private_entries WHERE epoch = ? AND csi IN (SELECT csi FROM private_entries WHERE epoch = ? LIMIT ?)",
  privateEpochAfter: "SELECT epoch FROM private_entries WHERE epoch > ? ORDER BY epoch LIMIT 1",
  privateDue:
    "SELECT csi FROM private_entries WHERE epoch = ? AND sealed_until_ms < ? ORDER BY sealed_until_ms LIMIT ? OFFSET ?",
} as const;
