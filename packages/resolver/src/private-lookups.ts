// Private lookups (issue 16) from the resolver's side: the DP answers without learning which
// CSI was asked or whether it was found. Per lookup: blind the CSI, have the DP evaluate it
// (lookups waiting for the same DP, endpoint and rate-limit context go in one Evaluate of up
// to 32, one proof for them all), check the proof against the public key of the DP's signed
// parameters, unblind, fetch the bucket the output names, check the DP's signature over it,
// and open the CSI's entry: the sealed answer a plain lookup would have given, verified
// afterwards like one. No entry is a NOT_FOUND the signed bucket proves to this resolver
// (it carries no DP seal for an MSP to check).
import { fromBinary } from "@bufbuild/protobuf";
import {
  bucketProblem,
  DiscoveryError,
  type DpInfo,
  decodeBucketStatement,
  type LookupOutcome,
  layoutOf,
  MAX_OPRF_BATCH,
  openEntry,
  type PrivateParams,
  pb,
  slotOf,
  verifyPrivateParams,
} from "@mimi/core";
import { type Channel, statusName } from "@mimi/rpc";
import { outcomeFromAnswer } from "./cached-answer.js";
import type { OprfPool } from "./oprf-pool.js";

/** The resolver's private lookups. */
export interface PrivateLookups {
  /**
   * Looks `csi` (canonical) up privately at `endpoint` of `dp`; the outcome is marked private.
   * `predates` hears that the bucket it came from was read before a change of the DP's log this
   * resolver has seen (see PrivateLookupOptions.position).
   */
  lookup(
    dp: DpInfo,
    endpoint: string,
    csi: string,
    rateContext: Uint8Array,
    predates?: () => void,
  ): Promise<LookupOutcome>;
  /** A change event (or a resync) from `dpId`: every bucket of it kept so far is dropped. */
  changed(dpId: string): void;
  /** A registry change (a DP's or an MSP's keys or ranges): every kept bucket is dropped. */
  changedAll(): void;
  readonly stats: PrivateLookupStats;
}

/** Counters for metrics and the benchmark. */
export interface PrivateLookupStats {
  lookups: number;
  /** Evaluate calls and the CSIs they carried. */
  evaluations: number;
  evaluated: number;
  buckets: number;
  /** Bytes of buckets received. */
  bucketBytes: number;
  /** Lookups answered from a kept bucket, with no fetch. */
  bucketHits: number;
  /** Buckets read by an endpoint that had not applied a change this resolver had seen (not kept). */
  bucketsBehind: number;
}

/** Options of the private lookups. */
export interface PrivateLookupOptions {
  channel: (dp: DpInfo, endpoint: string) => Channel;
  now: () => number;
  /** Deadline of each call to the DP. */
  timeoutMs: number;
  /** How long a NOT_FOUND from a private lookup may be cached (also bounded by the bucket's expiry). */
  negativeTtlSeconds: number;
  /** Where blinding and finalizing run (worker threads, or inline). */
  pool: OprfPool;
  /**
   * Whether the resolver follows `dpId`'s change stream and has caught up: buckets of that DP
   * are kept only then (nothing would tell the resolver they changed). Undefined: none are kept.
   */
  following?: (dpId: string) => boolean;
  /** Bytes of buckets kept for reuse (0: none). */
  bucketCacheBytes?: number;
  /**
   * Where the resolver's change stream of `dpId` is (its log and last event). A bucket whose DP
   * endpoint says it had applied less of that log when read may predate a change already seen:
   * it is not kept, and its answer is marked so it is not cached.
   */
  position?: (dpId: string) => { logId: string; seq: number } | undefined;
}

/** Parameters are fetched again after this long, and at once when the DP says its epoch changed. */
const PARAMS_MS = 600_000;
/** Parameter sets kept (one per DP endpoint asked). */
const MAX_PARAMS = 1_024;
/** A kept bucket is used for at most this long, even while no change event says otherwise. */
const BUCKET_KEEP_MS = 60_000;
/** Default bytes of kept buckets. */
const BUCKET_CACHE_BYTES = 32 * 1024 * 1024;

