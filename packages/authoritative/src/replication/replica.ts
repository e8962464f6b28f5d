// The secondary side of a DP's replication: follows whichever of the DP's other endpoints is
// primary (core's followLog: failover and backoff), copies the store when its position does not
// continue (resumably, page by page), then applies every change with the primary's sequence
// number and time, so that its own change log (what resolvers watch) is the primary's. Every
// row is checked against the registry's keys before it is stored (state.ts), and each change is
// acknowledged once committed, for the primary's durability wait. It serves lookups once it has
// a whole copy and has caught up once; it refuses a primary of an older epoch than it knows.
// The primary's private-lookup keys, when it sends them, are handed on (private-keys.ts adopts
// them); a set that is not keys is logged and left, and the store's replication goes on.
import { randomBytes } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { DiscoveryError, followLog, type KeyDirectory, type LogFollower, type Logger, pb } from "@mimi/core";
import type { Channel } from "@mimi/rpc";
import { clampToNumber as num } from "../numbers.js";
import { MAX_HELD_KEYS } from "../private-key-file.js";
import type { EpochKeys } from "../private-table.js";
import type { MappingStore } from "../store/store.js";
import { FollowRequests } from "./follow-requests.js";
import { placementProblem } from "./placement.js";
import type { ReplicationRole } from "./role.js";
import { applyCsiState, checkCsiState, dropCsisBetween } from "./state.js";

/** The copy being received (store_meta 'replica_copy'), so a restart goes on with it. */
interface CopyState {
  readonly logId: string;
  readonly fromSeq: number;
  readonly fromAtMs: number;
  /** The last CSI applied ("" for none). */
  readonly after: string;
}

const COPY_META = "replica_copy";
const FOLLOWER_ID_META = "follower_id";
/** How long a follower stays with a fenced primary before looking for the new one. */
const FENCED_RETRY_MS = 5_000;
/** Changes committed in one transaction at most. */
const BATCH = 512;
/** The longest a received change waits for its batch's commit. */
const FLUSH_MS = 20;
/** The times of the last events applied, kept because a log may hold no event (after a copy). */
const AT_META = "replica_at";
const WRITER_AT_META = "replica_writer_at";

/** What a secondary reports (GetStatus, metrics, readiness). */
export interface ReplicaStatus {
  readonly state: "copying" | "catching_up" | "following" | "disconnected";
  /** The endpoint followed now, if any. */
  readonly endpoint: string | undefined;
  readonly appliedSeq: number;
  /** Changes the primary had that this secondary had not applied, at the last report. */
  readonly lagEvents: number;
  /** How long the last change applied took from its commit at the primary (ms). */
  readonly lagMs: number;
  /** Rows left out because they did not verify. */
  readonly refusedRows: number;
  readonly copies: number;
}

/** A running secondary. */
export interface Replica {
  /** Why lookups cannot be served from this store yet, if they cannot. */
  problem(): string | undefined;
  /**
   * Whether the store may lag the DP's by more than a few heartbeats: no primary (a fenced one
   * does not count) said it caught up lately; cut off, or serving its copy from before a restart.
   */
  outOfTouch(): boolean;
  status(): ReplicaStatus;
  close(): void;
  readonly done: Promise<void>;
}

/** The longest source heartbeat a follower waits out (replication.heartbeatSeconds' bound). */
const MAX_HEARTBEAT_MS = 300_000;

