// Issue 14: a DP must cost nothing measurable when nothing changes, at 100M mappings. Every
// statement the store prepares is read here through SQLite's query planner: none may read a
// large table whole, or search one by fewer columns than it filters on, so neither the sweep
// nor a lookup grows with the store. The mapping count,
// which start-up and GetStatus read, is kept by triggers instead of counted.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import Database from "better-sqlite3";
import type { MappingRow } from "./rows.js";
import { MIGRATIONS } from "./schema.js";
import { SQL } from "./sql.js";
import { openMappingStore } from "./store.js";

const dir = mkdtempSync(join(tmpdir(), "mimi-dp-sql-"));
after(() => rmSync(dir, { recursive: true, force: true }));

/**
 * Tables a statement may scan, and why that stays small whatever the number of mappings.
 * Everything else (mappings, opt-outs, the change log, notices, challenges, conflicts) must be
 * searched by key or index, or read in key order under a LIMIT.
 */
const SMALL_TABLES: Record<string, string> = {
  store_meta: "a handful of keys",
  row_counts: "one row per counted table",
  sqlite_sequence: "one row per AUTOINCREMENT table",
  enrolled_msps: "one row per enrolled MSP",
  peer_requests: "undelivered peer invalidations only; rows leave when acknowledged",
  legacy_unsigned_mappings: "v1 leftovers, read once at start-up, emptied by re-registration",
};

/** Binds every parameter of `sql` to 0: the plan depends on the SQL, not on the values. */
function planOf(db: Database.Database, sql: string): string[] {
  const named = Object.fromEntries([...sql.matchAll(/@(\w+)/g)].map((m) => [m[1], 0]));
  const positional = [...sql.matchAll(/\?/g)].map(() => 0);
  const stmt = db.prepare(`EXPLAIN QUERY PLAN ${sql}`);
  const args: unknown[] = Object.keys(named).length > 0 ? [named] : positional;
  return (stmt.all(...args) as { detail: string }[]).map((r) => r.detail);
}

