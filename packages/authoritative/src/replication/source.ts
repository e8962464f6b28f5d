// gRPC binding of ReplicationService: the primary side of a DP's replication. Follow sends a
// follower a copy of every CSI's state when its position does not continue (in key order, in
// pages, resumable), then each change of the log with the CSI's state as stored when sent,
// then ReplicaCaughtUp after every drain (and every heartbeat, so an idle follower still knows
// the primary is there); the follower's acks feed the durability wait. A primary that serves
// private lookups sends its OPRF keys after the start and again when they change. Fence is
// answered by every endpoint. Only the identities in replication.followers may call either.

import type { MessageInitShape } from "@bufbuild/protobuf";
import type * as grpc from "@grpc/grpc-js";
import { DiscoveryError, isJurisdictionCode, Latch, type Logger, pb } from "@mimi/core";
import { addService } from "@mimi/rpc";
import type { ChangeLog } from "../change-log.js";
import { clampToNumber as num } from "../numbers.js";
import type { EpochKeys } from "../private-table.js";
import type { MappingStore } from "../store/store.js";
import { WRITER_TABLES } from "../store/writer/store.js";
import type { Followers } from "./acks.js";
import { checkPlacement } from "./placement.js";
import type { ReplicationRole } from "./role.js";
import { csiStateOf, csiStateToProto, csisAfter } from "./state.js";

/** CSIs per copy page: a few hundred KB at most. */
export const COPY_PAGE = 256;
/** Changes read from the store at a time. */
const CHANGE_PAGE = 512;

/** Options of bindReplicationServer. */
export interface ReplicationServerOptions {
  store: MappingStore;
  changeLog: ChangeLog;
  role: ReplicationRole;
  followers: Followers;
  dpId: string;
  /** Certificate identities allowed to follow and fence (the DP's own endpoints). */
  allowed: () => ReadonlySet<string>;
  /**
   * Where the registry places the DP's endpoint `endpoint` ("": the DP), undefined when it does
   * not list it: a follower configured for another jurisdiction, or naming an unlisted
   * endpoint, gets nothing.
   */
  jurisdiction: (endpoint: string) => string | undefined;
  /** Whether the registry places any of the DP's endpoints individually (endpoint_jurisdictions). */
  placesEndpoints: () => boolean;
  /** Runs `wake` after each commit to the writer log; returns the unsubscribe function. */
  subscribeWriter: (wake: () => void) => () => void;
  /**
   * The private-lookup keys this endpoint holds (undefined: it serves no private lookups), and
   * the wake-ups after they change; the stream sends them to the follower.
   */
  privateKeys?: {
    held: () => readonly EpochKeys[] | undefined;
    subscribe: (wake: () => void) => () => void;
  };
  /** Hears a vote granted to a candidate that named its address (the replica follows it first). */
  onGranted?: (epoch: number, endpoint: string) => void;
  /** How often an idle stream gets a ReplicaCaughtUp. */
  heartbeatMs: number;
  now: () => number;
  log: Logger;
}

/** Registers ReplicationService on `server`. */
export function bindReplicationServer(server: grpc.Server, o: ReplicationServerOptions): void {
  addService(
    server,
    pb.ReplicationService,
    {
      follow: (reqs, ctx, send) =>
        serveFollow(o, ctx.peer.name, reqs[Symbol.asyncIterator](), ctx.signal, send),
      fence: async (req, ctx) => answerFence(o, req, ctx.peer.name),
    },
    {
      log: o.log,
      roles: ["dp"],
      authorize(peer) {
        if (!o.allowed().has(peer.name)) {
          throw new DiscoveryError(
            "permission_denied",
            `identity "${peer.name}" is not an endpoint of this DP (replication.followers)`,
          );
        }
      },
    },
  );
}

