// Change subscriptions (G6, R20, D1): one WatchChanges stream to every DP the registry lists,
// resumed from the last event applied, with backoff and failover across the DP's endpoints
// (core's followLog).
// Each event evicts the answers cached for its CSI; a log that cannot be continued (too old,
// another store, a store restored from an older copy) drops everything that DP answered.
import {
  CHANGE_HASH_KEY_BYTES,
  changeHashKey,
  type DpInfo,
  followLog,
  type LogFollower,
  type Logger,
  pb,
  type RegistryView,
} from "@mimi/core";
import type { Upstream } from "./upstream.js";

/** What a subscription reports to the resolver. */
export interface ChangeSink {
  /** An event of DP `dpId`'s log, delivered by its `endpoint`. */
  changed(dpId: string, hashHex: string, endpoint: string): void;
  /** The log's change-hash key; true when it differs from the one held (the DP's answers are dropped). */
  changeKey(dpId: string, key: Uint8Array): boolean;
  resync(dpId: string, counted: boolean): number;
}

/** The state of one DP's subscription, for operators. */
export interface SubscriptionState {
  readonly dpId: string;
  readonly connected: boolean;
  readonly logId: string;
  readonly seq: number;
  readonly events: number;
  readonly resyncs: number;
  readonly lastEventAtMs: number;
}

/** All of the resolver's subscriptions. */
export interface ChangeSubscriptions {
  /** Starts or stops subscriptions so there is one per DP in the registry. */
  reconcile(): void;
  states(): SubscriptionState[];
  /** Whether the stream of `dpId` is open and has caught up. */
  connected(dpId: string): boolean;
  /** The log of `dpId` followed and its last event received, while the stream is caught up. */
  position(dpId: string): { logId: string; seq: number } | undefined;
  close(): void;
}

/** Options of the subscriptions. */
export interface ChangeSubscriptionOptions {
  registry: RegistryView;
  upstream: Upstream;
  sink: ChangeSink;
  log: Logger;
  now: () => number;
  /** Longest pause between reconnect attempts. */
  maxBackoffMs: number;
  /** Waits between reconnect attempts (tests pass one that does not wait). */
  pause?: (ms: number, signal: AbortSignal) => Promise<void>;
}

const RESYNC_NAMES: Record<number, string> = {
  [pb.ResyncReason.NEW_WATCHER]: "new watcher",
  [pb.ResyncReason.OTHER_LOG]: "the DP's store is another one (replaced or recreated)",
  [pb.ResyncReason.TOO_OLD]: "our position left the DP's retention window",
  [pb.ResyncReason.BEHIND]: "the DP's log is behind what we saw (restored from an older copy?)",
  [pb.ResyncReason.DIVERGED]: "the DP's log differs at our position (rewound and rewritten)",
};

/** One DP's subscription: its position in the DP's log and what it has seen. */
class Subscription {
  logId = "";
  seq = 0;
  atMs = 0;
  events = 0;
  resyncs = 0;
  lastEventAtMs = 0;
  private readonly follower: LogFollower;

  constructor(
    readonly dpId: string,
    private readonly o: ChangeSubscriptionOptions,
    private readonly log: Logger,
  ) {
    this.follower = followLog<pb.WatchChangesResponse>({
      endpoints: () => this.dp()?.endpoints ?? [],
      open: (endpoint, signal) => {
        const dp = this.dp() as DpInfo;
        return this.o.upstream
          .channel(dp, endpoint)
          .client(pb.AuthoritativeService)
          .watchChanges(
            { logId: this.logId, sinceSeq: BigInt(this.seq), sinceAtMs: BigInt(this.atMs) },
            { signal },
          );
      },
      apply: (msg, endpoint) => this.apply(msg, endpoint),
      log,
      logFields: { dp: dpId },
      messages: { ended: "change stream ended; reconnecting", failed: "change stream failed; reconnecting" },
      maxBackoffMs: o.maxBackoffMs,
      ...(o.pause && { pause: o.pause }),
    });
  }

