// Promotion of a secondary to the DP's primary (AuthoritativeAdminService.Promote, `mimi auth
// promote`), with fencing by epoch as in Raft's elections: the candidate takes the next epoch,
// votes for itself and asks every other endpoint for its vote (Fence). An endpoint grants one
// candidate per epoch and keeps the epoch, so a primary that hears of it stops writing, and a
// secondary follows no primary of an older epoch again. The candidate needs votes from a
// majority of the DP's endpoints (itself included), and from enough of them that one holds
// every write a primary acknowledged (with `ackFollowers` k >= 1 secondaries holding each, any
// n - k of the n endpoints do). It then waits, briefly, to hold every change the endpoints that
// answered hold (it may still be catching up from the fenced primary), and refuses, naming the
// endpoint that is ahead, if it does not.
import { randomBytes } from "node:crypto";
import { DiscoveryError, type Logger, pb } from "@mimi/core";
import type { Channel } from "@mimi/rpc";
import type { MappingStore } from "../store/store.js";
import type { ReplicationRole } from "./role.js";

/** What one other endpoint answered. */
export interface PeerFence {
  readonly endpoint: string;
  readonly error?: string;
  readonly granted: boolean;
  readonly logId?: string;
  readonly latestSeq: number;
  readonly writerLatestSeq?: number;
  /** Whether it serves Follow, so that this endpoint can still catch up from it. */
  readonly source?: boolean;
}

export interface PromoteOptions {
  store: MappingStore;
  role: ReplicationRole;
  /** The DP's other endpoints. */
  peers: readonly string[];
  channel: (endpoint: string) => Channel;
  /** replication.ackFollowers. */
  ackFollowers: number;
  log: Logger;
  /** How long to wait to catch up with an endpoint that holds more changes. */
  catchUpMs?: number;
  /** Waits between checks while catching up; tests pass one they control. */
  pause?: (ms: number) => Promise<void>;
  /** Deadline of one Fence call. */
  fenceTimeoutMs?: number;
  /** Why this store cannot be served from (a secondary without a whole copy): it is not promoted. */
  storeProblem?: () => string | undefined;
  /** This endpoint's address as the registry lists it ("" unknown), told to voters. */
  endpoint?: string;
}

/** Promotes this endpoint; returns the epoch it is primary of and what the others answered. */
export async function promote(
  o: PromoteOptions,
  force: boolean,
): Promise<{ epoch: number; peers: PeerFence[] }> {
  const { role, store } = o;
  if (role.isPrimary()) {
    throw new DiscoveryError(
      "failed_precondition",
      `this endpoint is the DP's primary already (epoch ${role.epoch()})`,
    );
  }
  const incomplete = o.storeProblem?.();
  if (incomplete && !force) {
    throw new DiscoveryError(
      "failed_precondition",
      `this endpoint does not hold a whole copy of the DP's store (${incomplete}); promote another one`,
      { details: { reason: "INCOMPLETE_COPY" } },
    );
  }
  const epoch = role.epoch() + 1;
  const candidate = randomBytes(12).toString("hex");
  if (!role.vote(epoch, candidate, "promotion")) {
    throw new DiscoveryError(
      "failed_precondition",
      `epoch ${epoch} was granted to another promotion; try again`,
    );
  }
  const ask = () =>
    Promise.all(
      o.peers.map(async (endpoint): Promise<PeerFence> => {
        try {
          const r = await o
            .channel(endpoint)
            .client(pb.ReplicationService)
            .fence(
              { epoch: BigInt(epoch), candidate, endpoint: o.endpoint ?? "" },
              { timeoutMs: o.fenceTimeoutMs ?? 3_000 },
            );
          return {
            endpoint,
            granted: r.granted,
            logId: r.logId,
            latestSeq: Number(r.latestSeq),
            writerLatestSeq: Number(r.writerLatestSeq),
            source: r.source,
          };
        } catch (err) {
          return { endpoint, error: (err as Error).message, granted: false, latestSeq: 0 };
        }
      }),
    );
  let peers = await ask();
  const total = o.peers.length + 1;
  // A majority, so that two promotions cannot both win; and with ackFollowers k >= 1, n - k
  // endpoints, so that one of the k secondaries holding each acknowledged write is heard. With
  // k = 0 an acknowledged write may have been on the lost primary only: nothing can promise it.
  const majority = Math.floor(total / 2) + 1;
  const needed = o.ackFollowers > 0 ? Math.max(majority, total - o.ackFollowers) : majority;
  const votes = 1 + peers.filter((p) => p.granted).length;
  const summary = peers
    .map((p) => `${p.endpoint}: ${p.error ?? (p.granted ? "granted" : "refused")}`)
    .join("; ");
  if (votes < needed && !force) {
    throw new DiscoveryError(
      "failed_precondition",
      `promotion needs the votes of ${needed} of the DP's ${total} endpoints and has ${votes} (${summary}); bring more endpoints up, or promote with force if the others are lost for good (acknowledged writes may then be lost)`,
      { details: { reason: "NO_MAJORITY" } },
    );
  }
  // Catch up with the furthest endpoint of our log (the fenced primary's last writes come
  // through the stream this endpoint still follows).
  const ahead = () => {
    const { latest } = store.logBounds();
    const writer = store.writer.latest();
    return peers.find(
      (p) =>
        p.granted && p.logId === store.logId() && (p.latestSeq > latest || (p.writerLatestSeq ?? 0) > writer),
    );
  };
  const pause = o.pause ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  // Only an endpoint that serves Follow (the fenced primary) can still feed this one.
  for (let waited = 0; ahead()?.source && waited < (o.catchUpMs ?? 10_000); waited += 200) {
    await pause(200);
    peers = await ask();
  }
  const first = ahead();
  if (first && !force) {
    throw new DiscoveryError(
      "failed_precondition",
      `${first.endpoint} holds changes up to ${first.latestSeq} and this endpoint only up to ${store.logBounds().latest}; promote ${first.endpoint} instead, or try again once this one caught up`,
      { details: { reason: "BEHIND_PEER", metadata: { endpoint: first.endpoint } } },
    );
  }
  role.promote(epoch, candidate);
  o.log.warn({ epoch, votes, needed, force, peers: summary }, "promoted to primary");
  return { epoch, peers };
}
