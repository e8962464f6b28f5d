// gRPC binding of AuthoritativeAdminService: the DP operator's calls (enrolment, feeds, status,
// key rolls, promotion), for the identities in `admins` only.
import type * as grpc from "@grpc/grpc-js";
import {
  DiscoveryError,
  delegationToProto,
  detectionToProto,
  invalidArgument,
  type Logger,
  pb,
} from "@mimi/core";
import { addService, MAX_METHOD_REQUEST_BYTES } from "@mimi/rpc";
import type { Claims, FeedEntry } from "./claims/index.js";
import type { LookupLimits } from "./lookup-limits.js";
import type { PrivateKeys } from "./private-keys.js";
import { keyStatusToProto } from "./private-server.js";
import type { Replication, ReplicationStatus } from "./replication/index.js";
import type { AuthoritativeService } from "./service.js";
import type { EnrolledMsp } from "./store/rows.js";

/** Most entries one feed message may carry. */
const MAX_FEED_BATCH = 10_000;

/** Registers AuthoritativeAdminService on `server`. */
export function bindAdminServer(
  server: grpc.Server,
  service: AuthoritativeService,
  claims: Claims,
  opts: {
    log: Logger;
    admins: ReadonlySet<string>;
    limits: LookupLimits;
    privateKeys: () => PrivateKeys | undefined;
    privateLookupsEnabled: boolean;
    replication: Replication;
  },
): void {
  const { admins, log, limits, replication } = opts;
  addService(
    server,
    pb.AuthoritativeAdminService,
    {
      async enrolMsp(req, ctx) {
        replication.beforeWrite();
        if (req.enrolledUsers > BigInt(Number.MAX_SAFE_INTEGER)) {
          throw invalidArgument("enrolled_users must be at most 2^53-1", "enrolled_users");
        }
        const msp = service.enrolMsp({
          mspId: req.mspId,
          tlsIdentity: req.tlsIdentity,
          enrolledUsers: Number(req.enrolledUsers),
          signingPublicKey: req.signingPublicKey,
          mayBulk: req.mayBulk,
        });
        log.info({ actor: ctx.peer.name, msp: msp.mspId, mayBulk: msp.mayBulk }, "msp enrolled");
        return { msp: enrolledToProto(msp) };
      },
      async listEnrolledMsps() {
        return { msps: service.listEnrolled().map(enrolledToProto) };
      },
      async ingestProviderFeed(reqs, ctx) {
        replication.beforeWrite();
        let entries = 0;
        let removed = 0;
        let batch = 0;
        for await (const req of reqs) {
          let applied = false;
          try {
            // Each message is a write of its own, as each bulk batch is: a primary fenced while
            // the stream is open refuses the next, and what is applied is on the followers the
            // DP waits for before it says so.
            replication.beforeWrite();
            if (req.entries.length > MAX_FEED_BATCH) {
              throw new DiscoveryError(
                "invalid_argument",
                `a message may hold at most ${MAX_FEED_BATCH} entries`,
              );
            }
            removed += claims.ingestFeed(req.entries.map((e, i) => feedEntryOf(e, i)));
            entries += req.entries.length;
            applied = true;
            await replication.afterWrite(ctx.signal);
            batch++;
          } catch (err) {
            if (!(err instanceof DiscoveryError)) throw err;
            // Messages after a failed one are not applied; a feed is idempotent, so the whole
            // feed (or the rest, from this message on) can be sent again.
            const what = applied
              ? `message ${batch} (counting from 0) is applied here but not confirmed by the followers; ${entries} entries in all are applied (${removed} mappings removed)`
              : `message ${batch} (counting from 0) refused; the ${entries} entries before it are applied (${removed} mappings removed)`;
            throw new DiscoveryError(err.code, `${what}: ${err.message}`, {
              cause: err,
              ...(err.details && { details: err.details }),
            });
          }
        }
        log.info({ actor: ctx.peer.name, entries, removed }, "provider feed applied");
        return { entries: BigInt(entries), mappingsRemoved: BigInt(removed) };
      },
      async getStatus() {
        const s = service.status();
        const refused = limits.refused;
        const enumeration = limits.enumeration;
        return {
          dpId: s.dpId,
          registrySerial: s.serial,
          delegations: s.delegations.map(delegationToProto),
          mappingCount: BigInt(s.mappingCount),
          lookupsServed: BigInt(s.lookupsServed),
          refusedCapacity: BigInt(refused.capacity),
          refusedResolver: BigInt(refused.resolver),
          refusedContext: BigInt(refused.context),
          refusedEnumeration: BigInt(refused.enumeration),
          enumerationMode: enumeration.policy.mode,
          enumerationDetections: BigInt(enumeration.counts.detections),
          recentDetections: enumeration.recent().map(detectionToProto),
          privateLookupKeys: (opts.privateKeys()?.status() ?? []).map(keyStatusToProto),
          replication: replicationStateToProto(replication.status()),
        };
      },
      async promote(req, ctx) {
        log.warn({ actor: ctx.peer.name, force: req.force }, "promotion asked");
        const r = await replication.promote(req.force);
        return {
          epoch: BigInt(r.epoch),
          peers: r.peers.map((p) => ({
            endpoint: p.endpoint,
            error: p.error ?? "",
            latestSeq: BigInt(p.latestSeq),
            granted: p.granted,
          })),
        };
      },
      async rollPrivateLookupKey(_req, ctx) {
        replication.beforeWrite();
        const keys = opts.privateKeys();
        if (!keys)
          throw opts.privateLookupsEnabled
            ? new DiscoveryError("not_ready", "this DP has no registry copy yet; try again shortly")
            : new DiscoveryError(
                "failed_precondition",
                "private lookups are off at this DP (privateLookups.enabled)",
              );
        const r = keys.roll();
        log.info({ actor: ctx.peer.name, epoch: r.key.epoch, made: r.made }, "private-lookup key roll asked");
        return { key: keyStatusToProto(r.key), made: r.made };
      },
    },
    {
      log,
      roles: ["admin"],
      authorize(peer) {
        if (!admins.has(peer.name)) {
          throw new DiscoveryError("permission_denied", `identity "${peer.name}" is not an admin of this DP`);
        }
      },
      // A feed message of MAX_FEED_BATCH entries.
      maxRequestBytes: { ingestProviderFeed: MAX_METHOD_REQUEST_BYTES },
    },
  );
}

