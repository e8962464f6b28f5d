// The DP's private-lookup keys and their rotation (issue 16). A DP holds one OPRF key per epoch,
// at most two at a time (the registry publishes at most two), each with its own table
// (private-table.ts) built from the same store and kept by the same change log. A rotation is
// the pre-publish rollover DNSSEC uses for zone keys, with the root registry as the place keys
// are published:
//   1. roll: the next key (a later epoch) is made and its table built beside the served one,
//      which goes on serving (BUILDING, then READY);
//   2. the root operator publishes it beside the current key: resolvers use only the newest
//      published key, so every resolver moves to it as its registry copy moves (CURRENT; the old
//      key is PREVIOUS and still served for resolvers with an older copy);
//   3. the root operator publishes only the new key: the old one is RETIRING, and after
//      `retireAfterMs` its key and its table are deleted.
// States are judged against the DP's registry copy, never by the DP's own say. A key is never
// retired while it is the newest or while the registry publishes no newer key of this DP, so a
// registry that lost the keys, or a DP that rolled before anyone published, never strands
// lookups. The key file is replaced atomically; a table whose deletion a crash interrupted is
// deleted at the next start (`private_retiring` in the store).
//
// On a replicated DP (issue 17) only the primary makes, rolls and retires keys; each secondary
// holds exactly the keys its primary sends over the Follow stream (adopt), builds a table of
// its own for each, and deletes the table of a key the primary no longer holds. A secondary
// that never heard from its primary holds none (private lookups wait), and refuses a set that
// would drop a key its registry copy still publishes. A promoted secondary goes on with the
// keys it holds; one that holds none makes its first only for a DP the registry publishes no
// key for. The key file is private-key-file.ts.
import { DiscoveryError, generateOprfKeys, type PrivateLookupKey, type TableLayout } from "@mimi/core";
import { keySetProblem, keyText, MAX_HELD_KEYS, readKeyFile, writeKeyFile } from "./private-key-file.js";
import {
  createPrivateTable,
  type EpochKeys,
  type PrivateTable,
  type PrivateTableOptions,
  tableMetaKey,
} from "./private-table.js";

/** Entries of a retired table deleted per turn. */
const CLEAR_PAGE = 10_000;
/** The store_meta key listing epochs whose tables are being deleted. */
const RETIRING_META = "private_retiring";
/** The store_meta key of when each RETIRING key goes. */
const RETIRE_AT_META = "private_retire_at";

/** Where a key is in its life (proto PrivateLookupKeyState). */
export type KeyState = "building" | "ready" | "current" | "previous" | "retiring";

/** One held key, as GetStatus reports it. */
export interface KeyStatus {
  readonly epoch: number;
  readonly publicKey: Uint8Array;
  readonly state: KeyState;
  readonly built: boolean;
  readonly scanning: boolean;
  readonly layout: TableLayout;
  /** RETIRING: when the key and its table go. */
  readonly retireAtMs?: number;
}

/** The DP's keys and tables. */
export interface PrivateKeys {
  /**
   * The table of `epoch`, or, with none given, of the current key (the newest the registry
   * publishes, else the newest built, else the newest); FAILED_PRECONDITION (EPOCH_CHANGED)
   * naming the epochs held when the DP holds no key of `epoch`.
   */
  table(epoch?: number): PrivateTable;
  /** Starts a rotation (see above); returns the key rolled to and whether this call made it. */
  roll(): { key: KeyStatus; made: boolean };
  /** The held keys, oldest first. */
  status(): KeyStatus[];
  /** The held keys with their secrets, oldest first (what a primary sends its secondaries). */
  held(): readonly EpochKeys[];
  /**
   * Holds exactly `keys` (a secondary, from its primary): tables of new keys are built, those of
   * keys no longer held are deleted. Throws INVALID_ARGUMENT for a set that is not keys.
   */
  adopt(keys: readonly EpochKeys[]): void;
  /** What the registry copy publishes for this DP now (undefined: not listed). */
  published(keys: readonly PrivateLookupKey[] | undefined): void;
  /** The sweep: entry renewals, retirements that are due, a roll when the key's lifetime ended. */
  maintain(): void;
  /** Every table reads every CSI again (the registry changed what this DP serves). */
  rescan(why: string): void;
  /** Every table is deleted and built again (a secondary's store was replaced by a copy). */
  restart(why: string): void;
  close(): void;
}

