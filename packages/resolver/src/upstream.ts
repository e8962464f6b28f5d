// Calls to authoritative DPs: one long-lived, multiplexed channel per endpoint, failover
// across a DP's endpoints, and conversion of gRPC failures into DiscoveryError. The
// resolver authenticates as itself; nothing about the querying MSP is forwarded (R9, P2).
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
      let lastErr: DiscoveryError | undefined;
      for (const endpoint of order) {
        try {
          const res = await channelFor(dp, endpoint)
            .client(pb.AuthoritativeService)
            .lookup({ csi }, { timeoutMs: o.attemptTimeoutMs });
          preferred.set(dp.id, endpoint);
          return outcomeOf(dp.id, res.answer);
        } catch (err) {
          const e = err instanceof DiscoveryError ? err : new DiscoveryError("upstream_failed", String(err));
          if (e.code !== "upstream_unavailable") throw e;
          log.warn({ dp: dp.id, endpoint, err: e.message }, "dp endpoint unavailable; trying next");
          lastErr = e;
        }
      }
      throw new DiscoveryError(
        "upstream_unavailable",
        `no endpoint of DP "${dp.id}" answered: ${lastErr?.message}`,
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

function frozenMapping(m: pb.Mapping) {
  const x = mappingFromProto(m);
  Object.freeze(x.tags);
  return Object.freeze(x);
}
