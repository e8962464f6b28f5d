// Resolver configuration: parsed by hand, unknown keys rejected, defaults in one place.
import { availableParallelism } from "node:os";
import { resolve } from "node:path";
import {
  ConfigError,
  ConfigReader,
  deepFreeze,
  type EnumerationPolicy,
  MAX_FEDERATED_DPS,
  readEnumerationPolicy,
} from "@mimi/core";
import { readServerBasics, type ServerBasics } from "@mimi/host";
import { DEFAULT_QUOTA_POLICY, LOOKUP_FLOOR_PER_USER_PER_DAY, type QuotaPolicy } from "./quotas.js";

/** Cache bounds. */
export interface CacheConfig {
  readonly maxEntries: number;
  readonly minTtlSeconds: number;
  readonly maxTtlSeconds: number;
  readonly negativeMaxTtlSeconds: number;
  readonly staleWindowSeconds: number;
  readonly staleAnswerTtlSeconds: number;
  /** Fresh hits an answer needs within its TTL to be refreshed before it expires; 0 turns prefetch off. */
  readonly prefetchMinHits: number;
  /** Refresh once less than this percentage of the TTL remains. */
  readonly prefetchPercent: number;
}

/** Validated resolver configuration. */
export interface ResolverConfig extends ServerBasics {
  /** Root endpoints, tried in order with failover. */
  readonly rootEndpoints: readonly string[];
  /** Where the registry copy is saved so a restart while every root is down still resolves; unset: memory only. */
  readonly dataDir: string | undefined;
  readonly cache: CacheConfig;
  /** Deadline of one attempt at one DP endpoint. */
  readonly upstreamTimeoutMs: number;
  /** Certificate identities allowed to call ResolverAdminService (flush, stats). */
  readonly admins: readonly string[];
  /** File holding the pinned root key (trust anchor): the registry and, through it, every answer verify against it. */
  readonly rootPublicKey: string;
  /** Start even when `dataDir` is open to group or others, or owned by another user. */
  readonly allowInsecureDataPermissions: boolean;
  /** Lookup budgets of callers (quotas.ts). */
  readonly quotas: QuotaPolicy;
  /** Enumeration detection over each caller's answers (core runtime/enumeration.ts). */
  readonly enumeration: EnumerationPolicy;
  /** Worker threads that make the Ed25519 checks of DP answers (and, a pool of their own, private lookups' OPRF arithmetic); 0 checks on the event loop. */
  readonly verifyThreads: number;
  /**
   * Lookups that need a DP are refused (RESOURCE_EXHAUSTED, RESOLVER_OVERLOADED) while the
   * event loop runs this many ms late or later (core runtime/loop-delay.ts); cache hits are
   * still answered. 0 (the default) turns the guard off; 100 suits a dedicated machine.
   */
  readonly maxEventLoopDelayMs: number;
  /**
   * Processes serving this resolver's port (host cluster.ts): 1 serves from this process; more
   * run a primary and that many workers, each with its own cache, sharing budgets and
   * enumeration detection. 0 means one per core.
   */
  readonly workers: number;
  /**
   * Most federated DPs one query asks besides the range's own DP (R12, R13): a client's list
   * of more is refused INVALID_ARGUMENT, and of a longer selection the first this many are
   * asked and the answer is marked partial. Each DP asked is one lookup charged to the caller.
   */
  readonly maxFederatedDps: number;
  /**
   * Which DPs are asked privately (issue 16) when a query does not say: every DP (`all`), or
   * those listed in `dps`. Private lookups cost about 4 ms of resolver CPU and 2 ms of DP CPU
   * more than plain ones, and a bucket (4 KiB or more) per lookup.
   */
  readonly privateLookups: { readonly all: boolean; readonly dps: readonly string[] };
}

/** The most workers a resolver runs (see `workers`). */
const MAX_WORKERS = 32;

const DEFAULTS = {
  host: "127.0.0.1",
  port: 7600,
  upstreamTimeoutMs: 1_500,
  // Off by default: on a machine shared with other work, the loop can run 100 ms late for reasons
  // that are not this resolver's load, and every miss would be refused meanwhile.
  maxEventLoopDelayMs: 0,
  maxFederatedDps: 8,
  cache: {
    maxEntries: 1_000_000,
    minTtlSeconds: 5,
    maxTtlSeconds: 86_400,
    negativeMaxTtlSeconds: 300,
    staleWindowSeconds: 86_400,
    staleAnswerTtlSeconds: 30,
    prefetchMinHits: 2,
    prefetchPercent: 10,
  },
} as const;

/**
 * Parses a resolver config; relative paths resolve against `baseDir`. `cores` sets the default
 * of `verifyThreads` (every core but the one the event loop runs on) and what `workers: 0` means.
 */
