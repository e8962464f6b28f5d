// Notices to MSPs about their users' mappings (G3, R17): written inside the transaction that
// causes them, announced to each MSP's watchers only after that transaction is over.
import type { NoticeBody, NoticeRow } from "../store/rows.js";
import type { MappingStore } from "../store/store.js";

/** The notice board of one DP. */
export interface Notices {
  /** Adds a notice for `mspId` within the current transaction. */
  add(mspId: string, atMs: number, body: NoticeBody): void;
  /** Wakes the watchers of every MSP that got a notice since the last call (after a commit). */
  announce(): void;
  /** Notices for `mspId` after `seq`, at most `limit`. */
  since(mspId: string, seq: number, limit: number): NoticeRow[];
  /** Runs `listener` after every transaction that added a notice for `mspId`; returns the unsubscribe. */
  subscribe(mspId: string, listener: () => void): () => void;
}

/** Creates the notice board over the store. */
export function createNotices(store: MappingStore): Notices {
  const watchers = new Map<string, Set<() => void>>();
  const pending = new Set<string>();
  return {
    add(mspId, atMs, body) {
      store.addNotice(mspId, atMs, body);
      pending.add(mspId);
    },
    announce() {
      for (const id of pending) for (const l of watchers.get(id) ?? []) l();
      pending.clear();
    },
    since: (mspId, seq, limit) => store.noticesSince(mspId, seq, limit),
    subscribe(mspId, listener) {
      let set = watchers.get(mspId);
      if (!set) {
        set = new Set();
        watchers.set(mspId, set);
      }
      const entry = () => listener();
      set.add(entry);
      return () => {
        set.delete(entry);
        if (set.size === 0) watchers.delete(mspId);
      };
    },
  };
}
