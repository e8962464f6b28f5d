// The root registry in SQLite: delegations, DPs, MSPs and the serial-numbered change
// log that doubles as the audit trail (H3). A secondary keeps the same tables, written as
// received from the primary. Invariant: the root never stores mappings.

import {
  createPrivateFile,
  type Delegation,
  DiscoveryError,
  type DpInfo,
  hex64,
  type MspInfo,
  type RegistryChange,
  type RegistryData,
  type RegistrySeal,
  restrictFile,
  schemaDriftBetween,
  sqliteFilesOf,
} from "@mimi/core";
import Database from "better-sqlite3";
import {
  type ChangeRow,
  changeOf,
  type DelegationRow,
  type DpRow,
  delegationOf,
  delegationRow,
  dpOf,
  jsonBigint,
  type MspRow,
  mspOf,
  privateKeysColumn,
} from "./store-rows.js";

/** One audited change: who, when, what. */
export interface AuditEntry {
  readonly atMs: number;
  readonly actor: string;
  readonly change: RegistryChange;
}

// Each entry runs once, in order; PRAGMA user_version records how many have run.
const MIGRATIONS: readonly string[] = [
  `CREATE TABLE dps (
     id TEXT PRIMARY KEY,
     endpoints TEXT NOT NULL,
     tls_identity TEXT NOT NULL,
     jurisdiction TEXT NOT NULL
   ) STRICT;
   CREATE TABLE msps (
     id TEXT PRIMARY KEY,
     name TEXT NOT NULL,
     idx INTEGER NOT NULL UNIQUE
   ) STRICT;
   CREATE TABLE delegations (
     id TEXT PRIMARY KEY,
     kind TEXT NOT NULL CHECK (kind IN ('e164', 'email')),
     e164_prefix TEXT,
     hash_first TEXT,
     hash_last TEXT,
     dp_id TEXT NOT NULL REFERENCES dps(id),
     ttl_seconds INTEGER NOT NULL
   ) STRICT;
   CREATE TABLE changes (
     serial INTEGER PRIMARY KEY,
     at_ms INTEGER NOT NULL,
     actor TEXT NOT NULL,
     body TEXT NOT NULL
   ) STRICT;
   CREATE TABLE meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL) STRICT;
   INSERT INTO meta (k, v) VALUES ('next_msp_index', 0);`,
  // v2: signing keys of DPs and MSPs, and the root's signature of the registry after each change.
  `ALTER TABLE dps ADD COLUMN signing_key BLOB NOT NULL DEFAULT x'';
   ALTER TABLE msps ADD COLUMN signing_key BLOB NOT NULL DEFAULT x'';
   ALTER TABLE changes ADD COLUMN signature BLOB NOT NULL DEFAULT x'';`,
  // v3: the snapshot a secondary last replaced its copy with. The changes before it are not
  // held, so serving a watcher further behind takes a snapshot; on a primary it stays empty.
  `CREATE TABLE base (
     id INTEGER PRIMARY KEY CHECK (id = 1),
     serial INTEGER NOT NULL,
     signature BLOB NOT NULL
   ) STRICT;`,
  // v4: federation (D4, R11): a delegation's federated DPs (a JSON list of ids) and a DP's
  // published default behaviour (JSON; empty for the default, LOCAL with no preference).
  `ALTER TABLE delegations ADD COLUMN federated TEXT NOT NULL DEFAULT '[]';
   ALTER TABLE dps ADD COLUMN federation TEXT NOT NULL DEFAULT '';`,
  // v5: a DP's private-lookup keys (issue 16): a JSON list of {epoch, publicKey (hex)}.
  "ALTER TABLE dps ADD COLUMN private_keys TEXT NOT NULL DEFAULT '[]';",
  // v6: where a DP's endpoints are, for those elsewhere than the DP (issue 17, H2): a JSON list
  // of {endpoint, jurisdiction}.
  "ALTER TABLE dps ADD COLUMN endpoint_jurisdictions TEXT NOT NULL DEFAULT '[]';",
];

