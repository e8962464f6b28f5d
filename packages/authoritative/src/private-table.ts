// The DP's private-lookup table (issue 16; core's domain/private-table.ts has the layout): for
// each CSI it would answer FOUND or OPTED_OUT, the sealed answer it would give, encrypted under
// a key derived from the CSI's PRF output and placed at the slot position that output names.
// Built from the store in pages (the event loop stays free; a restart goes on where the build
// stopped), and kept by the change log like the CSI filter, during the build too: a changed
// CSI's entry is sealed again, and when its answer changed, an event of its own tells
// resolvers to drop what they cached, so none keeps an answer read from a bucket that had not
// caught up. A registry change makes it read every CSI again while it serves (a range gained
// or lost, an MSP key changed). Entries' answer seals last `entrySealMs` and are renewed at half
// of it; buckets are signed when served, for `bucketSealMs` (private-signing.ts). A bucket that
// outgrows the table's bucket size grows it (private-entries.ts). On a DP's secondary (issue
// 17) the table is built the same way from the secondary's whole copy of the store but logs
// nothing (the log is the primary's, whose table's events arrive with it); a bucket read waits,
// briefly, until the table has applied what the store holds, and says which change that was.
import { create, toBinary } from "@bufbuild/protobuf";
import {
  answerToProto,
  bucketBitsFor,
  bucketBytesFor,
  bucketOf,
  DEFAULT_PARAMS,
  DiscoveryError,
  encodeBucket,
  invalidArgument,
  keyIdOf,
  oprfEvaluate,
  pb,
  positionsOf,
  sealEntry,
  slotOf,
  type TableLayout,
} from "@mimi/core";
import { createPositionWaits } from "./position-waits.js";
import { contentDigest, growToFit } from "./private-entries.js";
import { createSignedBuckets, createSignedParams } from "./private-signing.js";
import type { EpochKeys, PrivateTable, PrivateTableOptions } from "./private-table-api.js";
import { tableMetaKey } from "./private-table-api.js";

export { type EpochKeys, type PrivateTable, type PrivateTableOptions, tableMetaKey };

/** CSIs read and sealed per turn of a build: each costs a PRF evaluation (about 1.4 ms, on the pool's threads) and a seal. */
const BUILD_PAGE = 32;
/** Change events applied per turn; a new CSI costs a PRF evaluation, a known one a re-seal. */
const APPLY_PAGE = 16;
/** Entries whose seal is renewed per turn of the renewal. */
const RENEW_PAGE = 64;
/** Entries deleted per turn when the table starts over. */
const CLEAR_PAGE = 10_000;
/** The longest a bucket read waits for the table to apply the store's latest change. */
const CATCH_UP_WAIT_MS = 1_000;
/** Bucket reads waiting at once; past this they are answered without waiting (and say how old). */
const MAX_CATCH_UP_WAITERS = 1_024;

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

/** How far the table got, kept in the store so a restart goes on from there. */
interface Progress {
  /** The key the entries are sealed for, and the change log `seq` is of. */
  keyId: string;
  logId: string;
  bucketBits: number;
  bucketBytes: number;
  /** A first build finished: lookups are served (a rescan keeps serving). */
  built: boolean;
  /** Old entries are being deleted before a build from scratch. */
  clearing: boolean;
  /** The scan: mapped CSIs (0), then opted-out ones (1), after `after`; 2 when done. */
  pass: 0 | 1 | 2;
  after: string;
  /** The last change event applied. */
  seq: number;
}

