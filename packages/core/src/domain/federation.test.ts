// Federation: which DPs a query asks (R10, R11, R12's fan-out bound), how their sealed answers
// merge (GLADOS's timestamp rule for the default), and that an MSP checking a merged answer
// notices every way a resolver could bend it.
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  type AnswerSeal,
  DEFAULT_PARAMS,
  type LookupOutcome,
  type LookupParams,
  type Mapping,
  type SealBatch,
} from "./answer.js";
import { sealAnswer } from "./answer-seal.js";
import { parseCsi } from "./csi.js";
import { DiscoveryError } from "./errors.js";
import {
  DEFAULT_FEDERATION,
  type FederatedMapping,
  type FederatedPart,
  mergeFederated,
  planFederation,
  selectedDps,
} from "./federation.js";
import { dpSignedParts, encodeMappingRecord, type MappingRecord } from "./record.js";
import { type Delegation, type DpInfo, type MspInfo, RegistryView } from "./registry.js";
import { sealBatch } from "./seal-batch.js";
import { generateSigningKey, SIGNING_CONTEXT, type SigningKey, signWith } from "./signing.js";
import { registryTrust } from "./verify.js";
import {
  federatedAnswerProblem,
  type ReceivedFederatedAnswer,
  type ReceivedSource,
} from "./verify-federated.js";

const CSI = "tel:+447700900123";
const NOW = 1_700_000_500_000;
const EMPTY = new Uint8Array(0);
const keys: Record<string, SigningKey> = {
  eu: generateSigningKey(),
  fed: generateSigningKey(),
  tp: generateSigningKey(),
  us: generateSigningKey(),
};
const mspKey = generateSigningKey();

const dp = (id: string, federation?: DpInfo["federation"]): DpInfo => ({
  id,
  endpoints: [`${id}.example:7500`],
  tlsIdentity: `dp-${id}`,
  jurisdiction: "EU",
  signingPublicKey: (keys[id] as SigningKey).publicKey,
  ...(federation && { federation }),
});
const MSPS: MspInfo[] = ["a", "b", "c"].map((x, index) => ({
  id: `${x}.example`,
  name: x,
  index,
  signingPublicKey: mspKey.publicKey,
}));
const UK: Delegation = {
  id: "e164:44",
  key: { kind: "e164", prefix: "44" },
  dpId: "eu",
  ttlSeconds: 3600,
  federatedDpIds: ["fed", "tp"],
};

function view(dps: DpInfo[], delegations: Delegation[] = [UK]): RegistryView {
  const v = new RegistryView();
  v.replace({ serial: 1n, delegations, dps, msps: MSPS });
  return v;
}
const REGISTRY = view([dp("eu"), dp("fed"), dp("tp"), dp("us")]);

test("a query federates when it asks to or when the range's DP publishes that default", () => {
  assert.equal(planFederation(REGISTRY, UK, DEFAULT_FEDERATION, 8), undefined);
  const asked = planFederation(REGISTRY, UK, { mode: "federate", dps: "preferred", dpIds: [] }, 8);
  assert.deepEqual(asked?.federated, ["fed", "tp"]);
  const byDefault = view([
    dp("eu", { defaultMode: "federate", preferredDpIds: ["tp"] }),
    dp("fed"),
    dp("tp"),
  ]);
  // The DP's preferred list is the default selection; "all" takes every federated DP.
  assert.deepEqual(planFederation(byDefault, UK, DEFAULT_FEDERATION, 8)?.federated, ["tp"]);
  assert.deepEqual(planFederation(byDefault, UK, { dps: "all", dpIds: [] }, 8)?.federated, ["fed", "tp"]);
  // A query may still stay local.
  assert.equal(planFederation(byDefault, UK, { mode: "local", dps: "preferred", dpIds: [] }, 8), undefined);
});

