// Authoritative logic, protocol-free: answers only for CSIs delegated to this DP,
// validates imports, and keeps MSP enrolments. It never recurses (no upstream calls).
import {
  type Clock,
  type Csi,
  checkPublicKey,
  type Delegation,
  DiscoveryError,
  decodeActionStatement,
  invalidArgument,
  keepEncodedMappings,
  type LookupOutcome,
  type OutcomeKind,
  parseCsi,
  type RegistryView,
  type SigningKey,
  sealBatch,
  sealStatement,
  servesRange,
  statementAt,
  statementParts,
} from "@mimi/core";
import { type AnswerCache, createAnswerCache, type PreparedAnswer } from "./answer-cache.js";
import { createSealBatcher } from "./seal-batcher.js";
import { type EnrolledMsp, mappingOfRow, type OptOutEvidence } from "./store/rows.js";
import type { MappingStore } from "./store/store.js";

/** The authoritative's operations. */
export interface AuthoritativeService {
  /**
   * Answers for a CSI (text, or already parsed); refuses one this DP does not serve. The answer
   * is read at once, and sealed with the other lookups of the same `batch` (the caller and its
   * rate-limit context) in this turn of the event loop (seal-batcher.ts). `shortLived`: the
   * caller encodes the answer as soon as it is sealed and keeps nothing of it, so its seal
   * statement may be a slice of Node's buffer pool (core shortLivedBytes).
   */
  lookup(csi: string | Csi, batch?: string, shortLived?: boolean): PendingAnswer;
  /**
   * The answer a lookup of canonical `csi` gives now, its seal lasting `sealMs` (the private
   * table's entries); undefined when this DP does not serve it. Not counted as a lookup.
   */
  answerFor(csi: string, sealMs: number): LookupOutcome | undefined;
  enrolMsp(e: Omit<EnrolledMsp, "enrolledAtMs">): EnrolledMsp;
  listEnrolled(): EnrolledMsp[];
  /** Parses a CSI (unless it is parsed already) and checks this DP serves it. */
  requireDelegated(csi: string | Csi): Csi;
  status(): {
    dpId: string;
    serial: bigint;
    delegations: Delegation[];
    mappingCount: number;
    lookupsServed: number;
  };
  /** Lookups answered since the process started (without counting the store, as status() does). */
  readonly lookupsServed: number;
  /** Signatures made for lookups' seals (one per batch), and the seals they covered. */
  readonly sealCounts: { readonly signatures: number; readonly seals: number };
  /** The answer cache's hits, misses and contents (answer-cache.ts); undefined while it is off. */
  readonly answerCacheCounts: AnswerCache["counts"] | undefined;
  /** Registry index of an MSP, for compact answers. */
  mspIndex(mspId: string): number | undefined;
}

/** Options of the authoritative service. */
export interface AuthoritativeServiceOptions {
  dpId: string;
  store: MappingStore;
  /** The DP's copy of the root registry (kept current by registry sync). */
  registry: RegistryView;
  /**
   * Why the registry copy is not usable (none yet, or its seal expired), or undefined when it
   * is; lookups answer UNAVAILABLE meanwhile.
   */
  registryProblem: () => string | undefined;
  /** Why the store cannot be served from now (a secondary still copying it), if it cannot. */
  storeProblem?: () => string | undefined;
  /** The longest TTL answers may carry now (a secondary out of touch with its primary); undefined: none. */
  ttlCapSeconds?: () => number | undefined;
  clock: Clock;
  answerTtlSeconds: number;
  negativeTtlSeconds: number;
  /** The key the registry publishes for this DP: it seals every answer. */
  signingKey: SigningKey;
  /** How long a seal is valid from the lookup (at least the longest TTL given). */
  answerSealMs: number;
  /** The most lookups' seals one signature covers (1: each signed alone); MAX_SEAL_BATCH by default. */
  sealBatchMax?: number;
  /**
   * How far apart rounds of seal signing start under load (seal-batcher.ts, SealPacing); 0 signs
   * at every turn's end. Default 1 ms.
   */
  sealBatchWaitMs?: number;
  /** Bytes of answers kept ready for lookups (answer-cache.ts); 0 turns it off. Default 64 MB. */
  answerCacheBytes?: number;
}

/** How far apart rounds of seal signing start under load unless the options say. */
export const DEFAULT_SEAL_BATCH_WAIT_MS = 1;

/** The answer cache's bound unless the options set one. */
export const DEFAULT_ANSWER_CACHE_BYTES = 64 << 20;