/** A bucket kept for reuse, checked when it was fetched. */
interface KeptBucket {
  readonly r: BucketParts;
  /** The generation (registry changes, and the DP's change events) when the fetch began: any later one drops it. */
  readonly generation: string;
  readonly fetchedAtMs: number;
}

interface Waiting {
  csi: string;
  resolve: (o: LookupOutcome) => void;
  reject: (e: unknown) => void;
  predates: (() => void) | undefined;
}

/** Creates the private lookups. */
export function createPrivateLookups(o: PrivateLookupOptions): PrivateLookups {
  const stats: PrivateLookupStats = {
    lookups: 0,
    evaluations: 0,
    evaluated: 0,
    buckets: 0,
    bucketBytes: 0,
    bucketHits: 0,
    bucketsBehind: 0,
  };
  // Buckets are the same for every caller: one kept serves every later lookup that lands in it,
  // until any change event of its DP (the table's own events follow every entry it rewrites), a
  // minute, or the bucket's own expiry, whichever comes first. Bounded in bytes, oldest out first.
  const kept = new Map<string, KeptBucket>();
  const generations = new Map<string, number>();
  let registryGeneration = 0;
  const generationOf = (dpId: string) => `${registryGeneration}:${generations.get(dpId) ?? 0}`;
  const cacheBytes = o.following ? (o.bucketCacheBytes ?? BUCKET_CACHE_BYTES) : 0;
  let keptBytes = 0;
  const drop = (k: string) => {
    const b = kept.get(k);
    if (b) keptBytes -= b.r.data.length;
    kept.delete(k);
  };
  const keptBucket = (dp: DpInfo, k: string, now: number): BucketParts | undefined => {
    const b = kept.get(k);
    if (!b) return undefined;
    if (
      b.generation !== generationOf(dp.id) ||
      now - b.fetchedAtMs >= BUCKET_KEEP_MS ||
      decodeBucketStatement(b.r.statement).expiresAtMs <= now ||
      !o.following?.(dp.id)
    ) {
      drop(k);
      return undefined;
    }
    return b.r;
  };
  const keep = (k: string, r: BucketParts, generation: string, dpId: string, now: number) => {
    if (r.data.length > cacheBytes || generation !== generationOf(dpId)) return;
    drop(k);
    for (const [old] of kept) {
      if (keptBytes + r.data.length <= cacheBytes) break;
      drop(old);
    }
    // Copies: a response's fields are views into its whole message, which would be kept too.
    const own = { data: r.data.slice(), statement: r.statement.slice(), signature: r.signature.slice() };
    kept.set(k, { r: own, generation, fetchedAtMs: now });
    keptBytes += r.data.length;
  };
  const params = new Map<string, { p: Promise<PrivateParams>; at: number }>();
  const batches = new Map<string, Waiting[]>();

  const client = (dp: DpInfo, endpoint: string) => o.channel(dp, endpoint).client(pb.PrivateLookupService);

  const paramsOf = (dp: DpInfo, endpoint: string, epoch: number, fresh = false): Promise<PrivateParams> => {
    const k = `${dp.id}|${endpoint}|${epoch}`;
    const kept = params.get(k);
    if (kept && !fresh && o.now() - kept.at < PARAMS_MS) return kept.p;
    const p = client(dp, endpoint)
      .getPrivateParameters({ epoch }, { timeoutMs: o.timeoutMs })
      .then(
        (r) => {
          const v = verifyPrivateParams(r.statement, r.signature, dp.id, dp.signingPublicKey);
          if ("problem" in v) throw new DiscoveryError("verification_failed", v.problem);
          return v;
        },
        refusedPrivately(dp, epoch),
      );
    p.catch(() => params.delete(k));
    if (params.size >= MAX_PARAMS) params.delete(params.keys().next().value as string);
    params.set(k, { p, at: o.now() });
    return p;
  };

  /** One batch: evaluated together, then each CSI's bucket fetched and opened. */
  const run = async (
    dp: DpInfo,
    endpoint: string,
    rateContext: Uint8Array,
    items: Waiting[],
    retried = false,
  ) => {
    // Only the key the root-signed registry publishes as the DP's current one (its newest epoch),
    // as every resolver sees it: a DP cannot give this resolver a key of its own, nor split
    // resolvers between two published keys, and so tell their lookups apart. During a rotation
    // the DP serves two keys; the registry says which one is current.
    const current = [...(dp.privateLookupKeys ?? [])].sort((a, b) => b.epoch - a.epoch)[0];
    if (!current)
      throw new DiscoveryError(
        "failed_precondition",
        `the registry publishes no private-lookup key for DP "${dp.id}"; ask plainly (mimi root dp put ${dp.id} --private-lookup-key)`,
      );
    const p = await paramsOf(dp, endpoint, current.epoch, retried);
    if (current.epoch !== p.epoch || !Buffer.from(current.publicKey).equals(p.publicKey)) {
      // Parameters read before the registry moved to a new key: read them again, once.
      if (!retried) return run(dp, endpoint, rateContext, items, true);
      throw new DiscoveryError(
        "failed_precondition",
        `DP "${dp.id}" uses private-lookup key epoch ${p.epoch}, not the one the registry publishes as current (${current.epoch}); ask plainly, or later`,
      );
    }
    const blinded = await o.pool.blind(items.map((i) => i.csi));
    const c = client(dp, endpoint);
    let ev: pb.EvaluateResponse;
    try {
      ev = await c.evaluate(
        { epoch: p.epoch, blinded: blinded.map((b) => b.blinded), rateContext },
        { timeoutMs: o.timeoutMs },
      );
    } catch (err) {
      if (!retried && err instanceof DiscoveryError && err.details?.reason === "EPOCH_CHANGED")
        return run(dp, endpoint, rateContext, items, true);
      throw err;
    }
    stats.evaluations++;
    stats.evaluated += items.length;
    let outputs: Uint8Array[];
    try {
      outputs = await o.pool.finalize(blinded, ev.evaluated, p.publicKey, ev.proof);
    } catch (err) {
      throw new DiscoveryError("verification_failed", `DP "${dp.id}": ${(err as Error).message}`);
    }
    const layout = layoutOf(p);
    // One fetch per CSI of a batch, even when two share a bucket (a shared fetch would tell the
    // DP that two of its CSIs collide); only a bucket kept from an earlier batch is not fetched,
    // which tells the DP less than a fetch would: not which bucket, only that it was one it
    // served this resolver within the minute.
    await Promise.all(
      items.map(async (item, i) => {
        try {
          const slot = slotOf(outputs[i] as Uint8Array, layout);
          // Kept buckets are of this DP key, OPRF key and layout only (checked when fetched).
          const k = [
            dp.id,
            hex(dp.signingPublicKey),
            p.epoch,
            hex(p.publicKey),
            p.bucketBits,
            p.bucketBytes,
            slot.bucket,
          ].join("|");
          let r = keptBucket(dp, k, o.now());
          if (r) stats.bucketHits++;
          else {
            const generation = generationOf(dp.id);
            const seen = o.position?.(dp.id);
            const fetched = await c.getBucket(
              { epoch: p.epoch, bucket: slot.bucket },
              { timeoutMs: o.timeoutMs },
            );
            r = fetched;
            stats.buckets++;
            stats.bucketBytes += r.data.length;
            const problem = bucketProblem(
              r.data,
              r.statement,
              r.signature,
              p,
              slot.bucket,
              dp.signingPublicKey,
              o.now(),
            );
            if (problem) {
              // A table that grew or split its buckets since the parameters were read: read them
              // again, once.
              if (!retried && layoutChanged(r, p)) throw new Retry();
              throw new DiscoveryError("verification_failed", problem);
            }
            if (seen && fetched.logId === seen.logId && fetched.appliedSeq < BigInt(seen.seq)) {
              stats.bucketsBehind++;
              item.predates?.();
            } else keep(k, r, generation, dp.id, o.now());
          }
          const now = o.now();
          const expiresAtMs = decodeBucketStatement(r.statement).expiresAtMs;
          const leftSeconds = Math.max(0, Math.floor((expiresAtMs - now) / 1000));
          const plain = openEntry(layout, slot, r.data);
          const outcome: LookupOutcome = plain
            ? withPrivate(outcomeFromAnswer(dp.id, fromBinary(pb.AnswerSchema, plain)), leftSeconds)
            : {
                kind: "not_found",
                dpId: dp.id,
                ttlSeconds: Math.min(o.negativeTtlSeconds, leftSeconds),
                private: true,
                // No DP seal bounds it: the bucket's statement does, for caching and serving stale.
                privateUntilMs: expiresAtMs,
              };
          item.resolve(Object.freeze(outcome));
        } catch (err) {
          if (err instanceof Retry) {
            run(dp, endpoint, rateContext, [item], true).catch(item.reject);
            return;
          }
          item.reject(
            err instanceof DiscoveryError
              ? err
              : new DiscoveryError(
                  "verification_failed",
                  `DP "${dp.id}"'s private answer: ${(err as Error).message}`,
                ),
          );
        }
      }),
    );
  };

  return {
    stats,
    changed(dpId) {
      generations.set(dpId, (generations.get(dpId) ?? 0) + 1);
    },
    changedAll() {
      registryGeneration++;
      kept.clear();
      keptBytes = 0;
    },
    lookup(dp, endpoint, csi, rateContext, predates) {
      stats.lookups++;
      return new Promise<LookupOutcome>((resolve, reject) => {
        const k = `${dp.id}|${endpoint}|${Buffer.from(rateContext).toString("hex")}`;
        let batch = batches.get(k);
        if (!batch) {
          batch = [];
          batches.set(k, batch);
          // Lookups made in the same turn (a ResolveStream of an address book) share one Evaluate.
          setImmediate(() => {
            const all = batches.get(k) ?? [];
            batches.delete(k);
            for (let i = 0; i < all.length; i += MAX_OPRF_BATCH) {
              const items = all.slice(i, i + MAX_OPRF_BATCH);
              run(dp, endpoint, rateContext, items).catch((err: unknown) => {
                for (const it of items) it.reject(err);
              });
            }
          });
        }
        batch.push({ csi, resolve, reject, predates });
      });
    },
  };
}

