// The DP's answers ready to seal, by CSI, kept in memory as NSD keeps its compiled zone: a
// lookup of a CSI looked up before takes the CSI's live mappings, decoded and encoded, and its
// seal statement but for the times, from here. The store's read, the records' decoding, their
// digests and the encodings were about a third of a lookup's CPU (bench/README.md, "The
// authoritative alone").
//
// Never stale: the store tells of each write to a CSI's mappings or opt-out as it is made
// (MappingStore.onMappingsTouched), which drops the CSI's entry before anything can read it
// again; an entry ends when the first of its mappings expires; and the least recently used go
// once the entries' estimated sizes pass the bound. Only lookups fill it (service.ts), never a
// reader inside a transaction, so a write rolled back leaves nothing of itself here.
//
// Kept on second sight: a CSI's answer is kept only when it was read from the store once before,
// recently (a doorkeeper, as W-TinyLFU puts in front of its cache). A DP behind caching
// resolvers sees most CSIs once per TTL, and keeping every one cost more than it saved: at 1M
// mappings asked at random (3% hits), the DP alone answered 25-30% fewer streamed lookups per
// CPU-second with the cache than without, its young generation promoting every entry kept and
// every one pushed out (bench/README.md, "The DP's answer cache").
import { csiHash32, type Mapping, type StatementParts } from "@mimi/core";
import { countersFrom, gaugeFrom } from "@mimi/rpc";
import { LRUCache } from "lru-cache";
import type { OptOutEvidence } from "./store/rows.js";

/** What an answer for one CSI is made of, before its TTL, times and seal. */
export interface PreparedAnswer {
  /** The mappings served (not expired, not withheld), by preference. */
  readonly mappings: readonly Mapping[];
  /** The seal statement of the answer listing them, but for its times (none when there are none). */
  readonly found?: StatementParts;
  /** The holder's opt-out, read only when no mapping is served. */
  readonly optOut?: OptOutEvidence;
  /** When the first of `mappings` expires (Infinity: none does). */
  readonly untilMs: number;
}

export interface AnswerCache {
  /** The CSI's answer as kept, while none of its mappings expired at `nowMs`. */
  get(csi: string, nowMs: number): PreparedAnswer | undefined;
  /**
   * Whether an answer of `csi` just read from the store is to be kept: true when it was read
   * once before, recently; otherwise remembers this read and says false.
   */
  admits(csi: string): boolean;
  set(csi: string, answer: PreparedAnswer): void;
  /** Forgets the CSI (its mappings or opt-out are being written). */
  drop(csi: string): void;
  /** Lookups answered from here and from the store, and what is kept now. */
  readonly counts: {
    readonly hits: number;
    readonly misses: number;
    /** Answers read from the store and kept (admits said true), and not kept (a first sight). */
    readonly admitted: number;
    readonly firstSights: number;
    readonly entries: number;
    readonly bytes: number;
  };
}

/**
 * Estimated bytes an entry holds: the row's buffer (record and signatures) and its views, the
 * decoded fields, the mappings' encoding, the statement's parts and the objects around them. An
 * entry of one bench mapping (a 112-byte record, 240 bytes with its signatures) took 2,414
 * bytes of heap and buffers with the cache's own bookkeeping, measured over 20,000 (V8 on Node
 * 20); this says 2,460 for it.
 */
export function preparedSize(csi: string, a: PreparedAnswer): number {
  let bytes = 400 + 2 * csi.length;
  for (const m of a.mappings) {
    const s = m.signed;
    const signed = s
      ? s.record.length + s.userSignature.length + s.mspSignature.length + s.dpSignature.length
      : 0;
    bytes += 1_200 + 3 * signed;
  }
  if (a.found) bytes += a.found.head.length + a.found.tail.length;
  const o = a.optOut;
  if (o) bytes += 300 + o.statement.length + o.userSignature.length + o.mspSignature.length + o.mspKey.length;
  return bytes;
}

/** preparedSize's estimate of an answer of one signed mapping, as the bench's. */
const ONE_MAPPING_BYTES = 2_460;

/** A cache holding answers of at most `maxBytes` estimated bytes (preparedSize); at least 1 MB. */
export function createAnswerCache(maxBytes: number): AnswerCache {
  if (!(Number.isSafeInteger(maxBytes) && maxBytes >= 1 << 20)) {
    throw new RangeError("an answer cache holds at least 1 MB");
  }
  const lru = new LRUCache<string, PreparedAnswer>({
    maxSize: maxBytes,
    sizeCalculation: (a, csi) => preparedSize(csi, a),
  });
  // The doorkeeper: one 32-bit hash of a CSI per slot, the last read there once; about twice as
  // many slots as the bound holds entries of one mapping (a power of two, 1 KiB to 16 MiB). A
  // collision only forgets a first sight or, once in 2^32, keeps an answer early: which answers
  // are kept decides nothing but speed.
  const slots = 2 ** Math.min(22, Math.max(8, Math.ceil(Math.log2((2 * maxBytes) / ONE_MAPPING_BYTES))));
  const seen = new Uint32Array(slots);
  const counts = {
    hits: 0,
    misses: 0,
    admitted: 0,
    firstSights: 0,
    get entries() {
      return lru.size;
    },
    get bytes() {
      return lru.calculatedSize;
    },
  };
  return {
    get(csi, nowMs) {
      const a = lru.get(csi);
      if (a && a.untilMs > nowMs) {
        counts.hits++;
        return a;
      }
      counts.misses++;
      if (a) lru.delete(csi);
      return undefined;
    },
    admits(csi) {
      const h = csiHash32(csi);
      const slot = h & (slots - 1);
      if (seen[slot] === h) {
        seen[slot] = 0;
        counts.admitted++;
        return true;
      }
      seen[slot] = h;
      counts.firstSights++;
      return false;
    },
    set: (csi, a) => void lru.set(csi, a),
    drop: (csi) => void lru.delete(csi),
    counts,
  };
}

/** The cache's metrics, read when scraped: lookups by where they were read, bytes and entries held. */
export function answerCacheMetrics(
  metrics: Parameters<typeof gaugeFrom>[0],
  counts: AnswerCache["counts"],
): void {
  countersFrom(
    metrics,
    "mimi_dp_answer_cache_lookups_total",
    "Lookups by where their answer was read: the answer cache (hit) or the store (miss).",
    "result",
    () => ({ hit: counts.hits, miss: counts.misses }),
  );
  countersFrom(
    metrics,
    "mimi_dp_answer_cache_admissions_total",
    "Answers read from the store that could be kept: kept (read once before, recently) or first_sight (only remembered).",
    "result",
    () => ({ kept: counts.admitted, first_sight: counts.firstSights }),
  );
  gaugeFrom(
    metrics,
    "mimi_dp_answer_cache_bytes",
    "Estimated bytes of answers the answer cache holds.",
    () => counts.bytes,
  );
  gaugeFrom(metrics, "mimi_dp_answer_cache_entries", "Answers the answer cache holds.", () => counts.entries);
}
