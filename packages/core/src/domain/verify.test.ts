// End-to-end verification (R3-R6): what makes a mapping verify, one specific reason for
// each way it can fail, and the root's signature over the registry that publishes the keys.
import assert from "node:assert/strict";
import { createHash, verify } from "node:crypto";
import { test } from "node:test";
import {
  type AnswerSeal,
  DEFAULT_PARAMS,
  type LookupOutcome,
  type LookupParams,
  type Mapping,
} from "./answer.js";
import { encodeSealStatement, MAX_ANSWER_SEAL_MS, type Sealable, sealAnswer } from "./answer-seal.js";
import { parseCsi } from "./csi.js";
import { DiscoveryError } from "./errors.js";
import {
  bulkRecord,
  decodeActionStatement,
  dpSignedParts,
  encodeActionStatement,
  encodeMappingRecord,
  type MappingRecord,
} from "./record.js";
import { type Delegation, type DpInfo, type MspInfo, type RegistryData, RegistryView } from "./registry.js";
import {
  REGISTRY_CLOCK_SKEW_MS,
  registryDigest,
  registrySignatureValid,
  sealProblem,
  signRegistry,
} from "./registry-seal.js";
import { sealBatch } from "./seal-batch.js";
import { generateSigningKey, SIGNING_CONTEXT, type SigningKey, signWith } from "./signing.js";
import {
  answerProblem,
  type KeyDirectory,
  mappingProblem,
  type ReceivedAnswer,
  registryKeys,
  registryTrust,
  type TrustAnchors,
  verifyOutcome,
} from "./verify.js";

const userKey = generateSigningKey();
const mspKey = generateSigningKey();
const dpKey = generateSigningKey();
const otherKey = generateSigningKey();
const rootKey = generateSigningKey();

const CSI = "tel:+447700900123";
const NOW = 1_700_000_500_000;
const EMPTY = new Uint8Array(0);
/** The validity period registry signatures in these tests cover. */
const PERIOD = { signedAtMs: NOW - 60_000, expiresAtMs: NOW + 86_400_000 };

const EU: DpInfo = {
  id: "eu",
  endpoints: ["dp-eu-1.example:7500", "dp-eu-2.example:7500"],
  tlsIdentity: "dp-eu",
  jurisdiction: "EU",
  signingPublicKey: dpKey.publicKey,
};
const US: DpInfo = {
  id: "us",
  endpoints: ["dp-us.example:7500"],
  tlsIdentity: "dp-us",
  jurisdiction: "US",
  signingPublicKey: otherKey.publicKey,
};
const MSP_A: MspInfo = { id: "a.example", name: "A", index: 0, signingPublicKey: mspKey.publicKey };
const MSP_B: MspInfo = { id: "b.example", name: "Bé", index: 1, signingPublicKey: otherKey.publicKey };
const MSP_NO_KEY: MspInfo = { id: "nokey.example", name: "No key", index: 2, signingPublicKey: EMPTY };

const DELEGATIONS: Delegation[] = [
  { id: "e164:44", key: { kind: "e164", prefix: "44" }, dpId: "eu", ttlSeconds: 3600 },
  {
    id: "email:0000000000000000-7fffffffffffffff",
    key: { kind: "email", first: 0n, last: 0x7fffffffffffffffn },
    dpId: "us",
    ttlSeconds: 600,
  },
];

const REGISTRY: RegistryData = {
  serial: 42n,
  delegations: DELEGATIONS,
  dps: [EU, US],
  msps: [MSP_A, MSP_B, MSP_NO_KEY],
};

function keysOf(data: RegistryData): KeyDirectory {
  const view = new RegistryView();
  view.replace(data);
  return registryKeys(view);
}
const KEYS = keysOf(REGISTRY);

/** A claim record as a DP issues it after an SMS code: the holder's key inside. */
const CLAIM: MappingRecord = {
  csi: CSI,
  mspId: "a.example",
  ssi: "@alice:a.example",
  defaultRequested: true,
  tags: ["Personal"],
  createdAtMs: 1_700_000_000_000,
  proofMethod: "sms-code",
  proofId: "ch-1",
  userPublicKey: userKey.publicKey,
  dpId: "eu",
  expiresAtMs: NOW + 86_400_000,
};

const BULK: MappingRecord = { ...CLAIM, proofMethod: "bulk", proofId: "session-1", userPublicKey: EMPTY };

interface Signers {
  /** null: no signature at all. */
  user?: SigningKey | null;
  msp?: SigningKey | null;
  dp?: SigningKey | null;
  /** The effective default the mapping shows; the DP signs it unless dpSignsDefault says otherwise. */
  isDefault?: boolean;
  dpSignsDefault?: boolean;
}

/** A mapping showing exactly the record's fields, signed as `s` says (by default: correctly). */
function signedMapping(record: MappingRecord, s: Signers = {}): Mapping {
  const bytes = encodeMappingRecord(record);
  const isDefault = s.isDefault ?? record.defaultRequested;
  const user = s.user === undefined ? (record.proofMethod === "bulk" ? null : userKey) : s.user;
  const msp = s.msp === undefined ? mspKey : s.msp;
  const dp = s.dp === undefined ? dpKey : s.dp;
  return {
    mspId: record.mspId,
    ssi: record.ssi,
    isDefault,
    tags: record.tags,
    createdAtMs: record.createdAtMs,
    proofMethod: record.proofMethod,
    expiresAtMs: record.expiresAtMs,
    signed: {
      record: bytes,
      userSignature: user ? signWith(user, SIGNING_CONTEXT.mappingUser, bytes) : EMPTY,
      mspSignature: msp ? signWith(msp, SIGNING_CONTEXT.mappingMsp, bytes) : EMPTY,
      dpSignature: dp
        ? signWith(dp, SIGNING_CONTEXT.mappingDp, ...dpSignedParts(s.dpSignsDefault ?? isDefault, bytes))
        : EMPTY,
    },
  };
}

