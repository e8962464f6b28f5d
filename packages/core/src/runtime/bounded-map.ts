// Bounded maps of limiter and detector state, the oldest entries dropped past the bound.
//
// setNewest() keeps a Map in exact LRU order: a key is made the newest by deleting and setting
// it again. Each delete leaves a hole that V8 clears by building the table anew, so a hot key
// costs a new table every few calls, and in a long-lived map the replaced tables outlive the
// young generation (bench/README.md, "The authoritative alone"): the maps written on every
// lookup are RecencyMaps instead.

/** Sets `key` as the newest entry of `map`, dropping the oldest while there are more than `max`. */
export function setNewest<K, V>(map: Map<K, V>, key: K, value: V, max: number): void {
  map.delete(key);
  map.set(key, value);
  dropOldest(map, max);
}

/** Drops the oldest entries of `map` (its first in insertion order) while it holds more than `max`. */
function dropOldest<K>(map: Map<K, unknown>, max: number): void {
  while (map.size > max) {
    const oldest = map.keys().next();
    if (oldest.done) break;
    map.delete(oldest.value);
  }
}

interface Held<V> {
  value: V;
  /** The map's count of inserts and moves when this entry was last inserted or moved. */
  at: number;
}

/**
 * A map of at most `max` entries in approximate LRU order, whose writes to a present key make
 * no Map operation: the value is replaced in place, and the entry moves to the newest end only
 * once a sixteenth of `max` entries have been inserted or moved since it last did. So an entry
 * is dropped only after at least fifteen sixteenths of `max` others were inserted or moved since
 * it was last set (exact LRU: all of `max`), and a hot key moves once per max/16 inserts. `max`
 * may change (a policy reload); the next insert drops what exceeds it.
 */
export class RecencyMap<K, V> {
  readonly #entries = new Map<K, Held<V>>();
  #moves = 0;

  constructor(public max: number) {}

  get size(): number {
    return this.#entries.size;
  }

  get(key: K): V | undefined {
    return this.#entries.get(key)?.value;
  }

  /** Sets `key`'s value, making it the newest entry unless it was made so recently. */
  set(key: K, value: V): void {
    const held = this.#entries.get(key);
    if (held) {
      held.value = value;
      if (this.#moves - held.at < this.max / 16) return;
      this.#entries.delete(key);
      held.at = ++this.#moves;
      this.#entries.set(key, held);
      return;
    }
    this.#entries.set(key, { value, at: ++this.#moves });
    dropOldest(this.#entries, this.max);
  }

  delete(key: K): boolean {
    return this.#entries.delete(key);
  }

  /** The entries, oldest first (by the order above). */
  *entries(): IterableIterator<[K, V]> {
    for (const [k, held] of this.#entries) yield [k, held.value];
  }
}