/**
 * The registry store. A primary writes through `commit`, which assigns the next serial; a
 * secondary writes through `replace` and `append`, which keep the primary's serials and signatures.
 */
export interface RegistryStore {
  serial(): bigint;
  /** Every change after this serial is held; 0 unless the registry was replaced by a snapshot. */
  baseSerial(): bigint;
  /**
   * The last change stored without a seal (by a root from before commits were signed in their
   * transaction, or with a seal of the older format); 0 when every change has one.
   */
  unsealedThrough(): bigint;
  /** The stored root seal of the registry at its current serial, if any. */
  seal(): RegistrySeal | undefined;
  /** Whether anything was ever written (a change or a snapshot). */
  isEmpty(): boolean;
  load(): RegistryData;
  delegation(id: string): Delegation | undefined;
  dp(id: string): DpInfo | undefined;
  msp(id: string): MspInfo | undefined;
  /** Delegations naming `dpId` as their DP or as one of their federated DPs. */
  delegationsOf(dpId: string): Delegation[];
  /** Email-range delegations overlapping [first, last]. */
  emailOverlaps(first: bigint, last: bigint): Delegation[];
  nextMspIndex(): number;
  /**
   * Applies a change in one transaction and records it with the next serial; `check` runs inside
   * the transaction so validation and write see the same state. `seal`, when given, signs the
   * registry as the change leaves it, also inside: the change is stored with its seal or not at
   * all (a change stored without one would stop every follower replaying it).
   */
  commit(
    actor: string,
    atMs: number,
    make: (serial: bigint) => RegistryChange,
    check?: () => void,
    seal?: (change: RegistryChange) => RegistrySeal,
  ): RegistryChange;
  /** Changes with serial > `since`, oldest first, with their signatures. */
  changesSince(since: bigint, limit: number): RegistryChange[];
  /** Records the root's seal of the registry as it was after change `serial`. */
  setSeal(serial: bigint, seal: RegistrySeal): void;
  /**
   * Replaces the whole registry with a signed snapshot in one transaction. The change log is
   * emptied: the changes that led there were never received, so none can be served.
   */
  replace(data: RegistryData & { seal: RegistrySeal }): void;
  /** Applies a received change with its own serial (which must follow) and seal, in one transaction. */
  append(change: RegistryChange & { seal: RegistrySeal }, atMs: number, actor: string): void;
  /** Discards everything, e.g. a copy that no longer verifies. */
  clear(): void;
  audit(limit: number): AuditEntry[];
  /** The durability SQLite runs with, read back from it. */
  durability(): Durability;
  close(): void;
}

/**
 * How a commit reaches the disk. "full" (the default): WAL with synchronous=FULL, the WAL is
 * synced at every commit, so a serial the root has published survives a power loss. "normal"
 * syncs only at checkpoints: a power loss may undo the last changes, and the root would then
 * publish their serials again with other content, which followers that saw them refuse.
 */
export type Durability = "full" | "normal";

/**
 * Opens (creating when absent) the registry at `path`; ":memory:" for tests. A new store file
 * is made 0600 before SQLite opens it, and its -wal and -shm are set to 0600 after.
 */
