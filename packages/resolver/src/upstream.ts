// Calls to authoritative DPs: one long-lived channel per endpoint carrying one long-lived
// LookupStream, over which lookups are multiplexed by request id (a lookup costs a message,
// not an HTTP/2 call, on both sides); failover across a DP's endpoints; gRPC failures become
// DiscoveryError. The resolver authenticates as itself; nothing about the querying MSP is
// forwarded (R9, P2).
import { status as Status } from "@grpc/grpc-js";
import {
  type Channel,
  createChannelPool,
  DiscoveryError,
  type DpInfo,
  Feed,
  fromStatus,
  type Logger,
  type LookupOutcome,
  mappingFromProto,
  pb,
  type TlsMaterial,
} from "@mimi/core";

/** Asks DPs for answers. */
export interface Upstream {
  /** Looks up a canonical CSI at the DP, trying its endpoints in order. */
  lookup(dp: DpInfo, csi: string): Promise<LookupOutcome>;
  /** The channel to one of a DP's endpoints (shared with lookups; change watches use it too). */
  channel(dp: DpInfo, endpoint: string): Channel;
  close(): void;
}

/** Options of the upstream pool. */
export interface UpstreamOptions {
  tls: TlsMaterial;
  log: Logger;
  /** Deadline of one attempt at one endpoint. */
  attemptTimeoutMs: number;
}

/** Lookups one stream may have outstanding; past it the DP is treated as overloaded. */
const MAX_PENDING_PER_STREAM = 4_096;

interface Pending {
  resolve: (answer: pb.Answer | undefined) => void;
  reject: (err: DiscoveryError) => void;
  timer: NodeJS.Timeout;
}

/**
 * One LookupStream to one endpoint. Items time out on their own; when the stream ends or
 * fails, every pending item fails as upstream_unavailable (so the caller fails over), and the
 * next lookup opens a new stream. A stream on which items time out while nothing arrives is
 * presumed stuck and dropped, rather than waiting for keepalive to notice.
 */
class LookupMux {
  private readonly feed = new Feed<{ requestId: bigint; csi: string }>();
  private readonly pending = new Map<bigint, Pending>();
  private nextId = 1n;
  private lastHeardMs = Date.now();
  private abort = new AbortController();
  dead = false;

  constructor(
    private readonly channel: Channel,
    private readonly what: string,
    private readonly timeoutMs: number,
  ) {
    void this.read();
  }

  private async read(): Promise<void> {
    let cause = "the stream ended";
    try {
      // Lookups whose callers gave up (timed out) are not sent: a slow DP should not spend
      // its time on answers nobody waits for.
      const pending = this.pending;
      const feed = this.feed;
      const live = (async function* () {
        for await (const item of feed) if (pending.has(item.requestId)) yield item;
      })();
      const responses = this.channel
        .client(pb.AuthoritativeService)
        .lookupStream(live, { signal: this.abort.signal });
      for await (const res of responses) {
        this.lastHeardMs = Date.now();
        const p = this.pending.get(res.requestId);
        if (!p) continue; // timed out already
        this.pending.delete(res.requestId);
        clearTimeout(p.timer);
        if (res.result.case === "response") p.resolve(res.result.value.answer);
        else if (res.result.case === "error")
          p.reject(fromStatus(res.result.value.code, res.result.value.message, this.what));
        else p.reject(new DiscoveryError("upstream_failed", `${this.what}: an item came back empty`));
      }
    } catch (err) {
      cause = (err as Error).message;
    } finally {
      this.fail(cause);
    }
  }

  private fail(cause: string): void {
    this.dead = true;
    this.feed.close();
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(new DiscoveryError("upstream_unavailable", `${this.what}: ${cause}`));
      this.pending.delete(id);
    }
  }

  lookup(csi: string): Promise<pb.Answer | undefined> {
    if (this.pending.size >= MAX_PENDING_PER_STREAM) {
      return Promise.reject(
        new DiscoveryError(
          "upstream_unavailable",
          `${this.what}: ${MAX_PENDING_PER_STREAM} lookups already waiting`,
        ),
      );
    }
    const requestId = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(requestId);
        reject(
          new DiscoveryError("upstream_unavailable", `${this.what}: no answer within ${this.timeoutMs} ms`),
        );
        if (Date.now() - this.lastHeardMs > this.timeoutMs) {
          this.abort.abort();
          this.fail("the stream stopped answering");
        }
      }, this.timeoutMs);
      this.pending.set(requestId, { resolve, reject, timer });
      this.feed.push({ requestId, csi });
    });
  }

  close(): void {
    this.abort.abort();
    this.fail("the resolver is shutting down");
  }
}