/** A lookup's answer, read from the store, before it is sealed. */
export interface PendingAnswer {
  readonly kind: OutcomeKind;
  /** The answer with its seal, once its batch is signed. */
  sealed(): Promise<LookupOutcome>;
}

/** An answer before it is sealed: its outcome, and the statement its seal is to sign. */
interface Unsealed {
  readonly outcome: LookupOutcome;
  readonly statement: Uint8Array;
}

/** Creates the authoritative service. */
export function createAuthoritativeService(o: AuthoritativeServiceOptions): AuthoritativeService {
  // Refuses CSIs outside the ranges the root delegated to this DP, like a DNS server
  // answering REFUSED for zones it does not serve.
  const requireDelegated = (given: string | Csi) => {
    const csi = typeof given === "string" ? parseCsi(given) : given;
    const stale = o.storeProblem?.();
    if (stale) throw new DiscoveryError("not_ready", stale);
    const problem = o.registryProblem();
    if (problem) throw new DiscoveryError("not_ready", `this DP cannot use its registry copy: ${problem}`);
    const d = o.registry.find(csi.key);
    // A federated DP of the range (D4) holds mappings for it too, and answers for it.
    if (!d || !servesRange(d, o.dpId)) {
      throw new DiscoveryError(
        "not_authoritative",
        d
          ? `${csi.type} identifier is in ${d.id}, delegated to DP "${d.dpId}", not to this DP ("${o.dpId}"), which is not one of its federated DPs either`
          : `no delegation covers this ${csi.type} identifier, so this DP ("${o.dpId}") does not serve it`,
      );
    }
    return csi;
  };

  // An opt-out is answered OPTED_OUT only while its proof verifies: with the MSP key the registry
  // publishes now. Otherwise (an opt-out from before v6, an MSP that changed its key) the CSI is
  // answered NOT_FOUND, which hides the holder just as well and stays verifiable.
  const provableOptOut = (e: OptOutEvidence | undefined) => {
    if (!e) return undefined;
    const published = o.registry.msp(decodeActionStatement(e.statement).mspId)?.signingPublicKey;
    return published && Buffer.from(published).equals(e.mspKey) ? e : undefined;
  };

  // What the store holds for the CSI now, as answers are made of it.
  const read = (csi: string, now: number): PreparedAnswer => {
    // Expired mappings are not served even before the sweep removes them, nor claims withheld
    // while their conflict is open.
    const rows = o.store.mappings(csi).filter((r) => r.expiresAtMs > now && !r.withheld);
    if (rows.length === 0) return { mappings: [], optOut: o.store.optOut(csi)?.evidence, untilMs: Infinity };
    // The store returns them by preference: default first, then precedence (R7, R17).
    const mappings = rows.map(mappingOfRow);
    const untilMs = rows.reduce((ms, r) => Math.min(ms, r.expiresAtMs), Infinity);
    return { mappings, found: statementParts({ csi, dpId: o.dpId, status: "answer", mappings }), untilMs };
  };
  const cacheBytes = o.answerCacheBytes ?? DEFAULT_ANSWER_CACHE_BYTES;
  const cache = cacheBytes > 0 ? createAnswerCache(cacheBytes) : undefined;
  if (cache) o.store.onMappingsTouched((csi) => cache.drop(csi));
  const cachedRead = (csi: string, now: number): PreparedAnswer => {
    let a = cache?.get(csi, now);
    if (!a) {
      a = read(csi, now);
      // Kept: answers with mappings or an opt-out, on their second read in a while (most CSIs
      // are asked once a TTL: answer-cache.ts). A plain NOT_FOUND (most of what address-book
      // discovery and every enumerator ask) costs the store two index reads that find nothing,
      // and would push real answers out. Nothing read inside a transaction is kept: it may
      // still be rolled back.
      if (cache && (a.found || a.optOut) && !o.store.inTransaction() && cache.admits(csi)) {
        // Kept answers list the same mappings array each time: encoded once, here.
        if (a.found) keepEncodedMappings(a.mappings);
        cache.set(csi, a);
      }
    }
    return a;
  };

  // The outcome without its seal, and the statement its seal signs: sealed in a batch by
  // lookup(), from the cache, alone by answerFor(), from the store. A `shortLived` statement
  // takes a slice of the buffer pool (core shortLivedBytes): only a lookup whose answer is
  // encoded the moment it is sealed asks for one.
  const answer = (csi: Csi, sealMs: number, lookup = false, shortLived = false): Unsealed => {
    const now = o.clock();
    const { mappings, found, untilMs, optOut: heldOptOut } = (lookup ? cachedRead : read)(csi.uri, now);
    // Every answer is sealed, denials included, so a resolver can tell a real denial from a
    // DP or a path that drops answers (AnswerSeal in common.proto).
    // A seal never outlives a record it lists, so no cache keeps a record past its expiry.
    const validMs = Math.min(untilMs - now, sealMs);
    const denial = (status: OutcomeKind, optOut?: OptOutEvidence) =>
      sealStatement(
        {
          csi: csi.uri,
          dpId: o.dpId,
          status,
          mappings: [],
          ...(optOut && { optOutStatement: optOut.statement }),
        },
        now,
        validMs,
        shortLived,
      );
    const cap = o.ttlCapSeconds?.();
    const ttl = (seconds: number) => (cap === undefined ? seconds : Math.min(seconds, cap));
    if (!found) {
      // No mapping to serve.
      const ttlSeconds = ttl(o.negativeTtlSeconds);
      // Proven with the registry's keys of now, whenever the opt-out was read.
      const optOut = provableOptOut(heldOptOut);
      if (!optOut) {
        return {
          outcome: { kind: "not_found", dpId: o.dpId, ttlSeconds },
          statement: denial("not_found"),
        };
      }
      const { mspKey: _, ...proof } = optOut;
      return {
        outcome: { kind: "opted_out", dpId: o.dpId, ttlSeconds, optOut: proof },
        statement: denial("opted_out", optOut),
      };
    }
    return {
      outcome: { kind: "answer", mappings, dpId: o.dpId, ttlSeconds: ttl(o.answerTtlSeconds) },
      statement: statementAt(found, now, validMs, shortLived),
    };
  };
  const batcher = createSealBatcher(o.signingKey, setImmediate, o.sealBatchMax, {
    ms: o.sealBatchWaitMs ?? DEFAULT_SEAL_BATCH_WAIT_MS,
    now: () => performance.now(),
    after: (f, ms) => setTimeout(f, ms),
  });

  let lookupsServed = 0;
  return {
    lookup(csiText, batch = "", shortLived = false) {
      lookupsServed++;
      const { outcome, statement } = answer(requireDelegated(csiText), o.answerSealMs, true, shortLived);
      const seal = batcher.seal(statement, batch);
      seal.catch(() => {}); // a caller that never asks for it does not leave a rejection unheard
      return { kind: outcome.kind, sealed: async () => ({ ...outcome, seal: await seal }) };
    },
    answerFor(csiText, sealMs) {
      let csi: Csi;
      try {
        csi = requireDelegated(csiText);
      } catch (err) {
        if (err instanceof DiscoveryError && err.code === "not_authoritative") return undefined;
        throw err;
      }
      const { outcome, statement } = answer(csi, sealMs);
      return { ...outcome, seal: sealBatch([statement], o.signingKey)[0] };
    },
    enrolMsp(e) {
      const published = o.registry.msp(e.mspId);
      if (!published) {
        throw new DiscoveryError("failed_precondition", `MSP "${e.mspId}" is not in the root's MSP registry`);
      }
      if (!e.tlsIdentity) throw invalidArgument("tls_identity is required");
      checkPublicKey(e.signingPublicKey, "signing_public_key");
      // Records the MSP signs are verified against the registry's key, so the two must agree.
      if (!Buffer.from(published.signingPublicKey).equals(e.signingPublicKey)) {
        throw new DiscoveryError(
          "failed_precondition",
          `the signing key differs from the one the root registry publishes for MSP "${e.mspId}"; update the registry first (mimi root msp)`,
        );
      }
      const clash = o.store.enrolledByIdentity(e.tlsIdentity).find((m) => m.mspId !== e.mspId);
      if (clash) {
        throw new DiscoveryError(
          "already_exists",
          `identity "${e.tlsIdentity}" is already enrolled for MSP "${clash.mspId}"`,
        );
      }
      const msp: EnrolledMsp = { ...e, enrolledAtMs: o.store.enrolled(e.mspId)?.enrolledAtMs ?? o.clock() };
      o.store.enrol(msp);
      return msp;
    },
    listEnrolled: () => o.store.listEnrolled(),
    requireDelegated,
    status: () => ({
      dpId: o.dpId,
      serial: o.registry.serial,
      delegations: o.registry.delegationsOf(o.dpId),
      mappingCount: o.store.count(),
      lookupsServed,
    }),
    mspIndex: (id) => o.registry.msp(id)?.index,
    get lookupsServed() {
      return lookupsServed;
    },
    sealCounts: batcher.counts,
    answerCacheCounts: cache?.counts,
  };
}
