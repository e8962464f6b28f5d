// The authoritative's claim side against a real (in-memory) SQLite store, with a sender that
// plays the CSI's channel and a clock the tests move: claims, codes, signatures, preferences,
// answer shapes, conflicts, removal, feeds, porting and bulk registration.
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  bulkRecord,
  createLogger,
  DiscoveryError,
  decodeMappingRecord,
  decodeSealStatement,
  dpSignedParts,
  encodeContestStatement,
  encodeMappingRecord,
  filterMappings,
  generateSigningKey,
  type LookupOutcome,
  mappingProblem,
  parseCsi,
  RegistryView,
  registryTrust,
  SIGNING_CONTEXT,
  type SigningKey,
  signWith,
  verifyOutcome,
} from "@mimi/core";
import { PEER_REQUESTS } from "./claims/context.js";
import {
  type Claims,
  checkTags,
  createClaims,
  DEFAULT_CLAIM_LIMITS,
  type StartRequest,
} from "./claims/index.js";
import { PEER_RATE } from "./claims/peer-invalidation.js";
import { type CodeMessage, DELIVERY_UNKNOWN } from "./senders.js";
import { type AuthoritativeServiceOptions, createAuthoritativeService } from "./service.js";
import type { EnrolledMsp } from "./store/rows.js";
import { openMappingStore } from "./store/store.js";

const DAY = 86_400_000;
const MSPS = ["bluebird.example", "wirechat.example", "parrot.example", "telco.example"] as const;
type MspId = (typeof MSPS)[number];

function setup({ contestWindowMs = 60_000, maxMappingsPerCsi = 16, maxMappingsPerCsiPerMsp = 4 } = {}) {
  let now = Date.UTC(2026, 10, 1);
  const dpKey = generateSigningKey();
  const mspKeys = new Map<string, SigningKey>(MSPS.map((m) => [m, generateSigningKey()]));
  const registry = new RegistryView();
  registry.replace({
    serial: 3n,
    delegations: [
      { id: "e164:44", key: { kind: "e164", prefix: "44" }, dpId: "eu", ttlSeconds: 3600 },
      { id: "e164:1", key: { kind: "e164", prefix: "1" }, dpId: "us", ttlSeconds: 3600 },
      {
        id: "email:0000000000000000-ffffffffffffffff",
        key: { kind: "email", first: 0n, last: (1n << 64n) - 1n },
        dpId: "eu",
        ttlSeconds: 3600,
      },
    ],
    dps: [
      {
        id: "eu",
        endpoints: ["127.0.0.1:1"],
        tlsIdentity: "dp-eu",
        jurisdiction: "EU",
        signingPublicKey: dpKey.publicKey,
      },
    ],
    msps: MSPS.map((id, index) => ({
      id,
      name: id,
      index,
      signingPublicKey: (mspKeys.get(id) as SigningKey).publicKey,
    })),
  });
  const store = openMappingStore(":memory:");
  const options: AuthoritativeServiceOptions = {
    dpId: "eu",
    store,
    registry,
    registryProblem: () => undefined,
    clock: () => now,
    answerTtlSeconds: 300,
    negativeTtlSeconds: 60,
    signingKey: dpKey,
    answerSealMs: DAY,
    ttlCapSeconds: () => ttlCap,
  };
  const service = createAuthoritativeService(options);
  // The replication's cap on TTLs (a secondary out of touch with its primary).
  let ttlCap: number | undefined;
  const sent: CodeMessage[] = [];
  /** When set, every send fails with it. */
  const delivery: { fails?: DiscoveryError } = {};
  const claims = createClaims({
    dpId: "eu",
    store,
    clock: () => now,
    signingKey: dpKey,
    sender: {
      send: async (m) => {
        if (delivery.fails) throw delivery.fails;
        sent.push(m);
      },
      counts: { sent: {}, failed: {} },
      close() {},
    },
    codeSecret: new Uint8Array(32).fill(7),
    policy: {
      codeLength: 6,
      codeTtlMs: 600_000,
      maxAttempts: 3,
      contestWindowMs,
      mappingLifetimeMs: 365 * DAY,
      proofRanking: ["bulk", "email-code", "sms-code"],
      noticeRetentionMs: 30 * DAY,
      maxMappingsPerCsi,
      maxMappingsPerCsiPerMsp,
      // The flows here claim one CSI many times; the budgets have their own tests (throttle.test.ts).
      limits: {
        ...DEFAULT_CLAIM_LIMITS,
        codesPerCsiPerHour: 100,
        codesPerCsiPerDay: 100,
        failuresPerCsiPerHour: 100,
      },
    },
    requireDelegated: (csi) => service.requireDelegated(csi),
    registry,
    log: createLogger({ name: "test", level: "silent" }),
  });
  const msp = (id: MspId): EnrolledMsp =>
    service.enrolMsp({
      mspId: id,
      tlsIdentity: `tls-${id}`,
      enrolledUsers: 10,
      signingPublicKey: (mspKeys.get(id) as SigningKey).publicKey,
      mayBulk: id !== "parrot.example",
    });
  for (const id of MSPS) msp(id);
  const caller = (id: MspId) => claims.callerOf(`tls-${id}`);
  const keys = {
    dpKey: (id: string) => registry.dp(id)?.signingPublicKey,
    mspKey: (id: string) => registry.msp(id)?.signingPublicKey,
  };
  const lastCode = () => (sent.at(-1) as CodeMessage).code;
  const sign = (ch: { statement: Uint8Array }, kind: "claim" | "action", user: SigningKey, mspId: MspId) => ({
    user: signWith(
      user,
      kind === "claim" ? SIGNING_CONTEXT.mappingUser : SIGNING_CONTEXT.actionUser,
      ch.statement,
    ),
    msp: signWith(
      mspKeys.get(mspId) as SigningKey,
      kind === "claim" ? SIGNING_CONTEXT.mappingMsp : SIGNING_CONTEXT.actionMsp,
      ch.statement,
    ),
  });
  /** Runs a whole claim as the MSP and its user would. */
  const claim = async (
    mspId: MspId,
    csi: string,
    ssi: string,
    opts: { tags?: string[]; makeDefault?: boolean; replace?: boolean; user?: SigningKey } = {},
  ) => {
    const user = opts.user ?? generateSigningKey();
    const ch = await claims.start(caller(mspId), {
      action: "claim",
      csi,
      ssi,
      tags: opts.tags ?? [],
      makeDefault: opts.makeDefault ?? false,
      userPublicKey: user.publicKey,
      replaceExisting: opts.replace ?? false,
    });
    const s = sign(ch, "claim", user, mspId);
    return { ...claims.complete(caller(mspId), ch.challengeId, lastCode(), s.user, s.msp), user };
  };
  /** Opens a claim of ALICE for "@a" at bluebird, for tests that complete it by hand. */
  const openClaim = (user: SigningKey) =>
    claims.start(caller("bluebird.example"), {
      action: "claim",
      csi: ALICE,
      ssi: "@a",
      tags: [],
      makeDefault: false,
      userPublicKey: user.publicKey,
      replaceExisting: false,
    });
  const act = async (mspId: MspId, req: StartRequest, user: SigningKey) => {
    const ch = await claims.start(caller(mspId), req);
    const s = sign(ch, "action", user, mspId);
    return claims.complete(caller(mspId), ch.challengeId, lastCode(), s.user, s.msp);
  };
  const bulk = (
    mspId: MspId,
    session: string,
    items: { csi: string; ssi: string; def?: boolean; createdAtMs?: number; tags?: string[] }[],
    first = 0,
  ) =>
    claims.bulkBatch(
      caller(mspId),
      session,
      first,
      items.map((x) =>
        bulkRecord(
          {
            csi: x.csi,
            mspId,
            ssi: x.ssi,
            defaultRequested: x.def ?? false,
            tags: x.tags ?? [],
            createdAtMs: x.createdAtMs ?? now,
            dpId: "eu",
            expiresAtMs: now + 300 * DAY,
          },
          mspKeys.get(mspId) as SigningKey,
        ),
      ),
    );
  const answer = async (csi: string) => {
    const o = await service.lookup(csi).sealed();
    // Every answer the DP gives must verify end to end, denials and opt-outs included, and
    // every mapping in it on its own (countersignature too).
    assert.equal(verifyOutcome(parseCsi(csi), o, registryTrust(registry), now)?.dpId, "eu");
    if (o.kind === "answer")
      for (const m of o.mappings) assert.equal(mappingProblem(csi, m, keys, now), undefined);
    return o;
  };
  const summary = (o: LookupOutcome) =>
    o.kind === "answer" ? o.mappings.map((m) => `${m.mspId}${m.isDefault ? "*" : ""}`).join(" ") : o.kind;
  return {
    claims: claims as Claims,
    service,
    options,
    store,
    sent,
    delivery,
    caller,
    claim,
    openClaim,
    act,
    bulk,
    answer,
    summary,
    lastCode,
    sign,
    keys,
    mspKeys,
    dpKey,
    registry,
    tick: (ms: number) => {
      now += ms;
    },
    capTtl: (seconds: number | undefined) => {
      ttlCap = seconds;
    },
    now: () => now,
  };
}