test("a client's list must name the range's DPs and fit the fan-out limit; a longer selection is cut", () => {
  const listed = planFederation(REGISTRY, UK, { mode: "federate", dps: "listed", dpIds: ["tp"] }, 8);
  assert.deepEqual(listed?.federated, ["tp"]);
  assert.throws(
    () => planFederation(REGISTRY, UK, { mode: "federate", dps: "listed", dpIds: ["us"] }, 8),
    (e: unknown) =>
      e instanceof DiscoveryError && e.code === "invalid_argument" && e.details?.reason === "UNKNOWN_DP",
  );
  assert.throws(
    () => planFederation(REGISTRY, UK, { mode: "federate", dps: "listed", dpIds: ["fed", "tp"] }, 1),
    (e: unknown) => e instanceof DiscoveryError && e.details?.reason === "FANOUT_LIMIT",
  );
  const cut = planFederation(REGISTRY, UK, { mode: "federate", dps: "all", dpIds: [] }, 1);
  assert.deepEqual([cut?.federated, cut?.overLimit], [["fed"], ["tp"]]);
});

/** A bulk mapping at MSP `msp` held by DP `dpId`, created `createdAtMs` after a fixed instant. */
function mapping(
  dpId: string,
  msp: string,
  createdAtMs: number,
  isDefault: boolean,
  tags: string[] = [],
): Mapping {
  const r: MappingRecord = {
    csi: CSI,
    mspId: msp,
    ssi: `u@${msp}/${dpId}`,
    defaultRequested: isDefault,
    tags,
    createdAtMs: NOW - 100_000 + createdAtMs,
    proofMethod: "bulk",
    proofId: "s",
    userPublicKey: EMPTY,
    dpId,
    expiresAtMs: NOW + 86_400_000,
  };
  const record = encodeMappingRecord(r);
  return {
    mspId: msp,
    ssi: r.ssi,
    isDefault,
    tags,
    createdAtMs: r.createdAtMs,
    proofMethod: "bulk",
    expiresAtMs: r.expiresAtMs,
    signed: {
      record,
      userSignature: EMPTY,
      mspSignature: signWith(mspKey, SIGNING_CONTEXT.mappingMsp, record),
      dpSignature: signWith(
        keys[dpId] as SigningKey,
        SIGNING_CONTEXT.mappingDp,
        ...dpSignedParts(isDefault, record),
      ),
    },
  };
}

/** DP `dpId`'s sealed outcome with these mappings (NOT_FOUND when none). */
function sealed(dpId: string, mappings: Mapping[]): FederatedPart {
  const status = mappings.length > 0 ? "answer" : "not_found";
  const seal = sealAnswer(
    { csi: CSI, dpId, status, mappings },
    keys[dpId] as SigningKey,
    NOW - 1000,
    3_600_000,
  );
  const outcome = (
    status === "answer"
      ? { kind: "answer", mappings, dpId, ttlSeconds: 300, seal }
      : { kind: "not_found", dpId, ttlSeconds: 60, seal }
  ) as LookupOutcome;
  return { dpId, outcome };
}

const EU_PART = sealed("eu", [
  mapping("eu", "a.example", 1000, true),
  mapping("eu", "b.example", 2000, false),
]);
const FED_PART = sealed("fed", [mapping("fed", "c.example", 5000, true, ["Business"])]);
const TP_PART = sealed("tp", []);

test("the merge keeps each DP's order, and the default created last leads as the only default", () => {
  const m = mergeFederated([EU_PART, FED_PART, TP_PART], DEFAULT_PARAMS);
  assert.equal(m.kind, "answer");
  assert.equal(m.ttlSeconds, 60);
  assert.deepEqual(
    m.mappings.map((x) => [x.mspId, x.dpId, x.isDefault]),
    [
      ["c.example", "fed", true],
      ["a.example", "eu", false],
      ["b.example", "eu", false],
    ],
  );
  // "Default" leaves each DP's default, the answer's own first.
  const def = mergeFederated([EU_PART, FED_PART], { ...DEFAULT_PARAMS, tag: "Default" });
  assert.deepEqual(
    def.mappings.map((x) => [x.mspId, x.isDefault]),
    [
      ["c.example", true],
      ["a.example", false],
    ],
  );
  // The MSP filter applies per DP before the default is chosen.
  const onlyA = mergeFederated([EU_PART, FED_PART], { ...DEFAULT_PARAMS, mspFilter: ["a.example"] });
  assert.deepEqual(
    onlyA.mappings.map((x) => [x.mspId, x.isDefault]),
    [["a.example", true]],
  );
  assert.equal(mergeFederated([TP_PART], DEFAULT_PARAMS).kind, "not_found");
});

