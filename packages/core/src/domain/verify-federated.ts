// End-to-end verification of a federated answer: every DP that answered sealed its own answer,
// and the merged answer must be exactly what mergeFederated makes of those sealed answers under
// the query's parameters. A resolver can therefore neither add nor drop an answering DP's
// mapping, nor re-rank them, without the MSP noticing. What it can do is say a DP failed or was
// over its fan-out limit (the answer is then marked partial), or that a DP's CSI filter ruled
// the CSI out (not checkable by an MSP, which has no filter key: such an answer verifies but is
// never called complete; a query with ignore_filters asks every DP).
import {
  type AnswerSeal,
  compactBits,
  type LookupOutcome,
  type LookupParams,
  type Mapping,
  type OptOutProof,
  type OutcomeKind,
} from "./answer.js";
import { decodeSealStatement, type SealStatement, sealDigest } from "./answer-seal.js";
import { type FederatedMapping, type FederatedPart, mergeFederated } from "./federation.js";
import { sealSignatureValid } from "./seal-batch.js";
import { PUBLIC_KEY_BYTES } from "./signing.js";
import {
  type AnsweredCsi,
  type KeyDirectory,
  mappingProblem,
  optOutProblem,
  recordDp,
  sealPeriodProblem,
  type TrustAnchors,
  trimBits,
} from "./verify.js";

/** One DP of a federated answer as received (resolver.proto, DpSource). */
export interface ReceivedSource {
  readonly dpId: string;
  readonly authoritative: boolean;
  /** "skipped": not asked, its CSI filter says it holds nothing for the CSI (the resolver's word). */
  readonly outcome: "answered" | "failed" | "over_limit" | "skipped";
  readonly status?: OutcomeKind;
  readonly seal?: AnswerSeal;
  readonly optOut?: OptOutProof;
}

/** A federated answer as received: the merged answer and where it came from. */
export interface ReceivedFederatedAnswer {
  readonly status: OutcomeKind;
  readonly mappings: readonly FederatedMapping[];
  readonly compactBits?: Uint8Array;
  readonly sources: readonly ReceivedSource[];
  readonly partial: boolean;
}

/**
 * Why `a` fails to verify as the federated answer for `csi`, or whether it is complete for the
 * query: its sources are exactly the DPs the query selects (`selected`, from selectedDps: the
 * authoritative DP first, then the federated DPs in order), each answered DP's seal verifies,
 * each mapping is one its DP sealed and verifies itself, the merge of the sealed answers is the
 * answer received, and an answer lacking a DP says it is partial.
 */