function feedEntryOf(e: pb.FeedEntry, i: number): FeedEntry {
  const events: Record<number, FeedEntry["event"]> = {
    [pb.FeedEvent.DISCONNECTED]: "disconnected",
    [pb.FeedEvent.REASSIGNED]: "reassigned",
    [pb.FeedEvent.PORTED]: "ported",
  };
  const event = events[e.event];
  if (!event) {
    throw invalidArgument(
      `entry ${i}: event must be DISCONNECTED, REASSIGNED or PORTED`,
      `entries[${i}].event`,
    );
  }
  const t = e.effectiveAtMs;
  return {
    csi: e.csi,
    event,
    effectiveAtMs: t > 0n && t <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(t) : -1,
    donorMspId: e.donorMspId,
  };
}

function enrolledToProto(m: EnrolledMsp) {
  return {
    mspId: m.mspId,
    tlsIdentity: m.tlsIdentity,
    enrolledUsers: BigInt(m.enrolledUsers),
    enrolledAtMs: BigInt(m.enrolledAtMs),
    signingPublicKey: m.signingPublicKey,
    mayBulk: m.mayBulk,
  };
}

function replicationStateToProto(s: ReplicationStatus) {
  return {
    role: s.role,
    epoch: BigInt(s.epoch),
    appliedSeq: BigInt(s.appliedSeq),
    followers: s.followers.map((f) => ({ identity: f.name, ackedSeq: BigInt(f.ackedSeq) })),
    followerState: s.replica?.state ?? "",
    following: s.replica?.endpoint ?? "",
    lagEvents: BigInt(s.replica?.lagEvents ?? 0),
    lagMs: BigInt(s.replica?.lagMs ?? 0),
  };
}
