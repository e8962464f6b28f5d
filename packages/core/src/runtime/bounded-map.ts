// A Map used as an LRU: insertion order is recency, so re-setting a key makes it the newest,
// and past the bound the oldest entries go. Every bounded table of limiter and detector state
// is one of these.

/** Sets `key` as the newest entry of `map`, dropping the oldest while there are more than `max`. */
export function setNewest<K, V>(map: Map<K, V>, key: K, value: V, max: number): void {
  map.delete(key);
  map.set(key, value);
  while (map.size > max) {
    const oldest = map.keys().next();
    if (oldest.done) break;
    map.delete(oldest.value);
  }
}