export function parseConfig(raw: unknown, baseDir = ".", cores = availableParallelism()): ResolverConfig {
  const r = ConfigReader.of(raw);
  const dataDir = r.optionalString("dataDir");
  const c = r.object("cache", { optional: true });
  const d = DEFAULTS.cache;
  const cache: CacheConfig = {
    maxEntries: c.integer("maxEntries", d.maxEntries, 1, 100_000_000),
    minTtlSeconds: c.integer("minTtlSeconds", d.minTtlSeconds, 0, 86_400),
    maxTtlSeconds: c.integer("maxTtlSeconds", d.maxTtlSeconds, 1, 7 * 86_400),
    negativeMaxTtlSeconds: c.integer("negativeMaxTtlSeconds", d.negativeMaxTtlSeconds, 0, 86_400),
    staleWindowSeconds: c.integer("staleWindowSeconds", d.staleWindowSeconds, 0, 7 * 86_400),
    staleAnswerTtlSeconds: c.integer("staleAnswerTtlSeconds", d.staleAnswerTtlSeconds, 1, 3_600),
    prefetchMinHits: c.integer("prefetchMinHits", d.prefetchMinHits, 0, 1_000_000),
    prefetchPercent: c.integer("prefetchPercent", d.prefetchPercent, 1, 90),
  };
  c.done();
  if (cache.minTtlSeconds > cache.maxTtlSeconds)
    throw new ConfigError("config.cache.minTtlSeconds exceeds maxTtlSeconds");
  // At most 32: each worker holds its own change subscription to every DP, and a DP allows 64
  // watchers per identity; and each flush interval the primary sends every worker its batch.
  const workersRaw = r.integer("workers", 1, 0, MAX_WORKERS);
  const workers = workersRaw === 0 ? Math.min(cores, MAX_WORKERS) : workersRaw;
  const config: ResolverConfig = {
    ...readServerBasics(r, baseDir, DEFAULTS),
    rootEndpoints: r.stringList("rootEndpoints", undefined, { nonEmpty: true }),
    dataDir: dataDir === undefined ? undefined : resolve(baseDir, dataDir),
    cache,
    upstreamTimeoutMs: r.integer("upstreamTimeoutMs", DEFAULTS.upstreamTimeoutMs, 50, 60_000),
    admins: r.stringList("admins", []),
    rootPublicKey: resolve(baseDir, r.string("rootPublicKey")),
    allowInsecureDataPermissions: r.boolean("allowInsecureDataPermissions", false),
    quotas: readQuotas(r.object("quotas", { optional: true })),
    enumeration: readEnumerationPolicy(r.object("enumeration", { optional: true })),
    // Alone, every core but the event loop's; as one of several workers, one thread each.
    verifyThreads: r.integer("verifyThreads", workers === 1 ? Math.max(1, cores - 1) : 1, 0, 256),
    maxEventLoopDelayMs: r.integer("maxEventLoopDelayMs", DEFAULTS.maxEventLoopDelayMs, 0, 60_000),
    workers,
    maxFederatedDps: r.integer("maxFederatedDps", DEFAULTS.maxFederatedDps, 0, MAX_FEDERATED_DPS),
    privateLookups: readPrivateLookups(r.object("privateLookups", { optional: true })),
  };
  r.done();
  if (config.workers > 1 && !config.dataDir)
    throw new ConfigError(
      `config.workers is ${config.workers} but dataDir is unset: the workers share the key of their rate-limit contexts through the data folder; set dataDir`,
    );
  return deepFreeze(config);
}

function readPrivateLookups(r: ConfigReader): ResolverConfig["privateLookups"] {
  const c = { all: r.boolean("all", false), dps: r.stringList("dps", []) };
  r.done();
  return c;
}

function readQuotas(r: ConfigReader): QuotaPolicy {
  const d = DEFAULT_QUOTA_POLICY;
  const users = r.object("enrolledUsers", { optional: true });
  const enrolledUsers: Record<string, number> = {};
  for (const identity of users.keys())
    enrolledUsers[identity] = users.integer(identity, 0, 1, 10_000_000_000);
  users.done();
  const policy: QuotaPolicy = {
    lookupsPerUserPerDay: r.integer(
      "lookupsPerUserPerDay",
      d.lookupsPerUserPerDay,
      LOOKUP_FLOOR_PER_USER_PER_DAY,
      1_000_000,
    ),
    burstFactor: r.integer("burstFactor", d.burstFactor, 1, 1_440),
    perMinuteFloor: r.integer("perMinuteFloor", d.perMinuteFloor, 1, 10_000_000),
    enrolledUsers,
    defaultEnrolledUsers: r.integer("defaultEnrolledUsers", d.defaultEnrolledUsers, 1, 10_000_000_000),
    fanOutCostPerExtraDp: r.integer("fanOutCostPerExtraDp", d.fanOutCostPerExtraDp, 1, 1_000),
  };
  r.done();
  return policy;
}
