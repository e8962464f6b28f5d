// Delivery of first-mapping requests to peer DPs (R18): the claim's transaction queues them in
// the store, so none is lost to a crash; this sends each to the peer's endpoints in order, with
// this DP's own certificate, and retries with backoff until the peer acknowledges.

import {
  type Clock,
  csiHash,
  DiscoveryError,
  type Logger,
  mappingToProto,
  pb,
  type RegistryView,
} from "@mimi/core";
import type { ChannelPool } from "@mimi/rpc";
import { PEER_RATE } from "./claims/peer-invalidation.js";
import { mappingOfRow, type PeerRequestRow } from "./store/rows.js";
import type { MappingStore } from "./store/store.js";

/** Sends queued requests. */
export interface PeerSender {
  /**
   * Sends what is due now (also called by the sweep, for retries). Resolves once this call's
   * round is over, or at once when a round is already running (it then goes round again).
   */
  kick(): Promise<void>;
  close(): void;
}

/** Options of the sender. */
export interface PeerSenderOptions {
  store: MappingStore;
  registry: RegistryView;
  /** Channels to peers, authenticated as this DP (closed with the sender). */
  channels: ChannelPool;
  clock: Clock;
  log: Logger;
  /** Deadline of one call. */
  timeoutMs?: number;
}

/** A request older than this is dropped with a warning rather than retried forever. */
const GIVE_UP_AFTER_MS = 7 * 86_400_000;
const MAX_BACKOFF_MS = 3_600_000;

/** Creates the sender. */
export function createPeerSender(o: PeerSenderOptions): PeerSender {
  const log = o.log.child({ component: "peers" });
  const channels = o.channels;
  let running = false;
  let again = false;
  let closed = false;

  /**
   * Sends one request. `down` holds the peers found unreachable in this round (every endpoint
   * failed to answer): their other requests are put off without a call, so a silent peer costs
   * a round one call's timeouts, not one per request. `paused` holds the peers that asked us to
   * slow down (PEER_RATE), until when: their requests wait until then, their attempts unspent.
   */
  const sendOne = async (r: PeerRequestRow, down: Map<string, string>, paused: Map<string, number>) => {
    const row = o.store.mapping(r.csi, r.mspId, r.ssi);
    const dp = o.registry.dp(r.peerDp);
    if (!row || !dp) {
      // The mapping went (its holder removed it) or the peer left the registry: nothing to ask.
      o.store.deletePeerRequest(r.id);
      return;
    }
    // A request a week old is given up even while its peer asks us to slow down: a peer that
    // keeps asking keeps nothing queued for ever.
    const abandoned = (error: string) => {
      if (o.clock() - r.createdAtMs <= GIVE_UP_AFTER_MS) return false;
      o.store.deletePeerRequest(r.id);
      log.warn(
        { csi: csiHash(r.csi), peer: dp.id, attempts: r.attempts, err: error },
        "first-mapping request abandoned",
      );
      return true;
    };
    const until = paused.get(dp.id);
    if (until !== undefined) {
      const why = `DP "${dp.id}" asked to slow down`;
      if (!abandoned(why)) o.store.reschedulePeerRequest(r.id, r.attempts, until, why);
      return;
    }
    let error = down.get(dp.id) ?? `DP "${dp.id}" lists no endpoints`;
    let unreachable = dp.endpoints.length > 0;
    for (const endpoint of down.has(dp.id) ? [] : dp.endpoints) {
      try {
        const res = await channels
          .get(endpoint, dp.tlsIdentity)
          .client(pb.PeerService)
          .invalidateOlder(
            { csi: r.csi, mapping: mappingToProto(mappingOfRow(row)) },
            { timeoutMs: o.timeoutMs ?? 5_000 },
          );
        o.store.deletePeerRequest(r.id);
        log.info(
          { csi: csiHash(r.csi), peer: dp.id, removed: res.removed, contested: res.contested },
          "first-mapping request delivered to peer DP",
        );
        return;
      } catch (err) {
        error = (err as Error).message;
        // The peer takes so many requests a minute from us: wait as long as it says, for this
        // request and the rest of this round's, spending no attempt.
        if (err instanceof DiscoveryError && err.details?.reason === PEER_RATE) {
          const asked = err.details.retryAfterMs ?? 1_000;
          const at =
            o.clock() + Math.min(Math.max(Number.isFinite(asked) ? asked : 1_000, 1_000), MAX_BACKOFF_MS);
          paused.set(dp.id, at);
          if (!abandoned(error)) o.store.reschedulePeerRequest(r.id, r.attempts, at, error);
          log.info(
            { peer: dp.id, retryAt: new Date(at).toISOString() },
            "peer DP asked to slow down first-mapping requests",
          );
          return;
        }
        // A replica of the peer answers that only its primary writes: the next endpoint is
        // asked (the primary may be listed after its replicas, or be one since a failover).
        if (err instanceof DiscoveryError && err.details?.reason === "NOT_PRIMARY") {
          unreachable = false;
          continue;
        }
        // Refusals are retried too: the peer's registry copy may not yet show our delegation.
        if (!(err instanceof DiscoveryError && err.code === "upstream_unavailable")) {
          unreachable = false;
          break;
        }
      }
    }
    if (unreachable && !down.has(dp.id))
      down.set(dp.id, `not asked: DP "${dp.id}" did not answer in this round (${error})`);
    const now = o.clock();
    if (now - r.createdAtMs > GIVE_UP_AFTER_MS) {
      o.store.deletePeerRequest(r.id);
      log.warn(
        { csi: csiHash(r.csi), peer: dp.id, attempts: r.attempts + 1, err: error },
        "first-mapping request abandoned",
      );
      return;
    }
    const backoff = Math.min(1_000 * 2 ** Math.min(r.attempts, 20), MAX_BACKOFF_MS);
    o.store.reschedulePeerRequest(r.id, r.attempts + 1, now + backoff, error);
    log.warn(
      { csi: csiHash(r.csi), peer: dp.id, attempts: r.attempts + 1, retryInMs: backoff, err: error },
      "first-mapping request not delivered; will retry",
    );
  };

  const drain = async () => {
    if (running) {
      again = true;
      return;
    }
    running = true;
    try {
      let due: PeerRequestRow[];
      const down = new Map<string, string>();
      const paused = new Map<string, number>();
      do {
        again = false;
        due = o.store.duePeerRequests(o.clock(), 50);
        // Each peer's requests in order, the peers at once: one that does not answer holds up
        // only its own.
        const byPeer = new Map<string, PeerRequestRow[]>();
        for (const r of due) {
          const rows = byPeer.get(r.peerDp);
          if (rows) rows.push(r);
          else byPeer.set(r.peerDp, [r]);
        }
        // Settled, not failed fast: the round is over only when every peer's sends are.
        const sent = await Promise.allSettled(
          [...byPeer.values()].map(async (rows) => {
            for (const r of rows) {
              if (closed) return;
              await sendOne(r, down, paused);
            }
          }),
        );
        const failed = sent.find((r) => r.status === "rejected");
        if (failed) throw failed.reason;
      } while (!closed && (again || due.length === 50));
    } catch (err) {
      log.error({ err: (err as Error).message }, "sending first-mapping requests failed");
    } finally {
      running = false;
    }
  };

  return {
    kick: () => drain(),
    close() {
      closed = true;
      channels.close();
    },
  };
}
