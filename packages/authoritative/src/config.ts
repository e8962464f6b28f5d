// Authoritative configuration: parsed by hand, unknown keys rejected, defaults in one place.
import { availableParallelism } from "node:os";
import { resolve } from "node:path";
import {
  ConfigError,
  ConfigReader,
  deepFreeze,
  type EnumerationPolicy,
  isJurisdictionCode,
  MAX_ANSWER_SEAL_SECONDS,
  MAX_MAPPING_LIFETIME_DAYS,
  MAX_OPRF_BATCH,
  MAX_SEAL_BATCH,
  PROOF_METHODS,
  readEnumerationPolicy,
} from "@mimi/core";
import { readServerBasics, type ServerBasics } from "@mimi/host";
import { type ClaimLimits, type ClaimPolicy, DEFAULT_CLAIM_LIMITS } from "./claims/index.js";
import { type DeliveryConfig, readDeliverySection } from "./delivery-config.js";
import { type LookupLimitPolicy, readLookupLimits } from "./lookup-limits.js";
import { EVALUATION_LOAD } from "./private-server.js";
import { DEFAULT_REPLICATION, type ReplicationConfig } from "./replication/index.js";
import { DEFAULT_ANSWER_CACHE_BYTES, DEFAULT_SEAL_BATCH_WAIT_MS } from "./service.js";
import type { Durability } from "./store/store.js";

/** Validated authoritative configuration. */
export interface AuthoritativeConfig extends ServerBasics {
  /** This DP's id in the root registry; it answers for the ranges delegated to this id. */
  readonly dpId: string;
  /** Folder holding mappings.sqlite and the saved registry copy; keep it in the DP's jurisdiction (H2). */
  readonly dataDir: string;
  readonly rootEndpoints: readonly string[];
  /** Certificate identities allowed to call AuthoritativeAdminService. */
  readonly admins: readonly string[];
  readonly answerTtlSeconds: number;
  readonly negativeTtlSeconds: number;
  /**
   * How long the seal of an answer stays valid: the longest a replayed answer (or a superseded
   * default flag) passes as current, and the longest a resolver may serve it stale.
   */
  readonly answerSealSeconds: number;
  /**
   * The most answers one seal signature covers (SealBatch in common.proto); 1 signs each alone,
   * for a network whose verifiers predate batched seals (upgrade them first, then raise it).
   */
  readonly sealBatchMax: number;
  /**
   * Under load, rounds of seal signing start at least this many ms apart, so a signature covers
   * the lookups of that long (seal-batcher.ts); 0 signs what each turn of the event loop read.
   */
  readonly sealBatchWaitMs: number;
  /**
   * Megabytes of answers kept ready in memory for the CSIs looked up most recently (answer-cache.ts);
   * 0 reads every lookup from the store.
   */
  readonly answerCacheMegabytes: number;
  /** PEM Ed25519 private key the DP countersigns mappings with; the root registry publishes its public key. */
  readonly signingKey: string;
  /** File holding the root's public key; the registry copy must be signed by it. */
  readonly rootPublicKey: string;
  /** How codes reach the CSI (SMTP, an SMS gateway, or the outbox folder). */
  readonly delivery: DeliveryConfig;
  readonly claims: ClaimPolicy;
  /** How often conflicts past their deadline are settled and expired state removed. */
  readonly sweepIntervalMs: number;
  /** How long change-log events are kept; a resolver disconnected longer must resync. */
  readonly changeLogRetentionMs: number;
  /**
   * The false-positive rate the DP sizes its CSI filter for (csi-filter.ts), in parts per
   * million (10,000: 1%): the share of lookups of CSIs it does not hold that resolvers still
   * send it. Lower costs filter memory: about 9.6 bits per CSI at 1%, 14.4 at 0.1%.
   */
  readonly filterFalsePositivePpm: number;
  /** "full" (default): a commit is on disk before it is acknowledged; see Durability in store.ts. */
  readonly durability: Durability;
  /** Start even when the data folder or a store file is open to group or others, or owned by another user. */
  readonly allowInsecureDataPermissions: boolean;
  /** Worker threads that verify bulk batches' signatures; 0 verifies on the event loop. */
  readonly bulkVerifyThreads: number;
  /** What reaches the store: capacity, per calling resolver, per rate-limit context (lookup-limits.ts). */
  readonly lookupLimits: LookupLimitPolicy;
  /** Enumeration detection per rate-limit context (core runtime/enumeration.ts). */
  readonly enumeration: EnumerationPolicy;
  /** Private lookups (private-table.ts); off unless the config turns them on. */
  readonly privateLookups: PrivateLookupConfig;
  /** Primary and secondaries of one DP (replication/). */
  readonly replication: ReplicationConfig;
}