/** Columns the statement's WHERE clauses compare for equality with a value (not SET's). */
function equalityColumns(sql: string): Set<string> {
  const where = sql.slice(Math.max(0, sql.search(/\bWHERE\b/)));
  return new Set([...where.matchAll(/\b(\w+)\s*=\s*(?:\?|@\w+|'[^']*')/g)].map((m) => m[1] as string));
}

/**
 * What is wrong with a statement's plan at 100M rows, if anything: a scan of a large table, or
 * a search of one that leaves a column the statement filters on for equality out of the index
 * search (it reads every row of the columns it did use, e.g. every open conflict of the DP to
 * find one CSI's). A search by rowid equality reads one row and is always fine.
 */
function scanProblem(sql: string, plan: readonly string[]): string | undefined {
  // Rows read in key order with no filter, stopping at a LIMIT (the oldest log rows): bounded.
  const bounded =
    /\bLIMIT\b/.test(sql) && !/\bWHERE\b/.test(sql) && !plan.some((d) => d.startsWith("USE TEMP B-TREE"));
  for (const d of plan) {
    const scan = /^SCAN (\w+)/.exec(d);
    if (!scan) continue;
    const table = scan[1] as string;
    if (table in SMALL_TABLES) continue;
    if (bounded) continue;
    return `scans ${table} (${d})`;
  }
  const wanted = equalityColumns(sql);
  for (const d of plan) {
    const search = /^SEARCH (\w+)(?: USING .*?\((.*)\))?/.exec(d);
    if (!search || (search[1] as string) in SMALL_TABLES) continue;
    const used = new Set([...(search[2] ?? "").matchAll(/(\w+)\s*[=<>]/g)].map((m) => m[1] as string));
    if (used.has("rowid") && /\browid=/.test(d)) continue;
    const missing = [...wanted].filter((c) => !used.has(c));
    if (missing.length > 0) return `searches ${search[1]} without ${missing.join(", ")} (${d})`;
  }
  return undefined;
}

test("no statement of the store reads a large table whole (query plans)", () => {
  const path = join(dir, "plans.sqlite");
  openMappingStore(path).close();
  const db = new Database(path, { readonly: true });
  try {
    const problems: string[] = [];
    for (const [name, sql] of Object.entries(SQL)) {
      const problem = scanProblem(sql, planOf(db, sql));
      if (problem) problems.push(`${name}: ${problem}`);
    }
    assert.deepEqual(problems, []);
    // The mapping count's triggers see inserts and deletes only: a REPLACE's implicit delete
    // fires none, so mappings are written by upsert.
    for (const [name, sql] of Object.entries(SQL))
      assert.doesNotMatch(sql, /\bREPLACE\s+INTO\s+mappings\b/i, `${name} replaces mappings`);
    // The check itself: a count of all mappings, and a filter no index serves (even under a
    // LIMIT: it reads until enough rows match), are caught.
    assert.match(
      scanProblem("SELECT count(*) FROM mappings", planOf(db, "SELECT count(*) FROM mappings")) ?? "",
      /scans mappings/,
    );
    const byRecord = "SELECT * FROM mappings WHERE record = ? ORDER BY csi LIMIT 5";
    assert.match(scanProblem(byRecord, planOf(db, byRecord)) ?? "", /scans mappings/);
    // So is a search that uses an index for one filter column and reads every row under it to
    // check the other: openConflicts was "SEARCH conflicts USING INDEX conflicts_due (state=?)"
    // until v12, every open conflict read to find one CSI's.
    const byMsp = "SELECT * FROM conflicts WHERE state = 'open' AND new_msp = ?";
    assert.match(scanProblem(byMsp, planOf(db, byMsp)) ?? "", /searches conflicts without new_msp/);
  } finally {
    db.close();
  }
});

const row = (csi: string, ssi = "s1", expiresAtMs = Date.UTC(2027, 0, 1)): MappingRow => ({
  csi,
  mspId: "m",
  ssi,
  isDefault: false,
  precedence: 1,
  expiresAtMs,
  record: new Uint8Array([1]),
  userSig: new Uint8Array(),
  mspSig: new Uint8Array([2]),
  dpSig: new Uint8Array([3]),
});

test("a lookup reads each mapping's record and signatures back byte for byte (one blob a row)", () => {
  const store = openMappingStore(":memory:");
  // Bytes that are not UTF-8 (the lookup statement joins them as TEXT), NULs, and empty
  // signatures at each place, so that the lengths that split the blob are all exercised.
  const bytes = (n: number, seed: number) => new Uint8Array(n).map((_, i) => (seed * 31 + i * 97) % 256);
  // And the other columns varied, so that a column read into the wrong field shows.
  const rows: MappingRow[] = [
    {
      ...row("tel:+441", "s1"),
      precedence: 2,
      withheld: true,
      record: bytes(300, 1),
      userSig: bytes(64, 2),
      mspSig: bytes(64, 3),
      dpSig: bytes(64, 4),
    },
    {
      ...row("tel:+441", "s2", Date.UTC(2027, 5, 1)),
      isDefault: true,
      precedence: 0,
      record: new Uint8Array([0xff, 0, 0xc3]),
      userSig: new Uint8Array(),
      mspSig: bytes(1, 5),
      dpSig: new Uint8Array(),
    },
    {
      ...row("tel:+441", "s3"),
      record: new Uint8Array([0]),
      userSig: bytes(3, 6),
      mspSig: new Uint8Array(),
      dpSig: bytes(2, 7),
    },
  ];
  try {
    for (const r of rows) store.putMapping(r);
    const read = store.mappings("tel:+441");
    assert.deepEqual(
      read.map((m) => m.ssi),
      ["s2", "s3", "s1"],
      "default first, then by precedence",
    );
    for (const r of rows) {
      const got = read.find((m) => m.ssi === r.ssi);
      assert.ok(got, r.ssi);
      assert.deepEqual(
        [got.csi, got.record, got.userSig, got.mspSig, got.dpSig],
        [r.csi, r.record, r.userSig, r.mspSig, r.dpSig],
        r.ssi,
      );
      assert.deepEqual(got, store.mapping(r.csi, r.mspId, r.ssi), "the same row as the single read");
      assert.deepEqual(
        [got.isDefault, got.precedence, got.expiresAtMs, got.withheld === true],
        [r.isDefault, r.precedence, r.expiresAtMs, r.withheld === true],
        r.ssi,
      );
    }
  } finally {
    store.close();
  }
});

test("a store whose text encoding is not UTF-8 is refused at open", () => {
  const path = join(dir, "utf16.sqlite");
  const db = new Database(path);
  db.pragma("encoding = 'UTF-16le'");
  db.exec("CREATE TABLE t (x)");
  db.close();
  assert.throws(() => openMappingStore(path), /UTF-16le, not UTF-8/);
});

test("the mapping count follows inserts, rewrites, deletes and rolled-back transactions", () => {
  const path = join(dir, "count.sqlite");
  const store = openMappingStore(path);
  const truth = new Database(path, { readonly: true });
  const counted = () => truth.prepare("SELECT count(*) AS n FROM mappings").get() as { n: number };
  try {
    assert.equal(store.count(), 0);
    store.putMapping(row("tel:+441"));
    store.putMapping(row("tel:+441", "s2"));
    store.putMapping(row("tel:+442"));
    assert.equal(store.count(), 3);
    // A rewrite of the same key (a re-registration) is an update: still 3, and one change event.
    const before = store.logBounds().latest;
    store.putMapping({ ...row("tel:+441"), precedence: 0, record: new Uint8Array([9]) });
    assert.equal(store.count(), 3);
    assert.equal(store.logBounds().latest, before + 1, "one change event for the rewrite");
    assert.deepEqual(store.mapping("tel:+441", "m", "s1")?.record, new Uint8Array([9]));
    assert.equal(store.deleteMapping("tel:+442", "m", "s1"), true);
    assert.equal(store.deleteMapping("tel:+442", "m", "s1"), false);
    assert.equal(store.count(), 2);
    assert.throws(() =>
      store.transaction(() => {
        store.putMapping(row("tel:+443"));
        throw new Error("abort");
      }),
    );
    assert.equal(store.count(), 2);
    assert.equal(store.count(), counted().n);
  } finally {
    truth.close();
    store.close();
  }
  const reopened = openMappingStore(path);
  assert.equal(reopened.count(), 2, "kept across a restart");
  reopened.close();
});

test("a v11 store upgrades with an index for a CSI's open conflicts, and its conflicts found by it", () => {
  const path = join(dir, "v11.sqlite");
  const db = new Database(path);
  for (const m of MIGRATIONS.slice(0, 11)) db.exec(m);
  db.pragma("user_version = 11");
  db.prepare(
    `INSERT INTO conflicts (id, csi, claimant_msp, new_msp, new_ssi, replace, make_default, opened_at_ms, deadline_ms, state)
     VALUES (?, ?, 'm', 'm', 's', 0, 0, ?, 9, ?)`,
  ).run("c1", "tel:+441", 1, "open");
  db.prepare(
    `INSERT INTO conflicts (id, csi, claimant_msp, new_msp, new_ssi, replace, make_default, opened_at_ms, deadline_ms, state)
     VALUES (?, ?, 'm', 'm', 's', 0, 0, ?, 9, ?)`,
  ).run("c2", "tel:+442", 2, "open");
  db.close();
  const store = openMappingStore(path);
  try {
    assert.deepEqual(
      store.openConflicts("tel:+441").map((c) => c.id),
      ["c1"],
    );
  } finally {
    store.close();
  }
  const opened = new Database(path, { readonly: true });
  try {
    assert.equal(opened.pragma("user_version", { simple: true }), MIGRATIONS.length);
    assert.match(
      planOf(opened, SQL.openConflicts).join(" "),
      /USING INDEX conflicts_by_csi \(csi=\? AND state=\?\)/,
    );
  } finally {
    opened.close();
  }
});

test("a v6 store upgrades with its mappings counted once", () => {
  const path = join(dir, "v6.sqlite");
  const db = new Database(path);
  for (const m of MIGRATIONS.slice(0, 6)) db.exec(m);
  db.pragma("user_version = 6");
  const insert = db.prepare(
    `INSERT INTO mappings (csi, msp_id, ssi, is_default, precedence, expires_at_ms, record, user_sig, msp_sig, dp_sig)
     VALUES (?, 'm', 's', 0, 1, 0, x'01', x'', x'02', x'03')`,
  );
  for (let i = 0; i < 25; i++) insert.run(`tel:+44${i}`);
  db.close();
  const store = openMappingStore(path);
  try {
    assert.equal(store.count(), 25);
    store.putMapping(row("tel:+4499"));
    assert.equal(store.count(), 26);
  } finally {
    store.close();
  }
});
