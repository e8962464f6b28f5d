// `mimi store`: backup and restore of a root's or a DP's SQLite store, on the host that keeps
// it. A backup uses SQLite's online backup API beside the running server (in WAL mode a reader
// never blocks the writer). A restore refuses while any process holds the store, verifies the
// backup, and makes followers start over rather than trust positions the restored store would
// give again: a DP's store gets a new change-log id, a root's a serial above any it published.
// A root backup is restored only when the root's key signed what it holds: the restored root
// signs whatever its store holds at start, so an unchecked backup would be as good as the key.
import {
  closeSync,
  copyFileSync,
  existsSync,
  fsyncSync,
  openSync,
  renameSync,
  rmSync,
  statSync,
  writeSync,
} from "node:fs";
import { dirname, resolve } from "node:path";
import { dpBackupProblem } from "@mimi/authoritative/offline";
import { createPrivateFile, DiscoveryError, ensurePrivateDir, restrictFile } from "@mimi/core";
import { rootBackupProblem } from "@mimi/root/offline";
import Database from "better-sqlite3";
import type { Command } from "commander";
import { count } from "../args.js";
import { about } from "../help.js";
import { publicKeyArg } from "../keys.js";
import { json, note, out } from "../output.js";

/** The server a store belongs to. */
export type StoreKind = "root" | "dp";

/** What a store holds, as backup, restore and verify report it. */
export type StoreSummary =
  | {
      readonly kind: "root";
      readonly schemaVersion: number;
      readonly serial: number;
      readonly delegations: number;
    }
  | {
      readonly kind: "dp";
      readonly schemaVersion: number;
      readonly logId: string;
      readonly mappings: number;
    };

/** Options of restoreStore. */
export interface RestoreOptions {
  readonly from: string;
  readonly db: string;
  /** How far a root's serial and a DP's notice sequence jump past the highest known one. */
  readonly bump?: number;
  readonly allowInsecure?: boolean;
  /** The root's public signing key: required to restore a root backup, whose seal it checks. */
  readonly rootPublicKey?: Uint8Array;
  readonly now?: () => number;
}

/** What a restore did. */
export interface RestoreResult {
  readonly restored: StoreSummary;
  /** The store that was replaced, kept beside it (0600) until the operator deletes it. */
  readonly previous: string | undefined;
  /** A root backup's registry: the serial and time the root signed it, before the bump. */
  readonly signed?: { readonly serial: number; readonly atMs: number };
}

/** The default jump: far beyond the registry edits or notices a store sees between two backups. */
export const DEFAULT_BUMP = 1_000_000;

// The tables that tell the stores apart (packages/root/src/store.ts, packages/authoritative/src/store/schema.ts).
const REQUIRED: Record<StoreKind, readonly string[]> = {
  root: ["dps", "msps", "delegations", "changes", "meta"],
  dp: ["mappings", "enrolled_msps"],
};
/** Pages per backup step: all of them, so the copy is one read transaction and never restarts. */
const ALL_PAGES = 0x7fffffff;
/** Written over the header of a replaced store's old inode (see swapIn). */
const NOT_A_STORE = Buffer.from("replaced by mimi store restore\0");
const HINT = "pass --allow-insecure-permissions";

/** Copies the store at `db` into the new file `out` (0600, in a 0700 folder) while its server runs. */
export async function backupStore(o: {
  db: string;
  out: string;
  allowInsecure?: boolean;
}): Promise<StoreSummary> {
  const db = resolve(o.db);
  const outPath = resolve(o.out);
  if (!existsSync(db)) throw refusal(`there is no store at ${db}`);
  if (existsSync(outPath))
    throw refusal(`${outPath} exists; a backup never overwrites a file, give a new name`);
  // Read-only: a backup never writes the live store, and WAL lets it read beside the server.
  const src = openDb(db, { readonly: true, fileMustExist: true }, "store");
  try {
    storeKind(src, db);
    ensurePrivateDir(dirname(outPath), { allowInsecure: o.allowInsecure ?? false, allowHint: HINT });
    // Created exclusively (O_EXCL, no symlink followed): a file or link that appeared since the
    // check above is neither written through nor removed.
    if (!createPrivateFile(outPath))
      throw refusal(`${outPath} exists; a backup never overwrites a file, give a new name`);
    try {
      await src.backup(outPath, { progress: () => ALL_PAGES });
      const summary = finishBackup(outPath);
      syncDir(dirname(outPath));
      return summary;
    } catch (err) {
      for (const f of [outPath, `${outPath}-journal`]) rmSync(f, { force: true });
      throw err;
    }
  } finally {
    src.close();
  }
}

