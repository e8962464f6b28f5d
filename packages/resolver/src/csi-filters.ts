// CSI filters of federated DPs (G6): one WatchFilter stream per DP that some delegation names
// as a federated DP, failing over across its endpoints (core's followLog), so a federated query
// asks such a DP only when its filter says it may hold the CSI. The filter is received whole,
// then bit by bit as the DP's CSIs are added; a new version is received whole on the same
// stream while the old one keeps answering. Without a filter that is whole and current (none
// yet, or the stream down), a DP is asked: the filter saves lookups, it never hides a mapping.
import {
  type DpInfo,
  FILTER_KEY_BYTES,
  FILTER_VERSION_BYTES,
  FilterBits,
  followLog,
  type LogFollower,
  type Logger,
  MAX_FILTER_BITS,
  MAX_FILTER_HASHES,
  pb,
  type RegistryView,
} from "@mimi/core";
import type { Upstream } from "./upstream.js";

/** One federated DP's filter, for operators (GetStats). */
export interface FilterState {
  readonly dpId: string;
  /** A whole filter is held and its stream is open: it decides which lookups go to the DP. */
  readonly routing: boolean;
  readonly bits: number;
  readonly hashes: number;
  readonly position: number;
  readonly versions: number;
}

/** The resolver's filters of federated DPs. */
export interface CsiFilters {
  /** False only when DP `dpId`'s current filter says it holds nothing for `uri`. */
  mayHold(dpId: string, uri: string): boolean;
  /** Starts or stops streams so there is one per federated DP of the registry. */
  reconcile(): void;
  states(): FilterState[];
  /** Bytes of filter held, for the memory figure. */
  bytes(): number;
  close(): void;
}

/** Options of the filters. */
export interface CsiFilterOptions {
  registry: RegistryView;
  upstream: Pick<Upstream, "channel">;
  log: Logger;
  maxBackoffMs: number;
  /** Waits between reconnect attempts (tests pass one that does not wait). */
  pause?: (ms: number, signal: AbortSignal) => Promise<void>;
}

/** A whole filter being received. */
interface Pending {
  readonly header: pb.FilterHeader;
  bytes: Uint8Array;
  received: number;
}

const EMPTY = new Uint8Array(0);
/**
 * The largest filter taken from one DP: 256 MiB, a DP of about 110 million CSIs sized for twice
 * that at 1%. A larger one is refused (the stream fails and the DP is asked for every lookup).
 */
const MAX_FILTER_BYTES_PER_DP = 256 * 1024 * 1024;

class Follower {
  current: { version: Uint8Array; bits: FilterBits; position: number } | undefined;
  versions = 0;
  private pending: Pending | undefined;
  private readonly follower: LogFollower;

  constructor(
    readonly dpId: string,
    private readonly o: CsiFilterOptions,
    private readonly log: Logger,
  ) {
    this.follower = followLog<pb.WatchFilterResponse>({
      endpoints: () => this.dp()?.endpoints ?? [],
      open: (endpoint, signal) => {
        this.pending = undefined;
        const dp = this.dp() as DpInfo;
        return o.upstream
          .channel(dp, endpoint)
          .client(pb.CsiFilterService)
          .watchFilter(
            {
              version: this.current?.version ?? new Uint8Array(0),
              position: BigInt(this.current?.position ?? 0),
            },
            { signal },
          );
      },
      apply: (msg) => this.apply(msg),
      log,
      logFields: { dp: dpId },
      messages: { ended: "filter stream ended; reconnecting", failed: "filter stream failed; reconnecting" },
      maxBackoffMs: o.maxBackoffMs,
      ...(o.pause && { pause: o.pause }),
    });
  }

  private dp(): DpInfo | undefined {
    return this.o.registry.dp(this.dpId);
  }

  /**
   * Whether the filter decides: a whole one is held, its stream is open, and no new version is
   * arriving (the DP then adds to the new one, not to the one held).
   */
  get routing(): boolean {
    return this.current !== undefined && this.pending === undefined && this.follower.connected();
  }