const GOOD = signedMapping(CLAIM);

test("a properly signed claim record verifies, whichever proof of possession it names", () => {
  assert.equal(mappingProblem(CSI, GOOD, KEYS, NOW), undefined);
  assert.equal(
    mappingProblem(CSI, signedMapping({ ...CLAIM, proofMethod: "email-code" }), KEYS, NOW),
    undefined,
  );
  // The DP decides the effective default and signs that, not what the holder asked for.
  assert.equal(mappingProblem(CSI, signedMapping(CLAIM, { isDefault: false }), KEYS, NOW), undefined);
  assert.equal(mappingProblem(CSI, signedMapping({ ...CLAIM, tags: [] }), KEYS, NOW), undefined);
  // One millisecond before expiry it still stands.
  assert.equal(mappingProblem(CSI, GOOD, KEYS, CLAIM.expiresAtMs - 1), undefined);
});

test("a bulk record signed by the MSP and the DP verifies without a holder", () => {
  assert.equal(mappingProblem(CSI, signedMapping(BULK), KEYS, NOW), undefined);
  // The same, with the record made by the MSP helper the CLI and the bulk import use.
  const { proofMethod: _p, userPublicKey: _u, ...fields } = BULK;
  const { record, mspSignature } = bulkRecord(fields, mspKey);
  const m: Mapping = {
    ...signedMapping(BULK),
    signed: {
      record,
      userSignature: EMPTY,
      mspSignature,
      dpSignature: signWith(dpKey, SIGNING_CONTEXT.mappingDp, ...dpSignedParts(true, record)),
    },
  };
  assert.equal(mappingProblem(CSI, m, KEYS, NOW), undefined);
});

interface Case {
  name: string;
  mapping: Mapping;
  /** What the reason must say. */
  reason: RegExp;
  csi?: string;
  keys?: KeyDirectory;
  nowMs?: number;
}

