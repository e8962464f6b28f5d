// Resolver logic, protocol-free: cache -> (one in-flight walk per CSI) -> local registry
// copy -> authoritative -> cache with clamped TTL; serves stale answers when DPs fail.
// Freshness: DPs' change events evict the answers that DP gave at once (positive and negative,
// R20), a log that cannot be continued drops all of that DP's answers, a key change in the
// registry drops every answer the old key signed, popular answers are refreshed shortly before
// they expire, a stale answer is verified again before it is served, and an operator can flush.
//
// Walk invariant: the resolver holds the whole delegation table (synced from the root), so a
// walk is one referral lookup in memory plus one call to an authoritative, which never
// recurses. There is no referral chain to loop through.
import {
  type Csi,
  covers,
  csiHash,
  DiscoveryError,
  type LookupKey,
  type LookupOutcome,
  parseDelegationKeyText,
  type RegistryChange,
  type SealStatement,
} from "@mimi/core";
import { DEFAULT_GATE } from "./adaptive-gate.js";
import { CachedAnswer, indexSlot, isPartKey, uriOfKey } from "./cached-answer.js";
import { callerGone, isCallerGone } from "./call-bounds.js";
import { answersRange, createPartLookups, type PartLookups } from "./federation.js";
import { refusedForBound } from "./gate-refusals.js";
import { type Flight, InFlight } from "./in-flight.js";
import {
  CachedResolution,
  type LookupTrace,
  type MissCaller,
  type MissRefusals,
  noStats,
  OWN,
  type Resolution,
  type ResolverStats,
  sealedFor,
} from "./lookup-context.js";
import { eventKey, RecentChanges } from "./recent-changes.js";
import type { ResolverServiceOptions } from "./service-options.js";
import { watchSignerKeys } from "./signer-keys.js";
import { createStaleAnswers } from "./stale-answers.js";

export { answerIndex, CachedAnswer } from "./cached-answer.js";
export type { MissCaller, MissRefusals, Resolution, ResolverStats } from "./lookup-context.js";
export type { PrefetchPolicy, ResolverServiceOptions } from "./service-options.js";

/** What an operator's flush drops. */
export type FlushScope = { readonly csi: Csi } | { readonly dpId: string } | "all";

/** The resolver's operations. */
export interface ResolverService {
  /**
   * Resolves `csi`; `onMiss` runs first when the cache cannot answer (the caller's lookup is
   * charged there), and what it throws fails the call without asking anyone; the caller it
   * returns is who the DP is asked for (its pseudonymous rate-limit context, P2, and how long
   * it waits). Concurrent misses for one CSI share one lookup, under the first caller's context
   * (in-flight.ts says when a joiner is asked for again under its own). With `sealedDenial`, a
   * cached NOT_FOUND that a private lookup found (no DP seal) counts as a miss.
   */
  resolve(
    csi: Csi,
    onMiss?: () => MissCaller | undefined,
    trace?: LookupTrace,
    sealedDenial?: boolean,
  ): Promise<Resolution>;
  /**
   * The cached answer for `uri` (a canonical CSI URI: a string that is not one finds nothing),
   * exactly as `resolve` would give it, prefetch included; undefined when the cache has none.
   */
  cached(uri: string, trace?: LookupTrace): Resolution | undefined;
  /**
   * The refusal a miss of `csi` (not in the cache) gets at once, before anyone is asked:
   * `caller.overloaded`'s first, as resolve's `onMiss` does; else its DP gate's (Upstream.refusalNow).
   * Undefined whenever resolve would do anything else: the registry copy unusable, no
   * delegation or no such DP, a lookup to join, a private lookup, a caller its own checks
   * refuse, a DP whose gate would send it or let it wait. Counted as resolve counts such a failure.
   */
  refusedMiss(csi: Csi, caller: MissRefusals): DiscoveryError | undefined;
  /** DP `dp`'s answer for `csi` as a federated DP of its range (federation.ts); `onMiss` as for resolve. */
  part: PartLookups["part"];
  /** Drops cached answers a registry change made wrong (their range moved, appeared or vanished). */
  registryChanged(change: RegistryChange): void;
  /** The registry copy was replaced wholesale: re-checks every cached answer. */
  registryReplaced(): void;
  /** DP `dpId` changed the mappings of the CSI with this change hash (hex): drops the answers it gave. */
  changed(dpId: string, hashHex: string, endpoint?: string): void;
  /**
   * The change-hash key DP `dpId` sent with its log; a key other than the one held drops every
   * answer of that DP (their index was made with the old key). Returns whether it changed.
   */
  changeKey(dpId: string, key: Uint8Array): boolean;
  /**
   * A DP's change log cannot be continued from where we were: drops every answer it gave.
   * `counted` is false for a first subscription, which is expected rather than a fault.
   */
  resync(dpId: string, counted: boolean): number;
  /** Drops cached answers; returns how many. */
  flush(scope: FlushScope): number;
  readonly cacheSize: number;
  readonly stats: Readonly<ResolverStats>;
}

