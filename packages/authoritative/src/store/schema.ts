// The schema of a DP's store, as the migrations that build it, in order: a store at version N
// has run the first N. Applied in one transaction at open (store.ts), never edited once shipped.

/** Migration v(i+1) is MIGRATIONS[i]. */
export const MIGRATIONS: readonly string[] = [
  `CREATE TABLE mappings (
     csi TEXT NOT NULL,
     msp_id TEXT NOT NULL,
     ssi TEXT NOT NULL,
     is_default INTEGER NOT NULL,
     tags TEXT NOT NULL,
     created_at_ms INTEGER NOT NULL,
     PRIMARY KEY (csi, msp_id, ssi)
   ) STRICT, WITHOUT ROWID;
   CREATE TABLE enrolled_msps (
     msp_id TEXT PRIMARY KEY,
     tls_identity TEXT NOT NULL,
     enrolled_users INTEGER NOT NULL,
     enrolled_at_ms INTEGER NOT NULL
   ) STRICT;`,
  // v2: signed mappings (issue 4). Unsigned mappings from v1 cannot be verified, so they are
  // kept aside, never served, until re-registered.
  `ALTER TABLE mappings RENAME TO legacy_unsigned_mappings;
   CREATE TABLE mappings (
     csi TEXT NOT NULL,
     msp_id TEXT NOT NULL,
     ssi TEXT NOT NULL,
     is_default INTEGER NOT NULL,
     precedence INTEGER NOT NULL,
     expires_at_ms INTEGER NOT NULL,
     record BLOB NOT NULL,
     user_sig BLOB NOT NULL,
     msp_sig BLOB NOT NULL,
     dp_sig BLOB NOT NULL,
     PRIMARY KEY (csi, msp_id, ssi)
   ) STRICT;
   CREATE INDEX mappings_by_expiry ON mappings (expires_at_ms);
   ALTER TABLE enrolled_msps ADD COLUMN signing_key BLOB NOT NULL DEFAULT x'';
   ALTER TABLE enrolled_msps ADD COLUMN may_bulk INTEGER NOT NULL DEFAULT 0;
   CREATE INDEX enrolled_by_identity ON enrolled_msps (tls_identity);
   CREATE TABLE opt_outs (csi TEXT PRIMARY KEY, at_ms INTEGER NOT NULL) STRICT;
   CREATE TABLE challenges (
     id TEXT PRIMARY KEY,
     msp_id TEXT NOT NULL,
     csi TEXT NOT NULL,
     action TEXT NOT NULL,
     params TEXT NOT NULL,
     statement BLOB NOT NULL,
     code_hash BLOB NOT NULL,
     attempts INTEGER NOT NULL,
     expires_at_ms INTEGER NOT NULL,
     state TEXT NOT NULL
   ) STRICT;
   CREATE INDEX challenges_by_expiry ON challenges (expires_at_ms);
   CREATE TABLE conflicts (
     id TEXT PRIMARY KEY,
     csi TEXT NOT NULL,
     claimant_msp TEXT NOT NULL,
     new_msp TEXT NOT NULL,
     new_ssi TEXT NOT NULL,
     replace INTEGER NOT NULL,
     make_default INTEGER NOT NULL,
     opened_at_ms INTEGER NOT NULL,
     deadline_ms INTEGER NOT NULL,
     state TEXT NOT NULL
   ) STRICT;
   CREATE INDEX conflicts_due ON conflicts (state, deadline_ms);
   CREATE TABLE conflict_targets (
     conflict_id TEXT NOT NULL,
     msp_id TEXT NOT NULL,
     ssi TEXT NOT NULL,
     PRIMARY KEY (conflict_id, msp_id, ssi)
   ) STRICT;
   CREATE TABLE notices (
     seq INTEGER PRIMARY KEY AUTOINCREMENT,
     msp_id TEXT NOT NULL,
     at_ms INTEGER NOT NULL,
     body TEXT NOT NULL
   ) STRICT;
   CREATE INDEX notices_by_msp ON notices (msp_id, seq);
   CREATE TABLE bulk_sessions (
     msp_id TEXT NOT NULL,
     session_id TEXT NOT NULL,
     committed INTEGER NOT NULL,
     updated_at_ms INTEGER NOT NULL,
     PRIMARY KEY (msp_id, session_id)
   ) STRICT;`,
  // v3: the change log (issue 5). Triggers write it, so no change to a CSI's mappings or
  // opt-out can commit without its event. The log id is new with every store, so a watcher
  // following another store's log notices.
  `CREATE TABLE store_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;
   INSERT INTO store_meta (key, value) VALUES ('log_id', lower(hex(randomblob(16))));
   CREATE TABLE change_log (
     seq INTEGER PRIMARY KEY AUTOINCREMENT,
     csi TEXT NOT NULL,
     at_ms INTEGER NOT NULL
   ) STRICT;
   CREATE INDEX change_log_by_time ON change_log (at_ms);
   CREATE TRIGGER log_mapping_insert AFTER INSERT ON mappings BEGIN
     INSERT INTO change_log (csi, at_ms) VALUES (NEW.csi, CAST(unixepoch('subsec') * 1000 AS INTEGER));
   END;
   CREATE TRIGGER log_mapping_update AFTER UPDATE ON mappings BEGIN
     INSERT INTO change_log (csi, at_ms) VALUES (NEW.csi, CAST(unixepoch('subsec') * 1000 AS INTEGER));
   END;
   CREATE TRIGGER log_mapping_delete AFTER DELETE ON mappings BEGIN
     INSERT INTO change_log (csi, at_ms) VALUES (OLD.csi, CAST(unixepoch('subsec') * 1000 AS INTEGER));
   END;
   CREATE TRIGGER log_opt_out_insert AFTER INSERT ON opt_outs BEGIN
     INSERT INTO change_log (csi, at_ms) VALUES (NEW.csi, CAST(unixepoch('subsec') * 1000 AS INTEGER));
   END;
   CREATE TRIGGER log_opt_out_delete AFTER DELETE ON opt_outs BEGIN
     INSERT INTO change_log (csi, at_ms) VALUES (OLD.csi, CAST(unixepoch('subsec') * 1000 AS INTEGER));
   END;`,
  // v4: first-mapping invalidation requests to peer DPs (R18), written in the claim's
  // transaction and delivered until acknowledged.
  `CREATE TABLE peer_requests (
     id INTEGER PRIMARY KEY AUTOINCREMENT,
     peer_dp TEXT NOT NULL,
     csi TEXT NOT NULL,
     msp_id TEXT NOT NULL,
     ssi TEXT NOT NULL,
     created_at_ms INTEGER NOT NULL,
     attempts INTEGER NOT NULL,
     next_at_ms INTEGER NOT NULL,
     last_error TEXT NOT NULL
   ) STRICT;
   CREATE INDEX peer_requests_due ON peer_requests (next_at_ms);`,
  // v5 (trust audit): a claim that opens a conflict is stored withheld (never served) until
  // the conflict lapses, so the existing holder's MSP does not learn the claimant; a conflict
  // may be an opt-out's, which opts the CSI out when it lapses.
  `ALTER TABLE mappings ADD COLUMN withheld INTEGER NOT NULL DEFAULT 0;
   ALTER TABLE conflicts ADD COLUMN opt_out INTEGER NOT NULL DEFAULT 0;`,
  // v6 (signed denials): the holder's signed opt-out is kept with the opt-out, and with an
  // opt-out's conflict until it lapses, so OPTED_OUT answers can carry it (OptOutProof). Opt-outs
  // from before v6 have none and are answered as a sealed NOT_FOUND.
  `ALTER TABLE opt_outs ADD COLUMN statement BLOB NOT NULL DEFAULT x'';
   ALTER TABLE opt_outs ADD COLUMN user_sig BLOB NOT NULL DEFAULT x'';
   ALTER TABLE opt_outs ADD COLUMN msp_sig BLOB NOT NULL DEFAULT x'';
   ALTER TABLE opt_outs ADD COLUMN msp_key BLOB NOT NULL DEFAULT x'';
   ALTER TABLE conflicts ADD COLUMN opt_out_statement BLOB NOT NULL DEFAULT x'';
   ALTER TABLE conflicts ADD COLUMN opt_out_user_sig BLOB NOT NULL DEFAULT x'';
   ALTER TABLE conflicts ADD COLUMN opt_out_msp_sig BLOB NOT NULL DEFAULT x'';
   ALTER TABLE conflicts ADD COLUMN opt_out_msp_key BLOB NOT NULL DEFAULT x'';`,
  // v7 (issue 14): the mapping count is kept by triggers in the writes' own transactions, so
  // start-up and GetStatus read one row instead of counting every mapping (seconds at 100M).
  // Mappings are written by upsert (INSERT ... ON CONFLICT DO UPDATE), never REPLACE: a
  // replacement's implicit delete fires no trigger, so it would count twice.
  `CREATE TABLE row_counts (name TEXT PRIMARY KEY, n INTEGER NOT NULL) STRICT;
   INSERT INTO row_counts (name, n) SELECT 'mappings', count(*) FROM mappings;
   CREATE TRIGGER count_mapping_insert AFTER INSERT ON mappings BEGIN
     UPDATE row_counts SET n = n + 1 WHERE name = 'mappings';
   END;
   CREATE TRIGGER count_mapping_delete AFTER DELETE ON mappings BEGIN
     UPDATE row_counts SET n = n - 1 WHERE name = 'mappings';
   END;`,
  // v8 (issue 14): the change log's time index served the pruning query until pruning went by
  // sequence (a prefix of the log); nothing reads it since, and keeping it up to date was more
  // than half of what a mapping write cost (15-20 us of 35).
  "DROP INDEX change_log_by_time;",
  // v9 (issue 16): the private-lookup table, one sealed entry per CSI answered FOUND or
  // OPTED_OUT, by key epoch; the slot (position, tag, AEAD key) is kept so a change re-seals the
  // entry without evaluating the PRF again. A bucket is a range of positions, so splitting
  // buckets moves no row. `content` is a digest of the answer without its seal times, so a
  // change that leaves the answer as it was writes nothing.
  `CREATE TABLE private_entries (
     epoch INTEGER NOT NULL,
     csi TEXT NOT NULL,
     position INTEGER NOT NULL,
     tag BLOB NOT NULL,
     entry_key BLOB NOT NULL,
     content BLOB NOT NULL,
     entry BLOB NOT NULL,
     sealed_until_ms INTEGER NOT NULL,
     PRIMARY KEY (epoch, csi)
   ) STRICT, WITHOUT ROWID;
   CREATE INDEX private_entries_by_position ON private_entries (epoch, position);
   CREATE INDEX private_entries_by_seal ON private_entries (epoch, sealed_until_ms);`,
  // v10 (issue 17): a secondary stores the primary's events with the primary's sequence numbers
  // and times (replication/replica.ts), so these triggers stay quiet while the store is marked a
  // replica (store_meta 'replica'); on a primary they log every change as before.
  `DROP TRIGGER log_mapping_insert;
   DROP TRIGGER log_mapping_update;
   DROP TRIGGER log_mapping_delete;
   DROP TRIGGER log_opt_out_insert;
   DROP TRIGGER log_opt_out_delete;
   CREATE TRIGGER log_mapping_insert AFTER INSERT ON mappings
   WHEN NOT EXISTS (SELECT 1 FROM store_meta WHERE key = 'replica') BEGIN
     INSERT INTO change_log (csi, at_ms) VALUES (NEW.csi, CAST(unixepoch('subsec') * 1000 AS INTEGER));
   END;
   CREATE TRIGGER log_mapping_update AFTER UPDATE ON mappings
   WHEN NOT EXISTS (SELECT 1 FROM store_meta WHERE key = 'replica') BEGIN
     INSERT INTO change_log (csi, at_ms) VALUES (NEW.csi, CAST(unixepoch('subsec') * 1000 AS INTEGER));
   END;
   CREATE TRIGGER log_mapping_delete AFTER DELETE ON mappings
   WHEN NOT EXISTS (SELECT 1 FROM store_meta WHERE key = 'replica') BEGIN
     INSERT INTO change_log (csi, at_ms) VALUES (OLD.csi, CAST(unixepoch('subsec') * 1000 AS INTEGER));
   END;
   CREATE TRIGGER log_opt_out_insert AFTER INSERT ON opt_outs
   WHEN NOT EXISTS (SELECT 1 FROM store_meta WHERE key = 'replica') BEGIN
     INSERT INTO change_log (csi, at_ms) VALUES (NEW.csi, CAST(unixepoch('subsec') * 1000 AS INTEGER));
   END;
   CREATE TRIGGER log_opt_out_delete AFTER DELETE ON opt_outs
   WHEN NOT EXISTS (SELECT 1 FROM store_meta WHERE key = 'replica') BEGIN
     INSERT INTO change_log (csi, at_ms) VALUES (OLD.csi, CAST(unixepoch('subsec') * 1000 AS INTEGER));
   END;`,
  // v11 (issue 17): the writer's own state (enrolments, challenges, conflicts, notices, bulk
  // sessions, peer requests) logged by row, so secondaries hold it too and a promoted one goes on
  // where the old primary stopped. Its own log: the change log is what resolvers watch.
  `CREATE TABLE writer_log (
     seq INTEGER PRIMARY KEY AUTOINCREMENT,
     tbl TEXT NOT NULL,
     key TEXT NOT NULL,
     at_ms INTEGER NOT NULL
   ) STRICT;
   CREATE TRIGGER writer_enrolled_msps_insert AFTER INSERT ON enrolled_msps
   WHEN NOT EXISTS (SELECT 1 FROM store_meta WHERE key = 'replica') BEGIN
     INSERT INTO writer_log (tbl, key, at_ms) VALUES ('enrolled_msps', json_array(NEW.msp_id), CAST(unixepoch('subsec') * 1000 AS INTEGER));
   END;
   CREATE TRIGGER writer_enrolled_msps_update AFTER UPDATE ON enrolled_msps
   WHEN NOT EXISTS (SELECT 1 FROM store_meta WHERE key = 'replica') BEGIN
     INSERT INTO writer_log (tbl, key, at_ms) VALUES ('enrolled_msps', json_array(NEW.msp_id), CAST(unixepoch('subsec') * 1000 AS INTEGER));
   END;
   CREATE TRIGGER writer_enrolled_msps_delete AFTER DELETE ON enrolled_msps
   WHEN NOT EXISTS (SELECT 1 FROM store_meta WHERE key = 'replica') BEGIN
     INSERT INTO writer_log (tbl, key, at_ms) VALUES ('enrolled_msps', json_array(OLD.msp_id), CAST(unixepoch('subsec') * 1000 AS INTEGER));
   END;
   CREATE TRIGGER writer_challenges_insert AFTER INSERT ON challenges
   WHEN NOT EXISTS (SELECT 1 FROM store_meta WHERE key = 'replica') BEGIN
     INSERT INTO writer_log (tbl, key, at_ms) VALUES ('challenges', json_array(NEW.id), CAST(unixepoch('subsec') * 1000 AS INTEGER));
   END;
   CREATE TRIGGER writer_challenges_update AFTER UPDATE ON challenges
   WHEN NOT EXISTS (SELECT 1 FROM store_meta WHERE key = 'replica') BEGIN
     INSERT INTO writer_log (tbl, key, at_ms) VALUES ('challenges', json_array(NEW.id), CAST(unixepoch('subsec') * 1000 AS INTEGER));
   END;
   CREATE TRIGGER writer_challenges_delete AFTER DELETE ON challenges
   WHEN NOT EXISTS (SELECT 1 FROM store_meta WHERE key = 'replica') BEGIN
     INSERT INTO writer_log (tbl, key, at_ms) VALUES ('challenges', json_array(OLD.id), CAST(unixepoch('subsec') * 1000 AS INTEGER));
   END;
   CREATE TRIGGER writer_conflicts_insert AFTER INSERT ON conflicts
   WHEN NOT EXISTS (SELECT 1 FROM store_meta WHERE key = 'replica') BEGIN
     INSERT INTO writer_log (tbl, key, at_ms) VALUES ('conflicts', json_array(NEW.id), CAST(unixepoch('subsec') * 1000 AS INTEGER));
   END;
   CREATE TRIGGER writer_conflicts_update AFTER UPDATE ON conflicts
   WHEN NOT EXISTS (SELECT 1 FROM store_meta WHERE key = 'replica') BEGIN
     INSERT INTO writer_log (tbl, key, at_ms) VALUES ('conflicts', json_array(NEW.id), CAST(unixepoch('subsec') * 1000 AS INTEGER));
   END;
   CREATE TRIGGER writer_conflicts_delete AFTER DELETE ON conflicts
   WHEN NOT EXISTS (SELECT 1 FROM store_meta WHERE key = 'replica') BEGIN
     INSERT INTO writer_log (tbl, key, at_ms) VALUES ('conflicts', json_array(OLD.id), CAST(unixepoch('subsec') * 1000 AS INTEGER));
   END;
   CREATE TRIGGER writer_conflict_targets_insert AFTER INSERT ON conflict_targets
   WHEN NOT EXISTS (SELECT 1 FROM store_meta WHERE key = 'replica') BEGIN
     INSERT INTO writer_log (tbl, key, at_ms) VALUES ('conflict_targets', json_array(NEW.conflict_id, NEW.msp_id, NEW.ssi), CAST(unixepoch('subsec') * 1000 AS INTEGER));
   END;
   CREATE TRIGGER writer_conflict_targets_update AFTER UPDATE ON conflict_targets
   WHEN NOT EXISTS (SELECT 1 FROM store_meta WHERE key = 'replica') BEGIN
     INSERT INTO writer_log (tbl, key, at_ms) VALUES ('conflict_targets', json_array(NEW.conflict_id, NEW.msp_id, NEW.ssi), CAST(unixepoch('subsec') * 1000 AS INTEGER));
   END;
   CREATE TRIGGER writer_conflict_targets_delete AFTER DELETE ON conflict_targets
   WHEN NOT EXISTS (SELECT 1 FROM store_meta WHERE key = 'replica') BEGIN
     INSERT INTO writer_log (tbl, key, at_ms) VALUES ('conflict_targets', json_array(OLD.conflict_id, OLD.msp_id, OLD.ssi), CAST(unixepoch('subsec') * 1000 AS INTEGER));
   END;
   CREATE TRIGGER writer_notices_insert AFTER INSERT ON notices
   WHEN NOT EXISTS (SELECT 1 FROM store_meta WHERE key = 'replica') BEGIN
     INSERT INTO writer_log (tbl, key, at_ms) VALUES ('notices', json_array(NEW.seq), CAST(unixepoch('subsec') * 1000 AS INTEGER));
   END;
   CREATE TRIGGER writer_notices_update AFTER UPDATE ON notices
   WHEN NOT EXISTS (SELECT 1 FROM store_meta WHERE key = 'replica') BEGIN
     INSERT INTO writer_log (tbl, key, at_ms) VALUES ('notices', json_array(NEW.seq), CAST(unixepoch('subsec') * 1000 AS INTEGER));
   END;
   CREATE TRIGGER writer_notices_delete AFTER DELETE ON notices
   WHEN NOT EXISTS (SELECT 1 FROM store_meta WHERE key = 'replica') BEGIN
     INSERT INTO writer_log (tbl, key, at_ms) VALUES ('notices', json_array(OLD.seq), CAST(unixepoch('subsec') * 1000 AS INTEGER));
   END;
   CREATE TRIGGER writer_bulk_sessions_insert AFTER INSERT ON bulk_sessions
   WHEN NOT EXISTS (SELECT 1 FROM store_meta WHERE key = 'replica') BEGIN
     INSERT INTO writer_log (tbl, key, at_ms) VALUES ('bulk_sessions', json_array(NEW.msp_id, NEW.session_id), CAST(unixepoch('subsec') * 1000 AS INTEGER));
   END;
   CREATE TRIGGER writer_bulk_sessions_update AFTER UPDATE ON bulk_sessions
   WHEN NOT EXISTS (SELECT 1 FROM store_meta WHERE key = 'replica') BEGIN
     INSERT INTO writer_log (tbl, key, at_ms) VALUES ('bulk_sessions', json_array(NEW.msp_id, NEW.session_id), CAST(unixepoch('subsec') * 1000 AS INTEGER));
   END;
   CREATE TRIGGER writer_bulk_sessions_delete AFTER DELETE ON bulk_sessions
   WHEN NOT EXISTS (SELECT 1 FROM store_meta WHERE key = 'replica') BEGIN
     INSERT INTO writer_log (tbl, key, at_ms) VALUES ('bulk_sessions', json_array(OLD.msp_id, OLD.session_id), CAST(unixepoch('subsec') * 1000 AS INTEGER));
   END;
   CREATE TRIGGER writer_peer_requests_insert AFTER INSERT ON peer_requests
   WHEN NOT EXISTS (SELECT 1 FROM store_meta WHERE key = 'replica') BEGIN
     INSERT INTO writer_log (tbl, key, at_ms) VALUES ('peer_requests', json_array(NEW.id), CAST(unixepoch('subsec') * 1000 AS INTEGER));
   END;
   CREATE TRIGGER writer_peer_requests_update AFTER UPDATE ON peer_requests
   WHEN NOT EXISTS (SELECT 1 FROM store_meta WHERE key = 'replica') BEGIN
     INSERT INTO writer_log (tbl, key, at_ms) VALUES ('peer_requests', json_array(NEW.id), CAST(unixepoch('subsec') * 1000 AS INTEGER));
   END;
   CREATE TRIGGER writer_peer_requests_delete AFTER DELETE ON peer_requests
   WHEN NOT EXISTS (SELECT 1 FROM store_meta WHERE key = 'replica') BEGIN
     INSERT INTO writer_log (tbl, key, at_ms) VALUES ('peer_requests', json_array(OLD.id), CAST(unixepoch('subsec') * 1000 AS INTEGER));
   END;`,
  // v12: a CSI's open conflicts (read by every claim, removal and peer request for that CSI)
  // were found through conflicts_due by state alone, reading every open conflict of the DP
  // (a contest window is days long). This index serves the CSI, the state and the order.
  "CREATE INDEX conflicts_by_csi ON conflicts (csi, state, opened_at_ms);",
  // v13: bulk sessions idle past the notice retention are dropped by the sweep (they grew with
  // every session an MSP ever started), found by when they were last written.
  "CREATE INDEX bulk_sessions_idle ON bulk_sessions (updated_at_ms);",
];
