// The DP's change log (G6, R20) as watchers see it: the store's log of changed CSIs (written by
// triggers), where a watcher may continue from, and when it must resync instead. The stream
// loop lives in server.ts (core's serveLog).
import type { Clock, Logger } from "@mimi/core";
import type { ChangeRow } from "./store/rows.js";
import type { MappingStore } from "./store/store.js";

/** Why a watcher must drop what it cached from this DP ("none" when its position continues). */
export type Resync = "none" | "new_watcher" | "other_log" | "too_old" | "behind" | "diverged";

/** Where a watcher starts. */
export interface LogStart {
  readonly logId: string;
  /** Events follow from the one after this sequence number. */
  readonly seq: number;
  readonly resync: Resync;
  readonly oldestSeq: number;
  /** When the event at `seq` committed (0: none), for the watcher's next position. */
  readonly atMs: number;
}

/** A watcher's position, as it last saw the log. */
export interface LogPosition {
  readonly logId: string;
  readonly sinceSeq: number;
  readonly sinceAtMs: number;
}

/** The change log of one store. */
export interface ChangeLog {
  /** The store's log identity, new whenever the store is recreated or restored (notices share it). */
  logId(): string;
  /** The key of this DP's change hashes, sent to watchers in the start message. */
  readonly hashKey: Uint8Array;
  /** A secondary takes its primary's key (watchers that saw another key resync). */
  setHashKey(key: Uint8Array): void;
  /** Moves whenever the log is replaced (a secondary's copy); watchers of the old one must stop. */
  generation(): number;
  start(position: LogPosition): LogStart;
  since(seq: number, limit: number): ChangeRow[];
  /** Runs `listener` after every commit that logged a change; returns the unsubscribe function. */
  subscribe(listener: () => void): () => void;
  /** Drops events older than the retention window; returns how many. */
  prune(): number;
  /** Watchers subscribed now. */
  readonly watchers: number;
}

/** Options of the change log. */
export interface ChangeLogOptions {
  store: MappingStore;
  clock: Clock;
  /** How long events are kept; a watcher further behind must resync. */
  retentionMs: number;
  /** The key of the change hashes (CHANGE_HASH_KEY_BYTES random bytes kept in the data folder). */
  hashKey: Uint8Array;
  log: Logger;
}

/** Events deleted per pruning statement, so a large backlog never holds the writer long. */
const PRUNE_BATCH = 10_000;

/** Creates the change log view and hooks it to the store's commits. */
export function createChangeLog(o: ChangeLogOptions): ChangeLog {
  const listeners = new Set<() => void>();
  o.store.onChangeLogged(() => {
    for (const l of listeners) l();
  });
  const log = o.log.child({ component: "change-log" });
  let hashKey = o.hashKey;
  return {
    logId: () => o.store.logId(),
    generation: () => o.store.logGeneration(),
    get hashKey() {
      return hashKey;
    },
    setHashKey(key) {
      hashKey = key;
    },
    start(p) {
      const logId = o.store.logId();
      const { oldest, latest } = o.store.logBounds();
      // A restarted watcher resumes from the latest event, so it needs that event's time too:
      // without it, its next reconnect would not match and be told to resync for nothing.
      const restart = (resync: Resync): LogStart => ({
        logId,
        seq: latest,
        resync,
        oldestSeq: oldest,
        atMs: o.store.changeAt(latest)?.atMs ?? 0,
      });
      if (p.logId === "" && p.sinceSeq === 0) return restart("new_watcher");
      if (p.logId !== logId) return restart("other_log");
      if (p.sinceSeq > latest) return restart("behind");
      // The watcher's last event must still be here, unchanged, for the next one to follow it.
      if (p.sinceSeq < oldest - 1) return restart("too_old");
      if (p.sinceSeq >= oldest) {
        const at = o.store.changeAt(p.sinceSeq);
        if (!at || at.atMs !== p.sinceAtMs) return restart("diverged");
      }
      return { logId, seq: p.sinceSeq, resync: "none", oldestSeq: oldest, atMs: p.sinceAtMs };
    },
    since: (seq, limit) => o.store.changesSince(seq, limit),
    subscribe(listener) {
      // A fresh function per subscription, so one listener subscribed twice counts twice.
      const entry = () => listener();
      listeners.add(entry);
      return () => listeners.delete(entry);
    },
    prune() {
      const before = o.clock() - o.retentionMs;
      let total = 0;
      for (;;) {
        const n = o.store.pruneChangesBefore(before, PRUNE_BATCH);
        total += n;
        if (n < PRUNE_BATCH) break;
      }
      if (total > 0) log.info({ pruned: total }, "change log pruned");
      return total;
    },
    get watchers() {
      return listeners.size;
    },
  };
}