const rejects = async (p: Promise<unknown> | (() => unknown), code: string, re: RegExp) => {
  await assert.rejects(
    async () => (typeof p === "function" ? p() : p),
    (e: unknown) => e instanceof DiscoveryError && e.code === code && re.test(e.message),
  );
};

const ALICE = "tel:+447700900123";

test("a claim sends a code over the CSI's channel, and completing it stores a mapping that verifies", async () => {
  const t = setup();
  const r = await t.claim("bluebird.example", ALICE, "@alice", { tags: ["Personal"], makeDefault: true });
  const msg = t.sent[0] as CodeMessage;
  assert.equal(msg.csiType, "tel");
  assert.equal(msg.to, "+447700900123");
  assert.match(msg.code, /^\d{6}$/);
  assert.equal(r.hasPrecedence, true);
  assert.equal(r.mapping?.proofMethod, "sms-code");
  const a = await t.answer(ALICE);
  assert.equal(t.summary(a), "bluebird.example*");
  assert.deepEqual(a.kind === "answer" && a.mappings[0]?.tags, ["Personal"]);
  // The code is stored only as a keyed hash: it appears nowhere in the challenge row.
  const ch = t.store.challenge(msg.challengeId);
  assert.ok(ch && !Buffer.from(ch.codeHash).toString("latin1").includes(msg.code));
});

test("lookups of one caller asked together are sealed with one signature, and each answer verifies end to end", async () => {
  const t = setup();
  await t.claim("bluebird.example", ALICE, "@alice");
  const csis = [ALICE, "tel:+447700900999", "tel:+447700900998"];
  const before = t.service.sealCounts.signatures;
  const pending = csis.map((csi) => t.service.lookup(csi, "resolver/ctx-1"));
  // What the answer is, is known before it is sealed (for the enumeration detector).
  assert.deepEqual(
    pending.map((p) => p.kind),
    ["answer", "not_found", "not_found"],
  );
  const other = t.service.lookup(ALICE, "resolver/ctx-2");
  const answers = await Promise.all(pending.map((p) => p.sealed()));
  assert.equal(new Set(answers.map((a) => Buffer.from(a.seal?.signature ?? []).toString("hex"))).size, 1);
  for (const [i, a] of answers.entries()) {
    assert.equal(a.seal?.batch?.size, 3);
    assert.equal(
      verifyOutcome(parseCsi(csis[i] as string), a, registryTrust(t.registry), t.now())?.dpId,
      "eu",
    );
  }
  const alone = await other.sealed();
  assert.equal(alone.seal?.batch, undefined, "another context's lookup is not in the batch");
  assert.equal(verifyOutcome(parseCsi(ALICE), alone, registryTrust(t.registry), t.now())?.dpId, "eu");
  assert.equal(t.service.sealCounts.signatures - before, 2);
});

test("a lookup encoded as soon as it is sealed has its seal statement in the buffer pool; others keep theirs", async () => {
  const t = setup();
  await t.claim("bluebird.example", ALICE, "@alice");
  const statement = (o: LookupOutcome | undefined) => o?.seal?.statement ?? new Uint8Array(0);
  for (const csi of [ALICE, "tel:+447700900999"]) {
    const short = await t.service.lookup(csi, "", true).sealed();
    const kept = await t.service.lookup(csi).sealed();
    assert.ok(statement(short).buffer.byteLength > statement(short).length, `${csi}: a slice of the pool`);
    assert.equal(statement(kept).buffer.byteLength, statement(kept).length, `${csi}: a buffer of its own`);
    for (const o of [short, kept]) {
      assert.equal(verifyOutcome(parseCsi(csi), o, registryTrust(t.registry), t.now())?.dpId, "eu");
    }
  }
  const forTable = statement(t.service.answerFor(ALICE, 60_000));
  assert.equal(forTable.buffer.byteLength, forTable.length, "answerFor's: a buffer of its own");
});

test("answers carry the configured TTLs, capped while the replication caps them (a secondary out of touch)", async () => {
  const t = setup();
  await t.claim("bluebird.example", ALICE, "@alice");
  const nobody = "tel:+447700900999";
  assert.deepEqual([(await t.answer(ALICE)).ttlSeconds, (await t.answer(nobody)).ttlSeconds], [300, 60]);
  t.capTtl(30);
  assert.deepEqual([(await t.answer(ALICE)).ttlSeconds, (await t.answer(nobody)).ttlSeconds], [30, 30]);
  t.capTtl(120);
  assert.deepEqual([(await t.answer(ALICE)).ttlSeconds, (await t.answer(nobody)).ttlSeconds], [120, 60]);
});

test("email CSIs get an email-code proof", async () => {
  const t = setup();
  const r = await t.claim("wirechat.example", "mailto:Bob@Example.org", "wc-1");
  assert.equal(t.sent[0]?.csiType, "mailto");
  assert.equal(t.sent[0]?.to, "bob@example.org");
  assert.equal(r.mapping?.proofMethod, "email-code");
});

// The code for "a%b@example.org" went to "a%25b@example.org": the sender was given the local
// part as the canonical URI escapes it (RFC 6068 section 2), another mailbox than the holder's.
test("an email code goes to the address itself, not to its URI escape", async () => {
  const t = setup();
  const cases: [csi: string, to: string][] = [
    ["a%b@example.org", "a%b@example.org"],
    ["mailto:a%25b@example.org", "a%b@example.org"],
    ["a?b@example.org", "a?b@example.org"],
  ];
  for (const [i, [csi, to]] of cases.entries()) {
    await t.claim("wirechat.example", csi, `wc-${i}`);
    assert.equal(t.sent.at(-1)?.to, to, csi);
  }
});

test("a code that surely did not go out spends no budget; one whose send may have gone out counts as sent", async () => {
  for (const [what, failure, mayHaveGone] of [
    [
      "the gateway refused",
      new DiscoveryError("upstream_unavailable", "SMS gateway answered HTTP 500"),
      false,
    ],
    [
      "the gateway took the request and did not answer",
      new DiscoveryError(
        "upstream_unavailable",
        "SMS gateway did not answer within 200 ms; the code may still arrive",
        {
          details: { reason: DELIVERY_UNKNOWN },
        },
      ),
      true,
    ],
  ] as const) {
    const t = setup();
    const user = generateSigningKey();
    const start = () => t.openClaim(user);
    // Ten codes an hour to one number for all MSPs together (the shared budget).
    t.delivery.fails = failure;
    const started: string[] = [];
    for (let i = 0; i < 10; i++) {
      if (mayHaveGone) started.push((await start()).challengeId);
      else await assert.rejects(start(), failure, what);
    }
    t.delivery.fails = undefined;
    if (!mayHaveGone) {
      assert.ok((await start()).challengeId, `${what}: the budget was given back`);
      continue;
    }
    await rejects(start, "resource_exhausted", /per number per hour, all MSPs together/);
    // Each challenge stays open for its code, should it arrive.
    for (const id of started) assert.equal(t.store.challenge(id)?.state, "open", what);
  }
});

test("no code goes to a premium-rate number", async () => {
  const t = setup();
  const premium = "tel:+449098790000";
  const err = await t.claims
    .start(t.caller("bluebird.example"), {
      action: "claim",
      csi: premium,
      ssi: "@a",
      tags: [],
      makeDefault: false,
      userPublicKey: generateSigningKey().publicKey,
      replaceExisting: false,
    })
    .then(
      () => assert.fail("refused"),
      (e: unknown) => e,
    );
  assert.ok(err instanceof DiscoveryError);
  assert.equal(err.code, "invalid_argument");
  assert.match(err.message, /no codes are sent to premium-rate numbers/);
  assert.equal(err.details?.reason, "CODE_NUMBER_TYPE");
  assert.deepEqual(
    err.details?.fields?.map((f) => f.field),
    ["csi"],
  );
  assert.equal(t.sent.length, 0);
});

test("wrong, expired, replayed and exhausted codes are refused", async () => {
  const t = setup();
  const user = generateSigningKey();
  const start = () => t.openClaim(user);
  let ch = await start();
  let s = t.sign(ch, "claim", user, "bluebird.example");
  const wrong = t.lastCode() === "000000" ? "000001" : "000000";
  await rejects(
    () => t.claims.complete(t.caller("bluebird.example"), ch.challengeId, wrong, s.user, s.msp),
    "invalid_argument",
    /wrong code; 2 attempt/,
  );
  await rejects(
    () => t.claims.complete(t.caller("bluebird.example"), ch.challengeId, wrong, s.user, s.msp),
    "invalid_argument",
    /1 attempt/,
  );
  await rejects(
    () => t.claims.complete(t.caller("bluebird.example"), ch.challengeId, wrong, s.user, s.msp),
    "invalid_argument",
    /no attempts left/,
  );
  // Exhausted: even the right code no longer works.
  await rejects(
    () => t.claims.complete(t.caller("bluebird.example"), ch.challengeId, t.lastCode(), s.user, s.msp),
    "failed_precondition",
    /too many wrong codes/,
  );

  ch = await start();
  s = t.sign(ch, "claim", user, "bluebird.example");
  t.tick(600_001);
  await rejects(
    () => t.claims.complete(t.caller("bluebird.example"), ch.challengeId, t.lastCode(), s.user, s.msp),
    "failed_precondition",
    /expired/,
  );

  ch = await start();
  s = t.sign(ch, "claim", user, "bluebird.example");
  t.claims.complete(t.caller("bluebird.example"), ch.challengeId, t.lastCode(), s.user, s.msp);
  await rejects(
    () => t.claims.complete(t.caller("bluebird.example"), ch.challengeId, t.lastCode(), s.user, s.msp),
    "failed_precondition",
    /already completed/,
  );
  assert.equal(t.summary(await t.answer(ALICE)), "bluebird.example*");
});

