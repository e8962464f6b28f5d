// End-to-end verification, like a DNSSEC chain: a pinned root key verifies the registry, the
// registry publishes each DP's and MSP's key, and those keys (with the holder's key inside
// the record) verify each mapping. The resolver, MSPs and tests all use these functions.
import {
  type AnswerFormat,
  compactBits,
  DEFAULT_PARAMS,
  type LookupOutcome,
  type LookupParams,
  type Mapping,
  type OptOutProof,
  type OutcomeKind,
} from "./answer.js";
import {
  decodeSealStatement,
  MAX_ANSWER_SEAL_MS,
  MAX_ANSWER_SEAL_SECONDS,
  type SealedEntry,
  type SealStatement,
  sealDigest,
} from "./answer-seal.js";
import type { LookupKey } from "./csi.js";
import { DiscoveryError } from "./errors.js";
import {
  decodeActionStatement,
  decodeMappingRecord,
  dpSignedParts,
  MAX_MAPPING_LIFETIME_DAYS,
  MAX_MAPPING_LIFETIME_MS,
  PROOF_METHODS,
  RECORD_CLOCK_SKEW_MS,
} from "./record.js";
import { sealSignatureValid } from "./seal-batch.js";
import { PUBLIC_KEY_BYTES, SIGNING_CONTEXT, verifyWith } from "./signing.js";

/** Where verification finds the DPs' and MSPs' keys (the root-signed registry). */
export interface KeyDirectory {
  dpKey(dpId: string): Uint8Array | undefined;
  mspKey(mspId: string): Uint8Array | undefined;
}

/** A key directory over a registry copy. */
export function registryKeys(registry: {
  dp(id: string): { signingPublicKey: Uint8Array } | undefined;
  msp(id: string): { signingPublicKey: Uint8Array } | undefined;
}): KeyDirectory {
  return {
    dpKey: (id) => registry.dp(id)?.signingPublicKey,
    mspKey: (id) => registry.msp(id)?.signingPublicKey,
  };
}

/**
 * What an end-to-end verifier (an MSP, `mimi resolve --verify`) learns from a verified registry
 * besides keys: which DP is delegated a CSI now, and each MSP's compact-answer index.
 */
export interface TrustAnchors extends KeyDirectory {
  /** The DP the registry delegates the key's range to; undefined when no delegation covers it. */
  delegatedDp(key: LookupKey): string | undefined;
  mspIndex(mspId: string): number | undefined;
}

/** Trust anchors over a verified registry copy. */
export function registryTrust(registry: {
  dp(id: string): { signingPublicKey: Uint8Array } | undefined;
  msp(id: string): { signingPublicKey: Uint8Array; index: number } | undefined;
  find(key: LookupKey): { dpId: string } | undefined;
}): TrustAnchors {
  return {
    ...registryKeys(registry),
    delegatedDp: (key) => registry.find(key)?.dpId,
    mspIndex: (id) => registry.msp(id)?.index,
  };
}

function sameTags(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((t, i) => t === b[i]);
}

/**
 * Why `m` fails to verify as a mapping of `csi` (canonical URI) at time `nowMs`, or
 * undefined when it verifies: the record decodes and matches the mapping's fields, has not
 * expired, carries the MSP's and the named DP's valid signatures, and a holder's valid
 * signature unless it discloses the "bulk" method (R4-R6).
 */
