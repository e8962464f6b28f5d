// gRPC binding of the authoritative: decode, authorize admins, call the service,
// shape the answer. The only file of the authoritative that knows gRPC.
import { create } from "@bufbuild/protobuf";
import type * as grpc from "@grpc/grpc-js";
import {
  addService,
  answerToProto,
  type CallContext,
  csiHash,
  DiscoveryError,
  delegationToProto,
  type Logger,
  mappingFromProto,
  paramsFromProto,
  pb,
  toWireStatus,
} from "@mimi/core";
import type { AuthoritativeService, ImportItem } from "./service.js";
import type { EnrolledMsp } from "./store.js";

/** Largest batch one ImportMappings message may carry. */
const MAX_IMPORT_BATCH = 10_000;

/** Registers AuthoritativeService and AuthoritativeAdminService on `server`. */
export function bindAuthoritativeServer(
  server: grpc.Server,
  service: AuthoritativeService,
  opts: { log: Logger; admins: readonly string[] },
): void {
  const { log } = opts;
  const lookupOne = (csi: string, options: pb.LookupOptions | undefined, ctx: CallContext) => {
    const params = paramsFromProto(options);
    const outcome = service.lookup(csi);
    if (log.isLevelEnabled("debug")) {
      log.debug({ peer: ctx.peerName, csi: csiHash(csi), outcome: outcome.kind }, "lookup");
    }
    return { answer: answerToProto(outcome, params, service.mspIndex, outcome.ttlSeconds) };
  };
  addService(
    server,
    pb.AuthoritativeService,
    {
      lookup: async (req, ctx) => lookupOne(req.csi, req.options, ctx),
      async lookupStream(reqs, ctx, send) {
        // Lookups are synchronous reads of the store, so items are answered in order; send()
        // waits when the resolver stops reading, which stops this loop reading requests.
        for await (const req of reqs) {
          let reply: pb.LookupStreamResponse["result"];
          try {
            reply = {
              case: "response",
              value: create(pb.LookupResponseSchema, lookupOne(req.csi, req.options, ctx)),
            };
          } catch (err) {
            const s = toWireStatus(err, log, ctx.method);
            reply = {
              case: "error",
              value: create(pb.ItemErrorSchema, { code: s.code, message: s.details }),
            };
          }
          await send({ requestId: req.requestId, result: reply });
        }
      },
    },
    { log },
  );

  const admins = new Set(opts.admins);
  addService(
    server,
    pb.AuthoritativeAdminService,
    {
      async enrolMsp(req, ctx) {
        if (req.enrolledUsers > BigInt(Number.MAX_SAFE_INTEGER)) {
          throw new DiscoveryError("invalid_argument", "enrolled_users must be at most 2^53-1");
        }
        const msp = service.enrolMsp(req.mspId, req.tlsIdentity, Number(req.enrolledUsers));
        log.info({ actor: ctx.peer.name, msp: msp.mspId }, "msp enrolled");
        return { msp: enrolledToProto(msp) };
      },
      async listEnrolledMsps() {
        return { msps: service.listEnrolled().map(enrolledToProto) };
      },
      async importMappings(reqs, ctx) {
        let imported = 0;
        let unchanged = 0;
        let batch = 0;
        for await (const req of reqs) {
          try {
            if (req.mappings.length > MAX_IMPORT_BATCH) {
              throw new DiscoveryError(
                "invalid_argument",
                `a batch may hold at most ${MAX_IMPORT_BATCH} mappings`,
              );
            }
            const items: ImportItem[] = req.mappings.map((r, i) => {
              if (!r.mapping)
                throw new DiscoveryError("invalid_argument", `mapping ${i} of the batch is empty`);
              return { csi: r.csi, mapping: mappingFromProto(r.mapping) };
            });
            const r = service.importMappings(items);
            imported += r.imported;
            unchanged += r.unchanged;
            batch++;
          } catch (err) {
            // Earlier batches are committed; say so, so the operator can resume after them.
            if (!(err instanceof DiscoveryError)) throw err;
            log.warn({ actor: ctx.peer.name, batch, imported, unchanged }, "import stopped at a bad batch");
            throw new DiscoveryError(
              err.code,
              `batch ${batch} (counting from 0) refused; the ${batch} batch(es) before it are stored (${imported} new or changed, ${unchanged} unchanged): ${err.message}`,
            );
          }
        }
        log.info({ actor: ctx.peer.name, imported, unchanged }, "mappings imported");
        return { imported: BigInt(imported), unchanged: BigInt(unchanged) };
      },
      async getStatus() {
        const s = service.status();
        return {
          dpId: s.dpId,
          registrySerial: s.serial,
          delegations: s.delegations.map(delegationToProto),
          mappingCount: BigInt(s.mappingCount),
          lookupsServed: BigInt(s.lookupsServed),
        };
      },
    },
    {
      log,
      authorize(peer) {
        if (!admins.has(peer.name)) {
          throw new DiscoveryError("permission_denied", `identity "${peer.name}" is not an admin of this DP`);
        }
      },
    },
  );
}

function enrolledToProto(m: EnrolledMsp) {
  return {
    mspId: m.mspId,
    tlsIdentity: m.tlsIdentity,
    enrolledUsers: BigInt(m.enrolledUsers),
    enrolledAtMs: BigInt(m.enrolledAtMs),
  };
}