/** Options of startReplica. */
export interface ReplicaOptions {
  store: MappingStore;
  role: ReplicationRole;
  dpId: string;
  /** The DP's other endpoints; the one that is primary serves the stream. */
  endpoints: () => readonly string[];
  /** One of them to try before the one in turn (the candidate this endpoint voted for). */
  prefer?: () => string | undefined;
  /**
   * How often the primary speaks on an idle stream (replication.heartbeatSeconds): a stream, or
   * an attempt to open one, silent for three of these is dropped and the next endpoint tried (a
   * primary cut off by the network says nothing).
   */
  heartbeatMs?: number;
  /** The channel to one of them (authenticated as this DP, checking the DP's identity). */
  channel: (endpoint: string) => Channel;
  /** The registry's keys, which every received row must verify with. */
  keys: KeyDirectory;
  /** The primary's change-hash key, to keep as this endpoint's own. */
  onHashKey: (key: Uint8Array) => void;
  currentHashKey: () => Uint8Array;
  now: () => number;
  log: Logger;
  maxBackoffMs?: number;
  pause?: (ms: number, signal: AbortSignal) => Promise<void>;
  /** Runs once the store can be served from (a whole copy, caught up once). */
  onServing?: () => void;
  /** Runs after each whole copy (what is derived from the store, like the CSI filter, is built again). */
  onCopied?: () => void;
  /** The primary's private-lookup keys, as it sent them (after its start, and when they change). */
  onPrivateKeys?: (keys: EpochKeys[]) => void;
  /**
   * The jurisdiction this machine is configured for, and the one the registry places the DP in:
   * when they differ it neither follows nor serves (H2).
   */
  jurisdiction?: { readonly configured: string; readonly published: () => string | undefined };
  /** This endpoint's address as the registry lists it (replication.endpoint), told to the primary. */
  endpoint?: string;
}

