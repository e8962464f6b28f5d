// What the resolver's cache holds per CSI, and how a DP's answer becomes a domain outcome.
//
// A cached answer is kept as the bytes a cache hit sends (the Answer for default parameters,
// without its TTL, core codec/answer-encoding.ts) plus the few fields the cache's own work reads:
// the DP, the kind, the MSPs (for evictions when a signing key changes) and the delegation key.
// The outcome's object graph (mappings, strings, a typed-array view per signature, each view
// pinning the whole stream buffer it was decoded from) is rebuilt from the bytes only where it
// is needed: other query parameters, explain, re-checking an answer before serving it stale,
// and a new encoding when the registry's MSP indexes (compact bits) change.
import { fromBinary } from "@bufbuild/protobuf";
import {
  changeHashHex,
  DiscoveryError,
  encodeAnswerWithoutTtl,
  kindOfStatus,
  type LookupKey,
  type LookupOutcome,
  mappingFromProto,
  type OutcomeKind,
  pb,
  sealPartsFromProto,
} from "@mimi/core";

/** An MSP's index in the registry (for compact bits); undefined for an MSP it does not list. */
export type IndexOf = (mspId: string) => number | undefined;

const NO_MSPS: readonly string[] = Object.freeze([]);

/** One cached answer. Frozen; only its encoding is redone, when the registry's serial moves. */
export class CachedAnswer {
  readonly dpId: string;
  readonly kind: OutcomeKind;
  /** Found by a private lookup: never refreshed in the background (that would be a plain lookup). */
  readonly private: boolean;
  /** The MSPs of its mappings (the array interned: answers of the same MSPs share one). */
  readonly mspIds: readonly string[];
  /** The TTL the DP gave (the cache keeps the entry's own). */
  readonly ttlSeconds: number;
  #bytes: Uint8Array;
  #serial: bigint;
  /** An email CSI's delegation key; a phone number's is read from its URI (keyOf). */
  readonly #emailKey: LookupKey | undefined;

  constructor(
    outcome: LookupOutcome,
    /** The key the CSI was delegated by. */
    key: LookupKey,
    /** Re-stored after a failed refresh; served as stale until it expires (RFC 8767). */
    readonly stale: boolean,
    registry: { readonly serial: bigint; readonly indexOf: IndexOf },
  ) {
    this.dpId = intern(outcome.dpId);
    this.kind = outcome.kind;
    this.private = outcome.private === true;
    this.mspIds =
      outcome.kind === "answer" && outcome.mappings.length > 0
        ? internList(outcome.mappings.map((m) => m.mspId))
        : NO_MSPS;
    this.#emailKey = key.kind === "email" ? key : undefined;
    this.ttlSeconds = outcome.ttlSeconds;
    this.#bytes = encodeAnswerWithoutTtl(outcome, registry.indexOf);
    this.#serial = registry.serial;
    Object.freeze(this);
  }

  /**
   * Whether a popular entry may be refreshed before it expires: not a stale one, nor a private
   * one (the refresh, asked by nobody in particular, would be a plain lookup the DP sees).
   */
  get refreshable(): boolean {
    return !this.stale && !this.private;
  }

  /** The key the CSI at `uri` (this entry's cache key) was delegated by. */
  keyOf(uri: string): LookupKey {
    // A canonical phone URI is "tel:+" and the E.164 digits (parseCsi).
    return this.#emailKey ?? { kind: "e164", digits: uri.slice(5) };
  }

  /** The Answer for default parameters without its TTL, for the registry at `serial`. */
  encoded(serial: bigint, indexOf: IndexOf): Uint8Array {
    if (serial !== this.#serial) {
      this.#bytes = encodeAnswerWithoutTtl(this.outcome, indexOf);
      this.#serial = serial;
    }
    return this.#bytes;
  }

