// gRPC binding of the resolver: parse the request once (INVALID_ARGUMENT here), resolve,
// shape the answer for the caller's parameters. The only resolver file that serves gRPC.
import type * as grpc from "@grpc/grpc-js";
import {
  addService,
  answerToProto,
  csiHash,
  type Logger,
  paramsFromProto,
  parseCsi,
  pb,
  type RegistryView,
} from "@mimi/core";
import type { ResolverService } from "./service.js";

/** Registers ResolverService on `server`. Any caller with a certificate from the CA may resolve. */
export function bindResolverServer(
  server: grpc.Server,
  service: ResolverService,
  opts: { log: Logger; registry: RegistryView },
): void {
  const { log, registry } = opts;
  const indexOf = (mspId: string) => registry.msp(mspId)?.index;
  addService(
    server,
    pb.ResolverService,
    {
      async resolve(req, ctx) {
        const csi = parseCsi(req.csi);
        const params = paramsFromProto(req.options);
        const r = await service.resolve(csi);
        if (log.isLevelEnabled("debug")) {
          log.debug(
            { peer: ctx.peer.name, csi: csiHash(csi.uri), source: r.source, outcome: r.outcome.kind },
            "resolve",
          );
        }
        return { answer: answerToProto(r.outcome, params, indexOf, r.ttlSeconds), stale: r.stale };
      },
    },
    { log },
  );
}