/** Checks a backup (or a stopped store): SQLite's integrity check, and a schema of one of the stores. */
export function verifyStore(path: string): StoreSummary {
  const db = openDb(resolve(path), { readonly: true, fileMustExist: true }, "backup");
  try {
    return inspect(db, resolve(path));
  } finally {
    db.close();
  }
}

/**
 * Replaces the store at `o.db` with the backup `o.from`, refusing while any process has the
 * store open. The backup must pass verifyStore. The restored store is made a new one for its
 * followers: a DP's gets a new change-log id, so every resolver following it resyncs
 * ("other_log") instead of trusting sequence numbers the restored log gives again, and its
 * notice sequence jumps past the highest known one, so MSPs resuming from a later position
 * miss nothing new. A root's registry gets a serial `bump` above the highest known one (a
 * refresh change the root signs at start), and its backlog starts there, so every follower,
 * whatever serial it holds, takes a snapshot: followers refuse serials below what they hold.
 * A root backup must carry the root's valid signature over the registry it holds, checked
 * with `o.rootPublicKey` on the copy that is put in place (its seal may have expired: the
 * restored root signs again at start).
 */
export async function restoreStore(o: RestoreOptions): Promise<RestoreResult> {
  const from = resolve(o.from);
  const dbPath = resolve(o.db);
  const bump = o.bump ?? DEFAULT_BUMP;
  if (from === dbPath) throw refusal(`${from} is the store itself; restore from a backup of it`);
  const src = openDb(from, { readonly: true, fileMustExist: true }, "backup");
  try {
    const backup = inspect(src, from);
    if (backup.kind === "root" && !o.rootPublicKey) {
      throw new DiscoveryError(
        "invalid_argument",
        "restoring a root needs the root's public signing key (--root-key <file>): " +
          "the restore checks that the root signed what the backup holds",
      );
    }
    ensurePrivateDir(dirname(dbPath), { allowInsecure: o.allowInsecure ?? false, allowHint: HINT });
    // An absent store is created (empty, 0600) so that the one code path below locks it: a
    // server starting meanwhile then finds it locked instead of a store about to be replaced.
    const existed = !createPrivateFile(dbPath);
    const lock = holdExclusive(dbPath);
    let done = false;
    try {
      const current = positions(lock);
      if (current.kind && current.kind !== backup.kind) {
        throw refusal(`${dbPath} is a ${current.kind} store and ${from} a ${backup.kind} backup`);
      }
      const tmp = `${dbPath}.restoring`;
      const leftovers = [tmp, `${tmp}-journal`, `${tmp}-wal`, `${tmp}-shm`];
      for (const f of leftovers) rmSync(f, { force: true });
      if (!createPrivateFile(tmp)) throw refusal(`${tmp} appeared while the store was locked; try again`);
      try {
        await src.backup(tmp, { progress: () => ALL_PAGES });
        // Checked on the copy that goes in place, before anything in it runs again.
        const root =
          backup.kind === "root" ? rootBackupProblem(tmp, o.rootPublicKey as Uint8Array) : undefined;
        const problem = root ? ("problem" in root ? root.problem : undefined) : dpBackupProblem(tmp);
        if (problem) {
          throw refusal(
            `the ${backup.kind === "root" ? "root" : "DP"} backup ${from} is not restored: ${problem}; ` +
              "nothing was changed, restore another backup of this store",
          );
        }
        const restored = renew(tmp, backup.kind, current.high, bump, o.now ?? Date.now);
        const previous = swapIn(lock, dbPath, tmp, existed);
        done = true;
        const signed = root && !("problem" in root) && { serial: Number(root.serial), atMs: root.signedAtMs };
        return { restored, previous, ...(signed && { signed }) };
      } finally {
        for (const f of leftovers) rmSync(f, { force: true });
      }
    } finally {
      // The empty store made above goes if nothing took its place (the lock keeps servers off it).
      if (!existed && !done) rmSync(dbPath, { force: true });
      lock.close();
    }
  } finally {
    src.close();
  }
}