export function mappingProblem(
  csi: string,
  m: Mapping,
  keys: KeyDirectory,
  nowMs: number,
  { countersignature = true }: { countersignature?: boolean } = {},
): string | undefined {
  const s = m.signed;
  if (!s || s.record.length === 0) return "it carries no signed record";
  let r: ReturnType<typeof decodeMappingRecord>;
  try {
    r = decodeMappingRecord(s.record);
  } catch (err) {
    return (err as Error).message;
  }
  if (r.csi !== csi) return "its record is for another CSI";
  if (r.mspId !== m.mspId || r.ssi !== m.ssi) return "its record names another MSP or SSI";
  if (!sameTags(r.tags, m.tags) || r.createdAtMs !== m.createdAtMs) {
    return "its tags or created time differ from the record";
  }
  if (r.proofMethod !== m.proofMethod || r.expiresAtMs !== m.expiresAtMs) {
    return "its proof method or expiry differ from the record";
  }
  if (r.expiresAtMs <= nowMs) return "its record has expired";
  if (r.expiresAtMs - r.createdAtMs > MAX_MAPPING_LIFETIME_MS) {
    return `its record would live longer than the published maximum of ${MAX_MAPPING_LIFETIME_DAYS} days`;
  }
  if (r.createdAtMs > nowMs + RECORD_CLOCK_SKEW_MS) return "its record was created in the future";
  if (!(PROOF_METHODS as readonly string[]).includes(r.proofMethod)) {
    return `its proof method "${r.proofMethod}" is unknown`;
  }
  const mspKey = keys.mspKey(r.mspId);
  if (!mspKey || mspKey.length !== PUBLIC_KEY_BYTES) {
    return `the registry publishes no signing key for MSP "${r.mspId}"`;
  }
  if (!verifyWith(mspKey, SIGNING_CONTEXT.mappingMsp, s.mspSignature, [s.record], { registryKey: true })) {
    return "the MSP's signature does not verify";
  }
  // Inside a sealed answer the seal signs (MSP, default flag, record digest) with the same DP
  // key, so checking the countersignature too would only spend another verification.
  if (countersignature) {
    const dpKey = keys.dpKey(r.dpId);
    if (!dpKey || dpKey.length !== PUBLIC_KEY_BYTES) {
      return `the registry publishes no signing key for DP "${r.dpId}"`;
    }
    const dpParts = dpSignedParts(m.isDefault, s.record);
    if (!verifyWith(dpKey, SIGNING_CONTEXT.mappingDp, s.dpSignature, dpParts, { registryKey: true })) {
      return "the DP's countersignature does not verify";
    }
  }
  if (r.proofMethod === "bulk") {
    if (r.userPublicKey.length !== 0 || s.userSignature.length !== 0) {
      return "a bulk record carries a holder key or signature";
    }
    return undefined;
  }
  // A DP cannot claim a proof of possession on its own (R5): the holder signs the record.
  if (s.userSignature.length === 0) return `it claims "${r.proofMethod}" without the holder's signature`;
  if (!verifyWith(r.userPublicKey, SIGNING_CONTEXT.mappingUser, s.userSignature, [s.record])) {
    return "the holder's signature does not verify";
  }
  return undefined;
}

/** An answer as a client receives it, perhaps filtered by MSP or tag, perhaps compact (R10, R15). */
export interface ReceivedAnswer {
  readonly status: OutcomeKind;
  readonly mappings: readonly Mapping[];
  readonly dpIds: readonly string[];
  readonly seal?: LookupOutcome["seal"];
  readonly optOut?: OptOutProof;
  /** The compact bits as received; checked against the seal when given. */
  readonly compactBits?: Uint8Array;
  /** Found by a private lookup (Answer.private_lookup): a NOT_FOUND then has no seal. */
  readonly privateLookup?: boolean;
}

/** The CSI an answer is about: its canonical URI and the key its delegation is found by. */
export interface AnsweredCsi {
  readonly uri: string;
  readonly key: LookupKey;
}

/**
 * What verifying an answer established: the seal it carries (undefined for a NOT_FOUND no DP
 * gave, which the registry proves), and whether the answer is provably complete for the query.
 */
export interface VerifiedAnswer {
  readonly seal: SealStatement | undefined;
  readonly complete: boolean;
}

const KIND_TEXT: Record<OutcomeKind, string> = {
  answer: "FOUND",
  not_found: "NOT_FOUND",
  opted_out: "OPTED_OUT",
};

/**
 * Why `a` fails to verify as the answer for `csi` under the query parameters at `nowMs`, or what
 * it established when it verifies: the seal decodes, names this CSI and the answering DP (and,
 * when `trust` knows delegations, the DP delegated the CSI now), is within its validity period
 * and carries that DP's signature; the status is the sealed one; every mapping is a sealed one in
 * the sealed order, with the sealed default flag, and verifies itself (holder and MSP
 * signatures); a sealed opt-out is the holder's signed statement. An unfiltered verbose answer
 * must hold every sealed mapping, an MSP-filtered one every sealed mapping at those MSPs; with a
 * tag filter the seal cannot tell which mappings carry the tag, so completeness is not known.
 */