/** Creates the pool. */
export function createUpstream(o: UpstreamOptions): Upstream {
  const log = o.log.child({ component: "upstream" });
  const channels = createChannelPool(o.tls);
  const muxes = new Map<string, LookupMux>();
  // The endpoint that answered last, per DP: tried first next time.
  const preferred = new Map<string, string>();

  const channelFor = (dp: DpInfo, endpoint: string) => channels.get(endpoint, dp.tlsIdentity);
  const muxFor = (dp: DpInfo, endpoint: string) => {
    const k = `${dp.tlsIdentity}|${endpoint}`;
    let mux = muxes.get(k);
    if (!mux || mux.dead) {
      mux = new LookupMux(channelFor(dp, endpoint), `LookupStream at ${endpoint}`, o.attemptTimeoutMs);
      muxes.set(k, mux);
    }
    return mux;
  };

  return {
    channel: channelFor,
    async lookup(dp, csi) {
      if (dp.endpoints.length === 0) {
        throw new DiscoveryError("upstream_unavailable", `DP "${dp.id}" has no endpoints in the registry`);
      }
      const first = preferred.get(dp.id);
      const order =
        first && dp.endpoints.includes(first)
          ? [first, ...dp.endpoints.filter((e) => e !== first)]
          : dp.endpoints;
      for (const endpoint of order) {
        try {
          const answer = await muxFor(dp, endpoint).lookup(csi);
          preferred.set(dp.id, endpoint);
          return outcomeOf(dp.id, answer);
        } catch (err) {
          const e = err instanceof DiscoveryError ? err : new DiscoveryError("upstream_failed", String(err));
          // Details (addresses, transport errors) go to our log; the MSP learns which DP failed.
          log.warn({ dp: dp.id, endpoint, err: e.message }, "dp lookup failed");
          if (e.code !== "upstream_unavailable") {
            throw new DiscoveryError(
              "upstream_failed",
              `DP "${dp.id}" refused the lookup: ${statusName(e)}`,
              {
                cause: e,
              },
            );
          }
        }
      }
      throw new DiscoveryError(
        "upstream_unavailable",
        `DP "${dp.id}" did not answer at any of its ${order.length} endpoint(s)`,
      );
    },
    close() {
      for (const m of muxes.values()) m.close();
      muxes.clear();
      channels.close();
    },
  };
}
function outcomeOf(dpId: string, answer: pb.Answer | undefined): LookupOutcome {
  if (answer?.status === pb.LookupStatus.FOUND) {
    return Object.freeze({
      kind: "answer",
      mappings: Object.freeze(answer.mappings.map(frozenMapping)),
      dpId,
      ttlSeconds: answer.ttlSeconds,
    });
  }
  if (answer?.status === pb.LookupStatus.NOT_FOUND) {
    return Object.freeze({ kind: "not_found", dpId, ttlSeconds: answer.ttlSeconds });
  }
  if (answer?.status === pb.LookupStatus.OPTED_OUT) {
    return Object.freeze({ kind: "opted_out", dpId, ttlSeconds: answer.ttlSeconds });
  }
  throw new DiscoveryError("upstream_failed", `DP "${dpId}" sent an answer without a status`);
}

// Cached answers hold many copies of few strings (MSP ids, common tags); sharing one copy
// each keeps a cached answer small. Bounded, since ids come from the DPs.
const INTERNED = new Map<string, string>();
const MAX_INTERNED = 100_000;
const NO_TAGS: readonly string[] = Object.freeze([]);

function intern(s: string): string {
  const known = INTERNED.get(s);
  if (known !== undefined) return known;
  if (INTERNED.size < MAX_INTERNED) INTERNED.set(s, s);
  return s;
}

function frozenMapping(m: pb.Mapping) {
  const x = mappingFromProto(m);
  const tags = x.tags.length === 0 ? NO_TAGS : Object.freeze(x.tags.map(intern));
  return Object.freeze({ ...x, mspId: intern(x.mspId), tags });
}

function statusName(e: DiscoveryError): string {
  return e.remoteStatus === undefined ? e.code : (Status[e.remoteStatus] ?? String(e.remoteStatus));
}
