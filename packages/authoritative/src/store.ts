// The authoritative's mapping store in SQLite (WAL), kept on the DP's own disk in its
// jurisdiction (H2). Lookups are one prepared statement on the primary key.

import { DiscoveryError, type Mapping } from "@mimi/core";
import Database from "better-sqlite3";

/** An MSP enrolled at this DP (G1). */
export interface EnrolledMsp {
  readonly mspId: string;
  readonly tlsIdentity: string;
  readonly enrolledUsers: number;
  readonly enrolledAtMs: number;
}

/** A mapping with the CSI it belongs to. */
export interface StoredMapping {
  readonly csi: string;
  readonly mapping: Mapping;
}

const MIGRATIONS: readonly string[] = [
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
];

interface MappingRow {
  msp_id: string;
  ssi: string;
  is_default: number;
  tags: string;
  created_at_ms: number;
}

interface MspRow {
  msp_id: string;
  tls_identity: string;
  enrolled_users: number;
  enrolled_at_ms: number;
}

/** The DP's store. */
export interface MappingStore {
  /** Mappings of one canonical CSI, in storage order. */
  lookup(csi: string): Mapping[];
  /** Stores mappings in one transaction; returns how many were new or changed. */
  upsert(records: readonly StoredMapping[]): { imported: number; unchanged: number };
  count(): number;
  enrol(msp: EnrolledMsp): void;
  enrolled(mspId: string): EnrolledMsp | undefined;
  listEnrolled(): EnrolledMsp[];
  close(): void;
}

/** Opens (creating when absent) the store at `path`; ":memory:" for tests. */
export function openMappingStore(path: string): MappingStore {
  let db: Database.Database;
  try {
    db = new Database(path);
    db.pragma("journal_mode = WAL");
    db.pragma("synchronous = NORMAL");
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
    lookup: db.prepare<[string], MappingRow>(
      "SELECT msp_id, ssi, is_default, tags, created_at_ms FROM mappings WHERE csi = ?",
    ),
    upsert: db.prepare(
      `INSERT INTO mappings (csi, msp_id, ssi, is_default, tags, created_at_ms)
       VALUES (@csi, @msp_id, @ssi, @is_default, @tags, @created_at_ms)
       ON CONFLICT (csi, msp_id, ssi) DO UPDATE SET is_default = excluded.is_default, tags = excluded.tags
       WHERE is_default != excluded.is_default OR tags != excluded.tags`,
    ),
    count: db.prepare<[], { n: number }>("SELECT count(*) AS n FROM mappings"),
    enrol: db.prepare(
      `INSERT INTO enrolled_msps (msp_id, tls_identity, enrolled_users, enrolled_at_ms)
       VALUES (@mspId, @tlsIdentity, @enrolledUsers, @enrolledAtMs)
       ON CONFLICT (msp_id) DO UPDATE SET tls_identity = excluded.tls_identity,
         enrolled_users = excluded.enrolled_users`,
    ),
    enrolled: db.prepare<[string], MspRow>("SELECT * FROM enrolled_msps WHERE msp_id = ?"),
    listEnrolled: db.prepare<[], MspRow>("SELECT * FROM enrolled_msps ORDER BY msp_id"),
  };
  const upsertTx = db.transaction((records: readonly StoredMapping[]) => {
    let imported = 0;
    for (const { csi, mapping: m } of records) {
      imported += q.upsert.run({
        csi,
        msp_id: m.mspId,
        ssi: m.ssi,
        is_default: m.isDefault ? 1 : 0,
        tags: JSON.stringify(m.tags),
        created_at_ms: m.createdAtMs,
      }).changes;
    }
    return { imported, unchanged: records.length - imported };
  });
  const wrap = <T>(what: string, f: () => T): T => {
    try {
      return f();
    } catch (err) {
      throw new DiscoveryError("store_failure", `${what} failed: ${(err as Error).message}`, { cause: err });
    }
  };
  return {
    lookup: (csi) =>
      wrap("lookup", () =>
        q.lookup.all(csi).map((r) => ({
          mspId: r.msp_id,
          ssi: r.ssi,
          isDefault: r.is_default === 1,
          tags: JSON.parse(r.tags) as string[],
          createdAtMs: r.created_at_ms,
        })),
      ),
    upsert: (records) => wrap("import", () => upsertTx(records)),
    count: () => q.count.get()?.n ?? 0,
    enrol: (msp) => wrap("enrolment", () => void q.enrol.run(msp)),
    enrolled: (id) => {
      const r = q.enrolled.get(id);
      return r && mspOf(r);
    },
    listEnrolled: () => q.listEnrolled.all().map(mspOf),
    close: () => db.close(),
  };
}

function mspOf(r: MspRow): EnrolledMsp {
  return {
    mspId: r.msp_id,
    tlsIdentity: r.tls_identity,
    enrolledUsers: r.enrolled_users,
    enrolledAtMs: r.enrolled_at_ms,
  };
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
