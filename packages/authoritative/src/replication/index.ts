// A DP endpoint's part in replication (issue 17), wired together: its role and epoch (role.ts),
// the Follow and Fence service (source.ts), the follower it runs while it is not the primary
// (replica.ts), the wait of writes for their followers (acks.ts) and promotion (promote.ts).
import type * as grpc from "@grpc/grpc-js";
import {
  type Clock,
  DiscoveryError,
  type DpInfo,
  jurisdictionOfEndpoint,
  type KeyDirectory,
  type Logger,
  pb,
} from "@mimi/core";
import { type Channel, counterFrom, gaugeFrom } from "@mimi/rpc";
import type { ChangeLog } from "../change-log.js";
import type { EpochKeys } from "../private-table.js";
import type { MappingStore } from "../store/store.js";
import { createFollowers, type FollowerStatus } from "./acks.js";
import { type PeerFence, promote } from "./promote.js";
import { type Replica, type ReplicaStatus, startReplica } from "./replica.js";
import { openRole, type RoleName } from "./role.js";
import { bindReplicationServer } from "./source.js";

/** The replication section of the config. */
export interface ReplicationConfig {
  /** The role a new store starts in; a store keeps the role it has (promotion changes it). */
  readonly role: "primary" | "secondary";
  /** The DP's other endpoints ("host:port"): secondaries follow whichever is primary. */
  readonly peers: readonly string[];
  /** Identities allowed to follow and fence besides the DP's own (the registry's tls_identity). */
  readonly followers: readonly string[];
  /** Secondaries that must hold a write before it is acknowledged (0: the primary's disk only). */
  readonly ackFollowers: number;
  readonly ackTimeoutMs: number;
  /** How often an idle follower hears from the primary, and the primary checks its peers' epochs. */
  readonly heartbeatMs: number;
  /**
   * The jurisdiction this endpoint's machine is in (H2): it follows, and serves, only a DP the
   * registry places there; "" checks nothing.
   */
  readonly jurisdiction: string;
  /**
   * This endpoint's address as the registry lists it among the DP's endpoints; "" when not
   * given. Given, the registry's jurisdiction of this endpoint is the one checked, and a primary
   * sends nothing to it while the registry does not list it.
   */
  readonly endpoint: string;
}

/** The longest TTL a secondary out of touch with its primary gives its answers. */
export const OUT_OF_TOUCH_TTL_SECONDS = 30;

/** How long a secondary that voted for a candidate follows it first (Raft's wait for a leader). */
const FOLLOW_CANDIDATE_MS = 30_000;

export const DEFAULT_REPLICATION: ReplicationConfig = {
  role: "primary",
  peers: [],
  followers: [],
  ackFollowers: 0,
  ackTimeoutMs: 10_000,
  heartbeatMs: 5_000,
  jurisdiction: "",
  endpoint: "",
};

/** What GetStatus and metrics show. */
export interface ReplicationStatus {
  readonly role: RoleName;
  readonly epoch: number;
  /** The last change of the DP's log this endpoint holds. */
  readonly appliedSeq: number;
  readonly followers: readonly FollowerStatus[];
  readonly replica: ReplicaStatus | undefined;
}

/** A running endpoint's replication. */
export interface Replication {
  /** Throws unless this endpoint may write now (primary, peers checked, enough followers). */
  beforeWrite(): void;
  /** Waits until `ackFollowers` followers hold everything committed so far. */
  afterWrite(signal?: AbortSignal): Promise<void>;
  isPrimary(): boolean;
  /** Throws FAILED_PRECONDITION naming the primary unless this endpoint is it. */
  requirePrimary(): void;
  /** Why lookups cannot be answered from this store yet (a secondary without a whole copy). */
  storeProblem(): string | undefined;
  /**
   * The longest TTL answers may carry now: OUT_OF_TOUCH_TTL_SECONDS on a secondary that may lag
   * its primary by more than a few heartbeats; undefined otherwise.
   */
  answerTtlCap(): number | undefined;
  /** Resolves once lookups can be answered from this store (at once on a primary). */
  whenServing(): Promise<void>;
  promote(force: boolean): Promise<{ epoch: number; peers: PeerFence[] }>;
  status(): ReplicationStatus;
  /** Drops writer-log events older than the retention window (the sweep's). */
  prune(): number;
  /** Starts following, or checking peers, once the registry's keys are there. */
  start(keys: KeyDirectory): void;
  close(): void;
}