const cases: Case[] = [
  {
    name: "no signed record",
    mapping: { ...GOOD, signed: undefined },
    reason: /carries no signed record/,
  },
  {
    name: "an empty record",
    mapping: { ...GOOD, signed: { ...(GOOD.signed as NonNullable<Mapping["signed"]>), record: EMPTY } },
    reason: /carries no signed record/,
  },
  {
    name: "a record that does not decode",
    mapping: {
      ...GOOD,
      signed: { ...(GOOD.signed as NonNullable<Mapping["signed"]>), record: Buffer.from("MIMI-MAPPING-v9") },
    },
    reason: /does not start with "MIMI-MAPPING-v1"/,
  },
  {
    name: "a record for another CSI (a replayed answer)",
    mapping: GOOD,
    csi: "tel:+447700900999",
    reason: /record is for another CSI/,
  },
  {
    // Signed by everyone, as the audit reproduced: a DP obtained the signatures over it.
    name: "a record expiring in the year 275760",
    mapping: signedMapping({ ...CLAIM, expiresAtMs: 8_640_000_000_000_000 }),
    reason: /would live longer than the published maximum of 1095 days/,
  },
  {
    name: "a record created beyond the clock skew in the verifier's future",
    mapping: signedMapping({ ...CLAIM, createdAtMs: NOW + 600_000, expiresAtMs: NOW + 86_400_000 }),
    reason: /created in the future/,
  },
  // The displayed fields must be the signed ones; each is changed alone.
  { name: "another MSP shown", mapping: { ...GOOD, mspId: "b.example" }, reason: /another MSP or SSI/ },
  {
    name: "another SSI shown",
    mapping: { ...GOOD, ssi: "@mallory:a.example" },
    reason: /another MSP or SSI/,
  },
  {
    name: "a tag added",
    mapping: { ...GOOD, tags: ["Personal", "Business"] },
    reason: /tags or created time/,
  },
  { name: "the tags dropped", mapping: { ...GOOD, tags: [] }, reason: /tags or created time/ },
  { name: "a tag renamed", mapping: { ...GOOD, tags: ["Business"] }, reason: /tags or created time/ },
  {
    name: "an older created time (to win precedence)",
    mapping: { ...GOOD, createdAtMs: GOOD.createdAtMs - 1 },
    reason: /tags or created time/,
  },
  {
    name: "a stronger proof method shown",
    mapping: { ...signedMapping(BULK), proofMethod: "sms-code" },
    reason: /proof method or expiry/,
  },
  {
    name: "a later expiry shown",
    mapping: { ...GOOD, expiresAtMs: GOOD.expiresAtMs + 1 },
    reason: /proof method or expiry/,
  },
  {
    name: "is_default flipped without the DP re-signing",
    mapping: { ...GOOD, isDefault: false },
    reason: /DP's countersignature does not verify/,
  },
  {
    name: "is_default set where the DP signed it unset",
    mapping: signedMapping(CLAIM, { isDefault: true, dpSignsDefault: false }),
    reason: /DP's countersignature does not verify/,
  },
  { name: "expired exactly now", mapping: GOOD, nowMs: CLAIM.expiresAtMs, reason: /has expired/ },
  { name: "expired long ago", mapping: GOOD, nowMs: CLAIM.expiresAtMs + 86_400_000, reason: /has expired/ },
  {
    name: "an unknown proof method, every signature valid",
    mapping: signedMapping({ ...CLAIM, proofMethod: "carrier-pigeon" }),
    reason: /proof method "carrier-pigeon" is unknown/,
  },
  {
    name: "an MSP the registry does not list",
    mapping: signedMapping({ ...CLAIM, mspId: "unlisted.example" }),
    reason: /publishes no signing key for MSP "unlisted.example"/,
  },
  {
    name: "an MSP the registry lists without a key",
    mapping: signedMapping({ ...CLAIM, mspId: "nokey.example" }),
    reason: /publishes no signing key for MSP "nokey.example"/,
  },
  {
    name: "an MSP whose published key is malformed",
    mapping: GOOD,
    keys: { ...KEYS, mspKey: () => mspKey.publicKey.subarray(0, 31) },
    reason: /publishes no signing key for MSP "a.example"/,
  },
  {
    name: "a forged MSP signature (another key)",
    mapping: signedMapping(CLAIM, { msp: otherKey }),
    reason: /MSP's signature does not verify/,
  },
  {
    name: "an MSP signature under the holder's context",
    mapping: {
      ...GOOD,
      signed: {
        ...(GOOD.signed as NonNullable<Mapping["signed"]>),
        mspSignature: signWith(mspKey, SIGNING_CONTEXT.mappingUser, encodeMappingRecord(CLAIM)),
      },
    },
    reason: /MSP's signature does not verify/,
  },
  {
    // R4: a DP cannot create a mapping on its own. It signs the record, but the "MSP"
    // signature is by a key the registry does not list for that MSP (the DP's own key).
    name: "a DP-only record: the MSP signature is the DP's",
    mapping: signedMapping(CLAIM, { msp: dpKey }),
    reason: /MSP's signature does not verify/,
  },
  {
    name: "a DP-only record: no MSP signature at all",
    mapping: signedMapping(CLAIM, { msp: null }),
    reason: /MSP's signature does not verify/,
  },
  {
    // R5: a proof of possession is the holder's signature; the MSP and DP cannot supply it.
    name: "an sms-code record without the holder's signature",
    mapping: signedMapping(CLAIM, { user: null }),
    reason: /claims "sms-code" without the holder's signature/,
  },
  {
    name: "an sms-code record signed by another holder key",
    mapping: signedMapping(CLAIM, { user: otherKey }),
    reason: /holder's signature does not verify/,
  },
  {
    name: "an email-code record whose holder signature is the MSP's",
    mapping: signedMapping({ ...CLAIM, proofMethod: "email-code" }, { user: mspKey }),
    reason: /holder's signature does not verify/,
  },
  {
    name: "a bulk record carrying a holder key",
    mapping: signedMapping({ ...BULK, userPublicKey: userKey.publicKey }),
    reason: /bulk record carries a holder key or signature/,
  },
  {
    name: "a bulk record carrying a holder signature",
    mapping: signedMapping(BULK, { user: userKey }),
    reason: /bulk record carries a holder key or signature/,
  },
  {
    name: "a record naming a DP the registry does not list",
    mapping: signedMapping({ ...CLAIM, dpId: "ghost" }),
    reason: /publishes no signing key for DP "ghost"/,
  },
  {
    name: "a DP missing from the registry",
    mapping: GOOD,
    keys: keysOf({ ...REGISTRY, dps: [US] }),
    reason: /publishes no signing key for DP "eu"/,
  },
  {
    name: "a DP listed without a key",
    mapping: GOOD,
    keys: keysOf({ ...REGISTRY, dps: [{ ...EU, signingPublicKey: EMPTY }, US] }),
    reason: /publishes no signing key for DP "eu"/,
  },
  {
    name: "a countersignature by another DP's key",
    mapping: signedMapping(CLAIM, { dp: otherKey }),
    reason: /DP's countersignature does not verify/,
  },
  {
    name: "a record naming DP us, countersigned by eu",
    mapping: signedMapping({ ...CLAIM, dpId: "us" }),
    reason: /DP's countersignature does not verify/,
  },
];

test("each way a mapping can be wrong fails with its own reason", () => {
  for (const c of cases) {
    const problem = mappingProblem(c.csi ?? CSI, c.mapping, c.keys ?? KEYS, c.nowMs ?? NOW);
    assert.ok(problem !== undefined, `${c.name}: verified`);
    assert.match(problem, c.reason, c.name);
  }
});

test("the failure cases differ from a good mapping in one thing only", () => {
  // Guards the table above: with that one thing put back, the same mapping verifies.
  assert.equal(mappingProblem(CSI, GOOD, keysOf({ ...REGISTRY, dps: [EU] }), NOW), undefined);
  assert.equal(mappingProblem(CSI, signedMapping(CLAIM, { msp: mspKey }), KEYS, NOW), undefined);
  assert.equal(
    mappingProblem(CSI, signedMapping({ ...CLAIM, dpId: "us" }, { dp: otherKey }), KEYS, NOW),
    undefined,
  );
  assert.equal(
    mappingProblem(CSI, signedMapping({ ...CLAIM, mspId: "b.example" }, { msp: otherKey }), KEYS, NOW),
    undefined,
  );
});

// Answers sealed by a DP (AnswerSeal): the seal stands for the whole answer, denials included.
const TRUST = (() => {
  const view = new RegistryView();
  view.replace(REGISTRY);
  return registryTrust(view);
})();
const AT = parseCsi(CSI);
const DAY = 86_400_000;
/** A second mapping, at MSP b (index 1), registered in bulk, not the default. */
const AT_B = signedMapping(
  { ...BULK, mspId: "b.example", ssi: "b-1", defaultRequested: false },
  { msp: otherKey },
);

function seal(
  a: Partial<Sealable> & Pick<Sealable, "status">,
  key = dpKey,
  signedAtMs = NOW - 1_000,
  validMs = DAY,
) {
  return sealAnswer({ csi: CSI, dpId: "eu", mappings: [], ...a }, key, signedAtMs, validMs);
}

