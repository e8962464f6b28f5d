// gRPC binding of ResolverAdminService: the resolver's operator functions (flush, stats), for
// callers whose certificate carries the admin role and whose identity the configuration lists.
import type * as grpc from "@grpc/grpc-js";
import { csiHash, DiscoveryError, detectionToProto, parseRequestCsi, pb } from "@mimi/core";
import { addService } from "@mimi/rpc";
import type { ResolverServerOptions } from "./server-options.js";
import type { FlushScope, ResolverService } from "./service.js";

/** Registers ResolverAdminService (admins only) on `server`. */
export function bindResolverAdmin(
  server: grpc.Server,
  service: ResolverService,
  opts: ResolverServerOptions,
): void {
  const { log, registry, enumeration } = opts;
  const { admins } = opts;
  addService(
    server,
    pb.ResolverAdminService,
    {
      async flush(req, ctx) {
        const s = req.scope;
        let scope: FlushScope;
        let what: string;
        if (s.case === "csi") {
          const csi = parseRequestCsi(s.value);
          scope = { csi };
          what = `csi ${csiHash(csi.uri)}`;
        } else if (s.case === "dpId" && s.value) {
          scope = { dpId: s.value };
          what = `dp ${s.value}`;
        } else if (s.case === "all" && s.value) {
          scope = "all";
          what = "all";
        } else {
          throw new DiscoveryError(
            "invalid_argument",
            "say what to flush: a csi, a non-empty dp_id, or all = true",
          );
        }
        const evicted = service.flush(scope);
        log.info({ actor: ctx.peer.name, scope: what, evicted }, "cache flushed");
        return { evicted: BigInt(evicted) };
      },
      async getStats() {
        const st = service.stats;
        const n = (v: number) => BigInt(v);
        return {
          cacheEntries: n(service.cacheSize),
          hits: n(st.hits),
          misses: n(st.misses),
          stale: n(st.stale),
          prefetches: n(st.prefetches),
          invalidations: n(st.invalidations),
          resyncs: n(st.resyncs),
          evictedByRegistry: n(st.evictedByRegistry),
          flushed: n(st.flushed),
          upstreamRequests: n(st.upstreamRequests),
          upstreamFailures: n(st.upstreamFailures),
          verificationFailures: n(st.verificationFailures),
          registrySerial: registry.serial,
          registryConnected: opts.registryConnected(),
          subscriptions: opts.subscriptions
            .states()
            .sort((a, b) => (a.dpId < b.dpId ? -1 : 1))
            .map((x) => ({
              dpId: x.dpId,
              connected: x.connected,
              logId: x.logId,
              seq: n(x.seq),
              events: n(x.events),
              resyncs: n(x.resyncs),
              lastEventAtMs: n(x.lastEventAtMs),
            })),
          quotaRefusals: n(opts.quotas.refused),
          enumerationMode: enumeration.policy.mode,
          enumerationDetections: n(enumeration.counts.detections),
          enumerationRefusals: n(enumeration.counts.refused),
          recentDetections: enumeration.recent().map(detectionToProto),
          filters: opts
            .filterStates()
            .map((f) => ({
              dpId: f.dpId,
              routing: f.routing,
              bits: n(f.bits),
              hashes: f.hashes,
              position: n(f.position),
              versions: n(f.versions),
            }))
            .sort((a, b) => (a.dpId < b.dpId ? -1 : 1)),
          upstreamWindows: opts
            .upstreamWindows()
            .sort((a, b) => (a.dpId < b.dpId ? -1 : 1))
            .map((w) => ({
              dpId: w.dpId,
              inflight: n(w.inflight),
              window: n(w.window),
              queued: n(w.queued),
            })),
        };
      },
    },
    {
      log,
      roles: ["admin"],
      authorize(peer) {
        if (!admins.has(peer.name)) {
          throw new DiscoveryError(
            "permission_denied",
            `identity "${peer.name}" is not an admin of this resolver`,
          );
        }
      },
    },
  );
}