/** The private-lookup table: built at start when enabled (about 2 ms of CPU per CSI). */
export interface PrivateLookupConfig {
  readonly enabled: boolean;
  /** How long an entry's answer seal lasts (renewed at half of it); at most the 7 days of any seal. */
  readonly entrySealSeconds: number;
  /** How long a key the registry stopped publishing is still served before it is deleted (private-keys.ts). */
  readonly retireAfterSeconds: number;
  /** A key older than this many days is rolled by the DP itself; 0: only an operator rolls. */
  readonly keyLifetimeDays: number;
  /** Worker threads for the OPRF arithmetic (table builds, Evaluate); 0 computes on the event loop. */
  readonly threads: number;
}

/**
 * The highest maxMappingsPerCsi may be set: an answer of that many mappings of the largest
 * size allowed (an SSI of 256 characters, 8 tags of 32, 64-character ids: about 2 KB each with
 * the record, its three signatures and the seal's line) still fits one private-lookup entry
 * (MAX_ENTRY_PLAINTEXT, 64 KiB), far below gRPC's 4 MiB message limit.
 */
const MAX_MAPPINGS_PER_CSI = 24;

const DEFAULTS = {
  host: "127.0.0.1",
  port: 7500,
  answerTtlSeconds: 300,
  negativeTtlSeconds: 60,
  answerSealSeconds: 3_600,
  codeLength: 6,
  codeTtlSeconds: 600,
  maxAttempts: 5,
  contestWindowSeconds: 7 * 86_400,
  mappingLifetimeDays: 365,
  noticeRetentionDays: 30,
  maxMappingsPerCsi: 16,
  maxMappingsPerCsiPerMsp: 4,
  sweepIntervalSeconds: 5,
  changeLogRetentionSeconds: 86_400,
  filterFalsePositivePpm: 10_000,
  durability: "full",
  answerCacheMegabytes: DEFAULT_ANSWER_CACHE_BYTES / 2 ** 20,
  sealBatchWaitMs: DEFAULT_SEAL_BATCH_WAIT_MS,
} as const;

/**
 * Parses an authoritative config; relative paths resolve against `baseDir`. `cores` sets the
 * default of `bulkVerifyThreads`: every core but the one the event loop runs on.
 */
export function parseConfig(
  raw: unknown,
  baseDir = ".",
  cores = availableParallelism(),
): AuthoritativeConfig {
  const r = ConfigReader.of(raw);
  const dataDir = resolve(baseDir, r.string("dataDir"));
  const answerTtlSeconds = r.integer("answerTtlSeconds", DEFAULTS.answerTtlSeconds, 0, 86_400);
  const negativeTtlSeconds = r.integer("negativeTtlSeconds", DEFAULTS.negativeTtlSeconds, 0, 3_600);
  // A seal must outlive the TTL it comes with, or a resolver could not cache the answer that
  // long; by default it is an hour, or the longest TTL when that is longer.
  const longestTtl = Math.max(answerTtlSeconds, negativeTtlSeconds);
  const config: AuthoritativeConfig = {
    ...readServerBasics(r, baseDir, DEFAULTS),
    dpId: r.string("dpId"),
    dataDir,
    rootEndpoints: r.stringList("rootEndpoints", undefined, { nonEmpty: true }),
    admins: r.stringList("admins", []),
    answerTtlSeconds,
    negativeTtlSeconds,
    answerSealSeconds: r.integer(
      "answerSealSeconds",
      Math.max(DEFAULTS.answerSealSeconds, longestTtl),
      1,
      MAX_ANSWER_SEAL_SECONDS,
    ),
    sealBatchMax: r.integer("sealBatchMax", MAX_SEAL_BATCH, 1, MAX_SEAL_BATCH),
    sealBatchWaitMs: r.integer("sealBatchWaitMs", DEFAULTS.sealBatchWaitMs, 0, 20),
    answerCacheMegabytes: r.integer("answerCacheMegabytes", DEFAULTS.answerCacheMegabytes, 0, 65_536),
    signingKey: resolve(baseDir, r.string("signingKey")),
    rootPublicKey: resolve(baseDir, r.string("rootPublicKey")),
    delivery: readDeliverySection(r.object("delivery", { optional: true }), baseDir, dataDir),
    claims: readClaimsSection(r.object("claims", { optional: true })),
    sweepIntervalMs: r.integer("sweepIntervalSeconds", DEFAULTS.sweepIntervalSeconds, 1, 3_600) * 1000,
    changeLogRetentionMs:
      r.integer("changeLogRetentionSeconds", DEFAULTS.changeLogRetentionSeconds, 1, 30 * 86_400) * 1000,
    filterFalsePositivePpm: r.integer("filterFalsePositivePpm", DEFAULTS.filterFalsePositivePpm, 1, 500_000),
    durability: r.oneOf<Durability>("durability", ["full", "normal"], DEFAULTS.durability),
    allowInsecureDataPermissions: r.boolean("allowInsecureDataPermissions", false),
    bulkVerifyThreads: r.integer("bulkVerifyThreads", Math.max(1, cores - 1), 0, 256),
    lookupLimits: readLookupLimits(r.object("lookupLimits", { optional: true })),
    enumeration: readEnumerationPolicy(r.object("enumeration", { optional: true })),
    privateLookups: readPrivateLookups(r.object("privateLookups", { optional: true }), cores),
    replication: readReplication(r.object("replication", { optional: true })),
  };
  r.done();
  const batchProblem = config.privateLookups.enabled && privateBatchProblem(config.lookupLimits);
  if (batchProblem) throw new ConfigError(batchProblem);
  if (config.answerSealSeconds < longestTtl) {
    throw new ConfigError(
      `config.answerSealSeconds (${config.answerSealSeconds}) must be at least the longest TTL given (${longestTtl})`,
    );
  }
  return deepFreeze(config);
}