function found(mappings: readonly Mapping[], extra: Partial<ReceivedAnswer> = {}): ReceivedAnswer {
  return { status: "answer", mappings, dpIds: ["eu"], seal: seal({ status: "answer", mappings }), ...extra };
}

/** What answerProblem says: "ok" or "ok (incomplete)" when it verifies, else the problem. */
function check(
  a: ReceivedAnswer,
  params: Partial<LookupParams> = {},
  nowMs = NOW,
  trust: KeyDirectory & Partial<TrustAnchors> = TRUST,
): string {
  const r = answerProblem(AT, a, { ...DEFAULT_PARAMS, ...params }, trust, nowMs);
  return "problem" in r ? r.problem : r.complete ? "ok" : "ok (incomplete)";
}

test("a sealed answer verifies whole; a path cannot drop, reorder or re-flag its mappings", () => {
  const both = [GOOD, AT_B];
  const a = found(both);
  assert.equal(check(a), "ok");
  // Regression: a path could drop mappings or turn FOUND into NOT_FOUND, and nothing noticed.
  assert.match(check({ ...a, mappings: [GOOD] }), /holds 1 of the 2 mappings the seal lists/);
  assert.match(check({ ...a, mappings: [AT_B, GOOD] }), /mapping 2 .* not in the seal as shown/);
  assert.match(check({ ...a, mappings: [] }), /says FOUND but carries no mapping/);
  assert.match(check({ ...a, status: "not_found", mappings: [] }), /says NOT_FOUND, but the seal lists 2/);
  assert.match(check({ ...a, status: "opted_out", mappings: [] }), /OPTED_OUT but the seal says FOUND/);
  // Regression: a superseded countersignature (the DP once signed GOOD as not the default) still
  // verifies as a record, but not as part of the current answer.
  const oldFlag = signedMapping(CLAIM, { isDefault: false });
  assert.equal(mappingProblem(CSI, oldFlag, KEYS, NOW), undefined);
  assert.match(check({ ...a, mappings: [oldFlag, AT_B] }), /mapping 1 .* not in the seal as shown/);
  // The mappings themselves must still verify: the seal does not vouch for the MSP's signature.
  const forged = signedMapping(
    { ...BULK, mspId: "b.example", ssi: "b-1", defaultRequested: false },
    { msp: mspKey },
  );
  assert.match(check(found([GOOD, forged])), /MSP "b.example": the MSP's signature does not verify/);
});

test("an answer sealed in a batch verifies as one sealed alone, and only with its own place in the batch", () => {
  const both = [GOOD, AT_B];
  const alone = found(both).seal as AnswerSeal;
  const denial = seal({ status: "not_found" }).statement;
  const [inBatch, other] = sealBatch([alone.statement, denial], dpKey);
  assert.ok(inBatch?.batch && other?.batch);
  assert.equal(check(found(both, { seal: inBatch })), "ok");
  assert.equal(check({ status: "not_found", mappings: [], dpIds: ["eu"], seal: other }), "ok");
  assert.match(
    check(found(both, { seal: { ...inBatch, batch: other.batch } })),
    /the DP's seal does not verify/,
  );
  assert.match(
    check(found(both, { seal: sealBatch([alone.statement, denial], otherKey)[0] })),
    /does not verify/,
  );
  // A path cannot drop a mapping from a batched answer either.
  assert.match(check(found([GOOD], { seal: inBatch })), /holds 1 of the 2 mappings the seal lists/);
});

test("a denial verifies only with the seal of the delegated DP for this very CSI, within its period", () => {
  const nf = (extra: Partial<ReceivedAnswer> = {}): ReceivedAnswer => ({
    status: "not_found",
    mappings: [],
    dpIds: ["eu"],
    seal: seal({ status: "not_found" }),
    ...extra,
  });
  assert.equal(check(nf()), "ok");
  // Regression: NOT_FOUND and OPTED_OUT used to carry nothing, so anyone could make one up.
  const { seal: _, ...unsealed } = nf();
  assert.match(check(unsealed), /NOT_FOUND answer carries no DP seal/);
  assert.match(check(nf({ seal: seal({ status: "not_found", csi: "tel:+447700900124" }) })), /another CSI/);
  assert.match(check(nf({ seal: seal({ status: "not_found" }, otherKey) })), /seal does not verify/);
  assert.match(check(nf({ dpIds: ["us"] })), /names DP\(s\) \[us\] but was sealed by DP "eu"/);
  const us = nf({ dpIds: ["us"], seal: seal({ status: "not_found", dpId: "us" }, otherKey) });
  assert.match(check(us), /sealed by DP "us", but the registry delegates this CSI to DP "eu"/);
  // Without delegations (a resolver checks them itself) the DP's own key is what counts.
  assert.equal(check(us, {}, NOW, { ...KEYS }), "ok");
  // Time: from a little before it was made until it expires, never longer than the maximum.
  assert.match(check(nf(), {}, NOW + DAY), /seal expired at/);
  assert.equal(check(nf(), {}, NOW - REGISTRY_CLOCK_SKEW_MS), "ok");
  assert.match(check(nf(), {}, NOW - REGISTRY_CLOCK_SKEW_MS - 2_000), /in this host's future/);
  const statement = encodeSealStatement({
    csi: CSI,
    dpId: "eu",
    status: "not_found",
    signedAtMs: NOW - 1_000,
    expiresAtMs: NOW - 1_000 + MAX_ANSWER_SEAL_MS + 1,
    entries: [],
    optOutDigest: EMPTY,
  });
  const tooLong = { statement, signature: signWith(dpKey, SIGNING_CONTEXT.answerDp, statement) };
  assert.match(check(nf({ seal: tooLong })), /longer than the published maximum/);
  // A signature made for another purpose with the DP's key is not a seal.
  const fine = seal({ status: "not_found" }).statement;
  const wrongContext = { statement: fine, signature: signWith(dpKey, SIGNING_CONTEXT.mappingDp, fine) };
  assert.match(check(nf({ seal: wrongContext })), /seal does not verify/);
  // A denial shows nothing: mappings or bits added on the path would be printed as verified.
  assert.match(check(nf({ mappings: [GOOD] })), /says NOT_FOUND but carries mappings or compact bits/);
  assert.match(check(nf({ compactBits: Uint8Array.of(1) })), /carries mappings or compact bits/);
  assert.equal(check(nf({ compactBits: new Uint8Array(0) })), "ok");
});

test("a resolver's NOT_FOUND without a seal verifies only where no delegation covers the CSI", () => {
  const none = { status: "not_found" as const, mappings: [], dpIds: [] };
  const tokyo = parseCsi("tel:+81312345678");
  const r = answerProblem(tokyo, none, DEFAULT_PARAMS, TRUST, NOW);
  assert.deepEqual(r, { seal: undefined, complete: true });
  assert.match(check(none), /no seal, but the registry delegates this CSI to DP "eu"/);
  // Whoever cannot read delegations cannot accept it; nor can anyone with mappings added.
  assert.match(check(none, {}, NOW, KEYS), /carries no DP seal/);
  assert.match(
    "problem" in answerProblem(tokyo, { ...none, mappings: [GOOD] }, DEFAULT_PARAMS, TRUST, NOW)
      ? "refused"
      : "verified",
    /refused/,
  );
});

test("OPTED_OUT verifies only with the holder's opt-out, signed by the holder and the MSP", () => {
  const statement = encodeActionStatement({
    action: "opt_out",
    csi: CSI,
    challengeId: "ch-9",
    dpId: "eu",
    mspId: "a.example",
    targetMspId: "",
    targetSsi: "",
    userPublicKey: userKey.publicKey,
    issuedAtMs: NOW - 5_000,
  });
  const optOut = {
    statement,
    userSignature: signWith(userKey, SIGNING_CONTEXT.actionUser, statement),
    mspSignature: signWith(mspKey, SIGNING_CONTEXT.actionMsp, statement),
  };
  const opted: ReceivedAnswer = {
    status: "opted_out",
    mappings: [],
    dpIds: ["eu"],
    seal: seal({ status: "opted_out", optOutStatement: statement }),
    optOut,
  };
  assert.equal(check(opted), "ok");
  const { optOut: _, ...bare } = opted;
  assert.match(check(bare), /OPTED_OUT without the holder's signed opt-out/);
  assert.match(
    check({
      ...opted,
      optOut: { ...optOut, mspSignature: signWith(otherKey, SIGNING_CONTEXT.actionMsp, statement) },
    }),
    /valid signature of MSP "a.example"/,
  );
  assert.match(
    check({
      ...opted,
      optOut: { ...optOut, userSignature: signWith(otherKey, SIGNING_CONTEXT.actionUser, statement) },
    }),
    /valid signature of the holder/,
  );
  const invalidate = encodeActionStatement({ ...decodeActionStatement(statement), action: "invalidate" });
  assert.match(
    check({
      ...opted,
      seal: seal({ status: "opted_out", optOutStatement: invalidate }),
      optOut: { ...optOut, statement: invalidate },
    }),
    /not an opt-out of this CSI/,
  );
  assert.match(
    check({ ...opted, optOut: { ...optOut, statement: invalidate } }),
    /not the one the seal names/,
  );
  // Statuses cannot be swapped: the seal says which it is.
  assert.match(
    check({ ...opted, seal: seal({ status: "not_found" }) }),
    /says OPTED_OUT but the seal says NOT_FOUND/,
  );
  assert.match(check({ ...opted, status: "not_found" }), /says NOT_FOUND but the seal says OPTED_OUT/);
  assert.match(check({ ...opted, mappings: [GOOD] }), /says OPTED_OUT but carries mappings/);
});

test("filtered and compact answers verify as far as the seal can tell", () => {
  const a = found([GOOD, AT_B]);
  assert.equal(check({ ...a, mappings: [AT_B] }, { mspFilter: ["b.example"] }), "ok");
  assert.match(
    check({ ...a, status: "not_found", mappings: [] }, { mspFilter: ["b.example"] }),
    /says NOT_FOUND, but the seal lists 1 mapping/,
  );
  assert.equal(check({ ...a, status: "not_found", mappings: [] }, { mspFilter: ["c.example"] }), "ok");
  // A tag filter can only leave mappings out; what it shows must still be sealed and carry the tag.
  assert.equal(check({ ...a, mappings: [GOOD] }, { tag: "Personal" }), "ok (incomplete)");
  assert.match(check({ ...a, mappings: [GOOD] }, { tag: "Business" }), /does not carry the tag "Business"/);
  // "Default" is in the seal, so that filter is checked in full.
  assert.equal(check({ ...a, mappings: [GOOD] }, { tag: "Default" }), "ok");
  assert.match(
    check({ ...a, mappings: [AT_B] }, { tag: "default" }),
    /mapping 1 .* not in the seal as shown/,
  );
  assert.match(
    check({ ...a, status: "not_found", mappings: [] }, { tag: "Default" }),
    /says NOT_FOUND, but the seal lists 1 mapping/,
  );
  // A DP lists each record once (a repeat would only make verifiers check it again).
  assert.match(check(found([GOOD, GOOD])), /lists a record twice/);
  // Compact: the bits must be those of the sealed MSPs (a at index 0, b at index 1).
  const compact = { format: "compact" as const };
  assert.equal(check({ ...a, mappings: [], compactBits: Uint8Array.of(0b11) }, compact), "ok");
  assert.match(
    check({ ...a, mappings: [], compactBits: Uint8Array.of(0b01) }, compact),
    /compact bits differ/,
  );
  assert.equal(
    check({ ...a, mappings: [], compactBits: Uint8Array.of(0b01) }, { ...compact, tag: "Personal" }),
    "ok (incomplete)",
  );
  assert.match(
    check({ ...a, mappings: [], compactBits: Uint8Array.of(0b100) }, { ...compact, tag: "x" }),
    /compact bits differ/,
  );
  assert.match(check({ ...a, mappings: [GOOD, AT_B] }, compact), /compact answer carries mappings/);
});

test("verifyOutcome throws verification_failed naming the DP and the reason, and returns the seal", () => {
  const mappings = [GOOD, AT_B];
  const outcome: LookupOutcome = {
    kind: "answer",
    dpId: "eu",
    ttlSeconds: 60,
    mappings,
    seal: seal({ status: "answer", mappings }),
  };
  assert.equal(verifyOutcome(AT, outcome, KEYS, NOW)?.dpId, "eu");
  const bad = signedMapping({ ...CLAIM, mspId: "b.example", ssi: "b-1" }, { msp: mspKey });
  assert.throws(
    () =>
      verifyOutcome(
        AT,
        { ...outcome, mappings: [GOOD, bad], seal: seal({ status: "answer", mappings: [GOOD, bad] }) },
        KEYS,
        NOW,
      ),
    (e: unknown) =>
      e instanceof DiscoveryError &&
      e.code === "verification_failed" &&
      /DP "eu"/.test(e.message) &&
      /MSP "b.example"/.test(e.message) &&
      /MSP's signature does not verify/.test(e.message),
  );
  // A record another DP countersigned (still valid there, or de-listed) is not this DP's to serve.
  const atUs = signedMapping({ ...CLAIM, dpId: "us" }, { dp: otherKey });
  assert.throws(
    () =>
      verifyOutcome(
        AT,
        { ...outcome, mappings: [atUs], seal: seal({ status: "answer", mappings: [atUs] }) },
        KEYS,
        NOW,
      ),
    /countersigned by DP "us", not the sealing DP/,
  );
  const notFound: LookupOutcome = { kind: "not_found", dpId: "eu", ttlSeconds: 60 };
  assert.throws(() => verifyOutcome(AT, notFound, KEYS, NOW), /NOT_FOUND answer carries no DP seal/);
});

test("registryKeys reads each DP's and MSP's key from the registry copy", () => {
  assert.deepEqual(KEYS.dpKey("eu"), dpKey.publicKey);
  assert.deepEqual(KEYS.mspKey("b.example"), otherKey.publicKey);
  assert.deepEqual(KEYS.mspKey("nokey.example"), EMPTY);
  assert.equal(KEYS.dpKey("a.example"), undefined, "DPs and MSPs are separate namespaces");
  assert.equal(KEYS.mspKey("eu"), undefined);
});

test("the root's registry signature round-trips and ignores the signature field itself", () => {
  const sig = signRegistry(REGISTRY, rootKey, PERIOD);
  assert.equal(registrySignatureValid(REGISTRY, sig, rootKey.publicKey), true);
  assert.equal(registrySignatureValid({ ...REGISTRY, seal: sig }, sig, rootKey.publicKey), true);
  assert.deepEqual(registryDigest({ ...REGISTRY, seal: sig }, PERIOD), registryDigest(REGISTRY, PERIOD));
  assert.equal(registrySignatureValid(REGISTRY, sig, otherKey.publicKey), false, "another root key");
  assert.equal(
    registrySignatureValid(REGISTRY, signRegistry(REGISTRY, otherKey, PERIOD), rootKey.publicKey),
    false,
  );
  const withSignature = (signature: Uint8Array) => ({ ...sig, signature });
  assert.equal(
    registrySignatureValid(REGISTRY, withSignature(sig.signature.subarray(0, 63)), rootKey.publicKey),
    false,
  );
  assert.equal(registrySignatureValid(REGISTRY, withSignature(EMPTY), rootKey.publicKey), false);
  // The same digest signed under another context is not a registry signature.
  const wrongContext = signWith(rootKey, SIGNING_CONTEXT.mappingDp, registryDigest(REGISTRY, PERIOD));
  assert.equal(registrySignatureValid(REGISTRY, withSignature(wrongContext), rootKey.publicKey), false);
});

test("changing any signed field of the registry invalidates the signature", () => {
  const sig = signRegistry(REGISTRY, rootKey, PERIOD);
  const [d0, d1] = DELEGATIONS as [Delegation, Delegation];
  const changes: [string, RegistryData][] = [
    ["the serial", { ...REGISTRY, serial: 43n }],
    ["a delegation's DP", { ...REGISTRY, delegations: [{ ...d0, dpId: "us" }, d1] }],
    ["a delegation's TTL", { ...REGISTRY, delegations: [{ ...d0, ttlSeconds: 3601 }, d1] }],
    ["a delegation's id", { ...REGISTRY, delegations: [{ ...d0, id: "e164:4" }, d1] }],
    ["a delegation removed", { ...REGISTRY, delegations: [d1] }],
    [
      "a DP endpoint",
      { ...REGISTRY, dps: [{ ...EU, endpoints: ["evil.example:7500", "dp-eu-2.example:7500"] }, US] },
    ],
    [
      "a DP endpoint appended",
      { ...REGISTRY, dps: [{ ...EU, endpoints: [...EU.endpoints, "x.example:1"] }, US] },
    ],
    [
      "the DP endpoints' preference order",
      { ...REGISTRY, dps: [{ ...EU, endpoints: [...EU.endpoints].reverse() }, US] },
    ],
    ["a DP's TLS identity", { ...REGISTRY, dps: [{ ...EU, tlsIdentity: "dp-evil" }, US] }],
    ["a DP's jurisdiction", { ...REGISTRY, dps: [{ ...EU, jurisdiction: "US" }, US] }],
    [
      "an endpoint's jurisdiction",
      {
        ...REGISTRY,
        dps: [
          { ...EU, endpointJurisdictions: [{ endpoint: "dp-eu-2.example:7500", jurisdiction: "US" }] },
          US,
        ],
      },
    ],
    ["a DP's key", { ...REGISTRY, dps: [{ ...EU, signingPublicKey: otherKey.publicKey }, US] }],
    ["a DP's key removed", { ...REGISTRY, dps: [{ ...EU, signingPublicKey: EMPTY }, US] }],
    [
      "an MSP's key",
      { ...REGISTRY, msps: [{ ...MSP_A, signingPublicKey: otherKey.publicKey }, MSP_B, MSP_NO_KEY] },
    ],
    [
      "an MSP's key added",
      { ...REGISTRY, msps: [MSP_A, MSP_B, { ...MSP_NO_KEY, signingPublicKey: mspKey.publicKey }] },
    ],
    ["an MSP's name", { ...REGISTRY, msps: [MSP_A, { ...MSP_B, name: "Be" }, MSP_NO_KEY] }],
    ["an MSP's index", { ...REGISTRY, msps: [{ ...MSP_A, index: 7 }, MSP_B, MSP_NO_KEY] }],
    ["an MSP removed", { ...REGISTRY, msps: [MSP_A, MSP_B] }],
    // A field moved across an entry boundary keeps the concatenated text the same.
    [
      "text moved between fields",
      { ...REGISTRY, dps: [{ ...EU, tlsIdentity: "dp-e", jurisdiction: "uEU" }, US] },
    ],
  ];
  for (const [what, data] of changes) {
    assert.equal(registrySignatureValid(data, sig, rootKey.publicKey), false, what);
  }
  // The validity period is signed too: nobody can extend an old registry's life.
  assert.equal(
    registrySignatureValid(REGISTRY, { ...sig, expiresAtMs: sig.expiresAtMs + 1 }, rootKey.publicKey),
    false,
  );
  assert.equal(
    registrySignatureValid(REGISTRY, { ...sig, signedAtMs: sig.signedAtMs + 1 }, rootKey.publicKey),
    false,
  );
});

test("a seal is usable from shortly before it was made until it expires, and says why not otherwise", () => {
  const { signedAtMs, expiresAtMs } = PERIOD;
  assert.equal(sealProblem(7n, PERIOD, signedAtMs), undefined);
  assert.equal(sealProblem(7n, PERIOD, expiresAtMs - 1), undefined);
  assert.match(sealProblem(7n, PERIOD, expiresAtMs) ?? "", /serial 7 expired at .*no root has re-signed it/);
  assert.equal(sealProblem(7n, PERIOD, signedAtMs - REGISTRY_CLOCK_SKEW_MS), undefined, "within the skew");
  assert.match(
    sealProblem(7n, PERIOD, signedAtMs - REGISTRY_CLOCK_SKEW_MS - 1) ?? "",
    /in this host's future/,
  );
  assert.throws(() => signRegistry(REGISTRY, rootKey, { signedAtMs: 5, expiresAtMs: 5 }), RangeError);
  const backwards = { ...signRegistry(REGISTRY, rootKey, PERIOD), expiresAtMs: signedAtMs - 1 };
  assert.equal(registrySignatureValid(REGISTRY, backwards, rootKey.publicKey), false);
});

test("a delegation whose key disagrees with its signed id does not verify", () => {
  const sig = signRegistry(REGISTRY, rootKey, PERIOD);
  const [d0, d1] = DELEGATIONS as [Delegation, Delegation];
  const moved: RegistryData = {
    ...REGISTRY,
    delegations: [{ ...d0, key: { kind: "e164", prefix: "1" } }, d1],
  };
  assert.equal(registrySignatureValid(moved, sig, rootKey.publicKey), false);
});

test("the order of the registry's lists does not matter: the digest sorts them by id", () => {
  const sig = signRegistry(REGISTRY, rootKey, PERIOD);
  const shuffled: RegistryData = {
    ...REGISTRY,
    delegations: [...REGISTRY.delegations].reverse(),
    dps: [...REGISTRY.dps].reverse(),
    msps: [MSP_NO_KEY, MSP_A, MSP_B],
  };
  assert.deepEqual(registryDigest(shuffled, PERIOD), registryDigest(REGISTRY, PERIOD));
  assert.equal(registrySignatureValid(shuffled, sig, rootKey.publicKey), true);
  // A RegistryView's snapshot (MSPs by index) verifies against the signature of the data it came from.
  const view = new RegistryView();
  view.replace(shuffled);
  assert.equal(registrySignatureValid(view.snapshot(), sig, rootKey.publicKey), true);
});

// The canonical encoding's pieces, written out by hand for the known answers below.
const u32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
};
const u64 = (n: bigint) => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(n);
  return b;
};
const str = (s: string) => Buffer.concat([u32(Buffer.byteLength(s, "utf8")), Buffer.from(s, "utf8")]);

test("known answer: registryDigest follows the layout in common.proto (RegistrySignature)", () => {
  const bytes = (b: Uint8Array) => Buffer.concat([u32(b.length), b]);
  const data: RegistryData = {
    serial: (1n << 40n) + 5n,
    // Given out of order on purpose: the layout sorts each list by id.
    // The +44 range federated to us, and eu publishing federation as its default.
    delegations: [
      DELEGATIONS[1] as Delegation,
      { ...(DELEGATIONS[0] as Delegation), federatedDpIds: ["us"] },
    ],
    dps: [
      US,
      {
        ...EU,
        federation: { defaultMode: "federate", preferredDpIds: ["us"] },
        // Given out of order: the digest sorts them by epoch.
        privateLookupKeys: [
          { epoch: 9, publicKey: new Uint8Array(32).fill(9) },
          { epoch: 7, publicKey: new Uint8Array(32).fill(7) },
        ],
        // Given out of order: the digest sorts them by endpoint.
        endpointJurisdictions: [
          { endpoint: "dp-eu-2.example:7500", jurisdiction: "CH" },
          { endpoint: "dp-eu-1.example:7500", jurisdiction: "EU-DE" },
        ],
      },
    ],
    msps: [MSP_NO_KEY, MSP_B, MSP_A],
  };
  const h = createHash("sha256");
  h.update("MIMI-REGISTRY-v5", "ascii");
  h.update(u64((1n << 40n) + 5n));
  h.update(u64(BigInt(PERIOD.signedAtMs)));
  h.update(u64(BigInt(PERIOD.expiresAtMs)));
  h.update(u32(2));
  // Sorted by id: "e164:44" < "email:...".
  h.update(Buffer.concat([str("e164:44"), str("eu"), u32(3600), u32(1), str("us")]));
  h.update(Buffer.concat([str("email:0000000000000000-7fffffffffffffff"), str("us"), u32(600), u32(0)]));
  h.update(u32(2));
  h.update(
    Buffer.concat([
      str("eu"),
      u32(2),
      str("dp-eu-1.example:7500"),
      str("dp-eu-2.example:7500"),
      str("dp-eu"),
      str("EU"),
      bytes(dpKey.publicKey),
      // FEDERATE (2), preferring us.
      u32(2),
      u32(1),
      str("us"),
      // Two private-lookup keys, by epoch.
      u32(2),
      u32(7),
      bytes(new Uint8Array(32).fill(7)),
      u32(9),
      bytes(new Uint8Array(32).fill(9)),
      // Two endpoint jurisdictions, by endpoint.
      u32(2),
      str("dp-eu-1.example:7500"),
      str("EU-DE"),
      str("dp-eu-2.example:7500"),
      str("CH"),
    ]),
  );
  h.update(
    Buffer.concat([
      str("us"),
      u32(1),
      str("dp-us.example:7500"),
      str("dp-us"),
      str("US"),
      bytes(otherKey.publicKey),
      // No policy published: LOCAL (1), no preference; no private-lookup keys; no endpoint
      // jurisdictions (the v5 layout, since eu places some).
      u32(1),
      u32(0),
      u32(0),
      u32(0),
    ]),
  );
  h.update(u32(3));
  h.update(Buffer.concat([str("a.example"), str("A"), u32(0), bytes(mspKey.publicKey)]));
  // "Bé" is 3 bytes of UTF-8: lengths count bytes.
  h.update(
    Buffer.concat([str("b.example"), u32(3), Buffer.from("Bé", "utf8"), u32(1), bytes(otherKey.publicKey)]),
  );
  h.update(Buffer.concat([str("nokey.example"), str("No key"), u32(2), u32(0)]));
  const expected = h.digest();
  assert.equal(Buffer.from(registryDigest(data, PERIOD)).toString("hex"), expected.toString("hex"));

  // signature = Ed25519 over "MIMI-REGISTRY-SIG-v1", a zero byte, and the digest.
  const sig = signRegistry(data, rootKey, PERIOD);
  const message = Buffer.concat([Buffer.from("MIMI-REGISTRY-SIG-v1", "ascii"), Buffer.of(0), expected]);
  assert.equal(verify(null, message, rootKey.privateKey, sig.signature), true);
});

test("an empty registry has a fixed digest", () => {
  const empty: RegistryData = { serial: 0n, delegations: [], dps: [], msps: [] };
  const expected = createHash("sha256")
    .update(
      Buffer.concat([
        Buffer.from("MIMI-REGISTRY-v4"),
        Buffer.alloc(8),
        u64(BigInt(PERIOD.signedAtMs)),
        u64(BigInt(PERIOD.expiresAtMs)),
        Buffer.alloc(12),
      ]),
    )
    .digest("hex");
  assert.equal(Buffer.from(registryDigest(empty, PERIOD)).toString("hex"), expected);
});

test("a registry in which no DP places an endpoint elsewhere keeps the v4 digest, which older followers verify", () => {
  const dp: DpInfo = { ...US, endpointJurisdictions: [] };
  const data: RegistryData = { serial: 3n, delegations: [], dps: [dp], msps: [] };
  const v4 = createHash("sha256")
    .update(
      Buffer.concat([
        Buffer.from("MIMI-REGISTRY-v4"),
        u64(3n),
        u64(BigInt(PERIOD.signedAtMs)),
        u64(BigInt(PERIOD.expiresAtMs)),
        u32(0),
        u32(1),
        str("us"),
        u32(1),
        str("dp-us.example:7500"),
        str("dp-us"),
        str("US"),
        u32(otherKey.publicKey.length),
        otherKey.publicKey,
        u32(1), // LOCAL
        u32(0),
        u32(0), // no private-lookup keys, and nothing after them
        u32(0),
      ]),
    )
    .digest("hex");
  assert.equal(Buffer.from(registryDigest(data, PERIOD)).toString("hex"), v4);
  // Placing an endpoint elsewhere moves the whole registry to v5.
  const placed = {
    ...data,
    dps: [{ ...dp, endpointJurisdictions: [{ endpoint: "dp-us.example:7500", jurisdiction: "CA" }] }],
  };
  assert.notEqual(Buffer.from(registryDigest(placed, PERIOD)).toString("hex"), v4);
});