export function answerProblem(
  csi: AnsweredCsi,
  a: ReceivedAnswer,
  params: LookupParams,
  trust: KeyDirectory & Partial<TrustAnchors>,
  nowMs: number,
): { problem: string } | VerifiedAnswer {
  const fail = (problem: string) => ({ problem });
  // A denial shows nothing: no mapping, no compact bit (whatever the seal says, below).
  if (a.status !== "answer" && (a.mappings.length > 0 || a.compactBits?.some((b) => b !== 0))) {
    return fail(`it says ${KIND_TEXT[a.status]} but carries mappings or compact bits`);
  }
  if (!a.seal) {
    // A private lookup's NOT_FOUND: the DP's signed bucket proved it to the resolver, which
    // passes no proof on, so it verifies but is not provably complete (the resolver's word).
    if (a.status === "not_found" && a.privateLookup && a.dpIds.length === 1) {
      const dp = trust.delegatedDp?.(csi.key);
      if (trust.delegatedDp && dp !== a.dpIds[0])
        return fail(
          `it names DP "${a.dpIds[0]}", but the registry delegates this CSI to ${dp ? `DP "${dp}"` : "no DP"}`,
        );
      return { seal: undefined, complete: false };
    }
    // The resolver's own NOT_FOUND when no DP is delegated the range: the registry proves it.
    if (a.status === "not_found" && a.dpIds.length === 0 && trust.delegatedDp) {
      const dp = trust.delegatedDp(csi.key);
      if (dp === undefined) return { seal: undefined, complete: true };
      return fail(`it carries no seal, but the registry delegates this CSI to DP "${dp}"`);
    }
    return fail(`the ${KIND_TEXT[a.status]} answer carries no DP seal`);
  }
  let s: SealStatement;
  try {
    s = decodeSealStatement(a.seal.statement);
  } catch (err) {
    return fail((err as Error).message);
  }
  if (s.csi !== csi.uri) return fail("its seal is for another CSI");
  if (a.dpIds.length !== 1 || a.dpIds[0] !== s.dpId) {
    return fail(`it names DP(s) [${a.dpIds.join(", ")}] but was sealed by DP "${s.dpId}"`);
  }
  const delegated = trust.delegatedDp?.(csi.key);
  if (trust.delegatedDp && delegated !== s.dpId) {
    return fail(
      delegated
        ? `it was sealed by DP "${s.dpId}", but the registry delegates this CSI to DP "${delegated}"`
        : `it was sealed by DP "${s.dpId}", but no delegation covers this CSI`,
    );
  }
  const period = sealPeriodProblem(s, nowMs);
  if (period) return fail(period);
  const dpKey = trust.dpKey(s.dpId);
  if (!dpKey || dpKey.length !== PUBLIC_KEY_BYTES) {
    return fail(`the registry publishes no signing key for DP "${s.dpId}"`);
  }
  if (!sealSignatureValid(dpKey, a.seal)) {
    return fail("the DP's seal does not verify");
  }
  if (s.status === "opted_out") {
    if (a.status !== "opted_out") return fail(`it says ${KIND_TEXT[a.status]} but the seal says OPTED_OUT`);
    const problem = optOutProblem(csi.uri, s, a.optOut, trust, nowMs);
    return problem ? fail(problem) : { seal: s, complete: true };
  }
  if (s.status === "not_found") {
    if (a.status !== "not_found") return fail(`it says ${KIND_TEXT[a.status]} but the seal says NOT_FOUND`);
    return { seal: s, complete: true };
  }
  return sealedMappingsProblem(csi.uri, s, a, params, trust, nowMs);
}