/** Starts the table: its build (or the rest of it) runs on later turns. */
export function createPrivateTable(o: PrivateTableOptions): PrivateTable {
  const log = o.log.child({ component: "private-table" });
  const epoch = o.keys.epoch;
  const keyId = keyIdOf(o.keys.publicKey);
  const metaKey = tableMetaKey(epoch);
  const fresh = (): Progress => ({
    keyId: hex(keyId),
    logId: o.store.logId(),
    bucketBits: bucketBitsFor(o.store.count()),
    bucketBytes: bucketBytesFor(0),
    built: false,
    clearing: false,
    pass: 0,
    after: "",
    seq: o.store.logBounds().latest,
  });
  const saved = o.store.meta(metaKey);
  const progress: Progress = saved ? (JSON.parse(saved) as Progress) : fresh();
  const save = () => o.store.setMeta(metaKey, JSON.stringify(progress));
  const layout = (): TableLayout => ({
    epoch,
    keyId,
    bucketBits: progress.bucketBits,
    bucketBytes: progress.bucketBytes,
  });
  let closed = false;

  const signed = createSignedBuckets(o.signingKey);
  const forget = signed.forget;
  const forgetAll = signed.clear;

  /**
   * Starts over when the table cannot follow the log from where it stopped (another key under
   * this epoch, a restored store, a stop longer than the log keeps events): its entries are
   * deleted, then every CSI is read again, so no entry survives that the store no longer
   * backs. Lookups wait meanwhile.
   */
  // Moves at every start over: a page read before one is never applied after it, whatever
  // position the new start happens to share with the old.
  let generation = 0;
  const startOver = (why: string) => {
    log.warn({ epoch, why }, "the private-lookup table is built again from the store");
    generation++;
    Object.assign(progress, fresh(), { clearing: true });
    forgetAll();
    save();
  };

  /** Makes room in the bucket of `position` for `delta` more bytes (a new layout forgets what was signed). */
  const fit = (position: number, delta: number) => {
    const { bucketBits, bucketBytes } = progress;
    try {
      growToFit(o.store, epoch, progress, position, delta, log);
    } finally {
      // Kept even when the bucket could not grow enough (the entry is left as it was).
      if (progress.bucketBits !== bucketBits || progress.bucketBytes !== bucketBytes) {
        forgetAll();
        save();
      }
    }
  };

  /** Seals `csi`'s current answer into its entry, or drops the entry; returns whether the answer changed. */
  const refresh = (csi: string, reseal = false, y?: Uint8Array): boolean => {
    const outcome = o.answer(csi, o.entrySealMs);
    const old = o.store.privateEntry(epoch, csi);
    if (!outcome || outcome.kind === "not_found") {
      if (!old) return false;
      o.store.deletePrivateEntry(epoch, csi);
      forget(bucketOf(old.position, progress.bucketBits));
      return true;
    }
    const answer = create(
      pb.AnswerSchema,
      answerToProto(outcome, DEFAULT_PARAMS, o.mspIndex, outcome.ttlSeconds),
    );
    const content = contentDigest(answer);
    const same = old !== undefined && Buffer.from(old.content).equals(content);
    if (same && !reseal) return false;
    const slot = old
      ? { position: old.position, tag: old.tag, key: old.entryKey }
      : slotOf(y ?? oprfEvaluate(o.keys.secretKey, csi), layout());
    const entry = sealEntry(layout(), slot, toBinary(pb.AnswerSchema, answer));
    fit(slot.position, entry.length - (old?.entry.length ?? 0));
    o.store.putPrivateEntry(epoch, {
      csi,
      position: slot.position,
      tag: slot.tag,
      entryKey: slot.key,
      content,
      entry,
      sealedUntilMs: o.now() + o.entrySealMs,
    });
    forget(bucketOf(slot.position, progress.bucketBits));
    return !same;
  };
  /**
   * refresh() (with `csi`'s PRF output `y` when it was computed already), a failure logged and
   * left behind (the entry stays as it was) rather than thrown; undefined when it failed.
   */
  const tryRefresh = (csi: string, reseal = false, y?: Uint8Array): boolean | undefined => {
    try {
      return refresh(csi, reseal, y);
    } catch (err) {
      log.error({ err: (err as Error).message }, "a private-lookup entry could not be sealed");
      return undefined;
    }
  };

  // Waits (a second at a time) while answers cannot be made: nothing is skipped meanwhile.
  const waitingForAnswers = (then: () => void) => {
    if (!o.notReady?.()) return false;
    setTimeout(then, 1_000).unref();
    return true;
  };

  /** Reads and seals the next page of the scan. */
  const buildPage = async () => {
    const at = `${progress.pass}/${progress.after}`;
    const page = o.store.csisAfter(progress.after, BUILD_PAGE, progress.pass === 1);
    // The PRF outputs of CSIs new to the table, on the pool's threads (the costly part).
    const unseen = page.filter((csi) => !o.store.privateEntry(epoch, csi));
    const outputs = await o.pool.prf(o.keys.secretKey, unseen);
    const ys = new Map(unseen.map((csi, i) => [csi, outputs[i]]));
    // Stopped, started over, or answers unavailable meanwhile: this page is read again.
    if (closed || progress.clearing || o.notReady?.() || `${progress.pass}/${progress.after}` !== at) return;
    const done = page.length < BUILD_PAGE;
    const next: Partial<Progress> = {
      after: done ? "" : (page[page.length - 1] ?? progress.after),
      pass: done ? (progress.pass === 0 ? 1 : 2) : progress.pass,
    };
    if (next.pass === 2) next.built = true;
    const before = { ...progress };
    try {
      o.store.transaction(() => {
        const changed = page.filter((csi) => tryRefresh(csi, false, ys.get(csi)) === true);
        // A rescan of a table already served: resolvers hear of each answer it changed (a
        // registry change it followed), as they do of the log's changes.
        if (progress.built && logs()) for (const csi of changed) o.store.logChange(csi, o.now());
        Object.assign(progress, next);
        save();
      });
    } catch (err) {
      // Rolled back: the scan stays where the store says it is.
      Object.assign(progress, before);
      throw err;
    }
  };

  const logs = o.logsChanges ?? (() => true);
  // Bucket reads waiting for the table to apply the store's latest change (see caughtUp).
  const waits = createPositionWaits({ maxWaitMs: CATCH_UP_WAIT_MS, max: MAX_CATCH_UP_WAITERS });
  const release = () => {
    if (waits.waiting === 0) return;
    const other = progress.logId !== o.store.logId(); // started over on another log: nothing to wait for
    waits.release((seq) => other || progress.seq >= seq);
  };
  const pause = o.pause ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref()));
  let building = false;
  const build = async () => {
    if (building || closed) return;
    building = true;
    try {
      // One loop for both steps: a start over during the scan (a pruned log) clears first.
      while ((progress.clearing || progress.pass < 2) && !closed) {
        if (progress.clearing) {
          if (o.store.clearPrivate(epoch, CLEAR_PAGE) < CLEAR_PAGE) {
            progress.clearing = false;
            save();
          }
          await new Promise((r) => setImmediate(r));
          continue;
        }
        if (o.notReady?.()) {
          await pause(1_000);
          continue;
        }
        try {
          await buildPage();
        } catch (err) {
          // A page that failed (the pool, the store) is tried again, never given up on.
          log.error({ err: (err as Error).message }, "a private-lookup table page failed; retrying");
          await pause(1_000);
        }
        await new Promise((r) => setImmediate(r));
      }
      if (!closed)
        log.info(
          { epoch, buckets: 2 ** progress.bucketBits, bucketBytes: progress.bucketBytes },
          "private-lookup table built",
        );
    } finally {
      building = false;
    }
    schedule();
  };
  const startBuild = () =>
    void build().catch((err: unknown) =>
      log.error({ err: (err as Error).message }, "private-lookup table build failed"),
    );

  // Change events are applied on a later turn, never inside the write that logged them, so a
  // failure here never reaches a claim's caller, and the table's own events are read too.
  let scheduled = false;
  const schedule = () => {
    if (scheduled || closed) return;
    scheduled = true;
    setImmediate(() => void apply());
  };
  // One page at a time: a page waits for its PRF outputs, and is applied only if nothing moved
  // the table meanwhile (else it is read again).
  let applying = false;
  const apply = async () => {
    scheduled = false;
    if (applying || closed || progress.clearing || waitingForAnswers(schedule)) return;
    applying = true;
    try {
      // Events the table had not applied were pruned (a long stop): it starts over.
      if (o.store.logBounds().oldest > progress.seq + 1) {
        startOver("the change log no longer holds what the table missed");
        startBuild();
        return;
      }
      const page = o.changeLog.since(progress.seq, APPLY_PAGE);
      if (page.length === 0) {
        release();
        return;
      }
      // The PRF outputs of CSIs new to the table, on the pool's threads: on the event loop
      // (about 1.4 ms each) a bulk batch of 10,000 new CSIs held it for 14 s a table. A pool
      // that fails leaves them to be computed here, as before, so the log is never held up.
      const at = { seq: progress.seq, generation };
      const unseen = [...new Set(page.map((e) => e.csi))].filter((csi) => !o.store.privateEntry(epoch, csi));
      const outputs =
        unseen.length === 0
          ? []
          : await o.pool.prf(o.keys.secretKey, unseen).catch((err: unknown) => {
              log.warn(
                { err: (err as Error).message },
                "the OPRF pool failed; a change-log page is computed inline",
              );
              return [] as Uint8Array[];
            });
      // Moved while it waited (started over, closed, answers unavailable): read again.
      if (
        closed ||
        progress.clearing ||
        progress.seq !== at.seq ||
        generation !== at.generation ||
        o.notReady?.()
      ) {
        schedule();
        return;
      }
      const ys = new Map(unseen.map((csi, i) => [csi, outputs[i]]));
      const before = { ...progress };
      try {
        o.store.transaction(() => {
          const changed = page.filter((e) => {
            progress.seq = e.seq;
            return tryRefresh(e.csi, false, ys.get(e.csi)) === true;
          });
          if (logs()) for (const e of changed) o.store.logChange(e.csi, o.now());
          save();
        });
      } catch (err) {
        // Rolled back: the table says it applied no more than the store holds (applied_seq).
        Object.assign(progress, before);
        throw err;
      }
      // Bucket reads whose change is applied go now, not when the table has caught up.
      release();
      if (page.length === APPLY_PAGE || o.store.logBounds().latest > progress.seq) schedule();
    } catch (err) {
      log.error({ err: (err as Error).message }, "private-lookup table could not apply changes; retrying");
      setTimeout(schedule, 1_000).unref();
    } finally {
      applying = false;
    }
  };

  let renewing = false;
  const renewPages = async () => {
    // Entries that could not be sealed again stay due: skipped, so the rest are not held up.
    let skipped = 0;
    while (!closed) {
      const due = o.store.privateDue(epoch, o.now() + o.entrySealMs / 2, RENEW_PAGE, skipped);
      if (due.length === 0) return;
      o.store.transaction(() => {
        // A sealed entry is due again only at half its new life, a dropped one never.
        for (const csi of due) if (tryRefresh(csi, true) === undefined) skipped++;
      });
      await new Promise((r) => setImmediate(r));
    }
  };

  if (saved && progress.keyId !== hex(keyId)) startOver("a new OPRF key under the same epoch");
  else if (progress.logId !== o.store.logId() || progress.seq > o.store.logBounds().latest)
    startOver("the store is another one (restored from a copy)");
  const unsubscribe = o.changeLog.subscribe(schedule);
  startBuild();
  schedule();

  const checkEpoch = (asked: number) => {
    if (asked !== epoch) {
      throw new DiscoveryError(
        "failed_precondition",
        `the private-lookup key epoch is ${epoch}, not ${asked}; fetch the parameters again`,
        { details: { reason: "EPOCH_CHANGED" } },
      );
    }
  };
  const params = createSignedParams(o.dpId, o.keys, o.signingKey);
  const notReady = () =>
    !progress.built || progress.clearing
      ? `private-lookup table of epoch ${epoch} is still being built`
      : undefined;
  const check = (asked: number) => {
    // A table closed (its key retired or replaced) serves nothing: its rows are being deleted.
    if (closed)
      throw new DiscoveryError("not_ready", `the private-lookup key of epoch ${epoch} changed; try again`);
    if (notReady()) throw new DiscoveryError("not_ready", `this DP's ${notReady()}; try again shortly`);
    checkEpoch(asked);
  };

  return {
    epoch,
    notReady,
    parameters: () => params(layout(), o.now()),

    async evaluate(asked, blinded, signal) {
      check(asked);
      return o.pool.blindEvaluate(o.keys, blinded, signal);
    },
    bucket(asked, bucket) {
      check(asked);
      const bits = progress.bucketBits;
      if (!Number.isInteger(bucket) || bucket < 0 || bucket >= 2 ** bits) {
        throw invalidArgument(
          `bucket ${bucket} is not one of this table's ${2 ** bits}; fetch the parameters again`,
          "bucket",
        );
      }
      // Out of touch (a secondary that may lag): signed for no longer than answers' TTLs.
      const cap = o.ttlCapSeconds?.();
      const sealMs = cap === undefined ? o.bucketSealMs : Math.min(o.bucketSealMs, cap * 1000);
      const now = o.now();
      const kept = signed.kept(bucket, sealMs, now);
      if (kept) return kept;
      const [first, last] = positionsOf(bucket, bits);
      const data = encodeBucket(layout(), o.store.privateBucket(epoch, first, last));
      return signed.sign({ dpId: o.dpId, epoch, keyId, bucketBits: bits, bucket }, data, sealMs, now);
    },
    renew() {
      if (!progress.built || progress.clearing || renewing || o.notReady?.()) return;
      renewing = true;
      renewPages()
        .catch((err: unknown) => log.error({ err: (err as Error).message }, "private-lookup renewal failed"))
        .finally(() => {
          renewing = false;
        });
    },
    rescan(why) {
      // Clearing is followed by a whole build anyway; a scan under way starts again from the
      // first CSI, so none it had read keeps an answer the change made outdated.
      if (progress.clearing) return;
      log.info({ epoch, why }, "private-lookup table reads every CSI again");
      Object.assign(progress, { pass: 0, after: "" });
      save();
      startBuild();
    },
    caughtUp() {
      // Nothing is applied while the table clears or answers cannot be made: no wait then.
      if (closed || progress.clearing) return undefined;
      const { latest } = o.store.logBounds();
      if (progress.seq >= latest || o.notReady?.()) return undefined;
      const wait = waits.until(latest);
      schedule();
      return wait;
    },
    applied: () => ({ logId: progress.logId, seq: progress.seq }),
    restart(why) {
      startOver(why);
      release();
      startBuild();
      schedule();
    },
    stats: () => ({ built: progress.built, scanning: progress.pass < 2, layout: layout() }),
    close() {
      closed = true;
      unsubscribe();
      waits.close();
    },
  };
}