// A challenge completed after its range moved to another DP stored the mapping here, at a DP
// that no longer serves the CSI: only startChallenge checked the delegation.
test("a challenge whose range moved to another DP while the code was out is refused, and stores nothing", async () => {
  const t = setup();
  const user = generateSigningKey();
  const ch = await t.openClaim(user);
  const s = t.sign(ch, "claim", user, "bluebird.example");
  const moved = t.registry.snapshot();
  t.registry.replace({
    ...moved,
    serial: moved.serial + 1n,
    delegations: moved.delegations.map((d) => (d.id === "e164:44" ? { ...d, dpId: "us" } : d)),
  });
  await rejects(
    () => t.claims.complete(t.caller("bluebird.example"), ch.challengeId, t.lastCode(), s.user, s.msp),
    "not_authoritative",
    /delegated to DP "us", not to this DP \("eu"\)/,
  );
  assert.deepEqual(t.store.mappings(ALICE), []);
  assert.equal(t.store.challenge(ch.challengeId)?.attempts, 0, "no attempt is spent");
  // Back here (the move undone), the same code completes the claim.
  t.registry.replace({ ...moved, serial: moved.serial + 2n });
  const r = t.claims.complete(t.caller("bluebird.example"), ch.challengeId, t.lastCode(), s.user, s.msp);
  assert.equal(r.mapping?.ssi, "@a");
});

test("a contest of a CSI whose range moved to another DP is refused, and changes nothing", async () => {
  const t = setup();
  const old = await t.claim("bluebird.example", ALICE, "@old");
  const r = await t.claim("wirechat.example", ALICE, "@new");
  const moved = t.registry.snapshot();
  t.registry.replace({
    ...moved,
    serial: moved.serial + 1n,
    delegations: moved.delegations.map((d) => (d.id === "e164:44" ? { ...d, dpId: "us" } : d)),
  });
  const contest = consent(r.conflictId, "bluebird.example", "@old", old.user);
  await rejects(
    () => t.claims.contest(t.caller("bluebird.example"), contest),
    "not_authoritative",
    /delegated to DP "us", not to this DP \("eu"\)/,
  );
  assert.equal(t.store.conflict(r.conflictId)?.state, "open");
  assert.equal(t.store.mapping(ALICE, "wirechat.example", "@new")?.withheld, true);
  t.registry.replace({ ...moved, serial: moved.serial + 2n });
  t.claims.contest(t.caller("bluebird.example"), contest);
  assert.equal(t.store.conflict(r.conflictId)?.state, "contested");
});

test("an MSP cannot complete another MSP's challenge, claim for another MSP, or act unenrolled (R21)", async () => {
  const t = setup();
  const user = generateSigningKey();
  const ch = await t.openClaim(user);
  const s = t.sign(ch, "claim", user, "wirechat.example");
  await rejects(
    () => t.claims.complete(t.caller("wirechat.example"), ch.challengeId, t.lastCode(), s.user, s.msp),
    "not_found",
    /no challenge/,
  );
  // Bulk records name their MSP; wirechat cannot register for bluebird.
  const rec = bulkRecord(
    {
      csi: ALICE,
      mspId: "bluebird.example",
      ssi: "@x",
      defaultRequested: false,
      tags: [],
      createdAtMs: t.now(),
      dpId: "eu",
      expiresAtMs: t.now() + DAY,
    },
    t.mspKeys.get("wirechat.example") as SigningKey,
  );
  await rejects(
    () => t.claims.bulkBatch(t.caller("wirechat.example"), "s", 0, [rec]),
    "permission_denied",
    /record 0: .*only its own users/,
  );
  await rejects(() => t.claims.callerOf("someone-else"), "permission_denied", /not enrolled/);
  // parrot is enrolled without bulk trust.
  await rejects(() => t.claims.bulkResume(t.caller("parrot.example"), "s"), "permission_denied", /bulk/);
});

test("forged or missing signatures are refused and spend an attempt, like a wrong code", async () => {
  const t = setup();
  const user = generateSigningKey();
  const c = () => t.caller("bluebird.example");
  // Regression: bad signatures cost nothing, so a challenge took any number of them.
  const first = await t.openClaim(user);
  const good = t.sign(first, "claim", user, "bluebird.example");
  await rejects(
    () => t.claims.complete(c(), first.challengeId, t.lastCode(), new Uint8Array(0), good.msp),
    "invalid_argument",
    /user_signature does not verify .*; 2 attempt\(s\) left/,
  );
  // A user signature made for an action does not pass for a mapping (contexts differ).
  const actionSig = signWith(user, SIGNING_CONTEXT.actionUser, first.statement);
  await rejects(
    () => t.claims.complete(c(), first.challengeId, t.lastCode(), actionSig, good.msp),
    "invalid_argument",
    /user_signature .*; 1 attempt\(s\) left/,
  );
  const forgedMsp = t.sign(first, "claim", user, "wirechat.example");
  await rejects(
    () => t.claims.complete(c(), first.challengeId, t.lastCode(), good.user, forgedMsp.msp),
    "invalid_argument",
    /msp_signature .*; no attempts left, start a new challenge/,
  );
  await rejects(
    () => t.claims.complete(c(), first.challengeId, t.lastCode(), good.user, good.msp),
    "failed_precondition",
    /closed after too many/,
  );
  assert.equal((await t.answer(ALICE)).kind, "not_found");
  // A corrected submission within the attempts goes through.
  const ch = await t.openClaim(user);
  const ok = t.sign(ch, "claim", user, "bluebird.example");
  const forgedUser = t.sign(ch, "claim", generateSigningKey(), "bluebird.example");
  await rejects(
    () => t.claims.complete(c(), ch.challengeId, t.lastCode(), forgedUser.user, ok.msp),
    "invalid_argument",
    /user_signature/,
  );
  t.claims.complete(c(), ch.challengeId, t.lastCode(), ok.user, ok.msp);
  assert.equal(t.summary(await t.answer(ALICE)), "bluebird.example*");
});

test("the statement the MSP signs is the canonical record the DP countersigns", async () => {
  const t = setup();
  const r = await t.claim("bluebird.example", ALICE, "@a", { tags: ["Business", "Work"] });
  const rec = decodeMappingRecord(r.mapping?.signed?.record as Uint8Array);
  assert.deepEqual(rec.tags, ["Business", "Work"]);
  assert.equal(rec.dpId, "eu");
  assert.equal(rec.expiresAtMs, t.now() + 365 * DAY);
  assert.deepEqual(encodeMappingRecord(rec), r.mapping?.signed?.record);
});

test("tag rules: Default is a flag never a tag; tags are few, short, distinct", async () => {
  assert.deepEqual(checkTags(["Business", "Personal"]), ["Business", "Personal"]);
  for (const bad of [
    ["Default"],
    ["default"],
    ["a", "A"],
    ["x".repeat(33)],
    [""],
    ["bad\ttag"],
    Array.from({ length: 9 }, (_, i) => `t${i}`),
  ]) {
    assert.throws(
      () => checkTags(bad),
      (e: unknown) => e instanceof DiscoveryError && e.code === "invalid_argument",
    );
  }
  const t = setup();
  await rejects(
    t.claim("bluebird.example", ALICE, "@a", { tags: ["Default"] }),
    "invalid_argument",
    /make_default/,
  );
  await rejects(t.claim("bluebird.example", ALICE, "x\u0007"), "invalid_argument", /control/);
});

test("answer shapes: not found, one MSP, several MSPs, several mappings at one MSP, opted out (R14)", async () => {
  const t = setup();
  assert.equal((await t.answer(ALICE)).kind, "not_found");
  const holder = generateSigningKey();
  await t.claim("bluebird.example", ALICE, "@a", { makeDefault: true, user: holder });
  assert.equal(t.summary(await t.answer(ALICE)), "bluebird.example*");
  await t.claim("wirechat.example", ALICE, "wc-1", { user: holder, tags: ["Business"] });
  await t.claim("wirechat.example", ALICE, "wc-2", { user: holder });
  assert.equal(t.summary(await t.answer(ALICE)), "bluebird.example* wirechat.example wirechat.example");
  const r = await t.act(
    "parrot.example",
    { action: "opt_out", csi: ALICE, userPublicKey: holder.publicKey },
    holder,
  );
  assert.equal(r.removed, 3);
  assert.equal((await t.answer(ALICE)).kind, "opted_out");
  // Bulk registration respects the opt-out; only a new claim by the holder lifts it.
  const ack = t.bulk("bluebird.example", "s1", [{ csi: ALICE, ssi: "@a" }]);
  assert.deepEqual([ack.stored, ack.optedOut], [0, 1]);
  assert.equal((await t.answer(ALICE)).kind, "opted_out");
  await t.claim("parrot.example", ALICE, "p-1", { user: holder });
  assert.equal(t.summary(await t.answer(ALICE)), "parrot.example*");
});