export interface ReplicationOptions {
  config: ReplicationConfig;
  server: grpc.Server;
  store: MappingStore;
  changeLog: ChangeLog;
  dpId: string;
  /** The identity the registry publishes for this DP (its endpoints all present it). */
  dpIdentity: () => string | undefined;
  /** The registry's entry of this DP. */
  dpRecord: () => DpInfo | undefined;
  channel: (endpoint: string) => Channel;
  /** Runs after a secondary copied the whole store (the CSI filter is built again). */
  onCopied?: () => void;
  /**
   * This endpoint's private-lookup keys (undefined when it serves no private lookups): a primary
   * sends them to its followers, a secondary adopts its primary's.
   */
  privateKeys?: {
    held: () => readonly EpochKeys[] | undefined;
    subscribe: (wake: () => void) => () => void;
    /** Takes the primary's keys (absent: this endpoint serves no private lookups and asks for none). */
    adopt?: (keys: EpochKeys[]) => void;
  };
  /** Keeps the primary's change-hash key as this endpoint's own. */
  setHashKey: (key: Uint8Array) => void;
  /** How long log events are kept (changeLogRetentionSeconds): a follower further behind copies. */
  retentionMs: number;
  clock: Clock;
  log: Logger;
}

/** Wake-ups after commits to the writer log, for any number of Follow streams. */
export function writerSubscriptions(store: MappingStore): (wake: () => void) => () => void {
  const wakes = new Set<() => void>();
  store.onWriterLogged(() => {
    for (const w of wakes) w();
  });
  return (wake) => {
    const entry = () => wake();
    wakes.add(entry);
    return () => wakes.delete(entry);
  };
}