const TRUST = registryTrust(REGISTRY);
const csi = { uri: CSI, key: parseCsi(CSI).key };

function source(p: FederatedPart, authoritative = false): ReceivedSource {
  return {
    dpId: p.dpId,
    authoritative,
    outcome: "answered",
    status: p.outcome.kind,
    ...(p.outcome.seal && { seal: p.outcome.seal }),
  };
}

/** The answer an honest resolver sends for these parts. */
function honest(parts: FederatedPart[], params: LookupParams = DEFAULT_PARAMS): ReceivedFederatedAnswer {
  const m = mergeFederated(parts, params);
  return {
    status: m.kind,
    mappings: params.format === "verbose" ? m.mappings : [],
    sources: parts.map((p, i) => source(p, i === 0)),
    partial: false,
  };
}

/** What a "federate, all DPs" query for +44 selects, and one listing fed alone. */
const ALL = ["eu", "fed", "tp"];
const EU_FED = ["eu", "fed"];

test("an MSP derives the DPs a query selects from the registry, as the resolver does", () => {
  assert.deepEqual(selectedDps(REGISTRY, UK, { mode: "federate", dps: "all", dpIds: [] }), ALL);
  assert.deepEqual(selectedDps(REGISTRY, UK, { mode: "federate", dps: "listed", dpIds: ["fed"] }), EU_FED);
  assert.equal(selectedDps(REGISTRY, UK, DEFAULT_FEDERATION), undefined);
});

test("an honest merged answer verifies, complete; a partial one verifies and says so", () => {
  const whole = honest([EU_PART, FED_PART, TP_PART]);
  assert.deepEqual(federatedAnswerProblem(csi, whole, DEFAULT_PARAMS, TRUST, NOW, ALL), { complete: true });
  const partial: ReceivedFederatedAnswer = {
    ...honest([EU_PART, FED_PART]),
    sources: [
      source(EU_PART, true),
      source(FED_PART),
      { dpId: "tp", authoritative: false, outcome: "failed" },
    ],
    partial: true,
  };
  assert.deepEqual(federatedAnswerProblem(csi, partial, DEFAULT_PARAMS, TRUST, NOW, ALL), {
    complete: false,
  });
  // Under "Default" each DP's default is shown, the answer's own first: the choice is checkable.
  const def = { ...DEFAULT_PARAMS, tag: "Default" };
  const defaults = honest([EU_PART, FED_PART], def);
  assert.deepEqual(
    defaults.mappings.map((m) => [m.mspId, m.isDefault]),
    [
      ["c.example", true],
      ["a.example", false],
    ],
  );
  assert.deepEqual(federatedAnswerProblem(csi, defaults, def, TRUST, NOW, EU_FED), { complete: true });
  const compact = { ...DEFAULT_PARAMS, format: "compact" as const };
  const bits = { ...honest([EU_PART, FED_PART], compact), compactBits: new Uint8Array([0b111]) };
  assert.deepEqual(federatedAnswerProblem(csi, bits, compact, TRUST, NOW, EU_FED), { complete: true });
});

test("parts sealed in batches verify as parts sealed alone, each only with its own place", () => {
  // Each DP's part sealed in a batch beside another lookup's answer.
  const inBatch = (part: FederatedPart): FederatedPart => {
    const seal = part.outcome.seal as AnswerSeal;
    const other = sealAnswer(
      { csi: "tel:+447700900999", dpId: part.dpId, status: "not_found", mappings: [] },
      keys[part.dpId] as SigningKey,
      NOW - 1000,
      3_600_000,
    );
    const [batched] = sealBatch([seal.statement, other.statement], keys[part.dpId] as SigningKey);
    return { ...part, outcome: { ...part.outcome, seal: batched } };
  };
  const parts = [inBatch(EU_PART), inBatch(FED_PART), inBatch(TP_PART)];
  assert.ok(parts.every((p) => p.outcome.seal?.batch?.size === 2));
  assert.deepEqual(federatedAnswerProblem(csi, honest(parts), DEFAULT_PARAMS, TRUST, NOW, ALL), {
    complete: true,
  });
  const [eu, fed, tp] = parts as [FederatedPart, FederatedPart, FederatedPart];
  const euSeal = eu.outcome.seal as AnswerSeal & { batch: SealBatch };
  const moved = {
    ...eu,
    outcome: { ...eu.outcome, seal: { ...euSeal, batch: { ...euSeal.batch, index: 1 } } },
  };
  const r = federatedAnswerProblem(csi, honest([moved, fed, tp]), DEFAULT_PARAMS, TRUST, NOW, ALL);
  assert.match("problem" in r ? r.problem : "", /its seal does not verify/);
});