test("every answer is sealed; an opt-out it cannot prove is answered as a sealed NOT_FOUND", async () => {
  const t = setup();
  const holder = generateSigningKey();
  await t.claim("bluebird.example", ALICE, "@a", { user: holder });
  await t.act("wirechat.example", { action: "opt_out", csi: ALICE, userPublicKey: holder.publicKey }, holder);
  const opted = await t.answer(ALICE);
  assert.equal(opted.kind, "opted_out");
  assert.ok(opted.kind === "opted_out" && opted.optOut && opted.seal, "the seal and the holder's opt-out");
  // The MSP the holder acted through changes its key: its signature on the opt-out no longer
  // verifies, so the DP says NOT_FOUND (the holder stays hidden) rather than an answer that fails.
  const wirechat = t.registry.msp("wirechat.example");
  assert.ok(wirechat);
  t.registry.apply({
    serial: 4n,
    kind: "put_msp",
    msp: { ...wirechat, signingPublicKey: generateSigningKey().publicKey },
  });
  assert.equal((await t.answer(ALICE)).kind, "not_found");
  // An opt-out kept from before signed denials has no statement: likewise a sealed NOT_FOUND.
  const bob = "tel:+447700900124";
  t.store.setOptOut(bob, t.now());
  assert.equal((await t.answer(bob)).kind, "not_found");
  assert.equal(t.store.optedOutAt(bob), t.now(), "it is still opted out for claims and bulk");
});

test("a seal never outlives a record it lists, so no cache keeps a record past its expiry", async () => {
  const t = setup();
  await t.claim("bluebird.example", ALICE, "@a");
  const sealOf = async () => {
    const a = await t.answer(ALICE);
    assert.ok(a.kind === "answer" && a.seal);
    return { seal: decodeSealStatement(a.seal.statement), expiresAtMs: a.mappings[0]?.expiresAtMs ?? 0 };
  };
  const fresh = await sealOf();
  assert.equal(fresh.seal.expiresAtMs - fresh.seal.signedAtMs, DAY, "answerSealMs while the record lasts");
  // Ten seconds before the record expires, the seal ends with it.
  t.tick(fresh.expiresAtMs - t.now() - 10_000);
  const late = await sealOf();
  assert.equal(late.seal.expiresAtMs, late.expiresAtMs);
  assert.equal(late.seal.expiresAtMs - late.seal.signedAtMs, 10_000);
});

test("lookups answer from the answer cache, and the lookup after any write to the CSI's mappings or opt-out sees it", async () => {
  const t = setup();
  await t.claim("bluebird.example", ALICE, "@a");
  const counts = t.service.answerCacheCounts;
  assert.ok(counts, "on by default");
  // Without the answer() helper's checks: some writes below change rows the DP countersigned.
  const lookOnce = async () => t.summary(await t.service.lookup(ALICE).sealed());
  // Asked twice: the first answer after a write must show it, and the second read keeps the
  // answer (kept on its second read in a while), so each write below has a kept answer to drop.
  const look = async () => {
    const first = await lookOnce();
    assert.equal(await lookOnce(), first);
    return first;
  };
  assert.equal(await lookOnce(), "bluebird.example*");
  assert.equal(counts.entries, 0, "not kept on its first read");
  assert.equal(await lookOnce(), "bluebird.example*");
  assert.equal(counts.entries, 1, "kept on its second");
  const hits = counts.hits;
  // A hit's answer verifies end to end, its seal listing exactly its mappings.
  assert.equal(t.summary(await t.answer(ALICE)), "bluebird.example*");
  assert.equal(counts.hits, hits + 1, "the second lookup was a hit");
  const row = t.store.mappings(ALICE)[0];
  assert.ok(row);
  const fields = { isDefault: true, precedence: 0, dpSig: row.dpSig };
  t.store.updateMapping(ALICE, row.mspId, row.ssi, { ...fields, isDefault: false });
  assert.equal(await look(), "bluebird.example");
  t.store.updateMapping(ALICE, row.mspId, row.ssi, { ...fields, withheld: true });
  assert.equal(await look(), "not_found");
  t.store.updateMapping(ALICE, row.mspId, row.ssi, { ...fields, withheld: false });
  assert.equal(await look(), "bluebird.example*");
  // A mapping that expires in a second leaves the answer then, with no write.
  const brief = { ...row, mspId: "wirechat.example", ssi: "@w", isDefault: false, precedence: 1 };
  t.store.putMapping({ ...brief, expiresAtMs: t.now() + 1_000 });
  assert.equal(await look(), "bluebird.example* wirechat.example");
  assert.equal(await look(), "bluebird.example* wirechat.example");
  t.tick(1_000);
  assert.equal(await look(), "bluebird.example*");
  t.store.putMapping({ ...brief, expiresAtMs: t.now() + DAY });
  assert.equal(await look(), "bluebird.example* wirechat.example");
  t.store.deleteMapping(ALICE, "wirechat.example", "@w");
  assert.equal(await look(), "bluebird.example*");
  // A write rolled back changes nothing, nor is what a lookup read inside its transaction kept.
  assert.throws(() =>
    t.store.transaction(() => {
      t.store.updateMapping(ALICE, row.mspId, row.ssi, { ...fields, isDefault: false });
      t.service.lookup(ALICE);
      throw new Error("rolled back");
    }),
  );
  assert.equal(await look(), "bluebird.example*");
  // Replication writes the same way (a secondary applying its primary's changes).
  t.store.applyReplicated(() => t.store.deleteMapping(ALICE, row.mspId, row.ssi));
  assert.equal(await look(), "not_found");
  // A plain NOT_FOUND is not kept: each is read from the store.
  const misses = counts.misses;
  assert.equal(await look(), "not_found");
  assert.equal(counts.misses, misses + 2);
  // The holder claims again, then opts out, then claims again.
  const holder = generateSigningKey();
  await t.claim("bluebird.example", ALICE, "@a", { user: holder });
  assert.equal(await look(), "bluebird.example*");
  await t.act("bluebird.example", { action: "opt_out", csi: ALICE, userPublicKey: holder.publicKey }, holder);
  assert.equal(await look(), "opted_out");
  assert.equal(await look(), "opted_out");
  t.store.clearOptOut(ALICE);
  assert.equal(await look(), "not_found");
  // Off: every lookup reads the store.
  const off = createAuthoritativeService({ ...t.options, answerCacheBytes: 0 });
  assert.equal(off.answerCacheCounts, undefined);
  assert.equal(t.summary(await off.lookup(ALICE).sealed()), "not_found");
});

test("default tie-break: first mapping is the default; a requester wins once; only the holder moves it (R7)", async () => {
  const t = setup();
  t.bulk("bluebird.example", "b", [{ csi: ALICE, ssi: "@a" }]);
  assert.equal(t.summary(await t.answer(ALICE)), "bluebird.example*");
  t.tick(1);
  t.bulk("wirechat.example", "w", [{ csi: ALICE, ssi: "wc", def: true }]);
  t.tick(1);
  t.bulk("telco.example", "t", [{ csi: ALICE, ssi: "tc", def: true }]);
  // wirechat asked first (better precedence) and keeps it; telco's later request changes nothing.
  assert.equal(t.summary(await t.answer(ALICE)), "wirechat.example* bluebird.example telco.example");
  // A holder's claim with make_default moves it; a code proof is stricter than bulk, so it
  // takes precedence at once. The others then follow in precedence order.
  const r = await t.claim("parrot.example", ALICE, "p", { makeDefault: true });
  assert.equal(r.hasPrecedence, true, "a code proof is stricter than bulk, so it takes precedence at once");
  assert.equal(
    t.summary(await t.answer(ALICE)),
    "parrot.example* bluebird.example wirechat.example telco.example",
  );
});

test("a query may ask for a tag; Default selects the default mapping", async () => {
  const t = setup();
  const holder = generateSigningKey();
  await t.claim("bluebird.example", ALICE, "@a", { makeDefault: true, tags: ["Personal"], user: holder });
  await t.claim("wirechat.example", ALICE, "wc", { tags: ["Business"], user: holder });
  const a = await t.answer(ALICE);
  assert.ok(a.kind === "answer");
  const pick = (tag: string) =>
    filterMappings(a.mappings, { format: "verbose", mspFilter: [], tag }).map((m) => m.mspId);
  assert.deepEqual(pick("business"), ["wirechat.example"]);
  assert.deepEqual(pick("Default"), ["bluebird.example"]);
  assert.deepEqual(pick("Gaming"), []);
});