  /** The outcome, rebuilt from the bytes (a new object each time; equal to the one stored). */
  get outcome(): LookupOutcome {
    const o = outcomeFromAnswer(this.dpId, fromBinary(pb.AnswerSchema, this.#bytes), this.kind, true);
    return Object.freeze({ ...o, ttlSeconds: this.ttlSeconds });
  }
}

/**
 * A DP's answer as a domain outcome (frozen). `kind` overrides the status for answers the cache
 * rebuilds (an answer of no mappings is written NOT_FOUND on the wire, like every empty one).
 * `ours` (the cache's own bytes) keeps the private-lookup mark; a DP's own say-so is ignored.
 */
export function outcomeFromAnswer(
  dpId: string,
  answer: pb.Answer | undefined,
  kind?: OutcomeKind,
  ours = false,
): LookupOutcome {
  kind ??= answer && kindOfStatus(answer.status);
  if (!answer || !kind)
    throw new DiscoveryError("upstream_failed", `DP "${dpId}" sent an answer without a status`);
  // The seal and opt-out proof are kept as received, for verification and for our own answers.
  const { seal, optOut } = sealPartsFromProto(answer);
  const sealed = {
    ...(seal && { seal: Object.freeze(seal) }),
    ...(ours && answer.privateLookup && { private: true }),
  };
  const ttlSeconds = answer.ttlSeconds;
  if (kind === "answer") {
    const mappings = Object.freeze(answer.mappings.map(frozenMapping));
    return Object.freeze({ kind, mappings, dpId, ttlSeconds, ...sealed });
  }
  if (kind === "opted_out") {
    return Object.freeze({
      kind,
      dpId,
      ttlSeconds,
      ...sealed,
      ...(optOut && { optOut: Object.freeze(optOut) }),
    });
  }
  return Object.freeze({ kind, dpId, ttlSeconds, ...sealed });
}

// Cached answers hold many copies of few strings (MSP ids, common tags); sharing one copy
// each keeps a cached answer small. Bounded, since ids come from the DPs.
const INTERNED = new Map<string, string>();
const MAX_INTERNED = 100_000;
const NO_TAGS: readonly string[] = Object.freeze([]);

function intern(s: string): string {
  const known = INTERNED.get(s);
  if (known !== undefined) return known;
  if (INTERNED.size < MAX_INTERNED) INTERNED.set(s, s);
  return s;
}

// Lists of MSP ids, shared by every answer of the same MSPs in the same order. Bounded.
const INTERNED_LISTS = new Map<string, readonly string[]>();
const MAX_INTERNED_LISTS = 10_000;

function internList(ids: readonly string[]): readonly string[] {
  const name = ids.join("\n");
  const known = INTERNED_LISTS.get(name);
  if (known) return known;
  const list = Object.freeze(ids.map(intern));
  if (INTERNED_LISTS.size < MAX_INTERNED_LISTS) INTERNED_LISTS.set(name, list);
  return list;
}

function frozenMapping(m: pb.Mapping) {
  const x = mappingFromProto(m);
  const tags = x.tags.length === 0 ? NO_TAGS : Object.freeze(x.tags.map(intern));
  return Object.freeze({ ...x, mspId: intern(x.mspId), tags });
}

/** Cache keys of federated DPs' answers (federation.ts) start with this; a CSI URI never does. */
const PART = "fed:";

/** The cache key of DP `dpId`'s answer for `uri` when it is asked as a federated DP. */
export function partKey(dpId: string, uri: string): string {
  return `${PART}${dpId}/${uri}`;
}

/** Whether a cache key is a federated DP's answer. */
export function isPartKey(key: string): boolean {
  return key.startsWith(PART);
}

/** The CSI URI of a cache key (the key itself, or the URI inside a federated part's key). */
export function uriOfKey(key: string): string {
  return key.startsWith(PART) ? key.slice(key.indexOf("/") + 1) : key;
}

/**
 * The cache's second key of an answer: 30 bits of the CSI's change hash under its DP's key, a
 * small integer so the index allocates nothing per entry. Entries of several CSIs (or DPs) may
 * share one; a change event deletes only its own DP's entries under it (an extra miss for a
 * same-DP collision, about one event in 500 at a million cached answers of one DP).
 */
export function answerIndex(changeKeys: ReadonlyMap<string, Uint8Array>) {
  return (cacheKey: string, v: CachedAnswer): number | undefined => {
    const key = changeKeys.get(v.dpId);
    return key ? indexSlot(changeHashHex(key, uriOfKey(cacheKey))) : undefined;
  };
}

/** The index slot of a change hash given as hex (the first 30 bits). */
export function indexSlot(hashHex: string): number {
  return Number.parseInt(hashHex.slice(0, 8), 16) >>> 2;
}