function readReplication(r: ConfigReader): ReplicationConfig {
  const d = DEFAULT_REPLICATION;
  const c: ReplicationConfig = {
    role: r.oneOf<"primary" | "secondary">("role", ["primary", "secondary"], d.role),
    peers: r.stringList("peers", []),
    followers: r.stringList("followers", []),
    ackFollowers: r.integer("ackFollowers", d.ackFollowers, 0, 16),
    ackTimeoutMs: r.integer("ackTimeoutSeconds", d.ackTimeoutMs / 1000, 1, 600) * 1000,
    heartbeatMs: r.integer("heartbeatSeconds", d.heartbeatMs / 1000, 1, 300) * 1000,
    jurisdiction: r.optionalString("jurisdiction") ?? "",
    endpoint: r.optionalString("endpoint") ?? "",
  };
  r.done();
  if (c.jurisdiction !== "" && !isJurisdictionCode(c.jurisdiction)) {
    throw new ConfigError('config.replication.jurisdiction must be a short code such as "EU" or "US"');
  }
  if (c.role === "secondary" && c.peers.length === 0) {
    throw new ConfigError(
      "config.replication.peers must name the DP's other endpoints when role is secondary",
    );
  }
  if (c.ackFollowers > c.peers.length) {
    throw new ConfigError(
      `config.replication.ackFollowers (${c.ackFollowers}) needs at least as many peers (${c.peers.length} named)`,
    );
  }
  return c;
}

/**
 * Why these limits cannot admit the largest Evaluate (MAX_OPRF_BATCH elements, EVALUATION_LOAD
 * each against the capacity and a resolver's rate, one each against a context's budgets, or the
 * resolver's own for a batch without a context), if they cannot: a batch costing more than a
 * whole budget would be refused for good, and resolvers send batches that large.
 */
function privateBatchProblem(l: LookupLimitPolicy): string | undefined {
  const load = MAX_OPRF_BATCH * EVALUATION_LOAD;
  const limits: [string, number, number][] = [
    ["capacityPerSecond", l.capacityPerSecond, load],
    ["perResolverPerSecond", l.perResolverPerSecond, load],
    ["perContextPerMinute", l.perContextPerMinute, MAX_OPRF_BATCH],
    ["perContextPerDay", l.perContextPerDay, MAX_OPRF_BATCH],
    ["ownPerMinute", l.ownPerMinute, MAX_OPRF_BATCH],
    ["ownPerDay", l.ownPerDay, MAX_OPRF_BATCH],
  ];
  for (const [key, value, least] of limits) {
    if (value !== 0 && value < least) {
      return `config.lookupLimits.${key} (${value}) must be at least ${least} while private lookups are enabled: an Evaluate of ${MAX_OPRF_BATCH} elements counts ${least} against it, and would be refused for good`;
    }
  }
  return undefined;
}

function readPrivateLookups(r: ConfigReader, cores: number): PrivateLookupConfig {
  const c: PrivateLookupConfig = {
    enabled: r.boolean("enabled", false),
    entrySealSeconds: r.integer("entrySealSeconds", 86_400, 600, MAX_ANSWER_SEAL_SECONDS),
    retireAfterSeconds: r.integer("retireAfterSeconds", 3_600, 0, 30 * 86_400),
    keyLifetimeDays: r.integer("keyLifetimeDays", 0, 0, 3_650),
    threads: r.integer("threads", Math.max(1, cores - 1), 0, 256),
  };
  r.done();
  return c;
}