export function federatedAnswerProblem(
  csi: AnsweredCsi,
  a: ReceivedFederatedAnswer,
  params: LookupParams,
  trust: KeyDirectory & Partial<TrustAnchors>,
  nowMs: number,
  selected: readonly string[],
): { problem: string } | { complete: boolean } {
  const fail = (problem: string) => ({ problem });
  const listed = a.sources.map((s) => s.dpId);
  if (listed.join("\n") !== selected.join("\n")) {
    return fail(
      `its sources are [${listed.join(", ")}], but the query selects DPs [${selected.join(", ")}], in that order`,
    );
  }
  for (const [i, s] of a.sources.entries()) {
    if (s.authoritative !== (i === 0)) {
      return fail(
        `DP "${s.dpId}" is ${s.authoritative ? "marked" : "not marked"} authoritative, against the registry`,
      );
    }
    // A DP its filter ruled out is not a gap: the filter keeps no holder's CSI out (MSPs cannot
    // check it, the key being the resolvers' and DPs' alone: that skip is the resolver's word).
    if ((s.outcome === "failed" || s.outcome === "over_limit") && !a.partial) {
      return fail(`DP "${s.dpId}" did not answer, but the answer is not marked partial`);
    }
    if (s.outcome === "skipped" && s.authoritative) return fail("the authoritative DP is never skipped");
  }
  const tag = params.tag.toLowerCase();
  // Without a tag, or with "Default" (whose every candidate the seals name), all that the MSP
  // filter leaves of each DP's sealed mappings must be shown.
  const complete = tag === "" || tag === "default";
  // Per DP: its sealed answer, and the mappings shown from it with the flags it sealed.
  const parts: FederatedPart[] = [];
  const expected: { mspId: string }[] = [];
  let optedOut = false;
  for (const s of a.sources) {
    if (s.outcome !== "answered") continue;
    const checked = sourceProblem(csi, s, trust, nowMs);
    if ("problem" in checked) return fail(`DP "${s.dpId}": ${checked.problem}`);
    const st = checked.statement;
    if (st.status === "opted_out") optedOut = true;
    const shown = a.mappings.filter((m) => m.dpId === s.dpId);
    const restored: Mapping[] = [];
    let next = 0;
    for (const m of shown) {
      const digest = m.signed ? sealDigest(m.signed.record) : undefined;
      let at = next;
      while (
        digest &&
        at < st.entries.length &&
        !Buffer.from(st.entries[at]?.recordDigest ?? []).equals(digest)
      )
        at++;
      const entry = st.entries[at];
      if (!digest || !entry || entry.mspId !== m.mspId) {
        return fail(
          `DP "${s.dpId}": mapping at MSP "${m.mspId}" is not in its seal as shown (record or order differ)`,
        );
      }
      next = at + 1;
      const problem =
        mappingProblem(csi.uri, m, trust, nowMs, { countersignature: false }) ??
        (recordDp(m) !== s.dpId ? `its record was countersigned by DP "${recordDp(m)}"` : undefined);
      if (problem) return fail(`DP "${s.dpId}": the mapping at MSP "${m.mspId}": ${problem}`);
      if (!complete && !m.tags.some((t) => t.toLowerCase() === tag)) {
        return fail(`the mapping at MSP "${m.mspId}" does not carry the tag "${params.tag}" asked for`);
      }
      restored.push({ ...m, isDefault: entry.isDefault });
    }
    const wanted = st.entries.filter(
      (e) =>
        (params.mspFilter.length === 0 || params.mspFilter.includes(e.mspId)) &&
        (tag !== "default" || e.isDefault),
    );
    if (st.status === "answer") expected.push(...wanted);
    if (complete && params.format === "verbose" && restored.length !== wanted.length) {
      return fail(
        `DP "${s.dpId}": ${restored.length} of the ${wanted.length} mappings it sealed for this query are shown`,
      );
    }
    const outcome = { kind: st.status, mappings: restored, dpId: s.dpId, ttlSeconds: 0 } as LookupOutcome;
    parts.push({ dpId: s.dpId, outcome });
  }
  const unknown = a.mappings.find((m) => !parts.some((p) => p.dpId === m.dpId));
  if (unknown)
    return fail(`the mapping at MSP "${unknown.mspId}" names DP "${unknown.dpId}", which did not answer`);
  // A DP skipped by its filter is the resolver's word: the answer is not provably complete.
  const done = { complete: complete && !a.partial && !a.sources.some((s) => s.outcome === "skipped") };
  if (params.format === "compact") {
    if (a.mappings.length > 0) return fail("a compact answer carries mappings");
    const bits = a.compactBits ?? new Uint8Array(0);
    const anyBit = bits.some((b) => b !== 0);
    if (optedOut) {
      if (a.status !== "opted_out" || anyBit)
        return fail("a DP sealed OPTED_OUT, but the answer is not OPTED_OUT without bits");
      return done;
    }
    if (a.status === "opted_out") return fail("it says OPTED_OUT, but no DP sealed that");
    const found = complete ? expected.length > 0 : anyBit;
    if ((a.status === "answer") !== found) {
      return fail(`it says ${a.status}, but the DPs sealed ${expected.length} mapping(s) for this query`);
    }
    if (trust.mspIndex) {
      const want = compactBits(expected, trust.mspIndex);
      const fits = complete
        ? Buffer.from(trimBits(bits)).equals(Buffer.from(want))
        : bits.every((b, i) => (b & ~(want[i] ?? 0)) === 0);
      if (!fits) return fail("its compact bits differ from the MSPs the DPs sealed");
    }
    return done;
  }
  const merged = mergeFederated(parts, params);
  if (a.status !== merged.kind)
    return fail(`it says ${a.status}, but the DPs' sealed answers merge to ${merged.kind}`);
  if (merged.mappings.length !== a.mappings.length) {
    return fail(
      `it holds ${a.mappings.length} mappings, but the DPs' sealed answers merge to ${merged.mappings.length}`,
    );
  }
  for (const [i, m] of merged.mappings.entries()) {
    const got = a.mappings[i] as FederatedMapping;
    if (got.dpId !== m.dpId || got.isDefault !== m.isDefault || got.signed?.record !== m.signed?.record) {
      return fail(`mapping ${i + 1} is not the merge's (order or default flag differ)`);
    }
  }
  return done;
}

/** Checks one answered DP's seal (and opt-out proof); returns its statement. */
function sourceProblem(
  csi: AnsweredCsi,
  s: ReceivedSource,
  trust: KeyDirectory,
  nowMs: number,
): { problem: string } | { statement: SealStatement } {
  if (!s.seal) return { problem: "it answered without a seal" };
  let st: SealStatement;
  try {
    st = decodeSealStatement(s.seal.statement);
  } catch (err) {
    return { problem: (err as Error).message };
  }
  if (st.csi !== csi.uri) return { problem: "its seal is for another CSI" };
  if (st.dpId !== s.dpId) return { problem: `its seal was made by DP "${st.dpId}"` };
  if (s.status !== st.status) return { problem: `its status differs from its seal's` };
  const period = sealPeriodProblem(st, nowMs);
  if (period) return { problem: period };
  const key = trust.dpKey(st.dpId);
  if (!key || key.length !== PUBLIC_KEY_BYTES)
    return { problem: "the registry publishes no signing key for it" };
  if (!sealSignatureValid(key, s.seal)) {
    return { problem: "its seal does not verify" };
  }
  if (st.status === "opted_out") {
    const problem = optOutProblem(csi.uri, st, s.optOut, trust, nowMs);
    if (problem) return { problem };
  }
  // A DP lists each record once; a repeated one could only be shown twice.
  if (
    new Set(st.entries.map((e) => Buffer.from(e.recordDigest).toString("hex"))).size !== st.entries.length
  ) {
    return { problem: "its seal lists a record twice" };
  }
  return { statement: st };
}
