// The MSP client refuses to sign what it did not ask for: a DP that returns a record or an
// action statement differing from the request in any signed field gets no signature.
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  type ActionStatement,
  createLogger,
  DiscoveryError,
  encodeActionStatement,
  encodeMappingRecord,
  generateSigningKey,
  MAX_MAPPING_LIFETIME_MS,
  type MappingRecord,
} from "@mimi/core";
import { fromStatus, toWireStatus } from "@mimi/rpc";
import { type BulkProgress, bulkRegister, type ClaimClient, startAction, startClaim } from "./msp.js";

const silent = createLogger({ name: "test", level: "silent" });

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

/**
 * A DP's BulkRegister that keeps its session's committed count across streams, and fails the
 * stream with each of `refusals` in turn when the batch at `failAt` arrives.
 */
function bulkDp(refusals: DiscoveryError[], failAt = 2) {
  const state = { committed: 0, streams: 0 };
  const api = {
    bulkRegister(reqs: AsyncIterable<{ message: { case: string; value: { records?: unknown[] } } }>) {
      state.streams++;
      return (async function* () {
        const it = reqs[Symbol.asyncIterator]();
        await it.next(); // start
        yield { message: { case: "resume", value: { committed: BigInt(state.committed) } } };
        for (;;) {
          const r = await it.next();
          if (r.done) return;
          if (state.committed === failAt) {
            const refusal = refusals.shift();
            if (refusal) throw refusal;
          }
          const n = r.value.message.value.records?.length ?? 0;
          state.committed += n;
          const ack = {
            committed: BigInt(state.committed),
            stored: n,
            unchanged: 0,
            optedOut: 0,
            overLimit: 0,
          };
          yield { message: { case: "ack", value: ack } };
        }
      })();
    },
  } as unknown as ClaimClient;
  return { api, state };
}

/**
 * The DP's refusal of a batch for its verification's capacity (authoritative bulk-verifier.ts:
 * not_ready), as the client gets it: through the status mapping both sides use.
 */
const atCapacity = (retryAfterMs?: number) => {
  const dp = new DiscoveryError("not_ready", "bulk verification is at capacity", {
    ...(retryAfterMs !== undefined && { details: { retryAfterMs, reason: "VERIFICATION_AT_CAPACITY" } }),
  });
  const wire = toWireStatus(dp, silent, "BulkRegister");
  return fromStatus(wire.code, wire.details, "BulkRegister at the DP", undefined, dp.details);
};
/** A budget of the DP's that refills: RESOURCE_EXHAUSTED with a retry-after. */
const overBudget = (retryAfterMs: number) =>
  new DiscoveryError("resource_exhausted", "registrations per minute", { details: { retryAfterMs } });
const records = (_first: number, count: number) =>
  Array.from({ length: count }, () => ({ record: new Uint8Array(1), mspSignature: new Uint8Array(1) }));

test("bulkRegister waits out a refusal's retry-after and resumes the session, counting every stream's records", async () => {
  const { api, state } = bulkDp([atCapacity(1_000), overBudget(2_500)]);
  const waited: number[] = [];
  const seen: BulkProgress[] = [];
  const done = await bulkRegister(api, {
    sessionId: "s",
    total: 5,
    batchSize: 1,
    recordsFrom: records,
    onProgress: (p) => seen.push(p),
    sleep: async (ms) => void waited.push(ms),
  });
  // Each retry-after waited out, and up to half as long again (spread at random).
  assert.equal(waited.length, 2);
  assert.ok(waited[0] !== undefined && waited[0] >= 1_000 && waited[0] <= 1_500, `${waited[0]}`);
  assert.ok(waited[1] !== undefined && waited[1] >= 2_500 && waited[1] <= 3_750, `${waited[1]}`);
  assert.equal(state.streams, 3);
  assert.deepEqual(done, { committed: 5, resumedAt: 0, stored: 5, unchanged: 0, optedOut: 0, overLimit: 0 });
  assert.deepEqual(
    seen.map((p) => [p.committed, p.stored, p.resumedAt]),
    [1, 2, 3, 4, 5].map((n) => [n, n, 0]),
    "progress counts the call, not each stream",
  );
});

test("bulkRegister ends at a refusal with no retry-after, one too long, the last retry, or an abort", async () => {
  const sleep = async () => {};
  const run = (refusals: DiscoveryError[], more: Partial<Parameters<typeof bulkRegister>[1]> = {}) => {
    const dp = bulkDp(refusals);
    return {
      dp,
      done: bulkRegister(dp.api, {
        sessionId: "s",
        total: 5,
        batchSize: 1,
        recordsFrom: records,
        sleep,
        ...more,
      }),
    };
  };
  const failsWith = (p: Promise<unknown>, retryAfterMs?: number) =>
    assert.rejects(
      p,
      (e: unknown) => e instanceof DiscoveryError && e.details?.retryAfterMs === retryAfterMs,
    );
  const noDetails = run([atCapacity()]);
  await failsWith(noDetails.done);
  assert.equal(noDetails.dp.state.streams, 1);
  const tooLong = run([atCapacity(30_001)]);
  await failsWith(tooLong.done, 30_001);
  assert.equal(tooLong.dp.state.streams, 1, "past maxRetryWaitMs: not waited for");
  const notOurs = run([
    new DiscoveryError("invalid_argument", "record 2: bad", { details: { retryAfterMs: 1 } }),
  ]);
  await assert.rejects(notOurs.done, /record 2: bad/);
  assert.equal(notOurs.dp.state.streams, 1, "only UNAVAILABLE and RESOURCE_EXHAUSTED are waited out");
  const spent = run([atCapacity(1), atCapacity(1), atCapacity(1), atCapacity(1)]);
  await failsWith(spent.done, 1);
  assert.equal(spent.dp.state.streams, 4, "three retries, then the refusal");
  const none = run([atCapacity(1)], { retries: 0 });
  await failsWith(none.done, 1);
  assert.equal(none.dp.state.streams, 1);
  const stop = new AbortController();
  const aborted = run([atCapacity(1_000)], { signal: stop.signal, sleep: async () => stop.abort() });
  await failsWith(aborted.done, 1_000);
  assert.equal(aborted.dp.state.streams, 1, "aborted while waiting: not resumed");
});
