// The writer's own state as replication moves it (schema v11): the tables only the primary
// writes (enrolments, challenges, conflicts and their targets, notices, bulk sessions, peer
// requests), logged by row in writer_log, read and written here by table and primary key. Rows
// travel as JSON (blobs in base64). Table and column names come from this file's list and the
// store's own schema, never from the wire.
import { DiscoveryError } from "@mimi/core";
import type Database from "better-sqlite3";

/** The replicated writer tables and their primary keys. */
export const WRITER_TABLES: Readonly<Record<string, readonly string[]>> = {
  enrolled_msps: ["msp_id"],
  challenges: ["id"],
  conflicts: ["id"],
  conflict_targets: ["conflict_id", "msp_id", "ssi"],
  notices: ["seq"],
  bulk_sessions: ["msp_id", "session_id"],
  peer_requests: ["id"],
};

/** One event of the writer log: the row of `table` with primary key `key` (a JSON array) changed. */
export interface WriterChange {
  readonly seq: number;
  readonly table: string;
  readonly key: string;
  readonly atMs: number;
}

/** A row as it travels: JSON of its columns, blobs as {"b64": ...}; undefined when deleted. */
export type WriterRowJson = string | undefined;

/** The writer log and rows, for replication. */
export interface WriterState {
  /** The last number given (0 for none). */
  latest(): number;
  bounds(): { oldest: number; latest: number };
  changesSince(seq: number, limit: number): WriterChange[];
  atOf(seq: number): number | undefined;
  /** The row of `table` whose key is `key` now, as JSON; undefined when there is none. */
  row(table: string, key: string): WriterRowJson;
  /** Up to `limit` rows of `table` after key `after` (JSON array; "" for the start), in key order. */
  rowsAfter(table: string, after: string, limit: number): { key: string; row: string }[];
  /** Makes the store hold `row` (or no row) for `key` in `table`: a secondary applying its primary's. */
  apply(table: string, key: string, row: WriterRowJson): void;
  /** A secondary's copy of the primary's writer event. */
  logAt(seq: number, table: string, key: string, atMs: number): void;
  /** Empties the writer tables and the writer log, whose last number becomes `latest` (a copy starts). */
  reset(latest: number): void;
  /** Drops the oldest events while older than `ms`, at most `limit`; returns how many. */
  pruneBefore(ms: number, limit: number): number;
  /** The last numbers given by the numbered tables (notices, peer_requests). */
  sequences(): Record<string, number>;
  /** Raises those numbers to the primary's, so that a promoted secondary never reuses one. */
  raiseSequences(seqs: Readonly<Record<string, number>>): void;
}

/** The writer tables numbered by AUTOINCREMENT. */
const NUMBERED = ["notices", "peer_requests"];

interface Table {
  readonly columns: ReadonlySet<string>;
  readonly blobs: ReadonlySet<string>;
  readonly get: Database.Statement;
  readonly first: Database.Statement;
  readonly after: Database.Statement;
  readonly del: Database.Statement;
  readonly clear: Database.Statement;
}

const where = (pk: readonly string[]) => pk.map((c) => `${c} = ?`).join(" AND ");

