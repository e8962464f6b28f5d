import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { DEFAULT_CLAIM_LIMITS } from "./claims/index.js";
import { answerCacheProblem, parseConfig } from "./config.js";

const example = () =>
  JSON.parse(
    readFileSync(new URL("../../../deploy/examples/authoritative-eu.json", import.meta.url), "utf8"),
  );

test("the deploy example parses", () => {
  const config = parseConfig(example(), "/etc/mimi");
  assert.equal(config.tls.caFile, "/etc/mimi/tls/ca.pem");
  assert.equal(config.signingKey, "/etc/mimi/keys/dp-eu-signing.pem");
  assert.equal(config.rootPublicKey, "/etc/mimi/keys/root-signing.pub");
  assert.deepEqual(config.delivery, {
    email: {
      kind: "smtp",
      host: "smtp-relay.dp-eu.mimi.example",
      port: 587,
      secure: false,
      requireTls: true,
      from: "MIMI discovery <codes@dp-eu.mimi.example>",
      timeoutMs: 10_000,
    },
    tel: { kind: "http", url: "https://sms-gateway.dp-eu.mimi.example/v1/messages", timeoutMs: 5_000 },
    outboxDir: "/var/lib/mimi/dp-eu/outbox",
  });
  assert.deepEqual(config.claims, {
    codeLength: 6,
    codeTtlMs: 600_000,
    maxAttempts: 5,
    contestWindowMs: 7 * 86_400_000,
    mappingLifetimeMs: 365 * 86_400_000,
    proofRanking: ["bulk", "email-code", "sms-code"],
    noticeRetentionMs: 30 * 86_400_000,
    maxMappingsPerCsi: 16,
    maxMappingsPerCsiPerMsp: 4,
    limits: {
      codesPerCsiPerHour: 3,
      codesPerCsiPerDay: 10,
      sharedCodesPerCsiPerHour: 10,
      sharedCodesPerCsiPerDay: 30,
      mspCodesPerThousandUsersPerDay: 50,
      mspCodesPerDayFloor: 100,
      smsCodesPerHour: 1_000,
      emailCodesPerHour: 10_000,
      mspSharePercentOfChannel: 25,
      failuresPerCsiPerHour: 10,
    },
  });
  assert.deepEqual(parseConfig({ ...example(), claims: {} }).claims.limits, DEFAULT_CLAIM_LIMITS);
  assert.throws(
    () => parseConfig({ ...example(), claims: { limits: { codesPerCsiPerHour: 5, codesPerCsiPerDay: 4 } } }),
    /codesPerCsiPerDay must be at least codesPerCsiPerHour/,
  );
  assert.throws(
    () => parseConfig({ ...example(), claims: { limits: { smsCodesPerHour: 0 } } }),
    /smsCodesPerHour/,
  );
  // The per-number budgets keep a day of the channels' codes in memory: bounded by these.
  for (const key of ["smsCodesPerHour", "emailCodesPerHour"]) {
    assert.throws(
      () => parseConfig({ ...example(), claims: { limits: { [key]: 10_001 } } }),
      new RegExp(key),
    );
  }
  assert.equal(config.sweepIntervalMs, 5_000);
  assert.ok(Object.isFrozen(config));
  assert.ok(Object.isFrozen(config.delivery.email));
  assert.ok(Object.isFrozen(config.claims.proofRanking));
});

test("the DP's signing key and the pinned root key are required", () => {
  for (const key of ["signingKey", "rootPublicKey"]) {
    const raw = example();
    delete raw[key];
    assert.throws(() => parseConfig(raw, "/etc/mimi"), new RegExp(`${key} must be a non-empty string`));
  }
  const relative = parseConfig(
    { ...example(), signingKey: "dp.pem", rootPublicKey: "root.pub" },
    "/srv/mimi",
  );
  assert.equal(relative.signingKey, "/srv/mimi/dp.pem");
  assert.equal(relative.rootPublicKey, "/srv/mimi/root.pub");
});

test("delivery, claims and the sweep interval are optional and take defaults", () => {
  const { delivery: _d, claims: _c, sweepIntervalSeconds: _s, ...rest } = example();
  const config = parseConfig(rest, "/etc/mimi");
  assert.deepEqual(config.delivery, {
    email: { kind: "outbox" },
    tel: { kind: "outbox" },
    outboxDir: "/var/lib/mimi/dp-eu/outbox",
  });
  assert.equal(config.claims.codeLength, 6);
  assert.equal(config.claims.mappingLifetimeMs, 365 * 86_400_000);
  assert.deepEqual(config.claims.proofRanking, ["bulk", "email-code", "sms-code"]);
  assert.deepEqual([config.claims.maxMappingsPerCsi, config.claims.maxMappingsPerCsiPerMsp], [16, 4]);
  assert.equal(config.sweepIntervalMs, 5_000);
});

test("a lower maxMappingsPerCsi alone lowers the per-MSP default with it", () => {
  const { maxMappingsPerCsiPerMsp: _set, ...claims } = example().claims as Record<string, unknown>;
  const config = parseConfig({ ...example(), claims: { ...claims, maxMappingsPerCsi: 3 } });
  assert.deepEqual([config.claims.maxMappingsPerCsi, config.claims.maxMappingsPerCsiPerMsp], [3, 3]);
});