export function openRegistryStore(path: string, options: { durability?: Durability } = {}): RegistryStore {
  let db: Database.Database;
  try {
    if (path !== ":memory:") createPrivateFile(path);
    db = new Database(path);
    db.pragma("journal_mode = WAL");
    db.pragma(`synchronous = ${options.durability === "normal" ? "NORMAL" : "FULL"}`);
    if (path !== ":memory:") for (const f of sqliteFilesOf(path).slice(1)) restrictFile(f);
    db.pragma("foreign_keys = ON");
    migrate(db);
  } catch (err) {
    throw new DiscoveryError(
      "store_failure",
      `cannot open registry store ${path}: ${(err as Error).message}`,
      {
        cause: err,
      },
    );
  }

  const q = {
    serial: db.prepare<[], { s: number }>(
      "SELECT max(coalesce((SELECT max(serial) FROM changes), 0), coalesce((SELECT serial FROM base), 0)) AS s",
    ),
    base: db.prepare<[], { serial: number; signature: Buffer }>("SELECT serial, signature FROM base"),
    lastSignature: db.prepare<[], { signature: Buffer }>(
      "SELECT signature FROM changes ORDER BY serial DESC LIMIT 1",
    ),
    anyChange: db.prepare<[], { n: number }>("SELECT count(*) AS n FROM changes"),
    setBase: db.prepare<[number, Buffer]>(
      `INSERT INTO base (id, serial, signature) VALUES (1, ?, ?)
       ON CONFLICT (id) DO UPDATE SET serial = excluded.serial, signature = excluded.signature`,
    ),
    resetMspIndex: db.prepare<[number]>("UPDATE meta SET v = ? WHERE k = 'next_msp_index'"),
    delegations: db.prepare<[], DelegationRow>("SELECT * FROM delegations ORDER BY id"),
    delegation: db.prepare<[string], DelegationRow>("SELECT * FROM delegations WHERE id = ?"),
    delegationsOf: db.prepare<[{ dp: string }], DelegationRow>(
      // As the range's DP or one of its federated DPs.
      `SELECT * FROM delegations
       WHERE dp_id = @dp OR EXISTS (SELECT 1 FROM json_each(delegations.federated) WHERE value = @dp)
       ORDER BY id`,
    ),
    overlaps: db.prepare<[string, string], DelegationRow>(
      "SELECT * FROM delegations WHERE kind = 'email' AND hash_first <= ? AND hash_last >= ?",
    ),
    putDelegation: db.prepare(
      `INSERT INTO delegations (id, kind, e164_prefix, hash_first, hash_last, dp_id, ttl_seconds, federated)
       VALUES (@id, @kind, @e164_prefix, @hash_first, @hash_last, @dp_id, @ttl_seconds, @federated)
       ON CONFLICT (id) DO UPDATE SET dp_id = excluded.dp_id, ttl_seconds = excluded.ttl_seconds,
         federated = excluded.federated`,
    ),
    deleteDelegation: db.prepare<[string]>("DELETE FROM delegations WHERE id = ?"),
    dps: db.prepare<[], DpRow>("SELECT * FROM dps ORDER BY id"),
    dp: db.prepare<[string], DpRow>("SELECT * FROM dps WHERE id = ?"),
    putDp: db.prepare(
      `INSERT INTO dps (id, endpoints, tls_identity, jurisdiction, signing_key, federation, private_keys,
         endpoint_jurisdictions)
       VALUES (@id, @endpoints, @tls_identity, @jurisdiction, @signing_key, @federation, @private_keys,
         @endpoint_jurisdictions)
       ON CONFLICT (id) DO UPDATE SET endpoints = excluded.endpoints, tls_identity = excluded.tls_identity,
         jurisdiction = excluded.jurisdiction, signing_key = excluded.signing_key, federation = excluded.federation,
         private_keys = excluded.private_keys, endpoint_jurisdictions = excluded.endpoint_jurisdictions`,
    ),
    deleteDp: db.prepare<[string]>("DELETE FROM dps WHERE id = ?"),
    msps: db.prepare<[], MspRow>("SELECT * FROM msps ORDER BY idx"),
    msp: db.prepare<[string], MspRow>("SELECT * FROM msps WHERE id = ?"),
    putMsp: db.prepare(
      `INSERT INTO msps (id, name, idx, signing_key) VALUES (@id, @name, @idx, @signing_key)
       ON CONFLICT (id) DO UPDATE SET name = excluded.name, signing_key = excluded.signing_key`,
    ),
    deleteMsp: db.prepare<[string]>("DELETE FROM msps WHERE id = ?"),
    nextMspIndex: db.prepare<[], { v: number }>("SELECT v FROM meta WHERE k = 'next_msp_index'"),
    bumpMspIndex: db.prepare<[number]>("UPDATE meta SET v = max(v, ? + 1) WHERE k = 'next_msp_index'"),
    insertChange: db.prepare<[number, number, string, string]>(
      "INSERT INTO changes (serial, at_ms, actor, body) VALUES (?, ?, ?, ?)",
    ),
    insertSignedChange: db.prepare<[number, number, string, string, Buffer]>(
      "INSERT INTO changes (serial, at_ms, actor, body, signature) VALUES (?, ?, ?, ?, ?)",
    ),
    changesSince: db.prepare<[number, number], ChangeRow>(
      "SELECT * FROM changes WHERE serial > ? ORDER BY serial LIMIT ?",
    ),
    audit: db.prepare<[number], ChangeRow>("SELECT * FROM changes ORDER BY serial DESC LIMIT ?"),
    setSignature: db.prepare<[Buffer, number]>("UPDATE changes SET signature = ? WHERE serial = ?"),
    unsealedThrough: db.prepare<[number], { s: number | null }>(
      "SELECT max(serial) AS s FROM changes WHERE signature IS NULL OR length(signature) != ?",
    ),
  };

  const serial = () => BigInt(q.serial.get()?.s ?? 0);
  const baseSerial = () => BigInt(q.base.get()?.serial ?? 0);

  const applyChange = (c: RegistryChange) => {
    switch (c.kind) {
      case "put_delegation":
        q.putDelegation.run(delegationRow(c.delegation));
        break;
      case "delete_delegation":
        q.deleteDelegation.run(c.id);
        break;
      case "put_dp":
        q.putDp.run({
          id: c.dp.id,
          endpoints: JSON.stringify(c.dp.endpoints),
          tls_identity: c.dp.tlsIdentity,
          jurisdiction: c.dp.jurisdiction,
          signing_key: Buffer.from(c.dp.signingPublicKey),
          federation: c.dp.federation ? JSON.stringify(c.dp.federation) : "",
          private_keys: privateKeysColumn(c.dp),
          endpoint_jurisdictions: JSON.stringify(c.dp.endpointJurisdictions ?? []),
        });
        break;
      case "delete_dp":
        q.deleteDp.run(c.id);
        break;
      case "put_msp":
        q.putMsp.run({
          id: c.msp.id,
          name: c.msp.name,
          idx: c.msp.index,
          signing_key: Buffer.from(c.msp.signingPublicKey),
        });
        q.bumpMspIndex.run(c.msp.index);
        break;
      case "delete_msp":
        q.deleteMsp.run(c.id);
        break;
      case "refresh":
        break;
    }
  };

  const commitTx = db.transaction(
    (
      actor: string,
      atMs: number,
      make: (serial: bigint) => RegistryChange,
      check?: () => void,
      seal?: (change: RegistryChange) => RegistrySeal,
    ) => {
      check?.();
      const change = make(serial() + 1n);
      applyChange(change);
      const body = JSON.stringify(change, jsonBigint);
      if (seal) q.insertSignedChange.run(Number(change.serial), atMs, actor, body, sealBytes(seal(change)));
      else q.insertChange.run(Number(change.serial), atMs, actor, body);
      return change;
    },
  );

  const clearTx = db.transaction(() => {
    // Delegations first: they reference DPs.
    db.exec(
      "DELETE FROM delegations; DELETE FROM dps; DELETE FROM msps; DELETE FROM changes; DELETE FROM base",
    );
    q.resetMspIndex.run(0);
  });

  const replaceTx = db.transaction((data: RegistryData & { seal: RegistrySeal }) => {
    clearTx();
    for (const dp of data.dps) applyChange({ serial: data.serial, kind: "put_dp", dp });
    for (const msp of data.msps) applyChange({ serial: data.serial, kind: "put_msp", msp });
    for (const delegation of data.delegations) {
      applyChange({ serial: data.serial, kind: "put_delegation", delegation });
    }
    q.setBase.run(Number(data.serial), sealBytes(data.seal));
  });

  const appendTx = db.transaction(
    (change: RegistryChange & { seal: RegistrySeal }, atMs: number, actor: string) => {
      const expected = serial() + 1n;
      if (change.serial !== expected) {
        throw new Error(`change ${change.serial} does not follow ${expected - 1n}`);
      }
      applyChange(change);
      const { seal, ...body } = change;
      q.insertSignedChange.run(
        Number(change.serial),
        atMs,
        actor,
        JSON.stringify(body, jsonBigint),
        sealBytes(seal),
      );
    },
  );

  // Failures of the secondary's writes are store failures, like those of commit.
  const wrap = (what: string, write: () => void) => {
    try {
      write();
    } catch (err) {
      throw new DiscoveryError("store_failure", `${what} failed: ${(err as Error).message}`, { cause: err });
    }
  };

  return {
    serial,
    baseSerial,
    unsealedThrough: () => BigInt(q.unsealedThrough.get(SEAL_BYTES)?.s ?? 0),
    seal: () => {
      const last = q.lastSignature.get();
      return sealOf(last ? last.signature : q.base.get()?.signature);
    },
    isEmpty: () => (q.anyChange.get()?.n ?? 0) === 0 && q.base.get() === undefined,
    replace: (data) => wrap("registry replace", () => replaceTx(data)),
    append: (change, atMs, actor) => wrap("registry append", () => appendTx(change, atMs, actor)),
    clear: () => wrap("registry clear", () => clearTx()),
    load: () => ({
      serial: serial(),
      delegations: q.delegations.all().map(delegationOf),
      dps: q.dps.all().map(dpOf),
      msps: q.msps.all().map(mspOf),
    }),
    delegation: (id) => {
      const r = q.delegation.get(id);
      return r && delegationOf(r);
    },
    dp: (id) => {
      const r = q.dp.get(id);
      return r && dpOf(r);
    },
    msp: (id) => {
      const r = q.msp.get(id);
      return r && mspOf(r);
    },
    delegationsOf: (dpId) => q.delegationsOf.all({ dp: dpId }).map(delegationOf),
    emailOverlaps: (first, last) => q.overlaps.all(hex64(last), hex64(first)).map(delegationOf),
    nextMspIndex: () => q.nextMspIndex.get()?.v ?? 0,
    commit: (actor, atMs, make, check, seal) => {
      try {
        return commitTx(actor, atMs, make, check, seal);
      } catch (err) {
        if (err instanceof DiscoveryError) throw err;
        throw new DiscoveryError("store_failure", `registry write failed: ${(err as Error).message}`, {
          cause: err,
        });
      }
    },
    changesSince: (since, limit) =>
      q.changesSince.all(Number(since), limit).map((r) => {
        const seal = sealOf(r.signature);
        return { ...changeOf(r.body), ...(seal ? { seal } : {}) };
      }),
    setSeal: (serial, seal) => {
      q.setSignature.run(sealBytes(seal), Number(serial));
    },
    audit: (limit) =>
      q.audit.all(limit).map((r) => ({ atMs: r.at_ms, actor: r.actor, change: changeOf(r.body) })),
    durability: () => ((db.pragma("synchronous", { simple: true }) as number) >= 2 ? "full" : "normal"),
    close: () => db.close(),
  };
}

// A seal is stored in the signature column as the 64-byte signature, then the signing time
// and the expiry as big-endian u64 milliseconds. Values of another length (signatures stored
// before seals had a validity period) read as no seal: the primary re-signs at start and a
// secondary takes a new snapshot.
const SEAL_BYTES = 64 + 16;

function sealBytes(seal: RegistrySeal): Buffer {
  const b = Buffer.alloc(SEAL_BYTES);
  Buffer.from(seal.signature).copy(b, 0);
  b.writeBigUInt64BE(BigInt(seal.signedAtMs), 64);
  b.writeBigUInt64BE(BigInt(seal.expiresAtMs), 72);
  return b;
}

function sealOf(raw: Buffer | undefined): RegistrySeal | undefined {
  if (!raw || raw.length !== SEAL_BYTES) return undefined;
  return {
    signature: new Uint8Array(raw.subarray(0, 64)),
    signedAtMs: Number(raw.readBigUInt64BE(64)),
    expiresAtMs: Number(raw.readBigUInt64BE(72)),
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
