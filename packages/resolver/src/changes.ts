// Change subscriptions (G6, R20, D1): one WatchChanges stream to every DP the registry lists,
// resumed from the last event applied, with backoff and failover across the DP's endpoints.
// Each event evicts the answers cached for its CSI; a log that cannot be continued (too old,
// another store, a store restored from an older copy) drops everything that DP answered.
import {
  changeHashKey,
  type DpInfo,
  type Logger,
  pb,
  type RegistryView,
  sleepUnlessAborted,
} from "@mimi/core";
import type { Upstream } from "./upstream.js";

/** What a subscription reports to the resolver. */
export interface ChangeSink {
  changed(hashHex: string): void;
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
}

const RESYNC_NAMES: Record<number, string> = {
  [pb.ResyncReason.NEW_WATCHER]: "new watcher",
  [pb.ResyncReason.OTHER_LOG]: "the DP's store is another one (replaced or recreated)",
  [pb.ResyncReason.TOO_OLD]: "our position left the DP's retention window",
  [pb.ResyncReason.BEHIND]: "the DP's log is behind what we saw (restored from an older copy?)",
  [pb.ResyncReason.DIVERGED]: "the DP's log differs at our position (rewound and rewritten)",
};

class Subscription {
  connected = false;
  logId = "";
  seq = 0;
  atMs = 0;
  events = 0;
  resyncs = 0;
  lastEventAtMs = 0;
  /** The endpoint of the open stream, if any. */
  endpoint: string | undefined;
  private readonly abort = new AbortController();
  /** Ends the current stream only; the loop reconnects from the same position. */
  private attempt = new AbortController();
  private closed = false;

  constructor(
    readonly dpId: string,
    private readonly o: ChangeSubscriptionOptions,
    private readonly log: Logger,
  ) {
    void this.run();
  }

  private dp(): DpInfo | undefined {
    return this.o.registry.dp(this.dpId);
  }

  private async run(): Promise<void> {
    let attempt = 0;
    let backoffMs = 100;
    while (!this.closed) {
      const dp = this.dp();
      const endpoint = dp?.endpoints[attempt % Math.max(1, dp.endpoints.length)];
      attempt++;
      let progressed = false;
      if (dp && endpoint) {
        this.attempt = new AbortController();
        this.endpoint = endpoint;
        try {
          const client = this.o.upstream.channel(dp, endpoint).client(pb.AuthoritativeService);
          const stream = client.watchChanges(
            { logId: this.logId, sinceSeq: BigInt(this.seq), sinceAtMs: BigInt(this.atMs) },
            { signal: AbortSignal.any([this.abort.signal, this.attempt.signal]) },
          );
          for await (const msg of stream) {
            const ev = msg.event;
            if (ev.case === "start") {
              const s = ev.value;
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
                this.atMs = 0;
              }
              this.logId = s.logId;
              this.seq = Number(s.seq);
            } else if (ev.case === "change") {
              const c = ev.value;
              const seq = Number(c.seq);
              if (seq !== this.seq + 1) {
                throw new Error(`change ${seq} does not follow ${this.seq}`);
              }
              const hash = changeHashKey(c.csiHash);
              if (hash === undefined) throw new Error(`change ${seq} carries a malformed CSI hash`);
              this.o.sink.changed(hash);
              this.seq = seq;
              this.atMs = Number(c.atMs);
              this.events++;
              this.lastEventAtMs = this.o.now();
            } else if (ev.case === "caughtUp") {
              this.connected = true;
              progressed = true;
              backoffMs = 100;
              this.log.info({ dp: this.dpId, endpoint, seq: this.seq }, "change subscription caught up");
            }
          }
          if (!this.closed) this.log.warn({ dp: this.dpId, endpoint }, "change stream ended; reconnecting");
        } catch (err) {
          if (this.closed) break;
          if (this.attempt.signal.aborted) {
            // Moved on purpose (endpointsChanged): reconnect at once, from the same position.
            this.connected = false;
            continue;
          }
          this.log.warn(
            { dp: this.dpId, endpoint, err: (err as Error).message },
            "change stream failed; reconnecting",
          );
        }
      }
      this.connected = false;
      this.endpoint = undefined;
      if (!progressed) backoffMs = Math.min(backoffMs * 2, this.o.maxBackoffMs);
      await sleepUnlessAborted(backoffMs * (0.5 + Math.random() / 2), this.abort.signal);
    }
  }

  /** Reconnects when the DP no longer lists the endpoint the stream uses. */
  endpointsChanged(): void {
    const dp = this.dp();
    if (this.endpoint !== undefined && !dp?.endpoints.includes(this.endpoint)) {
      this.log.info(
        { dp: this.dpId, endpoint: this.endpoint },
        "DP endpoints changed; moving the change stream",
      );
      this.attempt.abort();
    }
  }

  close(): void {
    this.closed = true;
    this.abort.abort();
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
    close() {
      for (const s of subs.values()) s.close();
      subs.clear();
    },
  };
}