test("a claim beside another holder's mapping opens a conflict; the old MSP is told without learning who (R17, G3)", async () => {
  const t = setup();
  await t.claim("bluebird.example", ALICE, "@old", { makeDefault: true });
  const r = await t.claim("wirechat.example", ALICE, "@new", { makeDefault: true });
  assert.equal(r.hasPrecedence, false);
  assert.ok(r.conflictId.startsWith("cf_"));
  assert.deepEqual(
    r.existingMsps.map((m) => m.id),
    ["bluebird.example"],
  );
  // The claim is stored but withheld while the conflict is open: answers do not reveal the
  // claimant to the old holder's MSP (or anyone).
  assert.equal(t.summary(await t.answer(ALICE)), "bluebird.example*");
  assert.equal(t.store.mapping(ALICE, "wirechat.example", "@new")?.withheld, true);
  const notices = t.claims.notices("bluebird.example", 0, 10);
  assert.equal(notices.length, 1);
  const n = notices[0]?.body;
  assert.equal(n?.kind, "conflict_opened");
  assert.equal(n?.ssi, "@old");
  assert.equal(n?.conflictId, r.conflictId);
  assert.doesNotMatch(JSON.stringify(n), /wirechat|@new/);
});

/** The holder's fresh consent to keep `ssi`'s mapping at `mspId`, for the conflict. */
const consent = (conflictId: string, mspId: string, ssi: string, signer: SigningKey) => ({
  conflictId,
  ssi,
  holderSignature: signWith(
    signer,
    SIGNING_CONTEXT.contestHolder,
    encodeContestStatement({ conflictId, csi: ALICE, mspId, ssi }),
  ),
});

