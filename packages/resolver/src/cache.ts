// The resolver's answer cache: LRU-bounded (lru-cache), TTLs clamped to [min, max],
// expiry by an injected clock, and a bounded window in which expired entries may
// still be served when upstreams fail (RFC 8767 "serve stale"). Entries are also indexed
// by a second key (the answering DP and the CSI's change hash), so a DP's change event finds them.

import type { Clock } from "@mimi/core";
import { LRUCache } from "lru-cache";

/** Options of the TTL cache. */
export interface TtlCacheOptions<V = unknown> {
  maxEntries: number;
  minTtlSeconds: number;
  maxTtlSeconds: number;
  /** How long after expiry an entry may still be served stale; 0 disables serve-stale. */
  staleWindowSeconds: number;
  now: Clock;
  /**
   * The second key of an entry (e.g. bits of a hash of its key; a small integer, which costs no
   * allocation, where a string would cost an entry as much as its answer's other fields), or
   * undefined for none; several keys may share one. Computed at every store, so an overwrite
   * follows the new value.
   */
  indexKey?: (key: string, value: V) => number | undefined;
  /** The kind of an entry, for the count of entries evicted for room (e.g. positive, negative). */
  kindOf?: (value: V) => string;
}

/** A fresh hit. */
export interface CacheHit<V> {
  readonly value: V;
  readonly remainingTtlSeconds: number;
  readonly remainingMs: number;
  /** The TTL the entry was stored with. */
  readonly ttlMs: number;
  /** Fresh hits since it was stored, this one included. */
  readonly hits: number;
}

interface Entry<V> {
  value: V;
  expiresAtMs: number;
  ttlMs: number;
  hits: number;
  index: number | undefined;
}

/** The cache. Values are stored as given; callers store frozen values so hits cannot be mutated. */
export interface TtlCache<V> {
  /**
   * Stores `value` for `ttlSeconds` clamped to the configured bounds, and never longer than
   * `capSeconds` (a hard limit of the value itself, such as its signature's expiry, which the
   * minimum TTL does not override); returns the TTL used. A cap of 0 or less stores nothing.
   */
  set(key: string, value: V, ttlSeconds: number, capSeconds?: number): number;
  /** The TTL `set` would use for `ttlSeconds` and `capSeconds` (0 or less: not stored). */
  ttlFor(ttlSeconds: number, capSeconds?: number): number;
  /** A fresh entry, or undefined when absent or expired. */
  get(key: string): CacheHit<V> | undefined;
  /** An entry that expired less than the stale window ago. */
  getStale(key: string): V | undefined;
  delete(key: string): boolean;
  /** Deletes every entry (fresh or stale) for which `drop` is true; returns how many. */
  prune(drop: (key: string, value: V) => boolean): number;
  /** Deletes the entries whose second key is `index` and that `match` accepts; returns how many. */
  deleteIndexed(index: number, match?: (value: V) => boolean): number;
  clear(): void;
  readonly size: number;
  /** Entries dropped to make room (the least recently used), by kind (TtlCacheOptions.kindOf). */
  readonly evictions: Readonly<Record<string, number>>;
}

/** Creates a TTL cache. */
export function createTtlCache<V>(o: TtlCacheOptions<V>): TtlCache<V> {
  // Second key -> key, or keys when several share it (a hash collision).
  const index = new Map<number, string | string[]>();
  const unindex = (ix: number, key: string) => {
    const at = index.get(ix);
    if (at === key) index.delete(ix);
    else if (Array.isArray(at)) {
      const rest = at.filter((k) => k !== key);
      if (rest.length === 1) index.set(ix, rest[0] as string);
      else index.set(ix, rest);
    }
  };
  const evictions: Record<string, number> = {};
  const lru = new LRUCache<string, Entry<V>>({
    max: o.maxEntries,
    dispose: (e: Entry<V>, key: string, reason: LRUCache.DisposeReason) => {
      // Overwrites keep the key, and so its index entry; every other removal drops it.
      if (reason !== "set" && e.index !== undefined) unindex(e.index, key);
      if (reason === "evict") {
        const kind = o.kindOf?.(e.value) ?? "any";
        evictions[kind] = (evictions[kind] ?? 0) + 1;
      }
    },
  });
  const staleMs = o.staleWindowSeconds * 1000;
  const ttlFor = (ttlSeconds: number, capSeconds = Number.POSITIVE_INFINITY) =>
    Math.min(Math.max(ttlSeconds, o.minTtlSeconds), o.maxTtlSeconds, capSeconds);
  return {
    evictions,
    ttlFor,
    set(key, value, ttlSeconds, capSeconds = Number.POSITIVE_INFINITY) {
      const ttl = ttlFor(ttlSeconds, capSeconds);
      if (ttl <= 0) {
        lru.delete(key);
        return 0;
      }
      const before = lru.peek(key);
      const ix = o.indexKey?.(key, value);
      // An overwrite may move the entry to another index (another DP answered it).
      const moved = before !== undefined && before.index !== ix;
      if (moved && before.index !== undefined) unindex(before.index, key);
      lru.set(key, { value, expiresAtMs: o.now() + ttl * 1000, ttlMs: ttl * 1000, hits: 0, index: ix });
      if (ix !== undefined && (!before || moved)) {
        const at = index.get(ix);
        if (at === undefined) index.set(ix, key);
        else if (Array.isArray(at)) at.push(key);
        else index.set(ix, [at, key]);
      }
      return ttl;
    },
    get(key) {
      const e = lru.get(key);
      if (!e) return undefined;
      const remainingMs = e.expiresAtMs - o.now();
      if (remainingMs <= 0) {
        if (-remainingMs >= staleMs) lru.delete(key);
        return undefined;
      }
      e.hits++;
      return {
        value: e.value,
        remainingTtlSeconds: Math.ceil(remainingMs / 1000),
        remainingMs,
        ttlMs: e.ttlMs,
        hits: e.hits,
      };
    },
    getStale(key) {
      const e = lru.peek(key);
      if (!e) return undefined;
      if (o.now() - e.expiresAtMs >= staleMs) {
        lru.delete(key);
        return undefined;
      }
      return e.value;
    },
    delete: (key) => lru.delete(key),
    prune(drop) {
      const doomed: string[] = [];
      for (const [key, e] of lru.entries()) if (drop(key, e.value)) doomed.push(key);
      for (const key of doomed) lru.delete(key);
      return doomed.length;
    },
    deleteIndexed(ix, match) {
      const at = index.get(ix);
      if (at === undefined) return 0;
      const keys = Array.isArray(at) ? [...at] : [at];
      let n = 0;
      for (const k of keys) {
        const e = lru.peek(k);
        if (e && (!match || match(e.value)) && lru.delete(k)) n++;
      }
      return n;
    },
    clear() {
      lru.clear();
      index.clear();
    },
    get size() {
      return lru.size;
    },
  };
}