function readClaimsSection(r: ConfigReader): ClaimPolicy {
  const ranking = r.stringList("proofRanking", [...PROOF_METHODS], { nonEmpty: true });
  for (const m of ranking) {
    if (!(PROOF_METHODS as readonly string[]).includes(m)) {
      throw new ConfigError(
        `config.claims.proofRanking: unknown proof method "${m}" (known: ${PROOF_METHODS.join(", ")})`,
      );
    }
  }
  const perCsi = r.integer("maxMappingsPerCsi", DEFAULTS.maxMappingsPerCsi, 1, MAX_MAPPINGS_PER_CSI);
  const policy: ClaimPolicy = {
    codeLength: r.integer("codeLength", DEFAULTS.codeLength, 6, 10),
    codeTtlMs: r.integer("codeTtlSeconds", DEFAULTS.codeTtlSeconds, 30, 3_600) * 1000,
    maxAttempts: r.integer("maxAttempts", DEFAULTS.maxAttempts, 1, 10),
    contestWindowMs: r.integer("contestWindowSeconds", DEFAULTS.contestWindowSeconds, 1, 90 * 86_400) * 1000,
    mappingLifetimeMs:
      r.integer("mappingLifetimeDays", DEFAULTS.mappingLifetimeDays, 1, MAX_MAPPING_LIFETIME_DAYS) *
      86_400_000,
    proofRanking: ranking,
    noticeRetentionMs: r.integer("noticeRetentionDays", DEFAULTS.noticeRetentionDays, 1, 365) * 86_400_000,
    maxMappingsPerCsi: perCsi,
    // Its default never above the total: setting only maxMappingsPerCsi lower must not fail.
    maxMappingsPerCsiPerMsp: r.integer(
      "maxMappingsPerCsiPerMsp",
      Math.min(DEFAULTS.maxMappingsPerCsiPerMsp, perCsi),
      1,
      MAX_MAPPINGS_PER_CSI,
    ),
    limits: readClaimLimits(r.object("limits", { optional: true })),
  };
  r.done();
  if (policy.maxMappingsPerCsiPerMsp > policy.maxMappingsPerCsi) {
    throw new ConfigError("config.claims.maxMappingsPerCsiPerMsp must be at most maxMappingsPerCsi");
  }
  return policy;
}

/** claims.limits: every budget of the code flow (claims/throttle.ts), each with its default. */
function readClaimLimits(r: ConfigReader): ClaimLimits {
  const d = DEFAULT_CLAIM_LIMITS;
  const n = (key: keyof ClaimLimits, max: number) => r.integer(key, d[key], 1, max);
  const limits: ClaimLimits = {
    codesPerCsiPerHour: n("codesPerCsiPerHour", 100),
    codesPerCsiPerDay: n("codesPerCsiPerDay", 1_000),
    sharedCodesPerCsiPerHour: n("sharedCodesPerCsiPerHour", 1_000),
    sharedCodesPerCsiPerDay: n("sharedCodesPerCsiPerDay", 10_000),
    mspCodesPerThousandUsersPerDay: n("mspCodesPerThousandUsersPerDay", 1_000_000),
    mspCodesPerDayFloor: n("mspCodesPerDayFloor", 10_000_000),
    // The per-number budgets keep a day of the channels' attempts in memory (claims/throttle.ts,
    // 162 bytes a key): at these maxima up to 2.7M keys, 445 MB, in all.
    smsCodesPerHour: n("smsCodesPerHour", 10_000),
    emailCodesPerHour: n("emailCodesPerHour", 10_000),
    mspSharePercentOfChannel: n("mspSharePercentOfChannel", 100),
    failuresPerCsiPerHour: n("failuresPerCsiPerHour", 1_000),
  };
  r.done();
  if (limits.codesPerCsiPerDay < limits.codesPerCsiPerHour) {
    throw new ConfigError("config.claims.limits.codesPerCsiPerDay must be at least codesPerCsiPerHour");
  }
  return limits;
}

/**
 * Why an answer cache of `megabytes` cannot run in a heap of `heapLimitBytes` (V8's
 * heap_size_limit), or undefined: it may take at most half, or a DP whose lookups fill it
 * would run out of memory before the cache evicts anything.
 */
export function answerCacheProblem(megabytes: number, heapLimitBytes: number): string | undefined {
  const most = Math.floor(heapLimitBytes / 2 / 2 ** 20);
  if (megabytes <= most) return undefined;
  return `config.answerCacheMegabytes (${megabytes}) is more than half of this process's heap limit (${most * 2} MB): lower it, or raise the limit (node --max-old-space-size)`;
}