/** Prepares the statements over `db` (migrated to v11 or later). */
export function writerState(db: Database.Database): WriterState {
  const tables = new Map<string, Table>();
  for (const [name, pk] of Object.entries(WRITER_TABLES)) {
    const info = db.pragma(`table_info(${name})`) as { name: string; type: string }[];
    const order = pk.join(", ");
    tables.set(name, {
      columns: new Set(info.map((c) => c.name)),
      blobs: new Set(info.filter((c) => c.type === "BLOB").map((c) => c.name)),
      get: db.prepare(`SELECT * FROM ${name} WHERE ${where(pk)}`),
      first: db.prepare(`SELECT * FROM ${name} ORDER BY ${order} LIMIT ?`),
      after: db.prepare(
        `SELECT * FROM ${name} WHERE (${order}) > (${pk.map(() => "?").join(", ")}) ORDER BY ${order} LIMIT ?`,
      ),
      del: db.prepare(`DELETE FROM ${name} WHERE ${where(pk)}`),
      clear: db.prepare(`DELETE FROM ${name}`),
    });
  }
  const q = {
    latest: db.prepare<[], { seq: number }>("SELECT seq FROM sqlite_sequence WHERE name = 'writer_log'"),
    oldest: db.prepare<[], { seq: number | null }>("SELECT min(seq) AS seq FROM writer_log"),
    since: db.prepare<[number, number], { seq: number; tbl: string; key: string; at_ms: number }>(
      "SELECT * FROM writer_log WHERE seq > ? ORDER BY seq LIMIT ?",
    ),
    at: db.prepare<[number], { at_ms: number }>("SELECT at_ms FROM writer_log WHERE seq = ?"),
    logAt: db.prepare<[number, string, string, number]>(
      "INSERT INTO writer_log (seq, tbl, key, at_ms) VALUES (?, ?, ?, ?)",
    ),
    oldestRows: db.prepare<[number], { seq: number; at_ms: number }>(
      "SELECT seq, at_ms FROM writer_log ORDER BY seq LIMIT ?",
    ),
    pruneThrough: db.prepare<[number]>("DELETE FROM writer_log WHERE seq <= ?"),
    forgetSeq: db.prepare("DELETE FROM sqlite_sequence WHERE name = 'writer_log'"),
    sequenceOf: db.prepare<[string], { seq: number }>("SELECT seq FROM sqlite_sequence WHERE name = ?"),
    dropSequence: db.prepare<[string]>("DELETE FROM sqlite_sequence WHERE name = ?"),
    addSequence: db.prepare<[string, number]>("INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)"),
    setSeq: db.prepare<[number]>("INSERT INTO sqlite_sequence (name, seq) VALUES ('writer_log', ?)"),
  };
  const table = (name: string): Table => {
    const t = tables.get(name);
    if (!t) throw new DiscoveryError("invalid_argument", `"${name}" is not a replicated table`);
    return t;
  };
  const keyOf = (name: string, key: string): unknown[] => {
    let k: unknown;
    try {
      k = JSON.parse(key);
    } catch {
      k = undefined;
    }
    const pk = WRITER_TABLES[name] as readonly string[];
    if (
      !Array.isArray(k) ||
      k.length !== pk.length ||
      !k.every((v) => typeof v === "string" || Number.isSafeInteger(v))
    ) {
      throw new DiscoveryError(
        "invalid_argument",
        `a key of ${name} is a JSON array of its ${pk.length} key values`,
      );
    }
    return k;
  };
  const toJson = (t: Table, r: Record<string, unknown>) =>
    JSON.stringify(
      Object.fromEntries(
        Object.entries(r).map(([c, v]) => [
          c,
          t.blobs.has(c) ? { b64: Buffer.from(v as Uint8Array).toString("base64") } : v,
        ]),
      ),
    );
  const fromJson = (name: string, t: Table, key: unknown[], json: string): Record<string, unknown> => {
    let parsed: Record<string, unknown>;
    try {
      parsed = JSON.parse(json) as Record<string, unknown>;
    } catch {
      // JSON.parse quotes the text it could not read, which may hold an identifier: say less.
      throw new DiscoveryError("invalid_argument", `a row of ${name} is not valid JSON`);
    }
    if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
      throw new DiscoveryError("invalid_argument", `a row of ${name} is a JSON object`);
    }
    const row: Record<string, unknown> = {};
    for (const [c, v] of Object.entries(parsed)) {
      if (!t.columns.has(c)) throw new DiscoveryError("invalid_argument", `${name} has no column "${c}"`);
      if (t.blobs.has(c)) {
        const b64 = (v as { b64?: unknown } | null)?.b64;
        if (typeof b64 !== "string") throw new DiscoveryError("invalid_argument", `${name}.${c} is a blob`);
        row[c] = Buffer.from(b64, "base64");
      } else if (typeof v === "string" || (typeof v === "number" && Number.isSafeInteger(v))) row[c] = v;
      else throw new DiscoveryError("invalid_argument", `${name}.${c} is not a text or integer value`);
    }
    const pk = WRITER_TABLES[name] as readonly string[];
    if (pk.some((c, i) => row[c] !== key[i])) {
      throw new DiscoveryError("invalid_argument", `a row of ${name} does not have the key it was sent with`);
    }
    return row;
  };
  const upserts = new Map<string, Database.Statement>();
  const upsert = (name: string, columns: readonly string[]) => {
    const k = `${name}(${columns.join(",")})`;
    let s = upserts.get(k);
    if (!s) {
      // INSERT OR REPLACE: these tables carry no counting trigger (the mapping count's reason for upserts).
      s = db.prepare(
        `INSERT OR REPLACE INTO ${name} (${columns.join(", ")}) VALUES (${columns.map((c) => `@${c}`).join(", ")})`,
      );
      upserts.set(k, s);
    }
    return s;
  };
  return {
    latest: () => q.latest.get()?.seq ?? 0,
    bounds() {
      const latest = q.latest.get()?.seq ?? 0;
      return { oldest: q.oldest.get()?.seq ?? latest + 1, latest };
    },
    changesSince: (seq, limit) =>
      q.since.all(seq, limit).map((r) => ({ seq: r.seq, table: r.tbl, key: r.key, atMs: r.at_ms })),
    atOf: (seq) => q.at.get(seq)?.at_ms,
    row(name, key) {
      const t = table(name);
      const r = t.get.get(...keyOf(name, key)) as Record<string, unknown> | undefined;
      return r && toJson(t, r);
    },
    rowsAfter(name, after, limit) {
      const t = table(name);
      const pk = WRITER_TABLES[name] as readonly string[];
      const rows = (after === "" ? t.first.all(limit) : t.after.all(...keyOf(name, after), limit)) as Record<
        string,
        unknown
      >[];
      return rows.map((r) => ({ key: JSON.stringify(pk.map((c) => r[c])), row: toJson(t, r) }));
    },
    apply(name, key, json) {
      const t = table(name);
      const k = keyOf(name, key);
      if (json === undefined) {
        t.del.run(...k);
        return;
      }
      const row = fromJson(name, t, k, json);
      upsert(name, Object.keys(row)).run(row);
    },
    logAt: (seq, name, key, atMs) => void q.logAt.run(seq, name, key, atMs),
    reset(latest) {
      for (const t of tables.values()) t.clear.run();
      q.pruneThrough.run(Number.MAX_SAFE_INTEGER);
      q.forgetSeq.run();
      q.setSeq.run(latest);
    },
    sequences: () => Object.fromEntries(NUMBERED.map((n) => [n, q.sequenceOf.get(n)?.seq ?? 0])),
    raiseSequences(seqs) {
      for (const n of NUMBERED) {
        const want = seqs[n] ?? 0;
        if (!Number.isSafeInteger(want) || want <= (q.sequenceOf.get(n)?.seq ?? 0)) continue;
        q.dropSequence.run(n);
        q.addSequence.run(n, want);
      }
    },
    pruneBefore(ms, limit) {
      const first = q.oldestRows.get(1);
      if (!first || first.at_ms >= ms) return 0;
      let through = 0;
      for (const r of q.oldestRows.iterate(limit)) {
        if (r.at_ms >= ms) break;
        through = r.seq;
      }
      return q.pruneThrough.run(through).changes;
    },
  };
}
