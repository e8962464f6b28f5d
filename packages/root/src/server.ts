// gRPC binding of the root: decodes requests, checks admin identity, calls the service,
// and streams the registry to watchers (core's serveLog). The only file of the root that
// knows gRPC.
import { create, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import type * as grpc from "@grpc/grpc-js";
import {
  changeToProto,
  createRateLimiter,
  DiscoveryError,
  delegationToProto,
  dpFromProto,
  dpToProto,
  type EncodedSnapshot,
  encodeSnapshotResponses,
  invalidArgument,
  keyFromProto,
  type Logger,
  mspToProto,
  pb,
  type RegistryChange,
  type RegistryData,
  serveLog,
} from "@mimi/core";
import { addService } from "@mimi/rpc";
import type { RootService } from "./service.js";
import type { AuditEntry } from "./store.js";

/** A watcher further behind than this gets a snapshot instead of the change backlog. */
const MAX_BACKLOG = 1_000;

/** The most a ListAudit response holds (gRPC clients receive 4 MiB by default). */
const MAX_AUDIT_BYTES = 3_500_000;
/** Changes read from the store per query while a watcher catches up. */
const CHANGE_PAGE = 256;

/**
 * Snapshot bytes one identity is sent a minute (a burst of as much): sixteen snapshots of a
 * registry at its largest (root checks.ts), far more than a follower needs (one at start, one
 * after it falls too far behind); a caller in a loop costs the root as much egress and TLS.
 */
export const SNAPSHOT_BYTES_PER_MINUTE = 64 * 1024 * 1024;
/** ErrorInfo's reason when an identity was sent its snapshot bytes for the minute. */
export const SNAPSHOT_RATE = "SNAPSHOT_RATE";

/**
 * Charges `identity` for a snapshot of `bytes` (a snapshot larger than the budget costs the
 * budget: still one a minute), or throws RESOURCE_EXHAUSTED with when to try again.
 */
export function snapshotBudget(
  now: () => number = Date.now,
  perMinute = SNAPSHOT_BYTES_PER_MINUTE,
): (identity: string, bytes: number) => void {
  const limiter = createRateLimiter({ limit: perMinute, windowMs: 60_000 }, 10_000);
  return (identity, bytes) => {
    const refusal = limiter.take(identity, now(), Math.max(1, Math.min(bytes, perMinute)));
    if (!refusal) return;
    const seconds = Math.ceil(refusal.retryAfterMs / 1000);
    throw new DiscoveryError(
      "resource_exhausted",
      `identity "${identity}" was sent ${Math.round(perMinute / 1_048_576)} MiB of registry snapshots in the ` +
        `last minute; try again in ${seconds} s (WatchRegistry sends changes after its first snapshot)`,
      { details: { retryAfterMs: refusal.retryAfterMs, reason: SNAPSHOT_RATE } },
    );
  };
}

/** The snapshot responses and the serial they are at. */
export type SnapshotResponses = EncodedSnapshot & { readonly serial: bigint };

/**
 * The registry's snapshot responses, encoded once per snapshot the service holds (once per
 * serial): every resolver, DP and secondary that starts, reconnects or falls behind asks for
 * the whole registry, and converting, encoding and copying it for each of them cost the root
 * the same work over and over. The bytes are shared by every call and never written to.
 */
export function snapshotEncoder(service: Pick<RootService, "snapshot">): () => SnapshotResponses {
  let held: RegistryData | undefined;
  let encoded: SnapshotResponses | undefined;
  return () => {
    const snap = service.snapshot();
    if (snap !== held || !encoded) {
      encoded = { serial: snap.serial, ...encodeSnapshotResponses(snap) };
      held = snap;
    }
    return encoded;
  };
}

/** Registers RootService and RegistryAdminService on `server`. */
export function bindRootServer(
  server: grpc.Server,
  service: RootService,
  /** `admins` is live: a reload replaces its members. */
  opts: {
    log: Logger;
    admins: ReadonlySet<string>;
    now?: () => number;
    /** SNAPSHOT_BYTES_PER_MINUTE, but in tests. */
    snapshotBytesPerMinute?: number;
  },
): void {
  const { log } = opts;
  const encodedSnapshot = snapshotEncoder(service);
  const charge = snapshotBudget(opts.now, opts.snapshotBytesPerMinute);
  addService(
    server,
    pb.RootService,
    {
      async getSnapshot(_req, ctx) {
        const snap = encodedSnapshot();
        charge(ctx.peerName, snap.getSnapshot.length);
        return snap.getSnapshot;
      },
      async watchRegistry(req, ctx, send) {
        // The first snapshot of a watch is charged, whatever sends it (the watcher asked from 0,
        // from too far behind, from ahead of a restored root, or from before what a secondary
        // holds); one the root sends later in the watch, of its own accord, is not.
        let first = true;
        const sendSnapshot = async () => {
          const snap = encodedSnapshot();
          if (first) charge(ctx.peerName, snap.watchRegistry.length);
          first = false;
          await send(snap.watchRegistry);
          return snap.serial;
        };
        let from = req.sinceSerial;
        if (from === 0n || service.serial() - from > BigInt(MAX_BACKLOG)) from = await sendSnapshot();
        log.debug(
          {
            component: "watch",
            peer: ctx.peerName,
            since: req.sinceSerial.toString(),
            from: from.toString(),
          },
          "watch started",
        );
        await serveLog<RegistryChange, bigint>(from, {
          signal: ctx.signal,
          subscribe: (wake) => service.subscribe(wake),
          pageSize: CHANGE_PAGE,
          // Ahead of this root (it was restored from an older copy), or behind the changes it holds
          // (a secondary that replaced its copy with a snapshot, possibly mid-watch): start over.
          // A check that passes is followed by the read in the same turn, and the store is read
          // again after every wake-up, so a watcher never sees a gap.
          check: (sent) => (sent > service.serial() || sent < service.backlogStart() ? sendSnapshot() : sent),
          read: (sent, limit) => service.changesSince(sent, limit),
          async send(c) {
            first = false;
            await send({ event: { case: "change", value: changeToProto(c) } });
            return c.serial;
          },
          caughtUp: (serial) => {
            first = false;
            return send({ event: { case: "caughtUp", value: { serial } } });
          },
        });
      },
      async refer(req) {
        const r = service.refer(req.csi);
        if (!r) return { serial: service.serial() };
        return {
          delegation: delegationToProto(r.delegation),
          dp: r.dp && dpToProto(r.dp),
          serial: r.serial,
        };
      },
    },
    { log },
  );

  const { admins } = opts;
  addService(
    server,
    pb.RegistryAdminService,
    {
      async createDelegation(req, ctx) {
        const c = service.createDelegation(
          ctx.peer.name,
          keyFromProto(req.key),
          req.dpId,
          req.ttlSeconds,
          req.federatedDpIds,
        );
        audit(log, ctx.peer.name, c.serial, "delegation created");
        return {
          delegation: c.kind === "put_delegation" ? delegationToProto(c.delegation) : undefined,
          serial: c.serial,
        };
      },
      async updateDelegation(req, ctx) {
        if (!req.setFederatedDpIds && req.federatedDpIds.length > 0) {
          throw invalidArgument(
            "federated_dp_ids is only read with set_federated_dp_ids = true",
            "federated_dp_ids",
          );
        }
        const c = service.updateDelegation(
          ctx.peer.name,
          keyFromProto(req.key),
          req.dpId,
          req.ttlSeconds,
          req.setFederatedDpIds ? req.federatedDpIds : undefined,
        );
        audit(log, ctx.peer.name, c.serial, "delegation updated");
        return {
          delegation: c.kind === "put_delegation" ? delegationToProto(c.delegation) : undefined,
          serial: c.serial,
        };
      },
      async deleteDelegation(req, ctx) {
        const c = service.deleteDelegation(ctx.peer.name, keyFromProto(req.key));
        audit(log, ctx.peer.name, c.serial, "delegation deleted");
        return { serial: c.serial };
      },
      async listDelegations() {
        const { delegations, serial } = service.listDelegations();
        return { delegations: delegations.map(delegationToProto), serial };
      },
      async putDp(req, ctx) {
        if (!req.dp) throw invalidArgument("dp is required", "dp");
        const c = service.putDp(ctx.peer.name, dpFromProto(req.dp), {
          clearPrivateLookupKeys: req.clearPrivateLookupKeys,
          ...(req.ifSerial > 0n && { ifSerial: req.ifSerial }),
        });
        audit(log, ctx.peer.name, c.serial, "dp registered");
        return { serial: c.serial };
      },
      async deleteDp(req, ctx) {
        const c = service.deleteDp(ctx.peer.name, req.id);
        audit(log, ctx.peer.name, c.serial, "dp deleted");
        return { serial: c.serial };
      },
      async putMsp(req, ctx) {
        const { msp, change } = service.putMsp(ctx.peer.name, req.id, req.name, req.signingPublicKey);
        audit(log, ctx.peer.name, change.serial, "msp registered");
        return { msp: mspToProto(msp), serial: change.serial };
      },
      async listAudit(req) {
        const limit = req.limit === 0 ? 100 : Math.min(req.limit, 10_000);
        return auditPage(service.audit(limit));
      },
    },
    {
      log,
      roles: ["admin"],
      authorize(peer) {
        // A secondary refuses every caller alike, naming the primary, before identity matters.
        service.checkWritable();
        if (!admins.has(peer.name)) {
          throw new DiscoveryError("permission_denied", `identity "${peer.name}" is not a registry admin`);
        }
      },
    },
  );
}

function audit(log: Logger, actor: string, serial: bigint, msg: string): void {
  log.info({ actor, serial: serial.toString() }, msg);
}

/**
 * ListAudit's response for `entries` (newest first): as many as fit in `maxBytes` encoded, so
 * every client can receive it (a put_dp record may be a few KiB: 10,000 of them would not fit in
 * gRPC's default 4 MiB), and whether some were left out.
 */
export function auditPage(
  entries: readonly AuditEntry[],
  maxBytes = MAX_AUDIT_BYTES,
): MessageInitShape<typeof pb.ListAuditResponseSchema> {
  const records: MessageInitShape<typeof pb.AuditRecordSchema>[] = [];
  let bytes = 0;
  for (const e of entries) {
    const record = {
      serial: e.change.serial,
      atMs: BigInt(e.atMs),
      actor: e.actor,
      change: changeToProto(e.change),
    };
    // The record and its field tag and length in the response.
    bytes += toBinary(pb.AuditRecordSchema, create(pb.AuditRecordSchema, record)).length + 6;
    if (bytes > maxBytes) return { records, truncated: true };
    records.push(record);
  }
  return { records, truncated: false };
}