/** Adds `store backup`, `store restore` and `store verify`. */
export function addStoreCommands(program: Command): void {
  const store = program.command("store").description(about("store"));
  const insecure = (c: Command) =>
    c.option("--allow-insecure-permissions", "accept a folder that group or others may open");
  insecure(
    store
      .command("backup")
      .description("copy a store while its server runs (SQLite's online backup API)")
      .requiredOption(
        "--db <path>",
        "the store: <dataDir>/mappings.sqlite (DP) or <dataDir>/registry.sqlite (root)",
      )
      .requiredOption("--out <file>", "the backup to write (a new file, mode 0600)")
      .option("--json", "print the summary as JSON"),
  ).action(async (o: { db: string; out: string; json?: boolean; allowInsecurePermissions?: boolean }) => {
    const s = await backupStore({ db: o.db, out: o.out, allowInsecure: o.allowInsecurePermissions ?? false });
    if (o.json) json(s);
    else out(`backed up ${describe(s)} from ${resolve(o.db)} to ${resolve(o.out)}`);
  });
  store
    .command("verify")
    .description("check a backup: SQLite's integrity check and a root's or a DP's schema")
    .argument("<file>", "the backup")
    .option("--json", "print the summary as JSON")
    .action((file: string, o: { json?: boolean }) => {
      const s = verifyStore(file);
      if (o.json) json(s);
      else out(`${resolve(file)}: ok, ${describe(s)}`);
    });
  insecure(
    store
      .command("restore")
      .description("replace a stopped server's store with a verified backup")
      .requiredOption("--from <file>", "the backup")
      .requiredOption("--db <path>", "the store to replace (its server must be stopped)")
      .option(
        "--serial-bump <n>",
        "how far a root's serial (a DP's notice sequence) jumps past the highest known",
        String(DEFAULT_BUMP),
      )
      .option("--root-key <file>", "the root's public signing key; required for a root backup")
      .option("--json", "print the summary as JSON"),
  ).action(
    async (o: {
      from: string;
      db: string;
      serialBump: string;
      rootKey?: string;
      json?: boolean;
      allowInsecurePermissions?: boolean;
    }) => {
      const r = await restoreStore({
        from: o.from,
        db: o.db,
        bump: count("--serial-bump", o.serialBump, 1, 1_000_000_000_000),
        allowInsecure: o.allowInsecurePermissions ?? false,
        ...(o.rootKey !== undefined && { rootPublicKey: publicKeyArg("--root-key", o.rootKey) }),
      });
      if (o.json) {
        json(r);
        return;
      }
      out(`restored ${describe(r.restored)} to ${resolve(o.db)} from ${resolve(o.from)}`);
      if (r.restored.kind === "dp") {
        note("resolvers see a new change log and resync; mappings committed after the backup are gone");
        note("and must be registered again by their MSPs");
      } else {
        if (r.signed) {
          const at = new Date(r.signed.atMs).toISOString();
          note(`the backup holds the registry the root signed at serial ${r.signed.serial} on ${at};`);
        }
        note(`start the root: it signs serial ${r.restored.serial}, and every follower takes a snapshot;`);
        note("changes made after the backup are gone and must be made again");
      }
      if (r.previous)
        note(`the replaced store is kept as ${r.previous}; delete it once the restore is confirmed`);
    },
  );
}

function describe(s: StoreSummary): string {
  return s.kind === "root"
    ? `root store (schema v${s.schemaVersion}, serial ${s.serial}, ${s.delegations} delegation(s))`
    : `DP store (schema v${s.schemaVersion}, change log ${s.logId}, ${s.mappings} mapping(s))`;
}

function refusal(message: string): DiscoveryError {
  return new DiscoveryError("failed_precondition", message);
}

function openDb(path: string, options: Database.Options, what: string): Database.Database {
  try {
    return new Database(path, options);
  } catch (err) {
    throw refusal(`cannot open the ${what} ${path}: ${(err as Error).message}`);
  }
}

