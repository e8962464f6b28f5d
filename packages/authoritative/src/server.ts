// gRPC binding of the authoritative: decode, authorize admins, call the service,
// shape the answer. The only file of the authoritative that knows gRPC.
import { create } from "@bufbuild/protobuf";
import type * as grpc from "@grpc/grpc-js";
import {
  answerToProto,
  changeHash,
  csiHash,
  DEFAULT_PARAMS,
  DiscoveryError,
  encodeAnswerWithoutTtl,
  encodeLookupResponse,
  encodeLookupStreamItem,
  invalidArgument,
  type Logger,
  mappingFromProto,
  mappingToProto,
  mspToProto,
  paramsFromProto,
  parseRequestCsi,
  pb,
  serveLog,
} from "@mimi/core";
import { addService, type CallContext, itemError, MAX_METHOD_REQUEST_BYTES } from "@mimi/rpc";
import { bindAdminServer } from "./admin-server.js";
import type { ChangeLog, Resync } from "./change-log.js";
import type { Claims, StartRequest } from "./claims/index.js";
import type { LookupLimits } from "./lookup-limits.js";
import { clampToNumber } from "./numbers.js";
import { replyInOrder } from "./ordered-replies.js";
import type { PrivateKeys } from "./private-keys.js";
import type { Replication } from "./replication/index.js";
import type { AuthoritativeService } from "./service.js";
import type { ChangeRow, NoticeBody, NoticeRow } from "./store/rows.js";

/** Change-log events read from the store per query while a watcher catches up. */
const CHANGE_PAGE = 1_024;

/**
 * Answers of one lookup stream begun but not yet written: the most a stream holds while they
 * wait for their seals or for the resolver to read. One seal batch's worth.
 */
const MAX_UNWRITTEN = 256;

/** Notices read from the store per query. */
const NOTICE_PAGE = 256;

const RESYNC: Record<Resync, pb.ResyncReason> = {
  none: pb.ResyncReason.UNSPECIFIED,
  new_watcher: pb.ResyncReason.NEW_WATCHER,
  other_log: pb.ResyncReason.OTHER_LOG,
  too_old: pb.ResyncReason.TOO_OLD,
  behind: pb.ResyncReason.BEHIND,
  diverged: pb.ResyncReason.DIVERGED,
};

