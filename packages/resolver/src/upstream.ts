// Calls to authoritative DPs: one long-lived, multiplexed channel per endpoint, failover
// across a DP's endpoints, and conversion of gRPC failures into DiscoveryError. The
// resolver authenticates as itself; nothing about the querying MSP is forwarded (R9, P2).
import { status as Status } from "@grpc/grpc-js";
import {
  type Channel,
  channelCredentials,
  DiscoveryError,
  type DpInfo,
  type Logger,
  type LookupOutcome,
  mappingFromProto,
  openChannel,
  pb,
  type TlsMaterial,
} from "@mimi/core";

/** Asks DPs for answers. */
export interface Upstream {
  /** Looks up a canonical CSI at the DP, trying its endpoints in order. */
  lookup(dp: DpInfo, csi: string): Promise<LookupOutcome>;
  close(): void;
}

/** Options of the upstream pool. */
export interface UpstreamOptions {
  tls: TlsMaterial;
  log: Logger;
  /** Deadline of one attempt at one endpoint. */
  attemptTimeoutMs: number;
}

/** Creates the pool. */
export function createUpstream(o: UpstreamOptions): Upstream {
  const log = o.log.child({ component: "upstream" });
  const channels = new Map<string, Channel>();
  // The endpoint that answered last, per DP: tried first next time.
  const preferred = new Map<string, string>();

  const channelFor = (dp: DpInfo, endpoint: string) => {
    const k = `${dp.tlsIdentity}|${endpoint}`;
    let ch = channels.get(k);
    if (!ch) {
      ch = openChannel(endpoint, channelCredentials(o.tls, dp.tlsIdentity));
      channels.set(k, ch);
    }
    return ch;
  };

  return {
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
          const res = await channelFor(dp, endpoint)
            .client(pb.AuthoritativeService)
            .lookup({ csi }, { timeoutMs: o.attemptTimeoutMs });
          preferred.set(dp.id, endpoint);
          return outcomeOf(dp.id, res.answer);
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
      for (const ch of channels.values()) ch.close();
      channels.clear();
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