function tablesOf(db: Database.Database): Set<string> {
  return new Set(db.prepare<[], string>("SELECT name FROM sqlite_schema WHERE type = 'table'").pluck().all());
}

/** Which store `db` is; refuses anything else. */
function storeKind(db: Database.Database, path: string): StoreKind {
  let tables: Set<string>;
  try {
    tables = tablesOf(db);
  } catch (err) {
    throw refusal(`${path} is not a readable SQLite store: ${(err as Error).message}`);
  }
  const kinds = (Object.keys(REQUIRED) as StoreKind[]).filter((k) => REQUIRED[k].every((t) => tables.has(t)));
  if (kinds.length !== 1) throw refusal(`${path} is neither a root registry store nor a DP mapping store`);
  return kinds[0] as StoreKind;
}

/** SQLite's integrity check (or quick_check, which skips matching indexes to tables), the kind and the summary. */
function inspect(db: Database.Database, path: string, check = "integrity_check"): StoreSummary {
  let problems: string[];
  try {
    problems = db.prepare<[], string>(`PRAGMA ${check}`).pluck().all();
  } catch (err) {
    throw refusal(`${path} fails SQLite's integrity check: ${(err as Error).message}`);
  }
  if (problems.length !== 1 || problems[0] !== "ok") {
    throw refusal(`${path} fails SQLite's integrity check: ${problems.slice(0, 3).join("; ")}`);
  }
  const kind = storeKind(db, path);
  const schemaVersion = db.pragma("user_version", { simple: true }) as number;
  const n = (sql: string) => db.prepare<[], number>(sql).pluck().get() ?? 0;
  if (kind === "root") {
    const base = tablesOf(db).has("base") ? "(SELECT serial FROM base)" : "0";
    const serial = n(`SELECT max(coalesce((SELECT max(serial) FROM changes), 0), coalesce(${base}, 0))`);
    return { kind, schemaVersion, serial, delegations: n("SELECT count(*) FROM delegations") };
  }
  const logId = tablesOf(db).has("store_meta")
    ? (db.prepare<[], string>("SELECT value FROM store_meta WHERE key = 'log_id'").pluck().get() ?? "")
    : "";
  return { kind, schemaVersion, logId, mappings: n("SELECT count(*) FROM mappings") };
}

/**
 * Opens `path` and takes SQLite's exclusive lock without waiting, and keeps it
 * (locking_mode=EXCLUSIVE). Every server keeps its store open in WAL mode, and a WAL
 * connection holds a shared lock on the database file for as long as it is open, idle or
 * not, so this fails with SQLITE_BUSY while a server (or a backup) has the store open. The
 * kernel drops the lock of a process that dies, so a crashed server leaves none behind, as
 * a pid file would. (POSIX locks are unreliable on network file systems, as WAL is.)
 */
function holdExclusive(path: string): Database.Database {
  const db = openDb(path, { fileMustExist: true, timeout: 0 }, "store");
  try {
    db.pragma("locking_mode = EXCLUSIVE");
    db.exec("BEGIN EXCLUSIVE; COMMIT");
    return db;
  } catch (err) {
    db.close();
    if ((err as { code?: string }).code === "SQLITE_BUSY") {
      throw refusal(
        `${path} is in use (a running server or a backup holds it open); stop its server first: ` +
          "a restore never replaces a store that is open",
      );
    }
    throw refusal(
      `cannot lock ${path} to replace it (${(err as Error).message}); with its server stopped, ` +
        "move it and its -wal and -shm aside, then restore again",
    );
  }
}

/** The kind of the store being replaced and its highest serial (root) or notice sequence (DP), if readable. */
function positions(db: Database.Database): { kind: StoreKind | undefined; high: number } {
  try {
    const tables = tablesOf(db);
    if (tables.size === 0) return { kind: undefined, high: 0 };
    const kind = storeKind(db, "");
    return { kind, high: kind === "root" ? rootSerial(db) : noticeSeq(db) };
  } catch {
    // A damaged store being replaced: the bump alone keeps positions ahead.
    return { kind: undefined, high: 0 };
  }
}

function rootSerial(db: Database.Database): number {
  const base = tablesOf(db).has("base") ? "(SELECT serial FROM base)" : "0";
  const sql = `SELECT max(coalesce((SELECT max(serial) FROM changes), 0), coalesce(${base}, 0))`;
  return db.prepare<[], number>(sql).pluck().get() ?? 0;
}