/** Registers AuthoritativeService, AuthoritativeAdminService and ClaimService on `server`. */
export function bindAuthoritativeServer(
  server: grpc.Server,
  service: AuthoritativeService,
  claims: Claims,
  opts: {
    log: Logger;
    admins: ReadonlySet<string>;
    changeLog: ChangeLog;
    /** What reaches the store: capacity, per caller, per rate-limit context, enumeration. */
    limits: LookupLimits;
    now: () => number;
    /** The private-lookup keys: undefined while off, or until the first registry copy. */
    privateKeys: () => PrivateKeys | undefined;
    privateLookupsEnabled: boolean;
    /** Who may write (the primary), and the wait of writes for secondaries (replication/). */
    replication: Replication;
  },
): void {
  const { log, changeLog, limits, now, replication } = opts;
  const lookupOne = async (
    text: string,
    options: pb.LookupOptions | undefined,
    context: Uint8Array,
    ctx: CallContext,
  ) => {
    // Parsed first, so limits and detection see the canonical CSI however it was written.
    const csi = parseRequestCsi(text);
    const params = paramsFromProto(options);
    // The caller's identity is read once per connection (rpc/grpc.ts).
    const caller = ctx.peer.name;
    const nowMs = now();
    const subject = limits.admit(caller, context, csi.uri, nowMs);
    // Sealed with the other lookups of this caller and rate-limit context read in this turn.
    // Default parameters: encoded the moment it is sealed, so its statement may be short-lived.
    const pending = service.lookup(csi, subject, params === DEFAULT_PARAMS);
    limits.answered(subject, csi.uri, pending.kind === "not_found", nowMs);
    const outcome = await pending.sealed();
    if (log.isLevelEnabled("debug")) {
      log.debug({ peer: caller, csi: csiHash(csi.uri), outcome: outcome.kind }, "lookup");
    }
    // Default parameters (what resolvers ask) get the answer written by hand (core
    // codec/answer-encoding.ts), the same bytes protobuf-es would write, at a third of the cost,
    // in a short-lived buffer: it is copied into the response here.
    if (params === DEFAULT_PARAMS) {
      return encodeLookupResponse<pb.LookupResponse>(
        encodeAnswerWithoutTtl(outcome, service.mspIndex, true),
        outcome.ttlSeconds,
      );
    }
    return create(pb.LookupResponseSchema, {
      answer: answerToProto(outcome, params, service.mspIndex, outcome.ttlSeconds),
    });
  };
  addService(
    server,
    pb.AuthoritativeService,
    {
      lookup: async (req, ctx) => lookupOne(req.csi, req.options, req.rateContext, ctx),
      async lookupStream(reqs, ctx, send) {
        // First what this endpoint takes from the caller, so a resolver paces itself (R13).
        await send({
          requestId: 0n,
          result: { case: "limits", value: { lookupsPerSecond: limits.publishedRate() } },
        });
        // Each answer waits for its seal (seal-batcher.ts): the stream reads on meanwhile and
        // writes answers in order (ordered-replies.ts). send() waits while the resolver does
        // not read, and so, past MAX_UNWRITTEN answers, does reading.
        await replyInOrder(
          reqs,
          (req) =>
            lookupOne(req.csi, req.options, req.rateContext, ctx).then(
              (response) =>
                response instanceof Uint8Array
                  ? encodeLookupStreamItem<pb.LookupStreamResponse>(req.requestId, response)
                  : { requestId: req.requestId, result: { case: "response" as const, value: response } },
              (err) => ({
                requestId: req.requestId,
                result: {
                  case: "error" as const,
                  value: create(pb.ItemErrorSchema, itemError(err, log, ctx.method)),
                },
              }),
            ),
          send,
          MAX_UNWRITTEN,
        );
      },
      async watchChanges(req, ctx, send) {
        // A secondary without a whole copy has no log to offer; the watcher tries another endpoint.
        const stale = replication.storeProblem();
        if (stale) throw new DiscoveryError("not_ready", stale);
        const hashKey = changeLog.hashKey;
        const generation = changeLog.generation();
        const start = changeLog.start({
          logId: req.logId,
          sinceSeq: clampToNumber(req.sinceSeq),
          sinceAtMs: clampToNumber(req.sinceAtMs),
        });
        if (start.resync !== "none" && start.resync !== "new_watcher") {
          log.info(
            { peer: ctx.peerName, reason: start.resync },
            "change watcher cannot continue; told to resync",
          );
        }
        await send({
          event: {
            case: "start",
            value: create(pb.ChangeLogStartSchema, {
              logId: start.logId,
              seq: BigInt(start.seq),
              resync: RESYNC[start.resync],
              oldestSeq: BigInt(start.oldestSeq),
              hashKey,
              atMs: BigInt(start.atMs),
            }),
          },
        });
        await serveLog<ChangeRow, number>(start.seq, {
          signal: ctx.signal,
          subscribe: (wake) => changeLog.subscribe(wake),
          pageSize: CHANGE_PAGE,
          read(seq, limit) {
            // A secondary that copied the store again has another history of the log: the
            // watcher asks again, from its position, and is told to resync if it must.
            if (changeLog.generation() !== generation) {
              throw new DiscoveryError(
                "failed_precondition",
                "this endpoint's change log was replaced; watch again",
              );
            }
            const page = changeLog.since(seq, limit);
            const first = page[0];
            if (first && first.seq !== seq + 1) {
              // Pruned under a slow watcher: it reconnects from its position and is told to resync.
              throw new DiscoveryError(
                "failed_precondition",
                `events after ${seq} left the retention window before they were sent; watch again from your position`,
              );
            }
            return page;
          },
          async send(c) {
            if (changeLog.hashKey !== hashKey) {
              throw new DiscoveryError(
                "failed_precondition",
                "this DP's change-hash key changed; watch again",
              );
            }
            await send({
              event: {
                case: "change",
                value: create(pb.MappingChangedSchema, {
                  seq: BigInt(c.seq),
                  csiHash: changeHash(hashKey, c.csi),
                  atMs: BigInt(c.atMs),
                }),
              },
            });
            return c.seq;
          },
          caughtUp: (seq) =>
            send({
              event: { case: "caughtUp", value: create(pb.ChangeLogCaughtUpSchema, { seq: BigInt(seq) }) },
            }),
        });
      },
    },
    // Resolvers look up and follow changes; nothing else does. DPs speak to each other through
    // PeerService and ReplicationService only, and an MSP goes through a resolver (its budgets).
    { log, roles: ["resolver"] },
  );

  bindAdminServer(server, service, claims, opts);

  addService(
    server,
    pb.PeerService,
    {
      async invalidateOlder(req, ctx) {
        if (!req.mapping) throw invalidArgument("mapping is required", "mapping");
        replication.beforeWrite();
        const r = claims.invalidateOlder(ctx.peer.name, req.csi, mappingFromProto(req.mapping));
        await replication.afterWrite(ctx.signal);
        return { removed: r.removed, contested: r.contested };
      },
    },
    { log, roles: ["dp"] },
  );

  addService(
    server,
    pb.ClaimService,
    {
      async startChallenge(req, ctx) {
        replication.beforeWrite();
        const caller = claims.callerOf(ctx.peer.name);
        const a = req.action;
        let r: StartRequest;
        if (a.case === "claim") {
          r = {
            action: "claim",
            csi: req.csi,
            ssi: a.value.ssi,
            tags: a.value.tags,
            makeDefault: a.value.makeDefault,
            userPublicKey: a.value.userPublicKey,
            replaceExisting: a.value.replaceExisting,
          };
        } else if (a.case === "invalidate") {
          r = {
            action: "invalidate",
            csi: req.csi,
            mspId: a.value.mspId,
            ssi: a.value.ssi,
            userPublicKey: a.value.userPublicKey,
          };
        } else if (a.case === "optOut") {
          r = { action: "opt_out", csi: req.csi, userPublicKey: a.value.userPublicKey };
        } else {
          throw invalidArgument("set one action: claim, invalidate or opt_out", "action");
        }
        const s = await claims.start(caller, r);
        return {
          challengeId: s.challengeId,
          expiresAtMs: BigInt(s.expiresAtMs),
          proofMethod: s.proofMethod,
          statement: s.statement,
        };
      },
      async completeChallenge(req, ctx) {
        const caller = claims.callerOf(ctx.peer.name);
        replication.beforeWrite();
        const r = claims.complete(caller, req.challengeId, req.code, req.userSignature, req.mspSignature);
        // Acknowledged only once enough secondaries hold it (replication.ackFollowers).
        await replication.afterWrite(ctx.signal);
        return {
          mapping: r.mapping && mappingToProto(r.mapping),
          hasPrecedence: r.hasPrecedence,
          existingMsps: r.existingMsps.map(mspToProto),
          conflictId: r.conflictId,
          contestDeadlineMs: BigInt(r.contestDeadlineMs),
          removed: r.removed,
        };
      },
      async contestConflict(req, ctx) {
        replication.beforeWrite();
        claims.contest(claims.callerOf(ctx.peer.name), {
          conflictId: req.conflictId,
          ssi: req.ssi,
          holderSignature: req.holderSignature,
        });
        await replication.afterWrite(ctx.signal);
        return {};
      },
      async watchNotices(req, ctx, send) {
        const caller = claims.callerOf(ctx.peer.name);
        const logId = changeLog.logId();
        // Positions in another log (a restored store reuses sequence numbers) mean nothing here.
        const from = req.logId !== "" && req.logId !== logId ? 0 : clampToNumber(req.sinceSeq);
        await serveLog<NoticeRow, number>(from, {
          signal: ctx.signal,
          subscribe: (wake) => claims.subscribeNotices(caller.mspId, wake),
          pageSize: NOTICE_PAGE,
          read: (seq, limit) => claims.notices(caller.mspId, seq, limit),
          async send(n) {
            await send({ notice: { ...noticeToProto(n), logId } });
            return n.seq;
          },
        });
      },
      async bulkRegister(reqs, ctx, send) {
        const caller = claims.callerOf(ctx.peer.name);
        let session: string | undefined;
        let total = 0;
        for await (const req of reqs) {
          const m = req.message;
          if (m.case === "start") {
            if (session !== undefined)
              throw new DiscoveryError("invalid_argument", "the session is already started");
            const committed = claims.bulkResume(caller, m.value.sessionId);
            session = m.value.sessionId;
            log.info({ msp: caller.mspId, session, committed }, "bulk session opened");
            await send({ message: { case: "resume", value: { committed: BigInt(committed) } } });
          } else if (m.case === "batch") {
            if (session === undefined)
              throw new DiscoveryError("invalid_argument", "send start before the first batch");
            replication.beforeWrite();
            const ack = await claims.bulkBatchAsync(
              caller,
              session,
              Number(m.value.firstIndex),
              m.value.records,
            );
            total += ack.stored;
            await replication.afterWrite(ctx.signal);
            await send({
              message: {
                case: "ack",
                value: {
                  committed: BigInt(ack.committed),
                  stored: ack.stored,
                  unchanged: ack.unchanged,
                  optedOut: ack.optedOut,
                  overLimit: ack.overLimit,
                },
              },
            });
          } else {
            throw new DiscoveryError("invalid_argument", "a bulk message must be start or batch");
          }
        }
        log.info({ msp: caller.mspId, session, stored: total }, "bulk session ended");
      },
    },
    // A bulk batch holds up to 10,000 signed records. Claims, contests, notices and bulk
    // sessions live at the primary only; a secondary names it.
    {
      log,
      roles: ["msp"],
      maxRequestBytes: { bulkRegister: MAX_METHOD_REQUEST_BYTES },
      authorize: () => replication.requirePrimary(),
    },
  );
}

const NOTICE_KINDS: Record<NoticeBody["kind"], pb.NoticeKind> = {
  conflict_opened: pb.NoticeKind.CONFLICT_OPENED,
  conflict_closed: pb.NoticeKind.CONFLICT_CLOSED,
  precedence_lost: pb.NoticeKind.PRECEDENCE_LOST,
  mapping_removed: pb.NoticeKind.MAPPING_REMOVED,
  default_changed: pb.NoticeKind.DEFAULT_CHANGED,
};

function noticeToProto(n: NoticeRow) {
  return {
    seq: BigInt(n.seq),
    atMs: BigInt(n.atMs),
    kind: NOTICE_KINDS[n.body.kind],
    csi: n.body.csi,
    ssi: n.body.ssi,
    conflictId: n.body.conflictId ?? "",
    contestDeadlineMs: BigInt(n.body.deadlineMs ?? 0),
    reason: n.body.reason,
  };
}