/** One follower's stream, from its requests to the messages sent (the gRPC binding's, and tests'). */
export async function serveFollow(
  o: ReplicationServerOptions,
  peer: string,
  requests: AsyncIterator<pb.FollowRequest>,
  signal: AbortSignal,
  send: (msg: MessageInitShape<typeof pb.FollowResponseSchema>) => Promise<void>,
): Promise<void> {
  const { store, changeLog, role, log } = o;
  const writer = store.writer;
  const first = await requests.next();
  if (first.done || first.value.message.case !== "start") {
    throw new DiscoveryError("invalid_argument", "the first message of Follow must be start");
  }
  const req = first.value.message.value;
  role.observeEpoch(epochOf(req.epoch), peer);
  requireSource(role);
  if (req.endpoint.length > 300 || (req.jurisdiction !== "" && !isJurisdictionCode(req.jurisdiction))) {
    throw new DiscoveryError(
      "invalid_argument",
      'endpoint is at most 300 characters, and jurisdiction a short code such as "EU" or "US"',
    );
  }
  checkPlacement(o, req);
  // Each stream may cost a whole copy: a DP has a few secondaries, never this many.
  if (o.followers.list().length >= MAX_FOLLOW_STREAMS) {
    throw new DiscoveryError(
      "resource_exhausted",
      `this primary already serves ${MAX_FOLLOW_STREAMS} followers; try again later`,
      { details: { retryAfterMs: 5_000, reason: "TOO_MANY_FOLLOWERS" } },
    );
  }
  const start = startOf(store, changeLog, req);
  log.info(
    { follower: peer, copy: start.copy, fromSeq: start.fromSeq, resumed: start.after !== "" },
    start.copy ? "follower needs a copy of the store" : "follower continues from its position",
  );
  if (req.followerId.length > 64)
    throw new DiscoveryError("invalid_argument", "follower_id is at most 64 characters");
  const handle = o.followers.join(peer, req.followerId);
  const latch = new Latch();
  const unsubscribe = changeLog.subscribe(() => latch.fire());
  const unsubscribeWriter = o.subscribeWriter(() => latch.fire());
  const unsubscribeKeys = o.privateKeys?.subscribe(() => latch.fire());
  // The keys last sent (the same array until they change).
  let keysSent: readonly EpochKeys[] | undefined;
  const sendKeys = async () => {
    // Only from a primary: a fenced one's keys may be older than the new primary's.
    const held = req.privateKeys && role.isPrimary() ? o.privateKeys?.held() : undefined;
    if (!held || held === keysSent || held.length === 0) return;
    keysSent = held;
    await send({
      message: {
        case: "privateKeys",
        value: {
          keys: held.map((k) => ({ epoch: k.epoch, secretKey: k.secretKey, publicKey: k.publicKey })),
        },
      },
    });
  };
  const heartbeat = setInterval(() => latch.fire(), o.heartbeatMs);
  // Positions sent so far: a follower cannot acknowledge what it was never sent.
  let sent = { seq: 0, writerSeq: 0 };
  // Acks arrive while changes go out; anything else ends the stream.
  let ackFailure: unknown;
  const acks = (async () => {
    for (;;) {
      const r = await requests.next();
      if (r.done) return;
      if (r.value.message.case !== "ack") {
        throw new DiscoveryError("invalid_argument", "after start, Follow takes only acks");
      }
      const a = r.value.message.value;
      handle.ack(Math.min(num(a.seq), sent.seq), Math.min(num(a.writerSeq), sent.writerSeq));
    }
  })();
  acks.catch((err) => {
    ackFailure = err;
    latch.fire();
  });
  try {
    await send({
      message: {
        case: "start",
        value: {
          logId: store.logId(),
          hashKey: changeLog.hashKey,
          copy: start.copy,
          fromSeq: BigInt(start.fromSeq),
          copyAfterCsi: start.after,
          fromAtMs: BigInt(store.changeAt(start.fromSeq)?.atMs ?? 0),
          dpId: o.dpId,
          epoch: BigInt(role.epoch()),
          writerFromSeq: BigInt(start.writerFromSeq),
          fenced: !role.isPrimary(),
          heartbeatMs: Math.min(o.heartbeatMs, 0xffff_ffff),
        },
      },
    });
    await sendKeys();
    // A copy that starts sends the writer's tables first (small: bounded by their retention),
    // then the CSIs in key order; one that goes on sends the CSIs after where it stopped.
    if (start.copy && start.after === "") {
      for (const table of Object.keys(WRITER_TABLES)) {
        let after = "";
        for (;;) {
          if (signal.aborted) return;
          const rows = writer.rowsAfter(table, after, COPY_PAGE);
          if (rows.length > 0) {
            await send({
              message: {
                case: "rows",
                value: { rows: rows.map((r) => ({ table, key: r.key, row: r.row })) },
              },
            });
          }
          if (rows.length < COPY_PAGE) break;
          after = (rows[rows.length - 1] as { key: string }).key;
        }
      }
      const sequences = Object.fromEntries(
        Object.entries(writer.sequences()).map(([k, v]) => [k, BigInt(v)]),
      );
      await send({ message: { case: "rows", value: { done: true, sequences } } });
    }
    if (start.copy) {
      let after = start.after;
      for (;;) {
        if (signal.aborted) return;
        checkPlacement(o, req); // a long copy stops when the registry moves the follower
        const csis = csisAfter(store, after, COPY_PAGE);
        const done = csis.length < COPY_PAGE;
        const last = csis[csis.length - 1] ?? after;
        await send({
          message: {
            case: "page",
            value: { states: csis.map((c) => csiStateToProto(csiStateOf(store, c))), lastCsi: last, done },
          },
        });
        if (done) break;
        after = last;
      }
    }
    let position = start.fromSeq;
    let writerPosition = start.writerFromSeq;
    sent = { seq: position, writerSeq: writerPosition };
    while (!signal.aborted) {
      if (ackFailure) throw ackFailure;
      // A fenced primary that became a secondary ends its followers' streams; a registry that
      // moved the follower's endpoint elsewhere ends its stream (checked at least every heartbeat).
      requireSource(role);
      checkPlacement(o, req);
      await sendKeys();
      for (;;) {
        const rows = writer.changesSince(writerPosition, CHANGE_PAGE);
        continuous(rows[0]?.seq, writerPosition, "writer events");
        for (const w of rows) {
          const row = writer.row(w.table, w.key);
          await send({
            message: {
              case: "rowChange",
              value: {
                seq: BigInt(w.seq),
                atMs: BigInt(w.atMs),
                row: { table: w.table, key: w.key, row: row ?? "" },
              },
            },
          });
          writerPosition = w.seq;
        }
        const page = changeLog.since(position, CHANGE_PAGE);
        continuous(page[0]?.seq, position, "changes");
        for (const c of page) {
          await send({
            message: {
              case: "change",
              value: {
                seq: BigInt(c.seq),
                atMs: BigInt(c.atMs),
                state: csiStateToProto(csiStateOf(store, c.csi)),
              },
            },
          });
          position = c.seq;
        }
        if (page.length < CHANGE_PAGE && rows.length < CHANGE_PAGE) break;
      }
      sent = { seq: position, writerSeq: writerPosition };
      await send({
        message: {
          case: "caughtUp",
          value: { seq: BigInt(position), writerSeq: BigInt(writerPosition), sentAtMs: BigInt(o.now()) },
        },
      });
      await latch.wait(signal);
    }
  } finally {
    clearInterval(heartbeat);
    unsubscribe();
    unsubscribeWriter();
    unsubscribeKeys?.();
    handle.leave();
  }
}