/** Checks a FOUND seal's mappings against what was received under the query parameters. */
function sealedMappingsProblem(
  csi: string,
  s: SealStatement,
  a: ReceivedAnswer,
  params: LookupParams,
  keys: KeyDirectory & Partial<TrustAnchors>,
  nowMs: number,
): { problem: string } | VerifiedAnswer {
  const fail = (problem: string) => ({ problem });
  // A DP lists each record once; a repeated one would only make a verifier check it again.
  if (new Set(s.entries.map((e) => Buffer.from(e.recordDigest).toString("hex"))).size !== s.entries.length) {
    return fail("its seal lists a record twice");
  }
  const tag = params.tag.toLowerCase();
  // The seal holds the default flag, so "Default" is checked in full; another tag filter leaves
  // out mappings the seal cannot tell apart (tags are in the records, which are not sent).
  const complete = tag === "" || tag === "default";
  const expected = s.entries.filter(
    (e) =>
      (params.mspFilter.length === 0 || params.mspFilter.includes(e.mspId)) &&
      (tag !== "default" || e.isDefault),
  );
  let next = 0;
  for (const [i, m] of a.mappings.entries()) {
    const digest = m.signed ? sealDigest(m.signed.record) : undefined;
    let at = next;
    while (digest && at < expected.length && !sameEntry(expected[at] as SealedEntry, m, digest)) at++;
    if (!digest || at >= expected.length) {
      return fail(
        `mapping ${i + 1} (MSP "${m.mspId}") is not in the seal as shown (record, default flag or order differ)`,
      );
    }
    next = at + 1;
    const problem =
      mappingProblem(csi, m, keys, nowMs, { countersignature: false }) ??
      (recordDp(m) !== s.dpId
        ? `its record was countersigned by DP "${recordDp(m)}", not the sealing DP`
        : undefined);
    if (problem) return fail(`the mapping at MSP "${m.mspId}": ${problem}`);
    if (!complete && !m.tags.some((t) => t.toLowerCase() === tag)) {
      return fail(`the mapping at MSP "${m.mspId}" does not carry the tag "${params.tag}" asked for`);
    }
  }
  const format: AnswerFormat = params.format;
  if (format === "compact" && a.mappings.length > 0) return fail("a compact answer carries mappings");
  if (a.status === "opted_out") return fail("it says OPTED_OUT but the seal says FOUND");
  if (format === "verbose" && a.status === "answer" && a.mappings.length === 0) {
    return fail("it says FOUND but carries no mapping");
  }
  // FOUND exactly when the query leaves a sealed mapping; under a tag filter, when one is shown.
  const found = complete ? expected.length > 0 : format === "verbose" ? a.mappings.length > 0 : undefined;
  if (found !== undefined && (a.status === "answer") !== found) {
    return fail(
      `it says ${KIND_TEXT[a.status]}, but the seal lists ${expected.length} mapping(s) for this query`,
    );
  }
  if (format === "verbose" && complete && a.mappings.length !== expected.length) {
    return fail(
      `it holds ${a.mappings.length} of the ${expected.length} mappings the seal lists for this query`,
    );
  }
  if (a.compactBits && keys.mspIndex) {
    const want = compactBits(expected, keys.mspIndex);
    const got = a.compactBits;
    const fits = complete
      ? Buffer.from(trimBits(got)).equals(Buffer.from(want))
      : got.every((b, i) => (b & ~(want[i] ?? 0)) === 0);
    if (!fits) return fail("its compact bits differ from the MSPs the seal lists");
  }
  return { seal: s, complete };
}

function sameEntry(e: SealedEntry, m: Mapping, digest: Uint8Array): boolean {
  return e.mspId === m.mspId && e.isDefault === m.isDefault && Buffer.from(e.recordDigest).equals(digest);
}

/** Bits without trailing zero bytes, as compactBits makes them. */
export function trimBits(b: Uint8Array): Uint8Array {
  let n = b.length;
  while (n > 0 && b[n - 1] === 0) n--;
  return b.subarray(0, n);
}

/** Why a seal's validity period does not hold at `nowMs`, or undefined when it does. */
export function sealPeriodProblem(s: SealStatement, nowMs: number): string | undefined {
  if (s.expiresAtMs <= s.signedAtMs) return "its seal expires before it was made";
  if (s.expiresAtMs - s.signedAtMs > MAX_ANSWER_SEAL_MS) {
    return `its seal would be valid longer than the published maximum of ${MAX_ANSWER_SEAL_SECONDS} s`;
  }
  if (s.signedAtMs > nowMs + RECORD_CLOCK_SKEW_MS) {
    return `its seal was made at ${new Date(s.signedAtMs).toISOString()}, in this host's future; check the clocks`;
  }
  if (s.expiresAtMs <= nowMs) return `its seal expired at ${new Date(s.expiresAtMs).toISOString()}`;
  return undefined;
}