export function startReplication(o: ReplicationOptions): Replication {
  const { config, store } = o;
  const log = o.log.child({ component: "replication" });
  const role = openRole(store, config.role, { log: o.log, peers: config.peers });
  const followers = createFollowers({
    now: o.clock,
    timeoutMs: config.ackTimeoutMs,
    freshMs: 3 * config.heartbeatMs,
  });
  // The candidate this endpoint last voted for, when it named its address.
  let elected: { epoch: number; endpoint: string; atMs: number } | undefined;
  // Where the registry places one of this DP's endpoints ("": the DP itself); undefined when
  // it does not list the endpoint (or the DP).
  const placeOf = (endpoint: string) => {
    const dp = o.dpRecord();
    if (!dp) return undefined;
    return endpoint === "" ? dp.jurisdiction : jurisdictionOfEndpoint(dp, endpoint);
  };
  const allowed = () => {
    const ids = new Set(config.followers);
    const own = o.dpIdentity();
    if (own) ids.add(own);
    return ids;
  };
  bindReplicationServer(o.server, {
    store,
    changeLog: o.changeLog,
    role,
    followers,
    dpId: o.dpId,
    allowed,
    heartbeatMs: config.heartbeatMs,
    now: o.clock,
    log: o.log,
    subscribeWriter: writerSubscriptions(store),
    ...(o.privateKeys && { privateKeys: o.privateKeys }),
    jurisdiction: placeOf,
    placesEndpoints: () => (o.dpRecord()?.endpointJurisdictions?.length ?? 0) > 0,
    onGranted(epoch, endpoint) {
      elected = { epoch, endpoint, atMs: o.clock() };
    },
  });
  let keys: KeyDirectory | undefined;
  let replica: Replica | undefined;
  // A primary writes only once it has asked its peers whether a later epoch exists (an old
  // primary coming back must not write before it learns it was replaced).
  let peersChecked = config.peers.length === 0;
  let probing: NodeJS.Timeout | undefined;
  let closed = false;
  let servingNow: () => void = () => {};
  const serving = new Promise<void>((r) => {
    servingNow = r;
  });

  const probe = async () => {
    await Promise.all(
      config.peers.map(async (endpoint) => {
        try {
          const r = await o
            .channel(endpoint)
            .client(pb.ReplicationService)
            .fence({ epoch: 0n, candidate: "" }, { timeoutMs: Math.min(3_000, config.heartbeatMs) });
          role.observeEpoch(Number(r.epoch), endpoint);
        } catch {
          // An endpoint that is down cannot have a later epoch that matters to it yet.
        }
      }),
    );
    peersChecked = true;
  };
  const arrange = () => {
    if (closed || !keys) return;
    if (role.isPrimary()) {
      if (replica) {
        replica.close();
        replica = undefined;
      }
      return;
    }
    replica ??= startReplica({
      store,
      role,
      dpId: o.dpId,
      endpoints: () => config.peers,
      heartbeatMs: config.heartbeatMs,
      channel: o.channel,
      keys,
      onHashKey: o.setHashKey,
      currentHashKey: () => o.changeLog.hashKey,
      now: o.clock,
      log: o.log,
      onServing: () => servingNow(),
      ...(o.onCopied && { onCopied: o.onCopied }),
      ...(o.privateKeys?.adopt && { onPrivateKeys: o.privateKeys.adopt }),
      ...(config.endpoint !== "" && { endpoint: config.endpoint }),
      prefer: () => {
        // The candidate this endpoint voted for, while that vote is the latest word on who is
        // primary (then the peers in turn again).
        if (!elected || elected.epoch !== role.epoch() || o.clock() - elected.atMs > FOLLOW_CANDIDATE_MS) {
          return undefined;
        }
        return elected.endpoint;
      },
      ...(config.jurisdiction !== "" && {
        jurisdiction: { configured: config.jurisdiction, published: () => placeOf(config.endpoint) },
      }),
    });
    if (replica.problem() === undefined) servingNow();
  };
  role.onChange(arrange);
  // Why this store cannot be served from (and so not promoted): a secondary without a whole copy.
  const storeProblem = () => {
    if (role.name() !== "secondary") return undefined;
    if (!replica) return "this secondary has not yet started following the DP's primary";
    return replica.problem();
  };

  return {
    beforeWrite() {
      role.requirePrimary();
      if (!peersChecked) {
        throw new DiscoveryError(
          "not_ready",
          "this primary is still checking the DP's other endpoints; try again shortly",
          {
            details: { retryAfterMs: 1_000 },
          },
        );
      }
      if (followers.available() < config.ackFollowers) {
        throw new DiscoveryError(
          "upstream_unavailable",
          `writes need ${config.ackFollowers} secondar${config.ackFollowers === 1 ? "y" : "ies"} following the primary (replication.ackFollowers) and ${followers.available()} ${followers.available() === 1 ? "is" : "are"}; nothing was written`,
          { details: { reason: "NOT_ENOUGH_SECONDARIES", retryAfterMs: 1_000 } },
        );
      }
    },
    async afterWrite(signal) {
      await followers.waitFor(store.logBounds().latest, store.writer.latest(), config.ackFollowers, signal);
      // Acks that came in after a promotion elsewhere acknowledge nothing: the write may be lost.
      if (config.ackFollowers > 0 && !role.isPrimary()) {
        throw new DiscoveryError(
          "upstream_unavailable",
          "the write was stored here, but this endpoint was replaced as the DP's primary before it could be acknowledged; look it up at the new primary before trying again",
          { details: { reason: "NOT_REPLICATED", retryAfterMs: 1_000 } },
        );
      }
    },
    whenServing() {
      if (role.name() !== "secondary") return Promise.resolve();
      return serving;
    },
    isPrimary: () => role.isPrimary(),
    requirePrimary: () => role.requirePrimary(),
    storeProblem,
    // A secondary out of touch still answers (the primary may be gone, and then it holds every
    // acknowledged write), but briefly: an answer it gives may predate a change, and a
    // resolver caches it no longer than this, like a DNS resolver's stale answer (RFC 8767).
    // A fenced primary is out of touch too: a new primary writes elsewhere.
    answerTtlCap: () =>
      role.name() !== "primary" && replica?.outOfTouch() !== false ? OUT_OF_TOUCH_TTL_SECONDS : undefined,
    promote: (force) =>
      promote(
        {
          store,
          role,
          peers: config.peers,
          channel: o.channel,
          ackFollowers: config.ackFollowers,
          log,
          storeProblem,
          endpoint: config.endpoint,
        },
        force,
      ),
    status: () => ({
      role: role.name(),
      epoch: role.epoch(),
      appliedSeq: store.logBounds().latest,
      followers: followers.list(),
      replica: replica?.status(),
    }),
    prune() {
      let total = 0;
      for (;;) {
        const n = store.writer.pruneBefore(o.clock() - o.retentionMs, 10_000);
        total += n;
        if (n < 10_000) return total;
      }
    },
    start(k) {
      keys = k;
      arrange();
      if (config.peers.length > 0) {
        void probe();
        probing = setInterval(() => {
          if (role.isPrimary()) void probe();
        }, config.heartbeatMs);
      }
    },
    close() {
      closed = true;
      if (probing) clearInterval(probing);
      replica?.close();
    },
  };
}