/** Creates the resolver service. */
export function createResolverService(o: ResolverServiceOptions): ResolverService {
  const log = o.log.child({ component: "resolver" });
  // A lookup in flight, its first caller's key, and whether anyone joined it.
  const inflight = new InFlight<Resolution>();
  const stats = noStats();
  const recent = new RecentChanges(o.now);
  // The DP an answer must come from now; "" when no delegation covers the key.
  const delegatedDp = (key: LookupKey) => o.registry.find(key)?.dpId ?? "";
  // An answer is never cached past its seal: once the seal expires it no longer verifies anywhere.
  const sealLeftSeconds = (sealed: SealStatement | undefined) =>
    sealed ? Math.floor((sealed.expiresAtMs - o.now()) / 1000) : Number.POSITIVE_INFINITY;
  // MSP indexes for the compact bits of cached answers' encodings.
  const encodingRegistry = {
    get serial() {
      return o.registry.serial;
    },
    indexOf: (mspId: string) => o.registry.msp(mspId)?.index,
  };
  /** Caches `outcome`; returns its TTL and entry (whose bytes a response reuses, even at TTL 0). */
  const store = (
    csi: Csi,
    outcome: LookupOutcome,
    ttlSeconds: number,
    sealed: SealStatement | undefined,
    stale = false,
  ): { ttl: number; answer: CachedAnswer } => {
    const answer = new CachedAnswer(outcome, csi.key, stale, encodingRegistry);
    const ttl = o.cache.set(csi.uri, answer, ttlSeconds, sealLeftSeconds(sealed));
    return { ttl, answer };
  };

  const walk = async (
    csi: Csi,
    attempt = 0,
    background = false,
    caller: MissCaller = OWN,
    trace?: LookupTrace,
    flight?: Flight,
  ): Promise<Resolution> => {
    const problem = o.registryProblem();
    if (problem) throw new DiscoveryError("not_ready", `${problem}; retry shortly`);
    const delegation = o.registry.find(csi.key);
    if (!delegation) {
      // No DP is delegated this range: a definite negative answer, cached like one.
      const outcome: LookupOutcome = Object.freeze({
        kind: "not_found",
        dpId: "",
        ttlSeconds: o.negativeMaxTtlSeconds,
      });
      const { ttl, answer } = store(csi, outcome, o.negativeMaxTtlSeconds, undefined);
      return { outcome, ttlSeconds: ttl, stale: false, source: "upstream", answer };
    }
    const dp = o.registry.dp(delegation.dpId);
    if (!dp) {
      throw new DiscoveryError(
        "upstream_unavailable",
        `the registry delegates to DP "${delegation.dpId}" but lists no such DP`,
      );
    }
    const startedAt = recent.count;
    // Nobody is left to hear the answer: its caller went away and nobody joined its lookup.
    const abandoned = () => caller.gone?.() === true && flight?.joined !== true;
    try {
      stats.upstreamRequests++;
      const t0 = trace ? performance.now() : 0;
      let endpoint: string | undefined;
      let predates = false;
      const privately = caller.privateAt?.(dp.id) === true;
      const outcome = await o.upstream.lookup(dp, csi.uri, {
        rateContext: caller.contextFor(dp.id),
        waitUntilMs: caller.waitUntilMs,
        abandoned,
        privately,
        prefer: recent.deliveredBy(dp.id, o.changeKeys.get(dp.id), csi.uri),
        ...(trace && { answeredBy: (e: string) => (endpoint = e) }),
        ...(privately && {
          predates: () => {
            predates = true;
          },
        }),
      });
      // Verifying (the costliest step of a miss) and caching an answer nobody waits for is
      // what an overloaded resolver can least afford.
      if (abandoned()) throw callerGone(true);
      const t1 = trace ? performance.now() : 0;
      if (trace) Object.assign(trace, { endpoint, upstreamMs: t1 - t0 });
      let sealed: SealStatement | undefined;
      try {
        sealed = await o.verify(csi, outcome);
        if (trace) trace.verifyMs = performance.now() - t1;
      } catch (err) {
        stats.verificationFailures++;
        log.warn(
          { csi: csiHash(csi.uri), dp: dp.id, err: (err as Error).message },
          "answer failed verification",
        );
        throw err;
      }
      if (delegatedDp(csi.key) !== dp.id) {
        // The delegation moved while the lookup was in flight: this answer is from the old DP.
        // Ask the new one (once; a registry flapping faster than a lookup is not chased).
        if (attempt === 0) return walk(csi, 1, background, caller, trace, flight);
        return { outcome, ttlSeconds: 0, stale: false, source: "upstream" };
      }
      // Read by a DP endpoint that had not yet applied a change this resolver has seen (a
      // replicated DP's secondary that lags): served, as the DP's latest word to this lookup,
      // but not cached. Not asked again: a re-ask would tell the DP which changes the CSI may be among.
      if (predates) return { outcome, ttlSeconds: 0, stale: false, source: "upstream" };
      const hashKey = startedAt !== recent.count ? o.changeKeys.get(dp.id) : undefined; // events came meanwhile
      const ix = hashKey && eventKey(dp.id, hashKey, csi.uri);
      if (ix && recent.after(ix, startedAt)) {
        // A change event for this CSI arrived while the lookup was out: the answer may predate
        // the change (the event and the answer travel on different streams). Ask again, but not
        // privately: a re-ask would tell the DP an event it made up for a guessed CSI hit a
        // lookup. That answer goes out uncached (the table's own event follows its entry).
        if (attempt === 0 && !outcome.private) return walk(csi, 1, background, caller, trace, flight);
        return { outcome, ttlSeconds: 0, stale: false, source: "upstream" };
      }
      const wanted =
        outcome.kind !== "answer"
          ? Math.min(outcome.ttlSeconds, o.negativeMaxTtlSeconds)
          : outcome.ttlSeconds;
      const { ttl, answer } = store(csi, outcome, wanted, sealed);
      return { outcome, ttlSeconds: ttl, stale: false, source: "upstream", answer };
    } catch (err) {
      stats.upstreamFailures++;
      if (abandoned()) {
        if (isCallerGone(err)) stats.abandoned++;
        throw err;
      }
      // A failed prefetch leaves the fresh entry as it is.
      if (background) throw err;
      // A wait bound failed it, its caller's deadline or the gate's default: the lookup fails
      // (single() serves each caller stale; joiners allowing longer ask again).
      if (refusedForBound(err)) {
        if (caller.waitUntilMs === undefined || caller.defaultWait) byDefaultBound.add(err as object);
        throw err;
      }
      return stale.served(csi, dp.id, err, trace, true);
    }
  };

  // The signing keys of DPs and MSPs as they were when cached answers were verified; a key
  // that changed or vanished drops what it signed (the answers would not verify any more).
  const signerKeys = watchSignerKeys(o.registry);
  const evictChangedSigners = () => {
    const { dps, msps } = signerKeys.changed();
    if (dps.size === 0 && msps.size === 0) return;
    const n = o.cache.prune(
      (_uri, v) =>
        dps.has(v.dpId) ||
        v.mspIds.some((m) => msps.has(m)) ||
        // An opt-out's proof carries an MSP's signature; opt-outs are few, so all of them go.
        (v.kind === "opted_out" && msps.size > 0),
    );
    stats.evictedByRegistry += n;
    log.info(
      { dps: [...dps], msps: [...msps], evicted: n },
      "signing keys changed; evicted the answers they signed",
    );
  };

  // Eviction scans the cache, so changes arriving together (a backlog replayed after a
  // reconnect) are checked in one pass, on the next turn of the event loop.
  let scopes: ((key: LookupKey) => boolean)[] | "all" = [];
  let scheduled = false;
  const evictSoon = (scope: ((key: LookupKey) => boolean) | "all") => {
    if (scope === "all") scopes = "all";
    else if (scopes !== "all") scopes.push(scope);
    if (scheduled) return;
    scheduled = true;
    setImmediate(() => {
      const taken = scopes;
      scopes = [];
      scheduled = false;
      const inScope = taken === "all" ? () => true : (k: LookupKey) => taken.some((f) => f(k));
      const n = o.cache.prune((k, v) => inScope(v.keyOf(uriOfKey(k))) && !answersRange(o.registry, k, v));
      stats.evictedByRegistry += n;
      if (n > 0) log.info({ evicted: n }, "cached answers evicted after registry change");
    });
  };

  const stale = createStaleAnswers({ ...o, stats, log, encodingRegistry, sealLeftSeconds });
  // Failures of lookups whose first caller named no deadline, decided by the gate's default
  // wait: the DP's doing, as a timeout is, so their stale answer is kept for everyone.
  const byDefaultBound = new WeakSet<object>();

  const single = (
    csi: Csi,
    background: boolean,
    caller: MissCaller = OWN,
    trace?: LookupTrace,
  ): Promise<Resolution> => {
    // Privately or plainly, as the caller asks at the range's DP.
    const key = inflight.keyOf(csi.uri, caller.privateAt?.(delegatedDp(csi.key)) === true);
    if (trace) trace.cache = inflight.has(key) ? "joined" : "miss";
    // Asked again (in-flight.ts) within the default wait it had when it asked, not a new one.
    const askedAt = caller.waitUntilMs === undefined ? performance.now() : 0;
    const bounded = (): MissCaller =>
      caller.waitUntilMs !== undefined
        ? caller
        : { ...caller, waitUntilMs: askedAt + DEFAULT_GATE.maxWaitMs, defaultWait: true };
    return inflight
      .run(
        key,
        { caller: caller.key, background, waitUntilMs: caller.waitUntilMs },
        (flight) => walk(csi, 0, background, caller, trace, flight),
        () => single(csi, background, bounded(), trace),
        // A caller that joined the resolver's own refresh is served stale when it fails, as it
        // would have been by a lookup of its own.
        async (err, flight) => {
          if (!flight.background || background) throw err;
          return stale.once(csi, delegatedDp(csi.key), err, trace, true);
        },
      )
      .catch((err: unknown) => {
        // A wait bound this caller's would not outlast (in-flight.ts): stale, kept for the
        // others only when the gate's default decided it.
        if (background || !refusedForBound(err)) throw err;
        return stale.once(csi, delegatedDp(csi.key), err, trace, byDefaultBound.has(err as object));
      })
      .then((r) => sealedFor(caller, delegatedDp(csi.key), r));
  };
  const { minHits, remainingFraction } = o.prefetch;

  const cached = (uri: string, trace?: LookupTrace, sealedDenial = false): Resolution | undefined => {
    // A caller's text that names a federated part's key finds nothing (only `part` reads those).
    const hit = isPartKey(uri) ? undefined : o.cache.get(uri);
    if (!hit || (sealedDenial && hit.value.private && hit.value.kind === "not_found")) return undefined;
    stats.hits++;
    if (trace) trace.cache = hit.value.stale ? "stale" : "hit";
    if (
      minHits > 0 &&
      hit.hits >= minHits &&
      hit.remainingMs <= hit.ttlMs * remainingFraction &&
      hit.value.refreshable &&
      !inflight.has(uri)
    ) {
      // Refreshed in the background; this query is answered from the cache at once.
      stats.prefetches++;
      if (trace) trace.cache = "prefetched";
      const key = hit.value.keyOf(uri);
      const csi: Csi = { type: key.kind === "e164" ? "tel" : "mailto", uri, key };
      single(csi, true).catch((err: Error) => {
        log.debug({ csi: csiHash(uri), err: err.message }, "prefetch failed");
      });
    }
    return new CachedResolution(hit.value, hit.remainingTtlSeconds);
  };

  const parts = createPartLookups({ ...o, recent, stats, log, encodingRegistry, sealLeftSeconds });
  return {
    stats,
    part: parts.part,
    cached,
    resolve(csi, onMiss, trace, sealedDenial) {
      const hit = cached(csi.uri, trace, sealedDenial);
      if (hit) return Promise.resolve(hit);
      stats.misses++;
      let caller: MissCaller | undefined;
      if (onMiss) {
        try {
          caller = onMiss();
        } catch (err) {
          return Promise.reject(err);
        }
      }
      // Concurrent misses for one CSI share a single upstream request.
      return single(csi, false, caller, trace);
    },
    refusedMiss(csi, caller) {
      const overloaded = caller.overloaded?.();
      if (overloaded) {
        stats.misses++;
        return overloaded;
      }
      // A plain lookup to join (a private ask is left to the full path below).
      if (inflight.has(csi.uri) || o.registryProblem()) return undefined;
      const dpId = o.registry.find(csi.key)?.dpId;
      if (dpId === undefined || !o.registry.dp(dpId) || caller.privateAt?.(dpId)) return undefined;
      if (caller.refusesCaller?.(dpId)) return undefined;
      const refusal = o.upstream.refusalNow(dpId, caller.waitUntilMs);
      if (refusal) {
        stats.misses++;
        stats.upstreamRequests++;
        stats.upstreamFailures++;
      }
      return refusal;
    },
    changed(dpId, hashHex, endpoint) {
      // Scoped to the DP that sent it: another DP's answer for a CSI with the same hash stays.
      const ix = `${dpId}/${hashHex}`;
      recent.note(ix, endpoint);
      stats.invalidations += o.cache.deleteIndexed(indexSlot(hashHex), (v) => v.dpId === dpId);
    },
    changeKey(dpId, key) {
      const held = o.changeKeys.get(dpId);
      if (held && Buffer.from(held).equals(key)) return false;
      o.changeKeys.set(dpId, new Uint8Array(key));
      if (held) o.cache.prune((_uri, v) => v.dpId === dpId);
      return true;
    },
    resync(dpId, counted) {
      const n = o.cache.prune((_uri, v) => v.dpId === dpId);
      if (counted) {
        stats.resyncs++;
        log.warn(
          { dp: dpId, dropped: n },
          "change log could not be continued; dropped this DP's cached answers",
        );
      } else if (n > 0) {
        log.info({ dp: dpId, dropped: n }, "new change subscription; dropped this DP's cached answers");
      }
      return n;
    },
    flush(scope) {
      let n: number;
      if (scope === "all") {
        n = o.cache.size;
        o.cache.clear();
      } else if ("csi" in scope) {
        n = (o.cache.delete(scope.csi.uri) ? 1 : 0) + parts.flush(scope.csi.uri);
      } else {
        n = o.cache.prune((_uri, v) => v.dpId === scope.dpId);
      }
      stats.flushed += n;
      return n;
    },
    get cacheSize() {
      return o.cache.size;
    },
    registryChanged(change) {
      if (
        change.kind === "put_dp" ||
        change.kind === "delete_dp" ||
        change.kind === "put_msp" ||
        change.kind === "delete_msp"
      ) {
        evictChangedSigners();
      }
      // Delegation edits move answers; the changed key bounds which entries to check.
      if (change.kind === "put_delegation") {
        const key = change.delegation.key;
        evictSoon((k) => covers(key, k));
      } else if (change.kind === "delete_delegation") {
        const key = parseDelegationKeyText(change.id);
        evictSoon((k) => covers(key, k));
      }
    },
    registryReplaced() {
      evictChangedSigners();
      evictSoon("all");
    },
  };
}
