// The resolver's answer cache: LRU-bounded (lru-cache), TTLs clamped to [min, max],
// expiry by an injected clock, and a bounded window in which expired entries may
// still be served when upstreams fail (RFC 8767 "serve stale").

import type { Clock } from "@mimi/core";
import { LRUCache } from "lru-cache";

/** Options of the TTL cache. */
export interface TtlCacheOptions {
  maxEntries: number;
  minTtlSeconds: number;
  maxTtlSeconds: number;
  /** How long after expiry an entry may still be served stale; 0 disables serve-stale. */
  staleWindowSeconds: number;
  now: Clock;
}

/** A fresh hit. */
export interface CacheHit<V> {
  readonly value: V;
  readonly remainingTtlSeconds: number;
}

interface Entry<V> {
  value: V;
  expiresAtMs: number;
}

/** The cache. Values are stored as given; callers store frozen values so hits cannot be mutated. */
export interface TtlCache<V> {
  /** Stores `value` for `ttlSeconds` clamped to the configured bounds; returns the TTL used. */
  set(key: string, value: V, ttlSeconds: number): number;
  /** A fresh entry, or undefined when absent or expired. */
  get(key: string): CacheHit<V> | undefined;
  /** An entry that expired less than the stale window ago. */
  getStale(key: string): V | undefined;
  delete(key: string): boolean;
  /** Deletes every entry (fresh or stale) for which `drop` is true; returns how many. */
  prune(drop: (key: string, value: V) => boolean): number;
  clear(): void;
  readonly size: number;
}

/** Creates a TTL cache. */
export function createTtlCache<V>(o: TtlCacheOptions): TtlCache<V> {
  const lru = new LRUCache<string, Entry<V>>({ max: o.maxEntries });
  const staleMs = o.staleWindowSeconds * 1000;
  return {
    set(key, value, ttlSeconds) {
      const ttl = Math.min(Math.max(ttlSeconds, o.minTtlSeconds), o.maxTtlSeconds);
      lru.set(key, { value, expiresAtMs: o.now() + ttl * 1000 });
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
      return { value: e.value, remainingTtlSeconds: Math.ceil(remainingMs / 1000) };
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
    clear: () => lru.clear(),
    get size() {
      return lru.size;
    },
  };
}