test("bad delivery and claims settings are refused, naming the key", () => {
  const raw = example();
  const cases: [unknown, RegExp][] = [
    [{ ...raw, claims: { ...raw.claims, proofRanking: ["sms-code", "carrier-pigeon"] } }, /carrier-pigeon/],
    [{ ...raw, claims: { ...raw.claims, proofRanking: [] } }, /proofRanking must not be empty/],
    [{ ...raw, claims: { ...raw.claims, codeLength: 4 } }, /codeLength/],
    [{ ...raw, claims: { ...raw.claims, maxAttempts: 0 } }, /maxAttempts/],
    [{ ...raw, claims: { ...raw.claims, codeTtl: 60 } }, /unknown key: codeTtl/],
    [{ ...raw, claims: { ...raw.claims, maxMappingsPerCsi: 25 } }, /maxMappingsPerCsi/],
    [
      { ...raw, claims: { ...raw.claims, maxMappingsPerCsi: 4, maxMappingsPerCsiPerMsp: 5 } },
      /maxMappingsPerCsiPerMsp must be at most maxMappingsPerCsi/,
    ],
    [{ ...raw, sweepIntervalSeconds: 0 }, /sweepIntervalSeconds/],
    [{ ...raw, delivery: { ...raw.delivery, sms: {} } }, /unknown key: sms/],
    [
      { ...raw, delivery: { ...raw.delivery, email: { ...raw.delivery.email, kind: "pigeon" } } },
      /delivery.email.kind/,
    ],
    [
      { ...raw, delivery: { ...raw.delivery, tel: { ...raw.delivery.tel, url: "ftp://gw.example" } } },
      /delivery.tel.url/,
    ],
    [
      { ...raw, delivery: { ...raw.delivery, email: { ...raw.delivery.email, user: "codes" } } },
      /set together/,
    ],
  ];
  for (const [bad, reason] of cases) assert.throws(() => parseConfig(bad, "/etc/mimi"), reason);
});

test("with private lookups on, a lookup limit below the largest Evaluate's cost is refused", () => {
  const on = { enabled: true };
  for (const [key, least] of [
    ["capacityPerSecond", 640],
    ["perResolverPerSecond", 640],
    ["perContextPerMinute", 32],
    ["perContextPerDay", 32],
    ["ownPerMinute", 32],
    ["ownPerDay", 32],
  ] as const) {
    const at = (n: number) => ({ ...example(), privateLookups: on, lookupLimits: { [key]: n } });
    assert.throws(
      () => parseConfig(at(least - 1)),
      new RegExp(`lookupLimits.${key} \\(${least - 1}\\) must be at least ${least}`),
    );
    assert.equal(parseConfig(at(least)).lookupLimits[key], least);
    // Off, the limit is the operator's alone.
    assert.equal(
      parseConfig({ ...at(least - 1), privateLookups: { enabled: false } }).lookupLimits[key],
      least - 1,
    );
  }
});

test("unknown keys and out-of-range values are refused", () => {
  assert.throws(() => parseConfig({ ...example(), prot: 1 }), /unknown key: prot/);
  assert.throws(() => parseConfig({ ...example(), port: 70000 }), /port must be an integer/);
  assert.throws(() => parseConfig({ ...example(), logLevel: "loud" }), /logLevel/);
});

test("answer seals last an hour by default, at least the longest TTL and at most the published maximum", () => {
  assert.equal(parseConfig(example()).answerSealSeconds, 3_600);
  assert.equal(
    parseConfig({ ...example(), answerTtlSeconds: 7_200 }).answerSealSeconds,
    7_200,
    "at least the TTL",
  );
  assert.equal(
    parseConfig({ ...example(), answerTtlSeconds: 600, answerSealSeconds: 600 }).answerSealSeconds,
    600,
  );
  assert.throws(
    () => parseConfig({ ...example(), answerTtlSeconds: 600, answerSealSeconds: 599 }),
    /answerSealSeconds \(599\) must be at least the longest TTL given \(600\)/,
  );
  assert.throws(() => parseConfig({ ...example(), answerSealSeconds: 7 * 86_400 + 1 }), /answerSealSeconds/);
});

test("rounds of seal signing are paced 1 ms apart by default; 0 to 20 ms", () => {
  assert.equal(parseConfig(example()).sealBatchWaitMs, 1);
  assert.equal(parseConfig({ ...example(), sealBatchWaitMs: 0 }).sealBatchWaitMs, 0);
  for (const bad of [-1, 21, 0.5]) {
    assert.throws(() => parseConfig({ ...example(), sealBatchWaitMs: bad }), /sealBatchWaitMs/);
  }
});

test("an answer cache may take at most half of the heap's limit", () => {
  const limit = 4096 * 2 ** 20;
  assert.equal(answerCacheProblem(64, limit), undefined);
  assert.equal(answerCacheProblem(2048, limit), undefined);
  assert.match(
    answerCacheProblem(2049, limit) ?? "",
    /answerCacheMegabytes \(2049\) is more than half .*\(4096 MB\)/,
  );
});

test("the answer cache holds 64 MB by default; 0 turns it off", () => {
  assert.equal(parseConfig(example()).answerCacheMegabytes, 64);
  assert.equal(parseConfig({ ...example(), answerCacheMegabytes: 0 }).answerCacheMegabytes, 0);
  for (const bad of [-1, 65_537, 1.5, "64"]) {
    assert.throws(() => parseConfig({ ...example(), answerCacheMegabytes: bad }), /answerCacheMegabytes/);
  }
});

test("seals are batched up to 256 answers a signature by default; 1 signs each alone", () => {
  assert.equal(parseConfig(example()).sealBatchMax, 256);
  assert.equal(parseConfig({ ...example(), sealBatchMax: 1 }).sealBatchMax, 1);
  for (const bad of [0, 257, 2.5]) {
    assert.throws(() => parseConfig({ ...example(), sealBatchMax: bad }), /sealBatchMax/);
  }
});