/** Starts following. */
export function startReplica(o: ReplicaOptions): Replica {
  const { store, role } = o;
  const log = o.log.child({ component: "replica" });
  let requests: FollowRequests | undefined;
  let serving = false;
  let state: ReplicaStatus["state"] = "disconnected";
  // The heartbeat of the source of the stream (ReplicaStart), when it said, and whether it was
  // a fenced primary.
  let sourceHeartbeatMs = 0;
  let sourceFenced = false;
  // When a primary last said this endpoint had caught up; undefined since the start.
  let caughtUpAtMs: number | undefined;
  let lagEvents = 0;
  let lagMs = 0;
  let refusedRows = 0;
  let copies = 0;
  const copyState = (): CopyState | undefined => {
    const raw = store.meta(COPY_META);
    return raw === undefined ? undefined : (JSON.parse(raw) as CopyState);
  };
  // A store that was a whole copy before (its log id is a primary's) serves at once after a
  // restart, as a DNS secondary serves its zone until it expires; one mid-copy does not.
  serving = copyState() === undefined && store.meta("replica_since") !== undefined;

  const jurisdictionProblem = () => placementProblem(o.dpId, o.jurisdiction, o.endpoint);

  // Names this follower to the primary across its streams (kept in the store).
  let followerId = store.meta(FOLLOWER_ID_META);
  if (followerId === undefined) {
    followerId = randomBytes(12).toString("hex");
    store.setMeta(FOLLOWER_ID_META, followerId);
  }
  // The epoch of the primary followed now: a vote for a later one ends the stream at once, so
  // this endpoint acknowledges nothing more to a primary it helped replace.
  let sourceEpoch: number | undefined;
  let fencedTimer: NodeJS.Timeout | undefined;
  // When the stream being read (or opened) last said anything.
  let heardAtMs = o.now();
  let closed = false;
  role.onChange(() => {
    if (!closed && sourceEpoch !== undefined && role.epoch() > sourceEpoch) {
      sourceEpoch = undefined;
      follower.reconnect();
    }
  });

  // Tells the primary what this endpoint holds (both logs), once committed.
  const ack = () => requests?.push(store.logBounds().latest, store.writer.latest());

  // Changes are committed in batches: those that arrive within FLUSH_MS of the batch's first
  // (at most BATCH) share a transaction, so a busy primary costs its secondaries one disk sync
  // per batch, not one per change. A change is acknowledged once its batch commits.
  const batch: { ops: (() => void)[]; seq?: number; writerSeq?: number; lastAtMs?: number } = { ops: [] };
  let flushScheduled = false;
  const flush = () => {
    if (batch.ops.length === 0) return;
    const ops = batch.ops.splice(0);
    const lastAtMs = batch.lastAtMs;
    batch.seq = undefined;
    batch.writerSeq = undefined;
    batch.lastAtMs = undefined;
    store.applyReplicated(() => {
      for (const op of ops) op();
    });
    if (lastAtMs !== undefined) lagMs = Math.max(0, o.now() - lastAtMs);
    ack();
  };
  const queued = () => {
    if (batch.ops.length >= BATCH) {
      flush();
      return;
    }
    if (flushScheduled) return;
    flushScheduled = true;
    setTimeout(() => {
      flushScheduled = false;
      // A batch that failed is dropped whole (the store is as before it): follow again from there.
      if (!flushOrLog()) follower.reconnect();
    }, FLUSH_MS).unref();
  };
  /** Commits what is queued; false (logged) when that failed, the store then as before the batch. */
  const flushOrLog = () => {
    try {
      flush();
      return true;
    } catch (err) {
      log.error({ err: (err as Error).message }, "applying replicated changes failed");
      return false;
    }
  };

  const checked = (s: pb.CsiState | undefined) => {
    if (!s) throw new DiscoveryError("invalid_argument", "a change without its CSI's state");
    const c = checkCsiState(s, o.dpId, o.keys, o.now());
    if (c.retry) {
      // The registry copy may lag the primary's (a new MSP key): follow again later rather than
      // leave the row out for good.
      throw new DiscoveryError("not_ready", `a row cannot be checked yet: ${c.retry}; following again`);
    }
    if (c.refused.length > 0) {
      refusedRows += c.refused.length;
      // The reasons name no CSI: they are what an operator needs to see that a primary misbehaves.
      log.warn({ refused: c.refused }, "rows from the primary do not verify; not stored");
    }
    return c.state;
  };

  const apply = (msg: pb.FollowResponse, endpoint: string): boolean => {
    const m = msg.message;
    if (m.case === "start") {
      const s = m.value;
      // The source's heartbeat, if longer than ours, is what silence is measured by (bounded:
      // a source cannot make a dead stream look alive for long).
      sourceHeartbeatMs = Math.min(s.heartbeatMs, MAX_HEARTBEAT_MS);
      if (s.dpId !== o.dpId) {
        throw new DiscoveryError(
          "failed_precondition",
          `${endpoint} serves the store of DP "${s.dpId}", not "${o.dpId}"`,
        );
      }
      const epoch = num(s.epoch);
      if (epoch < role.epoch()) {
        throw new DiscoveryError(
          "failed_precondition",
          `${endpoint} is a primary of epoch ${epoch}, older than epoch ${role.epoch()}: it was replaced`,
        );
      }
      role.following(epoch, endpoint);
      sourceEpoch = epoch;
      // A fenced primary still feeds a promotion's candidate; anyone else looks again shortly
      // for the primary of the later epoch (followLog tries the next endpoint).
      clearTimeout(fencedTimer);
      sourceFenced = s.fenced;
      if (s.fenced) fencedTimer = setTimeout(() => follower.reconnect(), FENCED_RETRY_MS).unref();
      if (!Buffer.from(s.hashKey).equals(o.currentHashKey())) o.onHashKey(s.hashKey);
      if (s.copy) {
        const c: CopyState = {
          logId: s.logId,
          fromSeq: num(s.fromSeq),
          fromAtMs: num(s.fromAtMs),
          after: s.copyAfterCsi,
        };
        // A store being copied again is not served until the copy is whole.
        if (c.after === "") serving = false;
        store.applyReplicated(() => {
          // A copy that starts brings the writer's tables whole: what this endpoint held goes.
          if (c.after === "") {
            store.writer.reset(num(s.writerFromSeq));
            store.setMeta(WRITER_AT_META, "0");
          }
          store.setMeta(COPY_META, JSON.stringify(c));
        });
        state = "copying";
        if (c.after === "") {
          copies++;
          log.info({ endpoint, fromSeq: c.fromSeq }, "copying the store from the primary");
        } else log.info({ endpoint, fromSeq: c.fromSeq }, "going on with the copy of the store");
      } else state = "catching_up";
      return false;
    }
    if (m.case === "privateKeys") {
      if (sourceFenced) return false; // none sends them: a new primary's keys may differ
      try {
        // One more than a DP holds is enough for adopt to refuse a set that is too large.
        const keys = m.value.keys.slice(0, MAX_HELD_KEYS + 1);
        o.onPrivateKeys?.(
          keys.map((k) => ({ epoch: k.epoch, secretKey: k.secretKey, publicKey: k.publicKey })),
        );
      } catch (err) {
        log.error(
          { endpoint, err: (err as Error).message },
          "the primary's private-lookup keys were not taken",
        );
      }
      return false;
    }
    if (m.case === "rows") {
      if (!copyState()) throw new DiscoveryError("failed_precondition", "writer rows outside a copy");
      store.applyReplicated(() => {
        for (const r of m.value.rows) store.writer.apply(r.table, r.key, r.row === "" ? undefined : r.row);
        if (m.value.done) {
          store.writer.raiseSequences(
            Object.fromEntries(Object.entries(m.value.sequences).map(([k, v]) => [k, num(v)])),
          );
        }
      });
      return false;
    }
    if (m.case === "rowChange") {
      if (copyState())
        throw new DiscoveryError("failed_precondition", "a writer event before the copy was complete");
      const seq = num(m.value.seq);
      const expected = (batch.writerSeq ?? store.writer.latest()) + 1;
      if (seq !== expected) {
        throw new DiscoveryError(
          "failed_precondition",
          `writer event ${seq} does not follow ${expected - 1}; following again`,
        );
      }
      const r = m.value.row;
      if (!r) throw new DiscoveryError("invalid_argument", "a writer event without its row");
      const atMs = num(m.value.atMs);
      batch.ops.push(() => {
        store.writer.apply(r.table, r.key, r.row === "" ? undefined : r.row);
        store.writer.logAt(seq, r.table, r.key, atMs);
        store.setMeta(WRITER_AT_META, String(atMs));
      });
      batch.writerSeq = seq;
      queued();
      return false;
    }
    // Anything else goes after what is queued; a caught-up marker does not hurry the batch
    // (its commit, one disk sync, waits for FLUSH_MS of changes or BATCH of them).
    if (m.case !== "caughtUp") flush();
    if (m.case === "page") {
      const c = copyState();
      if (!c) throw new DiscoveryError("failed_precondition", "a copy page outside a copy");
      const states = m.value.states.map(checked);
      const keep = new Set(states.map((s) => s.csi));
      const last = m.value.lastCsi;
      store.applyReplicated(() => {
        dropCsisBetween(store, c.after, m.value.done ? undefined : last, keep);
        for (const s of states) applyCsiState(store, s);
        if (m.value.done) {
          store.resetLog(c.fromSeq);
          store.setMeta("log_id", c.logId);
          store.setMeta(AT_META, String(c.fromAtMs));
          store.setMeta(COPY_META, undefined);
          store.setMeta("replica_since", String(o.now()));
        } else store.setMeta(COPY_META, JSON.stringify({ ...c, after: last }));
      });
      if (m.value.done) {
        log.info({ fromSeq: c.fromSeq, mappings: store.count() }, "copy of the store complete");
        o.onCopied?.();
        state = "catching_up";
        ack();
      }
      return false;
    }
    if (m.case === "change") {
      if (copyState())
        throw new DiscoveryError("failed_precondition", "a change before the copy was complete");
      const seq = num(m.value.seq);
      const atMs = num(m.value.atMs);
      const expected = (batch.seq ?? store.logBounds().latest) + 1;
      if (seq !== expected) {
        throw new DiscoveryError(
          "failed_precondition",
          `change ${seq} does not follow ${expected - 1}; following again`,
        );
      }
      const s = checked(m.value.state);
      batch.seq = seq;
      batch.lastAtMs = atMs;
      batch.ops.push(() => {
        applyCsiState(store, s);
        store.logChangeAt(seq, s.csi, atMs);
        store.setMeta(AT_META, String(atMs));
      });
      queued();
      return false;
    }
    if (m.case === "caughtUp") {
      const seq = num(m.value.seq);
      lagEvents = Math.max(0, seq - (batch.seq ?? store.logBounds().latest));
      if (state !== "following") log.info({ endpoint, seq }, "secondary caught up with the primary");
      state = "following";
      // Caught up with a fenced primary is not caught up with the DP: a new primary writes elsewhere.
      if (!sourceFenced) caughtUpAtMs = o.now();
      if (!serving) o.onServing?.();
      serving = true;
      ack();
      return true;
    }
    return false;
  };

  const follower: LogFollower = followLog<pb.FollowResponse>({
    endpoints: o.endpoints,
    open(endpoint, signal) {
      requests?.close();
      heardAtMs = o.now();
      sourceHeartbeatMs = 0; // another source: its own heartbeat comes with its start
      sourceFenced = false;
      const elsewhere = jurisdictionProblem();
      if (elsewhere) throw new DiscoveryError("failed_precondition", elsewhere);
      // What the last stream delivered is stored before the position is named.
      flushOrLog();
      const c = copyState();
      const { latest } = store.logBounds();
      const writerLatest = store.writer.latest();
      const start = create(pb.FollowStartSchema, {
        logId: c?.logId ?? store.logId(),
        afterSeq: BigInt(latest),
        afterAtMs: BigInt(store.changeAt(latest)?.atMs ?? Number(store.meta(AT_META) ?? 0)),
        copying: c !== undefined,
        copyFromSeq: BigInt(c?.fromSeq ?? 0),
        copyAfterCsi: c?.after ?? "",
        copyFromAtMs: BigInt(c?.fromAtMs ?? 0),
        epoch: BigInt(role.epoch()),
        followerId,
        jurisdiction: o.jurisdiction?.configured ?? "",
        endpoint: o.endpoint ?? "",
        privateKeys: o.onPrivateKeys !== undefined,
        writerAfterSeq: BigInt(writerLatest),
        writerAfterAtMs: BigInt(store.writer.atOf(writerLatest) ?? Number(store.meta(WRITER_AT_META) ?? 0)),
      });
      const r = new FollowRequests(start);
      requests = r;
      signal.addEventListener("abort", () => r.close(), { once: true });
      return o.channel(endpoint).client(pb.ReplicationService).follow(r, { signal });
    },
    apply(msg, endpoint) {
      const caughtUp = apply(msg, endpoint);
      // After applying (synchronous, and it may take a while): the stream was not silent meanwhile.
      heardAtMs = o.now();
      return caughtUp;
    },
    ...(o.prefer && { prefer: o.prefer }),
    log,
    messages: {
      ended: "replication stream ended; following again",
      failed: "replication stream failed; trying the next endpoint",
    },
    maxBackoffMs: o.maxBackoffMs ?? 5_000,
    ...(o.pause && { pause: o.pause }),
  });

  // Every heartbeat: a stream (or an attempt to open one) that has said nothing for three
  // heartbeats is dropped; so is one the registry no longer lets this endpoint hold (H2).
  const heartbeatMs = o.heartbeatMs ?? 5_000;
  const beat = () => Math.max(heartbeatMs, sourceHeartbeatMs);
  const silence = setInterval(() => {
    const at = follower.endpoint();
    if (at === undefined) return;
    const elsewhere = jurisdictionProblem();
    if (elsewhere) {
      log.warn({ endpoint: at, reason: elsewhere }, "replication stopped");
      follower.reconnect();
    } else if (o.now() - heardAtMs > 3 * beat()) {
      log.warn(
        { endpoint: at, silentMs: o.now() - heardAtMs },
        "replication stream silent; trying the next endpoint",
      );
      heardAtMs = o.now();
      follower.reconnect();
    }
  }, heartbeatMs);
  silence.unref();

  return {
    problem() {
      const elsewhere = jurisdictionProblem();
      if (elsewhere) return elsewhere;
      if (serving) return undefined;
      return copyState()
        ? "this secondary is still copying the DP's store; ask another endpoint"
        : "this secondary has not yet reached the DP's primary; ask another endpoint";
    },
    // A caughtUp says everything up to then was sent (and, in order, received): a recent one
    // bounds the lag without comparing the two machines' clocks.
    outOfTouch: () => caughtUpAtMs === undefined || o.now() - caughtUpAtMs > 3 * beat(),
    status: () => ({
      state: follower.connected() ? state : state === "copying" ? "copying" : "disconnected",
      endpoint: follower.endpoint(),
      appliedSeq: store.logBounds().latest,
      lagEvents,
      lagMs,
      refusedRows,
      copies,
    }),
    close() {
      closed = true;
      clearTimeout(fencedTimer);
      clearInterval(silence);
      flushOrLog(); // what was not stored is asked for again by the next follower
      requests?.close();
      follower.close();
    },
    done: follower.done,
  };
}