test("every way of bending a merged answer is caught, with the reason", () => {
  const good = honest([EU_PART, FED_PART]);
  const ms = good.mappings as FederatedMapping[];
  const [m0, m1, m2] = ms as [FederatedMapping, FederatedMapping, FederatedMapping];
  const failedTp: ReceivedSource = { dpId: "tp", authoritative: false, outcome: "failed" };
  const def = { ...DEFAULT_PARAMS, tag: "Default" };
  const compact = { ...DEFAULT_PARAMS, format: "compact" as const };
  const bits = { ...honest([EU_PART, FED_PART], compact), compactBits: new Uint8Array([0b111]) };
  const cases: [string, ReceivedFederatedAnswer, RegExp, LookupParams?, string[]?][] = [
    ["a mapping dropped", { ...good, mappings: [m0, m1] }, /1 of the 2/],
    [
      "the older default promoted",
      { ...good, mappings: [{ ...m1, isDefault: true }, { ...m0, isDefault: false }, m2] },
      /merge/,
    ],
    ["reordered", { ...good, mappings: [m0, m2, m1] }, /not in its seal as shown|merge/],
    [
      "a mapping moved to another DP",
      { ...good, mappings: [{ ...m0, dpId: "eu" }, m1, m2] },
      /not in its seal/,
    ],
    [
      "a failed DP without partial",
      { ...good, sources: [...good.sources, failedTp] },
      /not marked partial/,
      DEFAULT_PARAMS,
      ALL,
    ],
    ["a selected DP left out unsaid", good, /the query selects DPs \[eu, fed, tp\]/, DEFAULT_PARAMS, ALL],
    [
      "a DP outside the range",
      { ...good, sources: [...good.sources, source(sealed("us", []))] },
      /query selects/,
    ],
    [
      "the authoritative DP left out",
      { ...good, sources: [source(FED_PART)], mappings: [m0] },
      /query selects/,
    ],
    [
      "the DPs' order swapped (the default tie-break)",
      { ...good, sources: [source(FED_PART), source(EU_PART, true)] },
      /query selects/,
    ],
    [
      "a federated DP marked authoritative",
      { ...good, sources: [source(EU_PART, true), source(FED_PART, true)] },
      /marked authoritative/,
    ],
    [
      "a seal swapped between DPs",
      { ...good, sources: [source(EU_PART, true), { ...source(FED_PART), seal: EU_PART.outcome.seal }] },
      /made by DP "eu"/,
    ],
    [
      "a status that differs from the seal",
      { ...good, sources: [source(EU_PART, true), { ...source(FED_PART), status: "not_found" }] },
      /status differs/,
    ],
    [
      "under Default, a candidate hidden",
      { ...honest([EU_PART, FED_PART], def), mappings: [m0] },
      /0 of the 1/,
      def,
    ],
    ["compact: NOT_FOUND with the bits", { ...bits, status: "not_found" }, /DPs sealed 3 mapping/, compact],
    [
      "compact: OPTED_OUT nobody sealed",
      { ...bits, status: "opted_out", compactBits: new Uint8Array(0) },
      /no DP sealed/,
      compact,
    ],
    [
      "compact: a bit dropped",
      { ...bits, compactBits: new Uint8Array([0b011]) },
      /compact bits differ/,
      compact,
    ],
  ];
  for (const [name, answer, reason, params = DEFAULT_PARAMS, selected = EU_FED] of cases) {
    const r = federatedAnswerProblem(csi, answer, params, TRUST, NOW, selected);
    assert.ok("problem" in r, `${name}: accepted`);
    assert.match(r.problem, reason, name);
  }
});