/** Options: the tables' own, plus where the keys live and how they rotate. */
export interface PrivateKeysOptions extends Omit<PrivateTableOptions, "keys"> {
  /** The key file (mode 0600); see makeKeyAtStart for when it is made. */
  path: string;
  /** How long a key the registry stopped publishing is still served. */
  retireAfterMs: number;
  /** A key older than this is rolled by the sweep; 0: only an operator rolls. */
  keyLifetimeMs: number;
  /**
   * Whether this endpoint is the DP's primary (true when not given): only it makes, rolls and
   * retires keys, and its tables log their changes.
   */
  writer?: () => boolean;
  /** Runs after the held keys changed (a roll, a retirement, an adoption). */
  onKeysChanged?: () => void;
  /** Whether a missing key file is made with a first key now (a lone DP; `writer()` when not given). */
  makeKeyAtStart?: boolean;
}

/** Starts the tables of every held key (their builds run on later turns). */
export function createPrivateKeys(o: PrivateKeysOptions): PrivateKeys {
  const log = o.log.child({ component: "private-keys" });
  const writer = o.writer ?? (() => true);
  // Tables being deleted (retired keys), resumed at start after a crash; a key still in the
  // file is taken out of it first (a crash came between the two writes).
  const retiring = new Set<number>(JSON.parse(o.store.meta(RETIRING_META) ?? "[]") as number[]);
  // A secondary makes no key of its own: it waits for its primary's.
  let keys = readKeyFile(o.path, o.now, o.makeKeyAtStart ?? writer());
  if (keys.some((k) => retiring.has(k.epoch))) {
    keys = keys.filter((k) => !retiring.has(k.epoch));
    if (keys.length === 0 && writer()) throw new Error(`${o.path}: every key in it was being retired`);
    writeKeyFile(o.path, keys);
  }
  // Entries of an epoch neither held nor being deleted (a crash between recording a deletion
  // and writing the key file, with the store's meta not yet on disk) are deleted too.
  for (let e = o.store.privateEpochAfter(-1); e !== undefined; e = o.store.privateEpochAfter(e)) {
    if (keys.some((k) => k.epoch === e) || retiring.has(e)) continue;
    retiring.add(e);
    log.info({ epoch: e }, "entries of a private-lookup key no longer held are deleted");
  }
  // A set from the primary not taken yet: it holds a key whose old table is still being
  // deleted (the new table's rows would go with the old), it would drop a key the registry
  // still publishes, or the key file could not be written. The sweep tries it again.
  let waiting: readonly EpochKeys[] | undefined;
  const tables = new Map<number, PrivateTable>();
  const open = (k: EpochKeys) =>
    tables.set(k.epoch, createPrivateTable({ ...o, keys: k, logsChanges: () => writer() }));
  const changed = () => o.onKeysChanged?.();
  for (const k of keys) {
    open(k);
    log.info({ epoch: k.epoch, key: keyText(k) }, "private-lookup key held");
  }
  /** The registry's keys for this DP; undefined before the first copy. */
  let registry: readonly PrivateLookupKey[] | undefined;
  // When RETIRING keys go, kept in the store so a restart does not start the delay again.
  const retireAt = new Map<number, number>(
    Object.entries(JSON.parse(o.store.meta(RETIRE_AT_META) ?? "{}") as Record<string, number>)
      .map(([e, at]) => [Number(e), at] as const)
      .filter(([e]) => keys.some((k) => k.epoch === e)),
  );
  const saveRetireAt = () =>
    o.store.setMeta(
      RETIRE_AT_META,
      retireAt.size > 0 ? JSON.stringify(Object.fromEntries(retireAt)) : undefined,
    );
  let unpublishedSaid = false;
  let unheldSaid = false;
  let closed = false;

  const isPublished = (k: EpochKeys) =>
    (registry ?? []).some((p) => p.epoch === k.epoch && Buffer.from(p.publicKey).equals(k.publicKey));
  /** The registry's newest key for this DP, when it is one the DP holds. */
  const currentEpoch = (): number | undefined => {
    const newest = [...(registry ?? [])].sort((a, b) => b.epoch - a.epoch)[0];
    return keys.find((k) => newest && k.epoch === newest.epoch && isPublished(k))?.epoch;
  };
  const stateOf = (k: EpochKeys, current: number | undefined): KeyState => {
    if (k.epoch === current) return "current";
    if (current !== undefined && k.epoch < current) return isPublished(k) ? "previous" : "retiring";
    return tables.get(k.epoch)?.stats().built ? "ready" : "building";
  };
  const statusOf = (k: EpochKeys, current = currentEpoch()): KeyStatus => {
    const s = (tables.get(k.epoch) as PrivateTable).stats();
    const state = stateOf(k, current);
    const at = state === "retiring" ? retireAt.get(k.epoch) : undefined;
    return {
      epoch: k.epoch,
      publicKey: k.publicKey,
      state,
      built: s.built,
      scanning: s.scanning,
      layout: s.layout,
      ...(at !== undefined ? { retireAtMs: at } : {}),
    };
  };

  // Deleting retired tables, in pages on later turns.
  const saveRetiring = () =>
    o.store.setMeta(RETIRING_META, retiring.size > 0 ? JSON.stringify([...retiring]) : undefined);
  let clearing = false;
  const clearRetired = async () => {
    if (clearing) return;
    clearing = true;
    try {
      for (const epoch of retiring) {
        while (!closed && o.store.clearPrivate(epoch, CLEAR_PAGE) === CLEAR_PAGE) {
          await new Promise((r) => setImmediate(r));
        }
        if (closed) return;
        o.store.transaction(() => {
          o.store.setMeta(tableMetaKey(epoch), undefined);
          retiring.delete(epoch);
          saveRetiring();
        });
        log.info({ epoch }, "retired private-lookup table deleted");
        // A key the primary sent again while its old table was being deleted.
        if (waiting) adopt(waiting);
      }
    } finally {
      clearing = false;
    }
  };
  const startClearing = () =>
    void clearRetired().catch((err: unknown) =>
      log.error({ err: (err as Error).message }, "a retired private-lookup table could not be deleted"),
    );
  startClearing();

  const retire = (epoch: number) => {
    // Recorded first, then out of the file, then out of service: a crash in between is finished
    // at the next start, and a failed write leaves the key served and held as it was.
    const rest = keys.filter((k) => k.epoch !== epoch);
    retiring.add(epoch);
    saveRetiring();
    try {
      writeKeyFile(o.path, rest);
    } catch (err) {
      retiring.delete(epoch);
      saveRetiring();
      throw err;
    }
    keys = rest;
    tables.get(epoch)?.close();
    tables.delete(epoch);
    retireAt.delete(epoch);
    saveRetireAt();
    log.info({ epoch }, "private-lookup key retired: the registry no longer publishes it");
    startClearing();
    changed();
  };

  const same = (a: EpochKeys, b: EpochKeys) =>
    a.epoch === b.epoch &&
    Buffer.from(a.secretKey).equals(b.secretKey) &&
    Buffer.from(a.publicKey).equals(b.publicKey);
  let refusedSaid = "";
  const adopt = (next: readonly EpochKeys[]) => {
    waiting = undefined;
    if (writer()) {
      // Promoted meanwhile: this endpoint's keys are the DP's now.
      log.warn("private-lookup keys from another endpoint ignored: this endpoint is the DP's primary");
      return;
    }
    if (next.length === keys.length && next.every((k, i) => same(k, keys[i] as EpochKeys))) return;
    if (next.some((k) => retiring.has(k.epoch))) {
      waiting = next;
      log.info("the primary's private-lookup keys are taken once an old table is deleted");
      return;
    }
    // A primary retires a key only once the registry stopped publishing it. One whose set lacks
    // a key the registry still publishes (restored from an old copy, promoted without keys and
    // made its own) would have every endpoint destroy the key resolvers use: refused, loudly,
    // until the registry no longer publishes it.
    const dropped = keys.filter((k) => !next.some((n) => same(n, k)));
    const published = dropped.filter(isPublished).map((k) => k.epoch);
    if (published.length > 0) {
      waiting = next;
      const said = `${published.join()}/${next.map((k) => k.epoch).join()}`;
      if (said !== refusedSaid)
        log.error(
          { published, sent: next.map((k) => k.epoch) },
          "the DP's primary sent private-lookup keys without one the registry publishes; keeping it (roll and publish at the primary, then unpublish the old key)",
        );
      refusedSaid = said;
      return;
    }
    refusedSaid = "";
    // Keys no longer held are recorded as retiring first, then the file holds the new set: a
    // crash in between is finished at the next start, as for a retirement. A failed write
    // leaves everything as it was, and the sweep tries again.
    const gone = keys.filter((k) => !next.some((n) => n.epoch === k.epoch));
    for (const k of gone) retiring.add(k.epoch);
    saveRetiring();
    try {
      writeKeyFile(o.path, next);
    } catch (err) {
      for (const k of gone) retiring.delete(k.epoch);
      saveRetiring();
      waiting = next;
      log.error(
        { err: (err as Error).message },
        "the primary's private-lookup keys could not be stored; retrying",
      );
      return;
    }
    for (const k of keys) {
      const kept = next.find((n) => n.epoch === k.epoch);
      if (kept && same(kept, k)) continue;
      // Gone, or another key under the same epoch (its table starts over when opened again).
      tables.get(k.epoch)?.close();
      tables.delete(k.epoch);
      retireAt.delete(k.epoch);
    }
    saveRetireAt();
    const before = keys;
    keys = [...next];
    for (const k of keys) if (!before.some((b) => same(b, k))) open(k);
    log.info(
      { keys: keys.map(keyText), deleted: gone.map((k) => k.epoch) },
      "private-lookup keys taken from the DP's primary",
    );
    if (gone.length > 0) startClearing();
    changed();
  };

  const roll = (): { key: KeyStatus; made: boolean } => {
    if (!writer())
      throw new DiscoveryError(
        "failed_precondition",
        "only the DP's primary rolls its private-lookup keys; its secondaries take them from it",
        { details: { reason: "NOT_PRIMARY" } },
      );
    const current = currentEpoch();
    const newest = keys[keys.length - 1];
    if (newest && keys.length >= MAX_HELD_KEYS) {
      const s = statusOf(newest, current);
      if (s.state === "building" || s.state === "ready") return { key: s, made: false };
      const old = keys[0] as EpochKeys;
      const why =
        stateOf(old, current) === "retiring"
          ? `is retiring (deleted at ${new Date(retireAt.get(old.epoch) ?? 0).toISOString()})`
          : "is still published beside the current one; publish only the current key first";
      throw new DiscoveryError(
        "failed_precondition",
        `a rotation is still finishing: the old private-lookup key of epoch ${old.epoch} ${why}`,
      );
    }
    // Above every epoch held or still being deleted: a table's rows are never shared.
    const epoch = Math.max(
      Math.floor(o.now() / 1000),
      (newest?.epoch ?? 0) + 1,
      ...[...retiring].map((e) => e + 1),
    );
    if (epoch >= 2 ** 32)
      throw new DiscoveryError("failed_precondition", "no private-lookup key epoch is left (2^32 reached)");
    const next: EpochKeys = { epoch, ...generateOprfKeys() };
    writeKeyFile(o.path, [...keys, next]);
    open(next);
    keys = [...keys, next];
    log.info(
      { epoch, key: keyText(next) },
      "private-lookup key rolled: its table is built beside the served one; publish the key once it is READY",
    );
    changed();
    return { key: statusOf(next, current), made: true };
  };

  return {
    table(epoch) {
      if (keys.length === 0)
        throw new DiscoveryError(
          "not_ready",
          "this secondary holds no private-lookup key yet: it takes the DP's keys from its primary; ask another endpoint",
        );
      if (epoch === undefined) {
        const built = keys.filter((k) => tables.get(k.epoch)?.stats().built).map((k) => k.epoch);
        epoch = currentEpoch() ?? built[built.length - 1] ?? (keys[keys.length - 1] as EpochKeys).epoch;
      }
      const t = tables.get(epoch);
      if (!t) {
        const held = keys.map((k) => k.epoch).join(" and ");
        throw new DiscoveryError(
          "failed_precondition",
          `this DP holds private-lookup keys of epoch ${held}, not ${epoch}; fetch the parameters again`,
          { details: { reason: "EPOCH_CHANGED" } },
        );
      }
      return t;
    },
    roll,
    status: () => keys.map((k) => statusOf(k)),
    held: () => keys,
    adopt(next) {
      const problem = keySetProblem(next);
      if (problem)
        throw new DiscoveryError("invalid_argument", `the primary's private-lookup keys: ${problem}`);
      adopt(next);
    },
    published(published) {
      const before = keys.map((k) => statusOf(k).state).join();
      registry = published;
      const current = currentEpoch();
      for (const k of keys) {
        const state = stateOf(k, current);
        if (state !== "retiring") retireAt.delete(k.epoch);
        else if (!retireAt.has(k.epoch)) retireAt.set(k.epoch, o.now() + o.retireAfterMs);
        const other = (published ?? []).find((p) => p.epoch === k.epoch && !isPublished(k));
        if (other)
          log.error(
            { epoch: k.epoch },
            "the registry publishes another public key under this DP's private-lookup epoch; resolvers will refuse its lookups of that epoch",
          );
      }
      saveRetireAt();
      const after = keys.map((k) => statusOf(k, current));
      if (after.map((s) => s.state).join() !== before)
        for (const s of after) log.info({ epoch: s.epoch, state: s.state }, "private-lookup key state");
      // Said once while it lasts, like the signing key's warning (not by a secondary waiting for keys).
      if (current === undefined && !unpublishedSaid && keys.length > 0)
        log.warn(
          { keys: keys.map(keyText) },
          "the root registry publishes no private-lookup key this DP holds as its newest; resolvers refuse its private lookups until it does (mimi root dp put --private-lookup-key)",
        );
      unpublishedSaid = current === undefined;
    },
    maintain() {
      for (const t of tables.values()) t.renew();
      if (retiring.size > 0) startClearing();
      // Keys change only at the primary; a secondary takes a set it could not take before.
      if (!writer()) {
        if (waiting) adopt(waiting);
        return;
      }
      if (keys.length === 0) {
        // A primary of a DP the registry publishes no key for makes its first; one the registry
        // publishes keys for (promoted without the DP's keys) leaves it to the operator, since
        // a new key would replace the one resolvers use at every endpoint.
        if (registry !== undefined && registry.length === 0) roll();
        else if (!unheldSaid) {
          unheldSaid = true;
          log.error(
            { published: (registry ?? []).map((k) => k.epoch) },
            "this primary holds no private-lookup key; roll one (mimi auth roll-private-key) and publish it alone (mimi root dp put --private-lookup-key)",
          );
        }
        return;
      }
      const now = o.now();
      // Not before the current key's table serves: resolvers still on the old key would be
      // stranded while the new one answers UNAVAILABLE (a key published before it was READY).
      const current = currentEpoch();
      const serving = current !== undefined && tables.get(current)?.notReady() === undefined;
      for (const [epoch, at] of retireAt) if (serving && at <= now) retire(epoch);
      const only = keys[0] as EpochKeys;
      if (o.keyLifetimeMs > 0 && keys.length === 1 && now >= only.epoch * 1000 + o.keyLifetimeMs) {
        log.info({ epoch: only.epoch }, "the private-lookup key reached its lifetime");
        roll();
      }
    },
    rescan(why) {
      for (const t of tables.values()) t.rescan(why);
    },
    restart(why) {
      for (const t of tables.values()) t.restart(why);
    },
    close() {
      closed = true;
      for (const t of tables.values()) t.close();
    },
  };
}