type Registry = Parameters<typeof gaugeFrom>[0];

/** Replication's metrics, read when scraped: role, epoch, followers, a secondary's lag. */
export function replicationMetrics(
  metrics: Registry,
  status: () => ReplicationStatus,
  now: () => number,
): void {
  const roles: RoleName[] = ["primary", "fenced", "secondary"];
  gaugeFrom(
    metrics,
    "mimi_dp_replication_role",
    "1 for this endpoint's role (primary, fenced, secondary), 0 for the others.",
    () => roles.map((r) => ({ labels: { role: r }, value: status().role === r ? 1 : 0 })),
    ["role"],
  );
  gaugeFrom(
    metrics,
    "mimi_dp_replication_epoch",
    "The highest primary epoch this endpoint knows.",
    () => status().epoch,
  );
  gaugeFrom(
    metrics,
    "mimi_dp_replication_followers",
    "Secondaries following this primary that have stored at least a copy.",
    () => status().followers.filter((f) => f.ackedAtMs > 0).length,
  );
  gaugeFrom(
    metrics,
    "mimi_dp_replication_follower_ack_age_seconds",
    "Seconds since the follower that acknowledged least recently acknowledged (0 with none).",
    () => {
      const acked = status().followers.filter((f) => f.ackedAtMs > 0);
      return acked.length === 0 ? 0 : Math.max(...acked.map((f) => (now() - f.ackedAtMs) / 1000));
    },
  );
  const states = ["copying", "catching_up", "following", "disconnected"] as const;
  gaugeFrom(
    metrics,
    "mimi_dp_replication_state",
    "A secondary's follower state: 1 for the present one.",
    () => states.map((st) => ({ labels: { state: st }, value: status().replica?.state === st ? 1 : 0 })),
    ["state"],
  );
  gaugeFrom(
    metrics,
    "mimi_dp_replication_lag_events",
    "Changes the primary had that this secondary had not applied, at the primary's last report.",
    () => status().replica?.lagEvents ?? 0,
  );
  gaugeFrom(
    metrics,
    "mimi_dp_replication_lag_seconds",
    "From the primary's commit of the last change this secondary applied to its own commit.",
    () => (status().replica?.lagMs ?? 0) / 1000,
  );
  gaugeFrom(
    metrics,
    "mimi_dp_replication_applied_seq",
    "The last change of the DP's log this endpoint holds.",
    () => status().replica?.appliedSeq ?? 0,
  );
  counterFrom(
    metrics,
    "mimi_dp_replication_refused_rows_total",
    "Rows from a primary that did not verify and were not stored.",
    () => status().replica?.refusedRows ?? 0,
  );
  counterFrom(
    metrics,
    "mimi_dp_replication_copies_total",
    "Whole copies of the store begun.",
    () => status().replica?.copies ?? 0,
  );
}
