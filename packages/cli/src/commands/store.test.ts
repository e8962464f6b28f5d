// Finding 12 of the audit: there was no way to back up or restore a store. The stores here are
// built with the tables the commands read and write, shaped as in the servers' schemas
// (packages/root/src/store.ts, packages/authoritative/src/store/schema.ts); test/store-backup
// runs the same commands on the servers' own stores.
import assert from "node:assert/strict";
import {
  chmodSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { openMappingStore } from "@mimi/authoritative/offline";
import { generateSigningKey, type SigningKey, signRegistry } from "@mimi/core";
import { openRegistryStore, type RegistryStore } from "@mimi/root/offline";
import Database from "better-sqlite3";
import { backupStore, DEFAULT_BUMP, restoreStore, verifyStore } from "./store.js";

const base = mkdtempSync(join(tmpdir(), "mimi-store-cli-"));
after(() => rmSync(base, { recursive: true, force: true }));
let n = 0;
/** A fresh private folder. */
const folder = () => {
  const dir = join(base, `case-${++n}`);
  mkdirSync(dir, { mode: 0o700 });
  return dir;
};
const modeOf = (path: string) => statSync(path).mode & 0o777;

const SCHEMA = {
  root: `CREATE TABLE dps (id TEXT PRIMARY KEY, endpoints TEXT NOT NULL, tls_identity TEXT NOT NULL,
           jurisdiction TEXT NOT NULL, signing_key BLOB NOT NULL DEFAULT x'') STRICT;
         CREATE TABLE msps (id TEXT PRIMARY KEY, name TEXT NOT NULL, idx INTEGER NOT NULL UNIQUE,
           signing_key BLOB NOT NULL DEFAULT x'') STRICT;
         CREATE TABLE delegations (id TEXT PRIMARY KEY, kind TEXT NOT NULL, e164_prefix TEXT, hash_first TEXT,
           hash_last TEXT, dp_id TEXT NOT NULL REFERENCES dps(id), ttl_seconds INTEGER NOT NULL) STRICT;
         CREATE TABLE changes (serial INTEGER PRIMARY KEY, at_ms INTEGER NOT NULL, actor TEXT NOT NULL,
           body TEXT NOT NULL, signature BLOB NOT NULL DEFAULT x'') STRICT;
         CREATE TABLE meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL) STRICT;
         INSERT INTO meta (k, v) VALUES ('next_msp_index', 0);
         CREATE TABLE base (id INTEGER PRIMARY KEY CHECK (id = 1), serial INTEGER NOT NULL, signature BLOB NOT NULL) STRICT;
         PRAGMA user_version = 3;`,
};

/** A store as its server holds it: WAL mode, open; the caller closes it ("stops the server"). */
function openStore(path: string, kind: "root" | "dp"): Database.Database {
  // A DP's store with the DP's own schema; rows are then written directly (no signatures needed).
  if (kind === "dp" && !existsSync(path)) openMappingStore(path).close();
  const db = new Database(path);
  db.pragma("journal_mode = WAL");
  if ((db.pragma("user_version", { simple: true }) as number) === 0) db.exec(SCHEMA.root);
  return db;
}
const addMappings = (db: Database.Database, from: number, to: number) => {
  const put = db.prepare(
    `INSERT INTO mappings (csi, msp_id, ssi, is_default, precedence, expires_at_ms, record, user_sig, msp_sig, dp_sig)
     VALUES (?, 'm', 's', 0, 0, 0, x'', x'', x'', x'')`,
  );
  for (let i = from; i < to; i++) put.run(`tel:+4477009${i}`);
};
const addNotice = (db: Database.Database) =>
  Number(db.prepare("INSERT INTO notices (msp_id, at_ms, body) VALUES ('m', 1, '{}')").run().lastInsertRowid);
const read = <T>(path: string, sql: string): T => {
  const db = new Database(path, { readonly: true });
  try {
    return db.prepare(sql).pluck().get() as T;
  } finally {
    db.close();
  }
};
const logIdOf = (path: string) => read<string>(path, "SELECT value FROM store_meta WHERE key = 'log_id'");

test("a DP store backed up while in use restores with its data, a new change-log id and notices ahead", async () => {
  const dir = folder();
  const db = join(dir, "mappings.sqlite");
  const server = openStore(db, "dp");
  addMappings(server, 0, 20);
  for (let i = 0; i < 3; i++) addNotice(server);
  const backupDir = join(dir, "backups"); // absent: made 0700
  const out = join(backupDir, "dp.sqlite");
  const summary = await backupStore({ db, out });
  assert.equal(summary.kind, "dp");
  assert.equal(modeOf(out), 0o600);
  assert.equal(modeOf(backupDir), 0o700);
  assert.equal(existsSync(`${out}-wal`), false, "the backup is one standalone file");
  assert.deepEqual(verifyStore(out), summary);
  // After the backup the DP goes on, then is stopped and its store restored.
  addMappings(server, 20, 25);
  addNotice(server);
  const lastNotice = addNotice(server); // seen by an MSP, then lost with the store
  const oldLogId = logIdOf(db);
  server.close();

  const { restored, previous } = await restoreStore({ from: out, db });
  assert.equal(restored.kind, "dp");
  assert.equal(read<number>(db, "SELECT count(*) FROM mappings"), 20, "the mappings of the backup");
  assert.notEqual(logIdOf(db), oldLogId, "a new change log: resolvers see other_log");
  assert.equal(restored.kind === "dp" && restored.logId, logIdOf(db));
  assert.equal(modeOf(db), 0o600);
  for (const f of [`${db}-wal`, `${db}-journal`, `${db}-shm`, `${db}.restoring`])
    assert.equal(existsSync(f), false, f);
  assert.equal(previous, `${db}.before-restore`);
  assert.equal(read<number>(previous, "SELECT count(*) FROM mappings"), 25, "the replaced store is kept");
  assert.equal(modeOf(previous), 0o600);
  const reopened = openStore(db, "dp");
  assert.ok(
    addNotice(reopened) > lastNotice + DEFAULT_BUMP - 1,
    "an MSP at the last notice misses nothing new",
  );
  reopened.close();
});

/** A root's store written as the root writes it: each change sealed with `key` (unless `sealed` is false). */
function rootChange(store: RegistryStore, key: SigningKey, n: number, sealed = true): void {
  const dp = {
    id: `dp${n}`,
    endpoints: [`127.0.0.1:${7000 + n}`],
    tlsIdentity: `dp-${n}`,
    jurisdiction: "EU",
  };
  const change = store.commit("admin", 1_000 + n, (serial) => ({
    serial,
    kind: "put_dp",
    dp: { ...dp, signingPublicKey: generateSigningKey().publicKey },
  }));
  if (!sealed) return;
  const period = { signedAtMs: 1_000 + n, expiresAtMs: 2_000 + n };
  store.setSeal(change.serial, signRegistry(store.load(), key, period));
}
const rootKey = generateSigningKey();

test("a restored root publishes a serial above any it held, and its backlog starts there", async () => {
  const dir = folder();
  const db = join(dir, "registry.sqlite");
  const server = openRegistryStore(db);
  for (let n = 1; n <= 5; n++) rootChange(server, rootKey, n);
  const out = join(dir, "root.sqlite");
  assert.equal((await backupStore({ db, out })).kind, "root");
  rootChange(server, rootKey, 6);
  rootChange(server, rootKey, 7); // published, then lost with the store
  server.close();

  const rootPublicKey = rootKey.publicKey;
  const { restored } = await restoreStore({ from: out, db, bump: 100, now: () => 42, rootPublicKey });
  assert.equal(restored.kind === "root" && restored.serial, 107);
  assert.equal(restored.kind === "root" && restored.delegations, 0);
  assert.equal(read<number>(db, "SELECT serial FROM base"), 107, "watchers behind it take a snapshot");
  const row = new Database(db, { readonly: true }).prepare("SELECT * FROM changes WHERE serial = 107").get();
  assert.deepEqual(row, {
    serial: 107,
    at_ms: 42,
    actor: "(mimi store restore)",
    body: '{"serial":{"$u64":"107"},"kind":"refresh"}',
    signature: Buffer.alloc(0),
  });
  assert.equal(read<number>(db, "SELECT count(*) FROM changes"), 6, "the backup's audit trail is kept");

  // Onto a new host (the store is gone), only the backup's serial is known.
  const elsewhere = join(folder(), "root", "registry.sqlite");
  assert.equal((await restoreStore({ from: out, db: elsewhere, rootPublicKey })).restored.kind, "root");
  assert.equal(read<number>(elsewhere, "SELECT serial FROM base"), 5 + DEFAULT_BUMP);
  assert.equal(modeOf(join(elsewhere, "..")), 0o700);
});

test("a root backup is restored only with the root's key and only when the key signed what it holds", async () => {
  const dir = folder();
  const db = join(dir, "registry.sqlite");
  const server = openRegistryStore(db);
  for (let n = 1; n <= 3; n++) rootChange(server, rootKey, n);
  const out = join(dir, "root.sqlite");
  await backupStore({ db, out });
  rootChange(server, rootKey, 4);
  rootChange(server, rootKey, 5, false); // committed, not yet signed
  const unsigned = join(dir, "unsigned.sqlite");
  await backupStore({ db, out: unsigned });
  server.close();
  const before = readFileSync(db);
  const rootPublicKey = rootKey.publicKey;

  await assert.rejects(
    restoreStore({ from: out, db }),
    /restoring a root needs the root's public signing key/,
  );
  // Whoever can write a backup swaps a DP's key (its answers would then verify with theirs).
  const tampered = join(dir, "tampered.sqlite");
  writeFileSync(tampered, readFileSync(out), { mode: 0o600 });
  const edit = new Database(tampered);
  edit
    .prepare("UPDATE dps SET signing_key = ? WHERE id = 'dp2'")
    .run(Buffer.from(generateSigningKey().publicKey));
  edit.close();
  await assert.rejects(
    restoreStore({ from: tampered, db, rootPublicKey }),
    /not restored: it does not verify with the root.s public key at serial 3: it was changed after the root signed it/,
  );
  await assert.rejects(
    restoreStore({ from: out, db, rootPublicKey: generateSigningKey().publicKey }),
    /does not verify with the root's public key/,
  );
  await assert.rejects(
    restoreStore({ from: unsigned, db, rootPublicKey }),
    /not restored: it holds no root seal for serial 5 /,
  );
  // A trigger planted in a genuine backup would rewrite the registry once the restore has added
  // its refresh change, after the seal was checked; the restored root would then sign that.
  const planted = join(dir, "planted.sqlite");
  writeFileSync(planted, readFileSync(out), { mode: 0o600 });
  const plant = new Database(planted);
  plant.exec(`CREATE TRIGGER swap AFTER INSERT ON changes BEGIN
      UPDATE dps SET signing_key = x'${"41".repeat(32)}' WHERE id = 'dp1'; END`);
  plant.close();
  await assert.rejects(
    restoreStore({ from: planted, db, rootPublicKey }),
    /root backup .* is not restored: its schema is not this build's: trigger "swap" is not part of this build's schema/,
  );
  assert.deepEqual(readFileSync(db), before, "the store is left alone");
  for (const f of [`${db}.before-restore`, `${db}.restoring`, `${db}.restoring-wal`])
    assert.equal(existsSync(f), false, f);
  // The honest backup restores; its copy was checked as it was put in place.
  const { restored } = await restoreStore({ from: out, db, rootPublicKey });
  assert.equal(restored.kind === "root" && restored.serial, 5 + DEFAULT_BUMP);
});

test("a corrupt or foreign backup is refused and the store is left alone", async () => {
  const dir = folder();
  const db = join(dir, "mappings.sqlite");
  const server = openStore(db, "dp");
  addMappings(server, 0, 2000);
  const out = join(dir, "dp.sqlite");
  await backupStore({ db, out });
  server.close();
  const before = readFileSync(db);
  const bytes = readFileSync(out);
  bytes.fill(0x5a, 3 * 4096 + 100, 6 * 4096); // inside the mappings table's pages
  const corrupt = join(dir, "corrupt.sqlite");
  writeFileSync(corrupt, bytes, { mode: 0o600 });
  await assert.rejects(restoreStore({ from: corrupt, db }), /fails SQLite's integrity check/);
  // Pages that read but disagree: an index whose definition no longer matches its entries.
  const inconsistent = join(dir, "inconsistent.sqlite");
  writeFileSync(inconsistent, readFileSync(out), { mode: 0o600 });
  const damage = new Database(inconsistent);
  damage.exec("CREATE INDEX by_ssi ON mappings (ssi)");
  damage.unsafeMode(true);
  damage.pragma("writable_schema = ON");
  damage
    .prepare("UPDATE sqlite_schema SET sql = 'CREATE INDEX by_ssi ON mappings (csi)' WHERE name = 'by_ssi'")
    .run();
  damage.close();
  await assert.rejects(
    restoreStore({ from: inconsistent, db }),
    /fails SQLite's integrity check: row 1 missing from index by_ssi/,
  );
  const text = join(dir, "notes.txt");
  writeFileSync(text, "not a database at all, just text long enough to look like a header".repeat(100));
  await assert.rejects(restoreStore({ from: text, db }), /integrity check: file is not a database/);
  const other = join(dir, "other.sqlite");
  new Database(other).exec("CREATE TABLE t (a)");
  await assert.rejects(
    restoreStore({ from: other, db }),
    /neither a root registry store nor a DP mapping store/,
  );
  // A trigger planted in a backup (it would run inside the DP on every claim), or one of the
  // DP's own removed (claims would no longer reach the change log, so resolvers would not hear).
  const edited = (name: string, sql: string) => {
    const path = join(dir, name);
    writeFileSync(path, readFileSync(out), { mode: 0o600 });
    const edit = new Database(path);
    edit.exec(sql);
    edit.close();
    return path;
  };
  const planted = edited(
    "planted.sqlite",
    "CREATE TRIGGER eat AFTER INSERT ON mappings BEGIN DELETE FROM mappings; END",
  );
  await assert.rejects(
    restoreStore({ from: planted, db }),
    /DP backup .* is not restored: its schema is not this build's: trigger "eat" is not part of this build's schema/,
  );
  const dropped = edited("dropped.sqlite", "DROP TRIGGER log_mapping_insert");
  await assert.rejects(restoreStore({ from: dropped, db }), /trigger "log_mapping_insert" is missing/);
  assert.deepEqual(readFileSync(db), before);
  assert.equal(existsSync(`${db}.before-restore`), false);
});

test("a restore refuses while a process holds the store open, idle or not", async () => {
  const dir = folder();
  const db = join(dir, "mappings.sqlite");
  const setup = openStore(db, "dp");
  addMappings(setup, 0, 3);
  const out = join(dir, "dp.sqlite");
  await backupStore({ db, out });
  addMappings(setup, 3, 5);
  // The server's connection, idle between requests.
  await assert.rejects(restoreStore({ from: out, db }), /is in use .*stop its server first/);
  assert.equal(read<number>(db, "SELECT count(*) FROM mappings"), 5);
  setup.close();
  await restoreStore({ from: out, db });
  assert.equal(read<number>(db, "SELECT count(*) FROM mappings"), 3);
});

test("a server that opened the store during a restore cannot run on the replaced file", async () => {
  const dir = folder();
  const db = join(dir, "mappings.sqlite");
  const setup = openStore(db, "dp");
  addMappings(setup, 0, 3);
  const out = join(dir, "dp.sqlite");
  await backupStore({ db, out });
  setup.close();
  // Opened (SQLite holds the file) but not yet read, as a server blocked on the restore's lock is.
  const late = new Database(db);
  await restoreStore({ from: out, db });
  assert.throws(() => late.prepare("SELECT count(*) FROM mappings").get(), /not a database/);
  late.close();
  assert.equal(read<number>(db, "SELECT count(*) FROM mappings"), 3);
});

test("a DP backup is refused over a root store, and a backup never overwrites a file", async () => {
  const dir = folder();
  const rootDb = join(dir, "registry.sqlite");
  openStore(rootDb, "root").close();
  const dpDb = join(dir, "mappings.sqlite");
  openStore(dpDb, "dp").close();
  const out = join(dir, "dp.sqlite");
  await backupStore({ db: dpDb, out });
  await assert.rejects(restoreStore({ from: out, db: rootDb }), /is a root store and .* a dp backup/);
  await assert.rejects(backupStore({ db: dpDb, out }), /exists; a backup never overwrites a file/);
  // Nor writes through a link left where the backup goes, even one to a file not there yet.
  const target = join(folder(), "elsewhere.sqlite");
  const link = join(dir, "link.sqlite");
  symlinkSync(target, link);
  await assert.rejects(backupStore({ db: dpDb, out: link }), /exists; a backup never overwrites a file/);
  assert.equal(existsSync(target), false, "nothing was written through the link");
  assert.equal(lstatSync(link).isSymbolicLink(), true, "and the link is left as it was");
  await assert.rejects(backupStore({ db: join(dir, "none.sqlite"), out: join(dir, "x") }), /no store at/);
});

test("backups and restores go only into folders others cannot open, unless accepted", async () => {
  const dir = folder();
  const db = join(dir, "mappings.sqlite");
  openStore(db, "dp").close();
  const shared = join(dir, "shared");
  mkdirSync(shared);
  chmodSync(shared, 0o755);
  const out = join(shared, "dp.sqlite");
  await assert.rejects(backupStore({ db, out }), /mode 0755.*chmod 700.*--allow-insecure-permissions/);
  await backupStore({ db, out, allowInsecure: true });
  assert.equal(modeOf(out), 0o600, "the file is private all the same");
  await assert.rejects(restoreStore({ from: out, db: join(shared, "mappings.sqlite") }), /mode 0755/);
});
