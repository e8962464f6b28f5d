// The DP's CSI filter (G6; the layout is core's domain/csi-filter.ts): a keyed bloom filter of
// the CSIs this DP holds mappings or an opt-out for, so resolvers ask it about a CSI only when
// it may hold one. Built from the store in pages at start (the event loop stays free), then
// kept by the change log: a CSI that gains a mapping sets its bits, and each bit that went from
// 0 to 1 is an addition watchers receive. Removals cannot clear bits, so they are counted; a
// filter that removals have made too dirty, or that holds more CSIs than it was sized for, is
// rebuilt as a new version (new key, new size), which watchers then receive whole. A clean stop
// keeps the version served for the next start (filter-snapshot.ts), so watchers resume.
import { randomBytes } from "node:crypto";
import {
  expectedFpr,
  FILTER_KEY_BYTES,
  FILTER_VERSION_BYTES,
  FilterBits,
  filterShape,
  type Logger,
  MIN_FILTER_CSIS,
} from "@mimi/core";
import type { ChangeLog } from "./change-log.js";
import { type FilterSnapshot, saveFilterSnapshot, takeFilterSnapshot } from "./filter-snapshot.js";
import type { MappingStore } from "./store/store.js";

/** CSIs read from the store per page of a build. */
const BUILD_PAGE = 10_000;
/** Change events applied per turn. */
const APPLY_PAGE = 1_000;
/** A filter is sized for this many times the CSIs it starts with, so growth does not rebuild it at once. */
const HEADROOM = 2;
/** Removals, as a share of the CSIs in the filter, past which it is rebuilt. */
const DIRTY_SHARE = 0.25;
/** Additions kept per version (32 MiB of positions); the older half is dropped past it. */
const MAX_ADDITIONS = 4_000_000;
/** Least time between builds, and the wait after a failed one: a filter a little too full or too dirty only costs lookups. */
const REBUILD_INTERVAL_MS = 60_000;

/** One version of the filter. */
export interface FilterVersion {
  readonly version: Uint8Array;
  readonly bits: FilterBits;
  /** The CSIs it was sized for, and those in it when it was built. */
  readonly sizedFor: number;
  readonly csis: number;
  readonly targetFpr: number;
  /**
   * The bits that went from 0 to 1 since the build, in order, from position `floor` on:
   * additions[i] is position floor + i + 1. Older ones are dropped past MAX_ADDITIONS (a watcher
   * behind the floor is sent the whole filter), so the log stays bounded.
   */
  readonly additions: number[];
  floor: number;
}

/** The additions position a version has reached. */
export function positionOf(f: FilterVersion): number {
  return f.floor + f.additions.length;
}

/** The filter a DP serves. */
export interface DpFilter {
  /** The version being served; undefined until the first build is done. */
  current(): FilterVersion | undefined;
  /** Runs `listener` when additions come or a new version replaces the current one. */
  subscribe(listener: () => void): () => void;
  /** Counters for operators. */
  stats(): { versions: number; fill: number; removed: number; falsePositiveRate: number };
  /**
   * Builds a new version now (after one running): the store was replaced under the filter (a
   * secondary's copy), which no change event describes.
   */
  rebuildNow(reason: string): void;
  close(): void;
}

/** Options of the DP's filter. */
export interface DpFilterOptions {
  store: Pick<MappingStore, "csisAfter" | "mappings" | "optedOutAt" | "logBounds" | "count" | "logId">;
  changeLog: Pick<ChangeLog, "subscribe" | "since">;
  falsePositiveRate: number;
  log: Logger;
  /** Random bytes (tests pass a fixed source). */
  random?: (n: number) => Uint8Array;
  /** Clock for the interval between builds (tests pass their own). */
  now?: () => number;
  /** Where the served version is kept across a clean restart (none: built at every start). */
  snapshotPath?: string;
}

