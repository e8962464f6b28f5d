// The DP's change feed (G6, R20): the store's change log (written by triggers) served to
// watchers. Deciding where a watcher may continue, and telling it to resync when it cannot,
// lives here; the gRPC stream loop lives in server.ts.
import { type Clock, Latch, type Logger } from "@mimi/core";
import type { ChangeRow, MappingStore } from "./store.js";

/** Why a watcher must drop what it cached from this DP ("none" when its position continues). */
export type Resync = "none" | "new_watcher" | "other_log" | "too_old" | "behind" | "diverged";

/** Where a watcher starts. */
export interface FeedStart {
  readonly logId: string;
  /** Events follow from the one after this sequence number. */
  readonly seq: number;
  readonly resync: Resync;
  readonly oldestSeq: number;
}

/** A watcher's position, as it last saw the log. */
export interface FeedPosition {
  readonly logId: string;
  readonly sinceSeq: number;
  readonly sinceAtMs: number;
}

/** The change feed of one store. */
export interface ChangeFeed {
  start(position: FeedPosition): FeedStart;
  since(seq: number, limit: number): ChangeRow[];
  /** A latch fired after every commit that logged a change; release it with `unwatch`. */
  watch(): Latch;
  unwatch(latch: Latch): void;
  /** Drops events older than the retention window; returns how many. */
  prune(): number;
  readonly watchers: number;
}

/** Options of the change feed. */
export interface ChangeFeedOptions {
  store: MappingStore;
  clock: Clock;
  /** How long events are kept; a watcher further behind must resync. */
  retentionMs: number;
  log: Logger;
}

/** Events deleted per pruning statement, so a large backlog never holds the writer long. */
const PRUNE_BATCH = 10_000;

/** Creates the feed and hooks it to the store's commits. */
export function createChangeFeed(o: ChangeFeedOptions): ChangeFeed {
  const latches = new Set<Latch>();
  o.store.onChangeLogged(() => {
    for (const l of latches) l.fire();
  });
  const log = o.log.child({ component: "change-feed" });
  return {
    start(p) {
      const logId = o.store.logId();
      const { oldest, latest } = o.store.logBounds();
      const restart = (resync: Resync): FeedStart => ({ logId, seq: latest, resync, oldestSeq: oldest });
      if (p.logId === "" && p.sinceSeq === 0) return restart("new_watcher");
      if (p.logId !== logId) return restart("other_log");
      if (p.sinceSeq > latest) return restart("behind");
      // The watcher's last event must still be here, unchanged, for the next one to follow it.
      if (p.sinceSeq < oldest - 1) return restart("too_old");
      if (p.sinceSeq >= oldest) {
        const at = o.store.changeAt(p.sinceSeq);
        if (!at || at.atMs !== p.sinceAtMs) return restart("diverged");
      }
      return { logId, seq: p.sinceSeq, resync: "none", oldestSeq: oldest };
    },
    since: (seq, limit) => o.store.changesSince(seq, limit),
    watch() {
      const l = new Latch();
      latches.add(l);
      return l;
    },
    unwatch(l) {
      latches.delete(l);
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
      return latches.size;
    },
  };
}