  private apply(msg: pb.WatchFilterResponse): boolean {
    const item = msg.item;
    if (item.case === "header") {
      const h = item.value;
      const bits = Number(h.bits);
      if (
        h.key.length !== FILTER_KEY_BYTES ||
        h.version.length !== FILTER_VERSION_BYTES ||
        !(bits > 0 && bits <= MAX_FILTER_BITS && bits % 64 === 0 && bits / 8 <= MAX_FILTER_BYTES_PER_DP) ||
        !(h.hashes >= 1 && h.hashes <= MAX_FILTER_HASHES)
      ) {
        throw new Error(`DP "${this.dpId}" sent a filter header out of bounds`);
      }
      // The bytes are allocated with the first chunk, so headers alone cost nothing.
      this.pending = { header: h, bytes: EMPTY, received: 0 };
      return false;
    }
    if (item.case === "chunk") {
      const p = this.pending;
      const c = item.value;
      if (p && p.received === 0) p.bytes = new Uint8Array(Number(p.header.bits) / 8);
      if (!p || Number(c.offset) !== p.received || p.received + c.data.length > p.bytes.length) {
        throw new Error(`DP "${this.dpId}" sent a filter chunk out of order`);
      }
      p.bytes.set(c.data, p.received);
      p.received += c.data.length;
      if (!c.last) return false;
      if (p.received !== p.bytes.length) throw new Error(`DP "${this.dpId}" ended its filter early`);
      const h = p.header;
      this.current = {
        version: h.version,
        bits: new FilterBits(h.key, { bits: Number(h.bits), hashes: h.hashes }, p.bytes),
        position: Number(h.position),
      };
      this.pending = undefined;
      this.versions++;
      this.log.info(
        { dp: this.dpId, bits: Number(h.bits), hashes: h.hashes, csis: Number(h.csis) },
        "CSI filter received",
      );
      // Whole and current: from now on the filter routes.
      return true;
    }
    if (item.case === "additions") {
      const cur = this.current;
      const a = item.value;
      if (!cur || this.pending || Number(a.position) !== cur.position + a.bits.length) {
        throw new Error(
          `DP "${this.dpId}" sent filter additions that do not follow position ${cur?.position}`,
        );
      }
      for (const b of a.bits) {
        if (b >= BigInt(cur.bits.shape.bits))
          throw new Error(`DP "${this.dpId}" sent a filter bit out of range`);
        cur.bits.set(Number(b));
      }
      cur.position = Number(a.position);
      // Additions come once the held version is current (on a resume, at once, even if none).
      return true;
    }
    return false;
  }

  endpointsChanged(): void {
    const endpoint = this.follower.endpoint();
    if (endpoint !== undefined && !this.dp()?.endpoints.includes(endpoint)) this.follower.reconnect();
  }

  close(): void {
    this.follower.close();
  }
}

/** Creates the filters; call reconcile() once the registry copy is loaded and on every change. */
export function createCsiFilters(o: CsiFilterOptions): CsiFilters {
  const log = o.log.child({ component: "filters" });
  const followers = new Map<string, Follower>();
  return {
    mayHold(dpId, uri) {
      const f = followers.get(dpId);
      return !f?.routing || (f.current as NonNullable<Follower["current"]>).bits.mayHold(uri);
    },
    reconcile() {
      const want = new Set<string>();
      for (const d of o.registry.snapshot().delegations)
        for (const id of d.federatedDpIds ?? []) want.add(id);
      for (const [id, f] of followers) {
        if (!want.has(id) || !o.registry.dp(id)) {
          f.close();
          followers.delete(id);
        }
      }
      for (const id of want) {
        if (!o.registry.dp(id)) continue;
        const f = followers.get(id);
        if (f) f.endpointsChanged();
        else followers.set(id, new Follower(id, o, log));
      }
    },
    states: () =>
      [...followers.values()].map((f) => ({
        dpId: f.dpId,
        routing: f.routing,
        bits: f.current?.bits.shape.bits ?? 0,
        hashes: f.current?.bits.shape.hashes ?? 0,
        position: f.current?.position ?? 0,
        versions: f.versions,
      })),
    bytes: () => [...followers.values()].reduce((n, f) => n + (f.current?.bits.bytes.length ?? 0), 0),
    close() {
      for (const f of followers.values()) f.close();
      followers.clear();
    },
  };
}