  get connected(): boolean {
    return this.follower.connected();
  }

  private dp(): DpInfo | undefined {
    return this.o.registry.dp(this.dpId);
  }

  private apply(msg: pb.WatchChangesResponse, endpoint: string): boolean {
    const ev = msg.event;
    if (ev.case === "start") {
      const s = ev.value;
      if (s.hashKey.length !== CHANGE_HASH_KEY_BYTES) {
        throw new Error(
          `the change log's hash key is ${s.hashKey.length} bytes, not ${CHANGE_HASH_KEY_BYTES}`,
        );
      }
      // A new key (before any event of this start is applied) drops what the old key indexed.
      if (this.o.sink.changeKey(this.dpId, s.hashKey) && this.logId !== "") {
        this.log.warn({ dp: this.dpId }, "the DP's change-hash key changed; dropped its cached answers");
      }
      if (s.resync !== pb.ResyncReason.UNSPECIFIED) {
        const counted = s.resync !== pb.ResyncReason.NEW_WATCHER;
        if (counted) {
          this.resyncs++;
          this.log.warn(
            { dp: this.dpId, reason: RESYNC_NAMES[s.resync] ?? String(s.resync) },
            "change log cannot be continued; resyncing",
          );
        }
        this.o.sink.resync(this.dpId, counted);
        // The position to resume from: the latest event, with its time (0 from an older DP).
        this.atMs = Number(s.atMs);
      }
      this.logId = s.logId;
      this.seq = Number(s.seq);
    } else if (ev.case === "change") {
      const c = ev.value;
      const seq = Number(c.seq);
      if (seq !== this.seq + 1) throw new Error(`change ${seq} does not follow ${this.seq}`);
      const hash = changeHashKey(c.csiHash);
      if (hash === undefined) throw new Error(`change ${seq} carries a malformed CSI hash`);
      this.o.sink.changed(this.dpId, hash, endpoint);
      this.seq = seq;
      this.atMs = Number(c.atMs);
      this.events++;
      this.lastEventAtMs = this.o.now();
    } else if (ev.case === "caughtUp") {
      this.log.info({ dp: this.dpId, endpoint, seq: this.seq }, "change subscription caught up");
      return true;
    }
    return false;
  }

  /** Reconnects when the DP no longer lists the endpoint the stream uses. */
  endpointsChanged(): void {
    const endpoint = this.follower.endpoint();
    if (endpoint !== undefined && !this.dp()?.endpoints.includes(endpoint)) {
      this.log.info({ dp: this.dpId, endpoint }, "DP endpoints changed; moving the change stream");
      this.follower.reconnect();
    }
  }

  close(): void {
    this.follower.close();
  }
}

/** Creates the subscriptions; call reconcile() once the registry copy is loaded and on every change. */
export function createChangeSubscriptions(o: ChangeSubscriptionOptions): ChangeSubscriptions {
  const log = o.log.child({ component: "changes" });
  const subs = new Map<string, Subscription>();
  return {
    reconcile() {
      const want = new Set(o.registry.allDps().map((d) => d.id));
      for (const [id, sub] of subs) {
        if (!want.has(id)) {
          sub.close();
          subs.delete(id);
          log.info({ dp: id }, "change subscription stopped: DP left the registry");
        }
      }
      for (const id of want) {
        const sub = subs.get(id);
        if (sub) sub.endpointsChanged();
        else subs.set(id, new Subscription(id, o, log));
      }
    },
    states: () =>
      [...subs.values()].map((s) => ({
        dpId: s.dpId,
        connected: s.connected,
        logId: s.logId,
        seq: s.seq,
        events: s.events,
        resyncs: s.resyncs,
        lastEventAtMs: s.lastEventAtMs,
      })),
    connected: (dpId) => subs.get(dpId)?.connected === true,
    position(dpId) {
      const s = subs.get(dpId);
      return s?.connected ? { logId: s.logId, seq: s.seq } : undefined;
    },
    close() {
      for (const s of subs.values()) s.close();
      subs.clear();
    },
  };
}