/** Starts the filter: its first build runs in pages on later turns of the event loop. */
export function createDpFilter(o: DpFilterOptions): DpFilter {
  const random = o.random ?? ((n: number) => new Uint8Array(randomBytes(n)));
  const now = o.now ?? Date.now;
  // When the last build started (or failed): the next waits REBUILD_INTERVAL_MS.
  let lastBuildAt = Number.NEGATIVE_INFINITY;
  const log = o.log.child({ component: "csi-filter" });
  const listeners = new Set<() => void>();
  let current: FilterVersion | undefined;
  let versions = 0;
  // Bits set (the fill, against what the size was designed for) and CSIs that lost their last mapping.
  let ones = 0;
  let removed = 0;
  // The change log's sequence the filter has applied (set when a build starts).
  let seq = 0;
  let building = false;
  let closed = false;
  // CSIs the last build found: the size of the next.
  let lastCsis = 0;
  const wake = () => {
    for (const l of listeners) l();
  };
  const holds = (csi: string) => o.store.mappings(csi).length > 0 || o.store.optedOutAt(csi) !== undefined;

  /**
   * Reads every CSI into a new version, in pages (never all of them in memory: a DP may hold
   * hundreds of millions); changes meanwhile are replayed before it is served. Sized from the
   * store's mapping count, or the CSIs the last build found when more (opt-outs count too), so
   * a build that found more CSIs than it was sized for is followed by at most one more.
   */
  const build = async () => {
    building = true;
    const startSeq = o.store.logBounds().latest;
    const sizedFor = Math.max(MIN_FILTER_CSIS, Math.ceil(Math.max(o.store.count(), lastCsis) * HEADROOM));
    const shape = filterShape(sizedFor, o.falsePositiveRate);
    const bits = new FilterBits(random(FILTER_KEY_BYTES), shape);
    let set = 0;
    // Mapped CSIs come once each (DISTINCT, in key order); an opted-out one may have been mapped too.
    let csis = 0;
    for (const optedOut of [false, true]) {
      let after = "";
      for (;;) {
        const page = o.store.csisAfter(after, BUILD_PAGE, optedOut);
        for (const csi of page) set += bits.add(csi).length;
        csis += page.length;
        if (page.length < BUILD_PAGE || closed) break;
        after = page[page.length - 1] as string;
        await new Promise((r) => setImmediate(r));
      }
    }
    if (closed) return;
    // Events pruned while the store was read would be missed by the replay: read it again.
    if (o.store.logBounds().oldest > startSeq + 1)
      throw new Error("the change log was pruned during the build");
    lastCsis = csis;
    const unique = csis;
    const next: FilterVersion = {
      version: random(FILTER_VERSION_BYTES),
      bits,
      sizedFor,
      csis: unique,
      targetFpr: o.falsePositiveRate,
      additions: [],
      floor: 0,
    };
    current = next;
    versions++;
    ones = set;
    removed = 0;
    seq = startSeq;
    building = false;
    log.info(
      {
        csis: unique,
        bits: shape.bits,
        hashes: shape.hashes,
        bytes: shape.bits / 8,
        expectedFpr: Number(expectedFpr(shape, unique).toExponential(2)),
      },
      "CSI filter built",
    );
    apply();
  };

  // A forced build asked for while one runs starts when that one ends.
  let again = false;
  const rebuild = (force = false) => {
    if (closed) return;
    if (building) {
      again ||= force;
      return;
    }
    if (!force && now() - lastBuildAt < REBUILD_INTERVAL_MS) return;
    lastBuildAt = now();
    build().then(
      () => {
        wake();
        if (again) {
          again = false;
          rebuild(true);
        }
      },
      (err: unknown) => {
        building = false;
        lastBuildAt = now();
        log.error(
          { err: (err as Error).message },
          "CSI filter build failed; the current one stays; retrying in a minute",
        );
      },
    );
  };

  /** Applies change events up to the log's end; rebuilds when the filter is too full or too dirty. */
  // While a new version is built, the served one keeps taking additions (a sign-up then must
  // not be missed); the new one replays the log from where its build started.
  const apply = () => {
    const f = current;
    if (!f || closed) return;
    let added = false;
    for (;;) {
      const page = o.changeLog.since(seq, APPLY_PAGE);
      for (const e of page) {
        seq = e.seq;
        if (holds(e.csi)) {
          const set = f.bits.add(e.csi);
          if (set.length > 0) {
            ones += set.length;
            f.additions.push(...set);
            if (f.additions.length > MAX_ADDITIONS) {
              const drop = f.additions.length - MAX_ADDITIONS / 2;
              f.additions.splice(0, drop);
              f.floor += drop;
            }
            added = true;
          }
        } else if (f.bits.mayHold(e.csi)) removed++;
      }
      if (page.length < APPLY_PAGE) break;
    }
    if (added) wake();
    // Fuller than the size was designed for (the fill `sizedFor` CSIs would give) means a false
    // positive rate above the target.
    const { bits, hashes } = f.bits.shape;
    const designFill = 1 - Math.exp((-hashes * f.sizedFor) / bits);
    if (!building && (ones / bits > designFill || removed > Math.max(1_000, f.csis * DIRTY_SHARE))) {
      log.info(
        { csis: f.csis, fill: ones / bits, removed },
        "CSI filter too full or too dirty; building a new version",
      );
      rebuild();
    }
  };

  /**
   * Takes up the version a clean stop left, when it still describes this store: the same change
   * log, and every event since it still there to replay.
   */
  const restore = (): boolean => {
    const s = o.snapshotPath === undefined ? undefined : takeFilterSnapshot(o.snapshotPath);
    if (s === undefined) return false;
    const { oldest, latest } = o.store.logBounds();
    const problem =
      "problem" in s
        ? s.problem
        : s.logId !== o.store.logId()
          ? "it is of another change log (a restored store)"
          : s.seq > latest || s.seq < oldest - 1
            ? "the change log no longer holds the events since it was written"
            : s.targetFpr !== o.falsePositiveRate
              ? "the target false-positive rate changed"
              : undefined;
    if (problem !== undefined || "problem" in s) {
      log.warn({ problem }, "CSI filter snapshot not used; building a new version");
      return false;
    }
    current = {
      version: s.version,
      bits: new FilterBits(s.key, s.shape, s.bytes),
      sizedFor: s.sizedFor,
      csis: s.csis,
      targetFpr: s.targetFpr,
      additions: [],
      floor: s.position,
    };
    versions++;
    ({ ones, removed, seq } = s);
    lastCsis = s.csis;
    log.info(
      { csis: s.csis, bits: s.shape.bits, position: s.position },
      "CSI filter taken up from the last stop",
    );
    apply();
    return true;
  };

  /** Keeps the served version for the next start; called once nothing more is applied to it. */
  const save = () => {
    const f = current;
    if (!f || o.snapshotPath === undefined) return;
    const snapshot: FilterSnapshot = {
      logId: o.store.logId(),
      seq,
      version: f.version,
      key: f.bits.key,
      shape: f.bits.shape,
      sizedFor: f.sizedFor,
      csis: f.csis,
      targetFpr: f.targetFpr,
      position: positionOf(f),
      ones,
      removed,
      bytes: f.bits.bytes,
    };
    try {
      saveFilterSnapshot(o.snapshotPath, snapshot);
    } catch (err) {
      log.warn({ err: (err as Error).message }, "CSI filter not kept; the next start builds a new version");
    }
  };

  const unsubscribe = o.changeLog.subscribe(apply);
  if (!restore()) rebuild();
  return {
    current: () => current,
    subscribe(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    stats: () => {
      const fill = current ? ones / current.bits.shape.bits : 1;
      // A CSI not in the filter tests positive when all its bits happen to be set.
      return { versions, fill, removed, falsePositiveRate: fill ** (current?.bits.shape.hashes ?? 1) };
    },
    rebuildNow(reason) {
      log.info({ reason }, "CSI filter rebuilt on request");
      rebuild(true);
    },
    close() {
      if (closed) return;
      closed = true;
      unsubscribe();
      listeners.clear();
      save();
    },
  };
}