/** Throws when a log's next event is not the one after `position` (pruned under a slow follower). */
function continuous(head: number | undefined, position: number, what: string): void {
  if (head !== undefined && head !== position + 1) {
    throw new DiscoveryError(
      "failed_precondition",
      `${what} after ${position} were pruned before they were sent; follow again for a copy`,
    );
  }
}

/** Follow streams a primary serves at once. */
const MAX_FOLLOW_STREAMS = 16;
/** The largest epoch taken: promotions are counted one by one, so a larger one is a mistake or an attack. */
const MAX_EPOCH = 2 ** 40;

function epochOf(v: bigint): number {
  if (v > BigInt(MAX_EPOCH)) throw new DiscoveryError("invalid_argument", `an epoch is at most ${MAX_EPOCH}`);
  return Number(v);
}

/** A vote asked by a promotion, or (epoch 0) a primary checking its peers' epochs. */
export function answerFence(
  o: ReplicationServerOptions,
  req: pb.FenceRequest,
  peer: string,
): MessageInitShape<typeof pb.FenceResponseSchema> {
  const { store, role } = o;
  if (req.candidate.length > 64)
    throw new DiscoveryError("invalid_argument", "candidate is at most 64 characters");
  if (req.endpoint.length > 300)
    throw new DiscoveryError("invalid_argument", "endpoint is at most 300 characters");
  const granted = role.vote(epochOf(req.epoch), req.candidate, peer);
  if (granted && req.endpoint !== "") o.onGranted?.(role.epoch(), req.endpoint);
  return {
    granted,
    epoch: BigInt(role.epoch()),
    primary: role.isPrimary(),
    source: role.isSource(),
    logId: store.logId(),
    latestSeq: BigInt(store.logBounds().latest),
    writerLatestSeq: BigInt(store.writer.latest()),
  };
}

/** Follow is served by the primary, and by a fenced one until it follows the new primary. */
function requireSource(role: ReplicationRole): void {
  if (role.isSource()) return;
  role.requirePrimary();
}

/**
 * Where a follower starts: its own position (in both logs), a copy it was receiving, or a new
 * copy from now.
 */
function startOf(
  store: MappingStore,
  changeLog: ChangeLog,
  req: pb.FollowStart,
): { copy: boolean; fromSeq: number; after: string; writerFromSeq: number } {
  const { oldest, latest } = store.logBounds();
  const writer = store.writer.bounds();
  const ours = req.logId === store.logId();
  const held = (seq: number) => seq >= oldest - 1 && seq <= latest;
  const copyFrom = num(req.copyFromSeq);
  // The copy's position must be an event of this history of the log (not rewritten since).
  const sameHistory = copyFrom === 0 || store.changeAt(copyFrom)?.atMs === num(req.copyFromAtMs);
  if (ours && req.copying && held(copyFrom) && sameHistory) {
    // The writer tables came whole at the copy's start, with every event up to `writer.latest`
    // then; events since are still held, or the copy starts again.
    const w = num(req.writerAfterSeq);
    if (w >= writer.oldest - 1 && w <= writer.latest) {
      return { copy: true, fromSeq: num(req.copyFromSeq), after: req.copyAfterCsi, writerFromSeq: w };
    }
  }
  if (ours && !req.copying) {
    // The same test a resolver's WatchChanges passes: the follower's last event is ours, unchanged.
    const s = changeLog.start({
      logId: req.logId,
      sinceSeq: num(req.afterSeq),
      sinceAtMs: num(req.afterAtMs),
    });
    const w = num(req.writerAfterSeq);
    const writerContinues =
      w >= writer.oldest - 1 &&
      w <= writer.latest &&
      (w < writer.oldest || store.writer.atOf(w) === num(req.writerAfterAtMs));
    if (s.resync === "none" && writerContinues) {
      return { copy: false, fromSeq: s.seq, after: "", writerFromSeq: w };
    }
  }
  return { copy: true, fromSeq: latest, after: "", writerFromSeq: writer.latest };
}
