// The MSP client refuses to sign what it did not ask for: a DP that returns a record or an
// action statement differing from the request in any signed field gets no signature.
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  type ActionStatement,
  DiscoveryError,
  encodeActionStatement,
  encodeMappingRecord,
  generateSigningKey,
  MAX_MAPPING_LIFETIME_MS,
  type MappingRecord,
} from "@mimi/core";
import { type ClaimClient, startAction, startClaim } from "./msp.js";

const NOW = 1_800_000_000_000;
const user = generateSigningKey();
const party = { mspId: "bluebird.example", dpId: "eu" };
const request = { csi: "tel:+44 7700 900123", ssi: "@u:bluebird.example", tags: ["Work"], makeDefault: true };

/** The record an honest DP returns for `request`. */
const honest: MappingRecord = {
  csi: "tel:+447700900123",
  mspId: party.mspId,
  ssi: request.ssi,
  defaultRequested: true,
  tags: ["Work"],
  createdAtMs: NOW,
  proofMethod: "sms-code",
  proofId: "ch-1",
  userPublicKey: user.publicKey,
  dpId: party.dpId,
  expiresAtMs: NOW + 365 * 86_400_000,
};

/** A DP that answers StartChallenge with `statement`. */
function dpReturning(statement: Uint8Array, proofMethod = "sms-code"): ClaimClient {
  return {
    startChallenge: async () => ({
      challengeId: "ch-1",
      expiresAtMs: BigInt(NOW + 600_000),
      proofMethod,
      statement,
    }),
  } as unknown as ClaimClient;
}

const claimWith = (record: MappingRecord, proofMethod?: string) =>
  startClaim(dpReturning(encodeMappingRecord(record), proofMethod), party, request, user, { now: () => NOW });

const refused = (p: Promise<unknown>, pattern: RegExp) =>
  assert.rejects(
    p,
    (e: unknown) => e instanceof DiscoveryError && e.code === "invalid_argument" && pattern.test(e.message),
  );

test("an honest record is accepted and returned for signing", async () => {
  const ch = await claimWith(honest);
  assert.equal(ch.record.csi, "tel:+447700900123");
  assert.equal(ch.challengeId, "ch-1");
});

test("a record differing from the claim in any signed field is refused, naming the field", async () => {
  const cases: [string, Partial<MappingRecord>, RegExp][] = [
    ["another number", { csi: "tel:+447700900999" }, /CSI is "tel:\+447700900999"/],
    ["another MSP", { mspId: "parrot.example" }, /MSP is "parrot.example"/],
    ["another DP", { dpId: "us" }, /DP is "us"/],
    ["another SSI", { ssi: "@evil" }, /SSI/],
    ["other tags", { tags: ["Work", "Business"] }, /tags/],
    ["the default flag flipped", { defaultRequested: false }, /default flag/],
    ["another holder key", { userPublicKey: generateSigningKey().publicKey }, /holder key/],
    ["a bulk proof", { proofMethod: "bulk" }, /proof method is "bulk"/],
    ["an email proof for a number", { proofMethod: "email-code" }, /proof method/],
    ["another challenge", { proofId: "ch-2" }, /proof id/],
    ["created an hour ago", { createdAtMs: NOW - 3_600_000 }, /creation time/],
    // What the audit reproduced: an expiry in the year 275760.
    ["an expiry in the year 275760", { expiresAtMs: 8_640_000_000_000_000 }, /published maximum/],
    [
      "one day over the maximum",
      { expiresAtMs: NOW + MAX_MAPPING_LIFETIME_MS + 86_400_000 },
      /published maximum/,
    ],
    ["an expiry before creation", { expiresAtMs: NOW - 1 }, /expiry/],
  ];
  for (const [what, change, pattern] of cases) {
    await refused(claimWith({ ...honest, ...change }), pattern).catch((err: Error) => {
      throw new Error(`${what}: ${err.message}`);
    });
  }
  await refused(claimWith(honest, "email-code"), /challenge whose proof method/);
});

test("an action statement differing from the request is refused, naming the field", async () => {
  const statement: ActionStatement = {
    action: "opt_out",
    csi: "tel:+447700900123",
    challengeId: "ch-1",
    dpId: party.dpId,
    mspId: party.mspId,
    targetMspId: "",
    targetSsi: "",
    userPublicKey: user.publicKey,
    issuedAtMs: NOW,
  };
  const act = (s: ActionStatement, action: Parameters<typeof startAction>[3] = { optOut: true }) =>
    startAction(dpReturning(encodeActionStatement(s)), party, request.csi, action, user, { now: () => NOW });
  await act(statement);
  await refused(act({ ...statement, action: "invalidate" }), /action is "invalidate"/);
  await refused(act({ ...statement, csi: "tel:+447700900999" }), /CSI/);
  await refused(act({ ...statement, dpId: "us" }), /DP is "us"/);
  await refused(act({ ...statement, mspId: "parrot.example" }), /MSP/);
  await refused(act({ ...statement, challengeId: "ch-9" }), /challenge is "ch-9"/);
  await refused(act({ ...statement, issuedAtMs: NOW + 3_600_000 }), /time/);
  const invalidate = { invalidate: { mspId: "parrot.example", ssi: "" } };
  const asked = { ...statement, action: "invalidate" as const, targetMspId: "parrot.example" };
  await act(asked, invalidate);
  await refused(act({ ...asked, targetMspId: "" }, invalidate), /target MSP/);
});

test("tags are compared one by one: two asked tags cannot come back as one that reads the same", async () => {
  const asked = { ...request, tags: ["Work", "Business"] };
  const merged = encodeMappingRecord({ ...honest, tags: ["Work, Business"] });
  await refused(startClaim(dpReturning(merged), party, asked, user, { now: () => NOW }), /tags/);
});
