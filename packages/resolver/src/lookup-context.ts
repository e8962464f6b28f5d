// Who a resolver lookup is made for, and what it records when the caller asked to explain it.
import { DiscoveryError, type LookupOutcome, type SealStatement } from "@mimi/core";
import type { CachedAnswer } from "./cached-answer.js";

/** Who a lookup that reaches a DP is made for. */
export interface MissCaller {
  /** Names the caller: misses of one CSI by one caller share a lookup. */
  readonly key: string;
  /** The rate-limit context sent to DP `dpId` (the DP actually asked, should the range move). */
  contextFor(dpId: string): Uint8Array;
  /** When (performance.now()) it stops waiting for a DP's window; unset: the gate's default. */
  readonly waitUntilMs?: number;
  /** Whether `waitUntilMs` is the gate's default from when it first asked, not a deadline. */
  readonly defaultWait?: boolean;
  /**
   * Whether the caller has gone away (cancelled, or its deadline passed). A lookup nobody else
   * joined is then abandoned: not sent if it is still waiting for the DP's window, and its
   * answer neither verified nor cached if it already was.
   */
  readonly gone?: () => boolean;
  /** Whether lookups at DP `dpId` are made privately (private-lookups.ts); unset: plainly. */
  privateAt?(dpId: string): boolean;
  /** Asks for a DP's sealed denial (PLAIN): a private NOT_FOUND is not served to it, not even stale. */
  readonly sealedDenial?: boolean;
}

/** What ResolverService.refusedMiss judges a miss by. */
export interface MissRefusals extends Pick<MissCaller, "waitUntilMs" | "privateAt"> {
  /** The refusal of every miss now, when the resolver itself is overloaded. */
  overloaded?: () => DiscoveryError | undefined;
  /** Whether the caller's own checks would refuse its miss at DP `dpId` (then left to them). */
  refusesCaller?: (dpId: string) => boolean;
}

/** The rate-limit context of the resolver's own lookups (refreshes): none. */
const NO_CONTEXT: Uint8Array = new Uint8Array(0);

/** The resolver's own lookups (refreshes): no context, the gate's default wait. */
export const OWN: MissCaller = { key: "", contextFor: () => NO_CONTEXT };

/** How the cache took part in a lookup (Explanation.CacheState). */
export type CacheState = "hit" | "miss" | "stale" | "prefetched" | "joined";

/**
 * What one lookup records when its caller asked to explain it (ResolveRequest.explain); the
 * service fills it in as it goes. Lookups without one pay a single check per step.
 */
export interface LookupTrace {
  cache?: CacheState;
  /** The DP endpoint that answered. */
  endpoint?: string;
  /** Time spent waiting for the DP (its window, the call) and verifying its answer, in ms. */
  upstreamMs?: number;
  verifyMs?: number;
  /** Why the DP was not used, when a stale answer was served instead. */
  failure?: string;
}

/** A trace as the gRPC binding keeps it: with the outcome and TTL it served. */
export interface ExplainTrace extends LookupTrace {
  outcome?: LookupOutcome;
  ttlSeconds?: number;
}

/** A resolution: the outcome, how long the caller may cache it, and whether it is stale. */
export interface Resolution {
  readonly outcome: LookupOutcome;
  /** The cache entry it was answered from or made into, whose encoding a response reuses. */
  readonly answer?: CachedAnswer;
  readonly ttlSeconds: number;
  readonly stale: boolean;
  readonly source: "cache" | "upstream" | "stale";
}

/**
 * A cache hit's resolution. Its outcome is rebuilt only if read: a hit with default parameters
 * sends the answer's encoding and never reads it. A class, not an object literal with a getter
 * made per hit (ARCHITECTURE.md, "Hot paths").
 */
export class CachedResolution implements Resolution {
  readonly stale: boolean;
  readonly source: "cache" | "stale";

  constructor(
    readonly answer: CachedAnswer,
    readonly ttlSeconds: number,
  ) {
    this.stale = answer.stale;
    this.source = answer.stale ? "stale" : "cache";
  }

  get outcome(): LookupOutcome {
    return this.answer.outcome;
  }
}

/** Counters an operator reads (and tests observe). */
export interface ResolverStats {
  hits: number;
  misses: number;
  stale: number;
  /** Popular answers refreshed in the background shortly before they expired. */
  prefetches: number;
  /** Cached answers dropped by DP change events. */
  invalidations: number;
  /** Times every answer from one DP was dropped because its change log could not be continued. */
  resyncs: number;
  /** Cached answers dropped by an operator's flush. */
  flushed: number;
  upstreamRequests: number;
  upstreamFailures: number;
  /** Cached answers dropped because their delegation, or the key of a DP or MSP that signed them, changed. */
  evictedByRegistry: number;
  /** Upstream answers refused because they did not verify. */
  verificationFailures: number;
  /** Lookups dropped, unsent or unverified, because their caller had gone (MissCaller.gone). */
  abandoned: number;
}

/** An answer's seal once it verified (undefined for an answer that carries none). */
export type Verified = SealStatement | undefined;

/** Stats with nothing counted yet. */
export function noStats(): ResolverStats {
  return {
    hits: 0,
    misses: 0,
    stale: 0,
    upstreamRequests: 0,
    upstreamFailures: 0,
    prefetches: 0,
    invalidations: 0,
    resyncs: 0,
    flushed: 0,
    evictedByRegistry: 0,
    verificationFailures: 0,
    abandoned: 0,
  };
}

/**
 * What `caller` is served of a lookup's resolution at DP `dpId`, its own or one it joined: not
 * a stale private NOT_FOUND (no DP seal) when it asked for a sealed denial (PLAIN). A fresh
 * answer is always what a plain lookup found, as a plain ask joins only plain lookups.
 */
export function sealedFor(caller: MissCaller, dpId: string, r: Resolution): Resolution {
  if (!caller.sealedDenial || r.source !== "stale" || r.outcome.kind !== "not_found" || !r.outcome.private) {
    return r;
  }
  throw new DiscoveryError(
    "upstream_unavailable",
    `DP "${dpId}" did not answer, and the resolver holds only a NOT_FOUND found by a private lookup, which carries no DP seal; try again shortly, or without PLAIN`,
  );
}