test("a contest needs the holder's fresh signature, is final, and drops the withheld claim", async () => {
  const t = setup({ contestWindowMs: 1_000 });
  const old = await t.claim("bluebird.example", ALICE, "@old", { makeDefault: true });
  const r = await t.claim("wirechat.example", ALICE, "@new", { makeDefault: true, replace: true });
  const bluebird = t.caller("bluebird.example");
  // Only an MSP whose user is concerned may contest.
  await rejects(
    () =>
      t.claims.contest(t.caller("parrot.example"), consent(r.conflictId, "parrot.example", "@old", old.user)),
    "not_found",
    /concerns/,
  );
  // Without the holder: no signature, someone else's, or one over another conflict.
  const stranger = generateSigningKey();
  for (const attempt of [
    { conflictId: r.conflictId, ssi: "@old", holderSignature: new Uint8Array(64) },
    consent(r.conflictId, "bluebird.example", "@old", stranger),
    { ...consent("cf_other", "bluebird.example", "@old", old.user), conflictId: r.conflictId },
  ]) {
    await rejects(() => t.claims.contest(bluebird, attempt), "permission_denied", /holder's fresh consent/);
  }
  await rejects(
    () => t.claims.contest(bluebird, consent(r.conflictId, "bluebird.example", "@other", old.user)),
    "invalid_argument",
    /not about this MSP's user/,
  );
  t.claims.contest(bluebird, consent(r.conflictId, "bluebird.example", "@old", old.user));
  t.tick(2_000);
  assert.equal(t.claims.sweep(), 0);
  assert.equal(t.summary(await t.answer(ALICE)), "bluebird.example*");
  assert.equal(t.store.mapping(ALICE, "wirechat.example", "@new"), undefined, "the withheld claim is gone");
  const told = t.claims.notices("wirechat.example", 0, 10).map((x) => x.body.kind);
  assert.deepEqual(told, ["conflict_closed"]);
  await rejects(
    () => t.claims.contest(bluebird, consent(r.conflictId, "bluebird.example", "@old", old.user)),
    "failed_precondition",
    /contested; a contest is final/,
  );
});

test("the sweep drops conflicts and bulk sessions nobody can act on once their notices are gone", async () => {
  const t = setup({ contestWindowMs: 5 * DAY });
  await t.claim("bluebird.example", ALICE, "@old");
  const lapsed = await t.claim("wirechat.example", ALICE, "@new");
  t.tick(5 * DAY + 1);
  t.claims.sweep(); // wirechat's claim lapses uncontested
  assert.equal(t.store.conflict(lapsed.conflictId)?.state, "lapsed");
  t.bulk("bluebird.example", "export-1", [{ csi: "tel:+447700900555", ssi: "@b" }]);
  // Another conflict, opened later, still open when the first one's notices go.
  t.tick(29 * DAY);
  const open = await t.claim("parrot.example", ALICE, "@third");
  assert.ok(open.conflictId);
  t.claims.sweep();
  assert.equal(t.store.conflict(lapsed.conflictId)?.state, "lapsed", "kept while its notices are");
  assert.equal(t.store.bulkCommitted("bluebird.example", "export-1"), 1);
  t.tick(DAY + 1_000); // past claims.noticeRetentionDays (30) since the lapse and the session
  t.claims.sweep();
  assert.equal(t.store.conflict(lapsed.conflictId), undefined);
  assert.deepEqual(t.store.conflictTargets(lapsed.conflictId), []);
  assert.equal(t.store.bulkCommitted("bluebird.example", "export-1"), 0, "an idle session starts over");
  assert.equal(t.store.conflict(open.conflictId)?.state, "open", "an open conflict stays");
  assert.ok(t.store.conflictTargets(open.conflictId).length > 0);
});

test("an empty bulk batch is refused and writes nothing", async () => {
  const t = setup();
  await rejects(
    () => t.claims.bulkBatchAsync(t.caller("bluebird.example"), "empty", 0, []),
    "invalid_argument",
    /a batch needs at least one record/,
  );
  assert.equal(t.store.bulkCommitted("bluebird.example", "empty"), 0);
});

test("opt-out follows the removal rules: own mappings at once, another holder's through a conflict", async () => {
  const t = setup({ contestWindowMs: 1_000 });
  const holder = generateSigningKey();
  await t.claim("bluebird.example", ALICE, "@mine", { user: holder });
  const other = await t.claim("wirechat.example", ALICE, "@theirs");
  t.tick(1_001);
  t.claims.sweep(); // the wirechat claim's own conflict lapses: both are served now
  assert.equal(t.summary(await t.answer(ALICE)), "bluebird.example* wirechat.example");
  // Another holder's invalidation of wirechat's mapping: a conflict the opt-out must leave open.
  const stranger = generateSigningKey();
  const third = await t.act(
    "parrot.example",
    {
      action: "invalidate",
      csi: ALICE,
      mspId: "wirechat.example",
      ssi: "@theirs",
      userPublicKey: stranger.publicKey,
    },
    stranger,
  );
  const r = await t.act(
    "telco.example",
    { action: "opt_out", csi: ALICE, userPublicKey: holder.publicKey },
    holder,
  );
  assert.equal(r.removed, 1, "only the holder's own mapping goes at once");
  assert.ok(r.conflictId.startsWith("cf_"));
  assert.equal((await t.answer(ALICE)).kind, "answer", "not opted out while another holder's mapping stands");
  assert.equal(t.store.conflict(third.conflictId)?.state, "open", "open conflicts are not voided");
  // The other holder contests with fresh consent: their mapping stays, the CSI is not opted out.
  t.claims.contest(
    t.caller("wirechat.example"),
    consent(r.conflictId, "wirechat.example", "@theirs", other.user),
  );
  t.tick(1_001);
  t.claims.sweep();
  assert.equal(t.store.conflict(r.conflictId)?.state, "contested");
  assert.equal(t.store.optedOutAt(ALICE), undefined, "a contested opt-out does not take effect");
  // The stranger's invalidation, left open by the opt-out and not contested, took effect.
  assert.equal(t.store.conflict(third.conflictId)?.state, "lapsed");
  assert.equal((await t.answer(ALICE)).kind, "not_found");
});

test("an opt-out removes weaker (bulk) mappings at once: an MSP cannot veto it with its own key", async () => {
  const t = setup({ contestWindowMs: 1_000 });
  const holder = generateSigningKey();
  await t.claim("bluebird.example", ALICE, "@mine", { user: holder });
  t.bulk("wirechat.example", "w", [{ csi: ALICE, ssi: "wc" }]);
  const r = await t.act(
    "bluebird.example",
    { action: "opt_out", csi: ALICE, userPublicKey: holder.publicKey },
    holder,
  );
  assert.equal(r.removed, 2);
  assert.equal(r.conflictId, "");
  assert.equal((await t.answer(ALICE)).kind, "opted_out");
  assert.equal(t.claims.notices("wirechat.example", 0, 10).at(-1)?.body.kind, "mapping_removed");
});

test("an uncontested opt-out conflict removes the other holders' mappings, and bulk ones added meanwhile", async () => {
  const t = setup({ contestWindowMs: 1_000 });
  const holder = generateSigningKey();
  await t.claim("bluebird.example", ALICE, "@mine", { user: holder });
  await t.claim("wirechat.example", ALICE, "@theirs");
  t.tick(1_001);
  t.claims.sweep(); // wirechat's claim lapses: both served
  const r = await t.act(
    "bluebird.example",
    { action: "opt_out", csi: ALICE, userPublicKey: holder.publicKey },
    holder,
  );
  assert.ok(r.conflictId);
  // An MSP registers the number in bulk during the window, to keep it discoverable.
  t.bulk("parrot.example", "p", [{ csi: ALICE, ssi: "p-bulk" }]);
  t.tick(1_001);
  t.claims.sweep();
  assert.equal((await t.answer(ALICE)).kind, "opted_out");
});

test("an opt-out by the existing holder does not publish the claim withheld against their mapping", async () => {
  const t = setup({ contestWindowMs: 1_000 });
  const holder = generateSigningKey();
  await t.claim("bluebird.example", ALICE, "@mine", { user: holder });
  const rival = await t.claim("wirechat.example", ALICE, "@rival");
  assert.ok(rival.conflictId);
  await t.act("parrot.example", { action: "opt_out", csi: ALICE, userPublicKey: holder.publicKey }, holder);
  assert.equal(
    t.store.mapping(ALICE, "wirechat.example", "@rival"),
    undefined,
    "the withheld claim is dropped",
  );
  assert.equal(t.store.conflict(rival.conflictId)?.state, "contested");
  assert.equal((await t.answer(ALICE)).kind, "opted_out");
});

test("an uncontested conflict lapses: the new claim takes precedence and the default", async () => {
  const t = setup({ contestWindowMs: 1_000 });
  const old = await t.claim("bluebird.example", ALICE, "@old", { makeDefault: true });
  const r = await t.claim("wirechat.example", ALICE, "@new", { makeDefault: true });
  t.tick(500);
  assert.equal(t.claims.sweep(), 0, "not before the deadline");
  t.tick(600);
  assert.equal(t.claims.sweep(), 1);
  assert.equal(t.summary(await t.answer(ALICE)), "wirechat.example* bluebird.example");
  const kinds = t.claims.notices("bluebird.example", 0, 10).map((x) => x.body.kind);
  assert.deepEqual(kinds, ["conflict_opened", "precedence_lost", "default_changed"]);
  await rejects(
    () =>
      t.claims.contest(
        t.caller("bluebird.example"),
        consent(r.conflictId, "bluebird.example", "@old", old.user),
      ),
    "failed_precondition",
    /lapsed/,
  );
});

test("replacement: uncontested, the older holder's mappings are removed and their MSP told (G3, R19)", async () => {
  const t = setup({ contestWindowMs: 1_000 });
  await t.claim("bluebird.example", ALICE, "@old");
  await t.claim("wirechat.example", ALICE, "@new", { replace: true });
  t.tick(1_001);
  t.claims.sweep();
  assert.equal(t.summary(await t.answer(ALICE)), "wirechat.example*");
  const removed = t.claims.notices("bluebird.example", 0, 10).at(-1)?.body;
  assert.equal(removed?.kind, "mapping_removed");
  assert.equal(removed?.ssi, "@old");
});

test("a stricter proof takes precedence at once, and with replace removes the bulk mappings", async () => {
  const t = setup();
  t.bulk("bluebird.example", "b", [{ csi: ALICE, ssi: "@bulk" }]);
  const r = await t.claim("wirechat.example", ALICE, "@claimed", { replace: true, makeDefault: true });
  assert.equal(r.hasPrecedence, true);
  assert.equal(r.conflictId, "");
  assert.equal(r.removed, 1);
  assert.equal(t.summary(await t.answer(ALICE)), "wirechat.example*");
  assert.equal(t.claims.notices("bluebird.example", 0, 10)[0]?.body.kind, "mapping_removed");
});

test("the holder invalidates their own mapping at once; another holder's only through a conflict", async () => {
  const t = setup({ contestWindowMs: 1_000 });
  const holder = generateSigningKey();
  await t.claim("bluebird.example", ALICE, "@mine", { user: holder });
  await t.claim("wirechat.example", ALICE, "@theirs");
  // Through another MSP, signed with the key of the mapping: immediate.
  const own = await t.act(
    "parrot.example",
    {
      action: "invalidate",
      csi: ALICE,
      mspId: "bluebird.example",
      ssi: "@mine",
      userPublicKey: holder.publicKey,
    },
    holder,
  );
  assert.equal(own.removed, 1);
  assert.equal(own.conflictId, "");
  assert.equal(t.summary(await t.answer(ALICE)), "wirechat.example*");
  // Someone else's mapping: a conflict its MSP may contest.
  const other = await t.act(
    "parrot.example",
    { action: "invalidate", csi: ALICE, mspId: "", ssi: "", userPublicKey: holder.publicKey },
    holder,
  );
  assert.equal(other.removed, 0);
  assert.ok(other.conflictId);
  t.tick(1_001);
  t.claims.sweep();
  assert.equal((await t.answer(ALICE)).kind, "not_found");
  await rejects(
    t.act(
      "parrot.example",
      { action: "invalidate", csi: ALICE, mspId: "", ssi: "", userPublicKey: holder.publicKey },
      holder,
    ),
    "not_found",
    /no mapping/,
  );
});

test("provider feed: reassigned and disconnected remove mappings created before the date, and is idempotent (R16)", async () => {
  const t = setup();
  const BOB = "tel:+447700900222";
  t.bulk("bluebird.example", "b", [
    { csi: ALICE, ssi: "@a" },
    { csi: BOB, ssi: "@b" },
  ]);
  const before = t.now();
  t.tick(DAY);
  await t.claim("wirechat.example", BOB, "@new-holder");
  const entries = [
    { csi: ALICE, event: "disconnected" as const, effectiveAtMs: before + 1, donorMspId: "" },
    { csi: BOB, event: "reassigned" as const, effectiveAtMs: before + 1, donorMspId: "" },
  ];
  assert.equal(t.claims.ingestFeed(entries), 2);
  assert.equal(t.claims.ingestFeed(entries), 0);
  assert.equal((await t.answer(ALICE)).kind, "not_found");
  assert.equal(t.summary(await t.answer(BOB)), "wirechat.example*", "the new holder's later claim survives");
  await rejects(
    () =>
      t.claims.ingestFeed([
        { csi: "tel:+12025550142", event: "disconnected", effectiveAtMs: 1, donorMspId: "" },
      ]),
    "not_authoritative",
    /entry 0/,
  );
  // A scheduled event must not remove mappings before it happens.
  await rejects(
    () =>
      t.claims.ingestFeed([{ csi: BOB, event: "reassigned", effectiveAtMs: t.now() + DAY, donorMspId: "" }]),
    "invalid_argument",
    /future/,
  );
  assert.equal(t.summary(await t.answer(BOB)), "wirechat.example*");
});

test("number porting: the four cases of D2", async () => {
  const t = setup();
  const port = (csi: string, donor: string) =>
    t.claims.ingestFeed([{ csi, event: "ported", effectiveAtMs: t.now(), donorMspId: donor }]);
  // 1. Neither operator is an MSP: the OTT mapping is untouched.
  const c1 = "tel:+447700900301";
  t.bulk("bluebird.example", "1", [{ csi: c1, ssi: "@ott" }]);
  t.tick(1);
  assert.equal(port(c1, ""), 0);
  assert.equal(t.summary(await t.answer(c1)), "bluebird.example*");
  // 2. Only the recipient operator is an MSP: it registers; the user now has two and may choose.
  const c2 = "tel:+447700900302";
  const holder = generateSigningKey();
  await t.claim("bluebird.example", c2, "@ott", { user: holder });
  t.tick(1);
  assert.equal(port(c2, ""), 0);
  await t.claim("telco.example", c2, "telco-user", { user: holder, makeDefault: true });
  assert.equal(t.summary(await t.answer(c2)), "telco.example* bluebird.example");
  // 3. Only the donor operator is an MSP: its mapping goes; nothing is left.
  const c3 = "tel:+447700900303";
  t.bulk("telco.example", "3", [{ csi: c3, ssi: "telco-old" }]);
  t.tick(1);
  assert.equal(port(c3, "telco.example"), 1);
  assert.equal((await t.answer(c3)).kind, "not_found");
  // 4. Both operators are MSPs: the donor's mapping goes, the recipient's appears.
  const c4 = "tel:+447700900304";
  t.bulk("telco.example", "4", [{ csi: c4, ssi: "telco-old" }]);
  t.tick(1);
  assert.equal(port(c4, "telco.example"), 1);
  t.bulk("wirechat.example", "4", [{ csi: c4, ssi: "wirechat-operator-user" }]);
  assert.equal(t.summary(await t.answer(c4)), "wirechat.example*");
});

// Any number of mappings could be stored for one CSI (a new SSI each time): its answer outgrew a
// private-lookup entry (64 KiB) and, further on, gRPC's 4 MiB message, and one bulk MSP could
// stuff a victim's number with thousands of mappings in one batch.
const overCap = async (p: Promise<unknown> | (() => unknown), reason: string) => {
  await assert.rejects(
    async () => (typeof p === "function" ? p() : p),
    (e: unknown) =>
      e instanceof DiscoveryError &&
      e.code === "resource_exhausted" &&
      e.details?.reason === reason &&
      /the most one (MSP|CSI) may hold/.test(e.message),
  );
};

test("claims stop at the caps on mappings per CSI and per MSP at a CSI, before a code and when completed", async () => {
  const t = setup({ maxMappingsPerCsi: 3, maxMappingsPerCsiPerMsp: 2 });
  const holder = generateSigningKey();
  const claimAs = (msp: MspId, ssi: string) => t.claim(msp, ALICE, ssi, { user: holder });
  await claimAs("bluebird.example", "@a1");
  await claimAs("bluebird.example", "@a2");
  // A third of one MSP is refused before any code is sent.
  const sentBefore = t.sent.length;
  await overCap(claimAs("bluebird.example", "@a3"), "CSI_MSP_MAPPING_LIMIT");
  assert.equal(t.sent.length, sentBefore, "no code is spent on a claim that cannot complete");
  // A renewal adds no mapping and passes.
  assert.equal((await claimAs("bluebird.example", "@a1")).mapping?.ssi, "@a1");
  // Started while there was room, completed once the CSI is full: refused in the transaction,
  // which leaves the challenge open for after a mapping is removed.
  const parrot = await t.claims.start(t.caller("parrot.example"), {
    action: "claim",
    csi: ALICE,
    ssi: "p1",
    tags: [],
    makeDefault: false,
    userPublicKey: holder.publicKey,
    replaceExisting: false,
  });
  const parrotCode = t.lastCode();
  await claimAs("wirechat.example", "@w1");
  const s = t.sign(parrot, "claim", holder, "parrot.example");
  const complete = () =>
    t.claims.complete(t.caller("parrot.example"), parrot.challengeId, parrotCode, s.user, s.msp);
  await overCap(complete, "CSI_MAPPING_LIMIT");
  assert.equal(t.store.mappings(ALICE).length, 3);
  assert.equal(t.store.challenge(parrot.challengeId)?.state, "open");
  await t.act(
    "bluebird.example",
    {
      action: "invalidate",
      csi: ALICE,
      mspId: "bluebird.example",
      ssi: "@a2",
      userPublicKey: holder.publicKey,
    },
    holder,
  );
  assert.equal(complete().mapping?.ssi, "p1");
  assert.equal(t.summary(await t.answer(ALICE)).split(" ").length, 3);
});

test("a claim refused for a full CSI spends the MSP's attempts, so the caps are no free probe of a registered number", async () => {
  const t = setup({ maxMappingsPerCsi: 1 });
  await t.claim("bluebird.example", ALICE, "@a1");
  const start = (csi: string) =>
    t.claims.start(t.caller("parrot.example"), {
      action: "claim",
      csi,
      ssi: "p1",
      tags: [],
      makeDefault: false,
      userPublicKey: generateSigningKey().publicKey,
      replaceExisting: false,
    });
  const sentBefore = t.sent.length;
  const reasonOf = async (csi: string) => {
    try {
      await start(csi);
      return "started";
    } catch (e) {
      assert.ok(e instanceof DiscoveryError, String(e));
      return String(e.details?.reason);
    }
  };
  let full = 0;
  let reason = await reasonOf(ALICE);
  for (; reason === "CSI_MAPPING_LIMIT" && full < 1_000; reason = await reasonOf(ALICE)) full += 1;
  // The MSP's attempts a day (twice its floor of 100 codes) end the probing; no code went out.
  assert.equal(reason, "CODE_LIMIT_MSP_DAY_ATTEMPTS");
  assert.equal(full, 2 * DEFAULT_CLAIM_LIMITS.mspCodesPerDayFloor);
  assert.equal(t.sent.length, sentBefore);
  // The budget is the MSP's, whatever the number; the number's own code budgets (10 an hour
  // across MSPs) were given back each time, so another MSP still gets a code sent to it.
  assert.equal(await reasonOf("tel:+447700900124"), "CODE_LIMIT_MSP_DAY_ATTEMPTS");
  await t.claims.start(t.caller("wirechat.example"), {
    action: "opt_out",
    csi: ALICE,
    userPublicKey: generateSigningKey().publicKey,
  });
  assert.equal(t.sent.length, sentBefore + 1);
});

test("bulk records over the caps are left out and counted, and a holder's stricter claim replaces them", async () => {
  const t = setup({ maxMappingsPerCsi: 3, maxMappingsPerCsiPerMsp: 2 });
  const other = "tel:+447700900124";
  const a = t.bulk("telco.example", "s1", [
    { csi: ALICE, ssi: "t1" },
    { csi: ALICE, ssi: "t2" },
    { csi: ALICE, ssi: "t3" },
    { csi: other, ssi: "t1" },
  ]);
  assert.deepEqual(
    [a.committed, a.stored, a.overLimit],
    [4, 3, 1],
    "the batch commits; one record is left out",
  );
  const b = t.bulk("bluebird.example", "s1", [
    { csi: ALICE, ssi: "b1" },
    { csi: ALICE, ssi: "b2" },
  ]);
  assert.deepEqual([b.stored, b.overLimit], [1, 1]);
  assert.equal(t.store.mappings(ALICE).length, 3);
  // A record stored already is a re-registration, not a new mapping.
  const again = t.bulk("telco.example", "s2", [{ csi: ALICE, ssi: "t1", tags: ["Work"] }]);
  assert.deepEqual([again.stored, again.overLimit], [1, 0]);
  // The holder of a number the bulk MSPs filled: a claim beside them is refused, one that
  // replaces them with its stricter proof (sms-code over bulk) is not.
  await overCap(t.claim("parrot.example", ALICE, "p1"), "CSI_MAPPING_LIMIT");
  const r = await t.claim("parrot.example", ALICE, "p1", { replace: true });
  assert.equal(r.removed, 3);
  assert.equal(t.summary(await t.answer(ALICE)), "parrot.example*");
});

test("bulk registration is idempotent, resumes from the committed count, and is atomic per batch (G4)", async () => {
  const t = setup();
  const items = Array.from({ length: 20 }, (_, i) => ({
    csi: `tel:+4477009004${String(i).padStart(2, "0")}`,
    ssi: `u${i}`,
  }));
  const a1 = t.bulk("bluebird.example", "s", items.slice(0, 10));
  assert.deepEqual([a1.committed, a1.stored], [10, 10]);
  assert.equal(t.claims.bulkResume(t.caller("bluebird.example"), "s"), 10);
  // Re-sending an overlapping batch skips what is committed.
  const a2 = t.bulk("bluebird.example", "s", items.slice(5, 20), 5);
  assert.deepEqual([a2.committed, a2.stored, a2.unchanged], [20, 10, 0]);
  // A gap is refused.
  await rejects(
    () => t.bulk("bluebird.example", "s", items.slice(0, 1), 25),
    "failed_precondition",
    /resend from 20/,
  );
  // A new session with the same records stores nothing new.
  const a3 = t.bulk("bluebird.example", "again", items);
  assert.deepEqual([a3.stored, a3.unchanged], [0, 20]);
  // One bad record refuses the whole batch.
  const before = t.store.count();
  const good = items.map((x) => ({ ...x, csi: x.csi.replace("+4477009004", "+4477009005") }));
  await rejects(
    () => t.bulk("bluebird.example", "bad", [...good, { csi: "tel:+12025550142", ssi: "x" }]),
    "not_authoritative",
    /record 20/,
  );
  assert.equal(t.store.count(), before);
  assert.equal(t.claims.bulkResume(t.caller("bluebird.example"), "bad"), 0);
});

test("bulk records must be canonical, bulk-proof, unexpired and signed by the caller", async () => {
  const t = setup();
  const key = t.mspKeys.get("bluebird.example") as SigningKey;
  const base = {
    csi: ALICE,
    mspId: "bluebird.example",
    ssi: "@a",
    defaultRequested: false,
    tags: [],
    createdAtMs: t.now(),
    dpId: "eu",
    expiresAtMs: t.now() + DAY,
  };
  const send = (rec: { record: Uint8Array; mspSignature: Uint8Array }) => () =>
    t.claims.bulkBatch(t.caller("bluebird.example"), "x", 0, [rec]);
  await rejects(
    send(bulkRecord({ ...base, csi: "tel:+44 7700 900123" }, key)),
    "invalid_argument",
    /canonical/,
  );
  await rejects(send(bulkRecord({ ...base, dpId: "us" }, key)), "invalid_argument", /names DP "us"/);
  await rejects(send(bulkRecord({ ...base, expiresAtMs: t.now() - 1 }, key)), "invalid_argument", /expired/);
  await rejects(
    send(bulkRecord({ ...base, expiresAtMs: t.now() + 400 * DAY }, key)),
    "invalid_argument",
    /lifetime/,
  );
  await rejects(
    send(bulkRecord(base, t.mspKeys.get("wirechat.example") as SigningKey)),
    "invalid_argument",
    /msp_signature/,
  );
  const claimed = encodeMappingRecord({
    ...base,
    proofMethod: "sms-code",
    proofId: "",
    userPublicKey: new Uint8Array(0),
  });
  await rejects(
    send({ record: claimed, mspSignature: signWith(key, SIGNING_CONTEXT.mappingMsp, claimed) }),
    "invalid_argument",
    /proof method "bulk"/,
  );
  await rejects(
    send({ record: new Uint8Array([1, 2, 3]), mspSignature: new Uint8Array(64) }),
    "invalid_argument",
    /record 0/,
  );
});

test("expired mappings are not served and the sweep removes them with a notice", async () => {
  const t = setup();
  t.bulk("bluebird.example", "b", [{ csi: ALICE, ssi: "@a" }]);
  t.tick(301 * DAY);
  assert.equal((await t.answer(ALICE)).kind, "not_found");
  t.claims.sweep();
  assert.equal(t.store.count(), 0);
  assert.match(t.claims.notices("bluebird.example", 0, 10)[0]?.body.reason ?? "", /expired/);
});

test("a DP-only record does not verify: the DP cannot mint mappings (R4)", async () => {
  const t = setup();
  // The DP signs a record in an MSP's name with a key of its own making.
  const fake = bulkRecord(
    {
      csi: ALICE,
      mspId: "bluebird.example",
      ssi: "@fake",
      defaultRequested: false,
      tags: [],
      createdAtMs: t.now(),
      dpId: "eu",
      expiresAtMs: t.now() + DAY,
    },
    generateSigningKey(),
  );
  const m = {
    mspId: "bluebird.example",
    ssi: "@fake",
    isDefault: true,
    tags: [],
    createdAtMs: t.now(),
    proofMethod: "bulk",
    expiresAtMs: t.now() + DAY,
    signed: {
      record: fake.record,
      userSignature: new Uint8Array(0),
      mspSignature: fake.mspSignature,
      dpSignature: signWith(t.dpKey, SIGNING_CONTEXT.mappingDp, Uint8Array.of(1), fake.record),
    },
  };
  assert.match(mappingProblem(ALICE, m, t.keys, t.now()) ?? "", /MSP's signature/);
});

test("notices resume after a sequence number", async () => {
  const t = setup({ contestWindowMs: 1_000 });
  await t.claim("bluebird.example", ALICE, "@old");
  await t.claim("wirechat.example", ALICE, "@new");
  t.tick(1_001);
  t.claims.sweep();
  const all = t.claims.notices("bluebird.example", 0, 10);
  assert.ok(all.length >= 2);
  const rest = t.claims.notices("bluebird.example", all[0]?.seq ?? 0, 10);
  assert.deepEqual(
    rest.map((n) => n.seq),
    all.slice(1).map((n) => n.seq),
  );
});

// ---- first-mapping requests from peer DPs (R18) -----------------------------------------

const CARVED = "tel:+447900000001";

/** Carves +4479 out of eu's +44 for DP "us"; returns us's key and a signer of its mappings. */
function carveOut(t: ReturnType<typeof setup>) {
  const usKey = generateSigningKey();
  const serial = t.registry.serial;
  t.registry.apply({
    serial: serial + 1n,
    kind: "put_dp",
    dp: {
      id: "us",
      endpoints: ["127.0.0.1:2"],
      tlsIdentity: "dp-us",
      jurisdiction: "US",
      signingPublicKey: usKey.publicKey,
    },
  });
  t.registry.apply({
    serial: serial + 2n,
    kind: "put_delegation",
    delegation: { id: "e164:4479", key: { kind: "e164", prefix: "4479" }, dpId: "us", ttlSeconds: 3600 },
  });
  /** The mapping us stores for the CSI's new holder, as us would send it. */
  const peerMapping = (o: { proofMethod?: string; dpKey?: SigningKey; createdAtMs?: number } = {}) => {
    const user = generateSigningKey();
    const proofMethod = o.proofMethod ?? "sms-code";
    const record = encodeMappingRecord({
      csi: CARVED,
      mspId: "wirechat.example",
      ssi: "wc-new",
      defaultRequested: true,
      tags: [],
      createdAtMs: o.createdAtMs ?? t.now(),
      proofMethod,
      proofId: "ch_peer",
      userPublicKey: proofMethod === "bulk" ? new Uint8Array(0) : user.publicKey,
      dpId: "us",
      expiresAtMs: t.now() + 30 * DAY,
    });
    return {
      mspId: "wirechat.example",
      ssi: "wc-new",
      isDefault: true,
      tags: [],
      createdAtMs: o.createdAtMs ?? t.now(),
      proofMethod,
      expiresAtMs: t.now() + 30 * DAY,
      signed: {
        record,
        userSignature:
          proofMethod === "bulk" ? new Uint8Array(0) : signWith(user, SIGNING_CONTEXT.mappingUser, record),
        mspSignature: signWith(
          t.mspKeys.get("wirechat.example") as SigningKey,
          SIGNING_CONTEXT.mappingMsp,
          record,
        ),
        dpSignature: signWith(o.dpKey ?? usKey, SIGNING_CONTEXT.mappingDp, ...dpSignedParts(true, record)),
      },
    };
  };
  return { peerMapping };
}

test("a peer's first mapping with a stricter proof removes older mappings at once, once", () => {
  const t = setup();
  t.bulk("bluebird.example", "old", [{ csi: CARVED, ssi: "@old" }]);
  t.tick(1000);
  const { peerMapping } = carveOut(t);
  const m = peerMapping();
  assert.deepEqual(t.claims.invalidateOlder("dp-us", CARVED, m), { removed: 1, contested: 0 });
  assert.equal(t.store.mappings(CARVED).length, 0);
  const notice = t.claims.notices("bluebird.example", 0, 10).find((n) => n.body.kind === "mapping_removed");
  assert.match(notice?.body.reason ?? "", /more strictly at DP "us"/);
  assert.deepEqual(t.claims.invalidateOlder("dp-us", CARVED, m), { removed: 0, contested: 0 });
});

test("a peer's first mapping with an equal proof opens one contestable conflict, which lapses into removal", async () => {
  const t = setup({ contestWindowMs: 60_000 });
  await t.claim("bluebird.example", CARVED, "@old");
  t.tick(1000);
  const { peerMapping } = carveOut(t);
  const m = peerMapping();
  assert.deepEqual(t.claims.invalidateOlder("dp-us", CARVED, m), { removed: 0, contested: 1 });
  assert.deepEqual(t.claims.invalidateOlder("dp-us", CARVED, m), { removed: 0, contested: 1 });
  assert.equal(t.store.openConflicts(CARVED).length, 1, "a repeated request opens no second conflict");
  assert.ok(t.claims.notices("bluebird.example", 0, 10).some((n) => n.body.kind === "conflict_opened"));
  t.tick(61_000);
  t.claims.sweep();
  assert.equal(t.store.mappings(CARVED).length, 0);
});

test("peer requests are refused unless a registry DP delegated the CSI sends a mapping that verifies", async () => {
  const t = setup();
  t.bulk("bluebird.example", "old", [{ csi: CARVED, ssi: "@old" }]);
  // Before the carve-out, us is not even in the registry.
  const early = carveOut(setup()).peerMapping();
  await rejects(
    () => t.claims.invalidateOlder("dp-us", CARVED, early),
    "permission_denied",
    /not another DP/,
  );
  const { peerMapping } = carveOut(t);
  await rejects(
    () => t.claims.invalidateOlder("dp-eu", CARVED, peerMapping()),
    "permission_denied",
    /not another DP/,
  );
  await rejects(
    () => t.claims.invalidateOlder("dp-us", ALICE, peerMapping()),
    "permission_denied",
    /DP "us" is not delegated this CSI/,
  );
  await rejects(
    () => t.claims.invalidateOlder("dp-us", CARVED, peerMapping({ dpKey: generateSigningKey() })),
    "invalid_argument",
    /countersignature does not verify/,
  );
  await rejects(
    () => t.claims.invalidateOlder("dp-us", CARVED, peerMapping({ proofMethod: "bulk" })),
    "invalid_argument",
    /bulk mapping carries no proof/,
  );
  // A mapping no newer than the ones held de-lists nothing.
  assert.deepEqual(t.claims.invalidateOlder("dp-us", CARVED, peerMapping({ createdAtMs: t.now() - DAY })), {
    removed: 0,
    contested: 0,
  });
  assert.equal(t.store.mappings(CARVED).length, 1);
});

test("one peer DP's first-mapping requests are held to a rate, refused before any check costs", () => {
  const t = setup();
  const { peerMapping } = carveOut(t);
  const m = peerMapping();
  // A DP of the registry whose requests fail their checks spends its share all the same.
  const wrong = peerMapping({ dpKey: generateSigningKey() });
  for (let i = 0; i < PEER_REQUESTS.limit; i++) {
    assert.throws(() => t.claims.invalidateOlder("dp-us", CARVED, wrong), /countersignature does not verify/);
  }
  const e = (() => {
    try {
      t.claims.invalidateOlder("dp-us", CARVED, m);
    } catch (err) {
      return err as DiscoveryError;
    }
    assert.fail("the request past the rate was taken");
  })();
  assert.equal(e.code, "resource_exhausted");
  assert.match(e.message, /DP "us" sent more than 600 first-mapping requests a minute; try again in 1 s/);
  assert.equal(e.details?.reason, PEER_RATE);
  assert.ok((e.details?.retryAfterMs ?? 0) > 0);
  // An identity no registry DP holds is refused for who it is, and remembered by nobody.
  assert.throws(() => t.claims.invalidateOlder("dp-stranger", CARVED, m), /not another DP/);
  // The DP gets one more every 100 ms.
  t.tick(100);
  assert.deepEqual(t.claims.invalidateOlder("dp-us", CARVED, m), { removed: 0, contested: 0 });
});
