// The resolver's fast paths (rpc/fast-path.ts): Resolve and ResolveStream requests answered or
// refused from their bytes, before protobuf-es decodes them and before the server adapter
// builds a call context and a promise chain. What they decline takes the full path (server.ts).
import {
  type Csi,
  type DiscoveryError,
  encodeResolveResponse,
  encodeResolveStreamHit,
  parseCsi,
  readSimpleRequest,
} from "@mimi/core";
import type { FastCall, FastPath } from "@mimi/rpc";
import { clocksNow, overloadRefusal, waitBound } from "./call-bounds.js";
import type { HeldRefusals } from "./held-refusals.js";
import type { ResolverServerOptions } from "./server-options.js";
import type { Resolution, ResolverService } from "./service.js";

// Field numbers of ResolveRequest.csi, ResolveStreamRequest.request_id and .csi (resolver.proto).
const RESOLVE_CSI = 1;
export const STREAM_REQUEST_ID = 1;
const STREAM_CSI = 2;

/** What the fast paths read besides the service. */
export interface FastPathOptions
  extends Pick<
    ResolverServerOptions,
    "log" | "registry" | "loop" | "enumeration" | "quotas" | "privateByDefault" | "now"
  > {
  /** The DPs' refusals of callers' own contexts, held until their retry-after (server.ts). */
  held: Pick<HeldRefusals, "check">;
  /** The encoded Answer (without TTL) of a resolution, as the full path sends it. */
  encodedAnswer: (r: Resolution) => Uint8Array;
}

/**
 * The fast paths of Resolve and ResolveStream.
 *
 * Cache hits asked with default parameters are answered from the request's bytes. The cache
 * holds canonical URIs only, so a CSI written any other way misses here and takes the full
 * path, as does every request with options, privacy or explain, and every lookup while debug
 * logging is on. A range whose DP federates by default (R11) is answered by the full path,
 * which federates.
 *
 * A unary miss that the full path would refuse for the resolver's or its DP's capacity (the
 * event-loop guard's RESOLVER_OVERLOADED, the gate's UPSTREAM_SATURATED) is refused here too:
 * in overload, misses come in faster than they are answered, and each refusal the full path
 * made cost about three echo calls of the core that answers the rest. The full path checks
 * the caller (an enumeration block, a DP's refusal of its context, its budget) between those
 * two, so a caller those checks would refuse is left to it, to hear its own refusal and its
 * pause: refused here for the DP's capacity, such a caller could tell from which refusal it
 * got whether another caller's lookup of the CSI is in flight. What service.refusedMiss leaves
 * (a DP asked privately by default, a lookup to join) takes the full path too, and so do
 * streams' items, whose fast path is given no call.
 */
export function createFastPaths(
  service: ResolverService,
  o: FastPathOptions,
): { resolve: FastPath; resolveStream: FastPath } {
  const { log, registry } = o;
  let federating = { serial: -1n, any: false };
  const federatesByDefault = (uri: string) => {
    if (federating.serial !== registry.serial) {
      const any = registry.allDps().some((d) => d.federation?.defaultMode === "federate");
      federating = { serial: registry.serial, any };
    }
    if (!federating.any) return false;
    let d: ReturnType<typeof registry.find>;
    try {
      d = registry.find(parseCsi(uri).key);
    } catch {
      return true; // not a CSI: the full path says why
    }
    return d !== undefined && registry.dp(d.dpId)?.federation?.defaultMode === "federate";
  };
  const allowed = (csi: string) => !log.isLevelEnabled("debug") && !federatesByDefault(csi);
  const hitResponse = (csi: string): Uint8Array | undefined => {
    const r = service.cached(csi);
    return r && encodeResolveResponse(o.encodedAnswer(r), r.ttlSeconds, r.stale);
  };

  const overloaded = () => (o.loop.admit() ? undefined : overloadRefusal(o.loop.delayMs));
  // Whether the full path's checks of the caller (server.ts charge()) would refuse this miss.
  const refusesCaller = (call: FastCall, csi: Csi, dpId: string) => {
    const identity = call.peer.name;
    const now = o.now();
    return (
      o.enumeration.blocked(identity, csi.uri, now, false) !== undefined ||
      o.held.check(identity, dpId, csi.uri, now) !== undefined ||
      !o.quotas.allows(identity, dpId, now)
    );
  };
  const refusedMiss = (uri: string, call: FastCall): DiscoveryError | undefined => {
    const csi = parseCsi(uri); // a throw declines: the full path says what is wrong
    if (csi.uri !== uri) return undefined;
    return service.refusedMiss(csi, {
      waitUntilMs: waitBound(call.deadlineMs, clocksNow()),
      privateAt: o.privateByDefault,
      overloaded,
      refusesCaller: (dpId) => refusesCaller(call, csi, dpId),
    });
  };

  return {
    resolve: (bytes, call) => {
      const req = readSimpleRequest(bytes, RESOLVE_CSI);
      if (!req || !allowed(req.csi)) return undefined;
      return hitResponse(req.csi) ?? (call && refusedMiss(req.csi, call));
    },
    resolveStream: (bytes, _call, itemBytes) => {
      const req = readSimpleRequest(bytes, STREAM_CSI, STREAM_REQUEST_ID);
      const r = req && allowed(req.csi) && service.cached(req.csi);
      return r
        ? encodeResolveStreamHit(req.id, o.encodedAnswer(r), r.ttlSeconds, r.stale, itemBytes)
        : undefined;
    },
  };
}