function noticeSeq(db: Database.Database): number {
  if (!tablesOf(db).has("sqlite_sequence")) return 0;
  return db.prepare<[], number>("SELECT seq FROM sqlite_sequence WHERE name = 'notices'").pluck().get() ?? 0;
}

/** Makes the copy at `tmp` a new store for its followers (see restoreStore); returns its summary. */
function renew(tmp: string, kind: StoreKind, high: number, bump: number, now: () => number): StoreSummary {
  const db = new Database(tmp);
  try {
    // A single file: the copy has no WAL of its own until its server opens it.
    db.pragma("journal_mode = DELETE");
    const tables = tablesOf(db);
    db.transaction(() => {
      if (kind === "dp") {
        if (tables.has("store_meta")) {
          db.prepare("UPDATE store_meta SET value = lower(hex(randomblob(16))) WHERE key = 'log_id'").run();
        }
        if (tables.has("notices")) {
          const seq = Math.max(noticeSeq(db), high) + bump;
          if (
            db.prepare("UPDATE sqlite_sequence SET seq = ? WHERE name = 'notices'").run(seq).changes === 0
          ) {
            db.prepare("INSERT INTO sqlite_sequence (name, seq) VALUES ('notices', ?)").run(seq);
          }
        }
        return;
      }
      if (!tables.has("base")) {
        throw refusal(
          "the backup's root schema predates the base table (v3): open it with a root once, then back it up",
        );
      }
      // The refresh change gets the root's signature at start (its row has none); base at the
      // same serial makes every watcher behind it take a snapshot (root server.ts: backlogStart).
      const serial = Math.max(rootSerial(db), high) + bump;
      const body = JSON.stringify({ serial: { $u64: String(serial) }, kind: "refresh" });
      db.prepare("INSERT INTO changes (serial, at_ms, actor, body, signature) VALUES (?, ?, ?, ?, x'')").run(
        serial,
        now(),
        "(mimi store restore)",
        body,
      );
      db.prepare(
        `INSERT INTO base (id, serial, signature) VALUES (1, ?, x'')
         ON CONFLICT (id) DO UPDATE SET serial = excluded.serial, signature = excluded.signature`,
      ).run(serial);
    })();
    // The backup passed the whole check before it was copied; this one covers the copy.
    return inspect(db, tmp, "quick_check");
  } finally {
    db.close();
  }
}

/**
 * Puts `tmp` in place of the store `path`, whose exclusive lock `lock` holds. The old store's
 * WAL is folded into it first (journal_mode=MEMORY under the lock), so no old -wal or -journal
 * is left for the new file to pick up, and nothing is deleted by name when the lock closes.
 * The old store is kept as `<path>.before-restore` when it held one. A server that opened the
 * path during the restore waits on the lock with the old file open: the old file's header is
 * overwritten once the new one is in place, so it fails to open instead of running on a store
 * nobody can reach.
 */
function swapIn(lock: Database.Database, path: string, tmp: string, keep: boolean): string | undefined {
  if (lock.pragma("journal_mode = MEMORY", { simple: true }) !== "memory") {
    throw refusal(`cannot fold the write-ahead log of ${path} into it; is a server still running on it?`);
  }
  for (const f of [`${path}-wal`, `${path}-journal`, `${path}-shm`]) rmSync(f, { force: true });
  const previous = keep && statSync(path).size > 0 ? `${path}.before-restore` : undefined;
  if (previous) {
    copyFileSync(path, previous);
    restrictFile(previous);
  }
  const old = openSync(path, "r+");
  try {
    renameSync(tmp, path);
    syncDir(dirname(path));
    writeSync(old, NOT_A_STORE, 0, NOT_A_STORE.length, 0);
  } finally {
    closeSync(old);
  }
  return previous;
}

/** Makes the backup one standalone file (no WAL), and checks and summarizes it. */
function finishBackup(path: string): StoreSummary {
  const db = new Database(path);
  try {
    db.pragma("journal_mode = DELETE");
    return inspect(db, path);
  } finally {
    db.close();
  }
}

function syncDir(dir: string): void {
  const fd = openSync(dir, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