class Retry extends Error {}

/** What a bucket response holds. */
type BucketParts = Pick<pb.GetBucketResponse, "data" | "statement" | "signature">;

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

/** Whether a bucket is of a later layout than `p` (more bucket bits, larger buckets). */
function layoutChanged(r: BucketParts, p: PrivateParams): boolean {
  try {
    return decodeBucketStatement(r.statement).bucketBits !== p.bucketBits || r.data.length !== p.bucketBytes;
  } catch {
    return false;
  }
}

/** A DP that does not serve PrivateLookupService (or has it off) says so in the caller's words. */
function refusedPrivately(dp: DpInfo, epoch: number) {
  return (err: unknown): never => {
    // It holds keys, but not the one the registry publishes as current (a rotation out of step).
    // The DP's own text (its address, its files) is not passed on; it stays the cause.
    if (err instanceof DiscoveryError && err.details?.reason === "EPOCH_CHANGED")
      throw new DiscoveryError(
        "failed_precondition",
        `DP "${dp.id}" does not hold the private-lookup key the registry publishes as its current one (epoch ${epoch}); try again later`,
        { cause: err, details: { reason: "EPOCH_CHANGED" } },
      );
    if (
      err instanceof DiscoveryError &&
      (statusName(err.remoteStatus ?? -1) === "UNIMPLEMENTED" || err.code === "failed_precondition")
    )
      throw new DiscoveryError(
        "failed_precondition",
        `DP "${dp.id}" does not offer private lookups; ask without PRIVATE`,
        {
          cause: err,
        },
      );
    throw err;
  };
}

/** The answer from an entry, marked private and cached no longer than its bucket's statement holds. */
function withPrivate(o: LookupOutcome, leftSeconds: number): LookupOutcome {
  return { ...o, ttlSeconds: Math.min(o.ttlSeconds, leftSeconds), private: true };
}