/**
 * Why the opt-out proof of an OPTED_OUT seal fails, or undefined: it is the statement the seal
 * names, an opt-out of this CSI through the sealing DP, signed by the holder key it carries and
 * by the MSP the holder acted through, with the key the registry publishes.
 */
export function optOutProblem(
  csi: string,
  s: SealStatement,
  proof: OptOutProof | undefined,
  keys: KeyDirectory,
  nowMs: number,
): string | undefined {
  if (!proof || proof.statement.length === 0) return "it says OPTED_OUT without the holder's signed opt-out";
  if (!Buffer.from(sealDigest(proof.statement)).equals(s.optOutDigest)) {
    return "its opt-out statement is not the one the seal names";
  }
  let st: ReturnType<typeof decodeActionStatement>;
  try {
    st = decodeActionStatement(proof.statement);
  } catch (err) {
    return (err as Error).message;
  }
  if (st.action !== "opt_out" || st.csi !== csi || st.dpId !== s.dpId) {
    return "its opt-out statement is not an opt-out of this CSI at the sealing DP";
  }
  if (st.issuedAtMs > nowMs + RECORD_CLOCK_SKEW_MS) return "its opt-out statement was issued in the future";
  const mspKey = keys.mspKey(st.mspId);
  if (
    !mspKey ||
    !verifyWith(mspKey, SIGNING_CONTEXT.actionMsp, proof.mspSignature, [proof.statement], {
      registryKey: true,
    })
  ) {
    return `the opt-out does not carry a valid signature of MSP "${st.mspId}"`;
  }
  if (!verifyWith(st.userPublicKey, SIGNING_CONTEXT.actionUser, proof.userSignature, [proof.statement])) {
    return "the opt-out does not carry a valid signature of the holder";
  }
  return undefined;
}

/** The DP a mapping's record names (it verified; mappingProblem has decoded it already). */
export function recordDp(m: Mapping): string {
  return m.signed ? decodeMappingRecord(m.signed.record).dpId : "";
}

/**
 * Verifies a whole, unfiltered outcome from the DP `outcome.dpId` (what a resolver caches) and
 * returns its seal; throws verification_failed naming the DP and the reason. The caller checks
 * that this DP is the one delegated the CSI, unless `trust` knows delegations.
 */
export function verifyOutcome(
  csi: AnsweredCsi,
  outcome: LookupOutcome,
  trust: KeyDirectory & Partial<TrustAnchors>,
  nowMs: number,
): SealStatement | undefined {
  const r = answerProblem(
    csi,
    {
      status: outcome.kind,
      mappings: outcome.kind === "answer" ? outcome.mappings : [],
      dpIds: outcome.dpId ? [outcome.dpId] : [],
      ...(outcome.seal && { seal: outcome.seal }),
      ...(outcome.private && { privateLookup: true }),
      ...(outcome.kind === "opted_out" && outcome.optOut && { optOut: outcome.optOut }),
    },
    DEFAULT_PARAMS,
    trust,
    nowMs,
  );
  if ("problem" in r) {
    throw new DiscoveryError(
      "verification_failed",
      `answer from DP "${outcome.dpId}" failed verification: ${r.problem}`,
    );
  }
  // A private NOT_FOUND has no seal; the DP's signed bucket that proved it bounds it instead (how
  // long it is cached, and served stale). Rebuilt from a cache entry it has no bound: not reused.
  if (!r.seal && outcome.kind === "not_found" && outcome.private) {
    if (outcome.privateUntilMs === undefined || outcome.privateUntilMs <= nowMs) {
      throw new DiscoveryError(
        "verification_failed",
        `private NOT_FOUND from DP "${outcome.dpId}" has no current bucket behind it`,
      );
    }
    return {
      csi: csi.uri,
      dpId: outcome.dpId,
      status: "not_found",
      signedAtMs: nowMs,
      expiresAtMs: outcome.privateUntilMs,
      entries: [],
      optOutDigest: new Uint8Array(0),
    };
  }
  return r.seal;
}
