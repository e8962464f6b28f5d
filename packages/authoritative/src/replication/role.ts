// Whether this endpoint of a DP is its primary (the only writer), a fenced primary, or a
// read-only secondary, and the primary epoch it knows: 1 for a DP's first primary, one more at
// every promotion. All of it is kept in the store (store_meta), so a restart keeps it.
// - primary: writes, and serves Follow to secondaries.
// - fenced: was primary, then learnt of a later epoch (a promotion elsewhere fenced it, or a
//   follower that knows the later epoch connected). It writes nothing from that moment, but still
//   serves Follow, so the secondary being promoted can catch up with the writes it made. Once it
//   reaches the new primary as a follower it becomes a secondary.
// - secondary: follows the primary (replica.ts); its change-log triggers stay quiet (schema v10).
import { DiscoveryError, type Logger } from "@mimi/core";
import type { MappingStore } from "../store/store.js";

/** store_meta keys. */
const REPLICA_META = "replica";
const EPOCH_META = "epoch";
const PRIMARY_EPOCH_META = "primary_epoch";
/** The promotion this endpoint granted its vote to: "epoch:candidate". */
const VOTE_META = "vote";

export type RoleName = "primary" | "fenced" | "secondary";

/** This endpoint's role, as the rest of the DP asks about it. */
export interface ReplicationRole {
  name(): RoleName;
  /** Whether this endpoint may write now. */
  isPrimary(): boolean;
  /** Whether it serves Follow (a primary, or a fenced one that the new primary may catch up from). */
  isSource(): boolean;
  /** The highest primary epoch this endpoint knows. */
  epoch(): number;
  /** Throws FAILED_PRECONDITION (NOT_PRIMARY) naming where writes go, unless this is the primary. */
  requirePrimary(): void;
  /** A peer knows of epoch `epoch`: kept when higher, and a primary of a lower one is fenced. */
  observeEpoch(epoch: number, from: string): void;
  /** A primary of `epoch` (at least ours) serves this endpoint's stream: a fenced primary becomes a secondary. */
  following(epoch: number, endpoint: string): void;
  /**
   * A promotion asks for this endpoint's vote at `epoch`: granted unless a later epoch is known
   * or this epoch was granted to another candidate. A grant keeps the epoch (fencing a primary).
   */
  vote(epoch: number, candidate: string, from: string): boolean;
  /** Makes this endpoint the primary of `epoch`, which it must have voted for itself (vote). */
  promote(epoch: number, candidate: string): void;
  /** Runs after every change of role. */
  onChange(listener: () => void): void;
}

/**
 * Opens the role kept in `store`. A new store (no epoch kept yet) becomes what `configured`
 * says: a primary of epoch 1, or a secondary. After that the store's own role wins over the
 * config, so a restart never undoes a promotion or a fence: a secondary becomes primary only by
 * promotion (`mimi auth promote`, which fences the others first), a primary a secondary only by
 * learning of a later epoch.
 */
export function openRole(
  store: MappingStore,
  configured: "primary" | "secondary",
  o: { log: Logger; peers: readonly string[] },
): ReplicationRole {
  const log = o.log.child({ component: "replication" });
  const listeners: (() => void)[] = [];
  let primaryEndpoint: string | undefined;
  // Read on every lookup (is this store served?): kept in memory, written through. Only this
  // file writes these keys.
  const cache = new Map<string, string | undefined>();
  const meta = (k: string) => {
    if (!cache.has(k)) cache.set(k, store.meta(k));
    return cache.get(k);
  };
  const set = (k: string, v: string | undefined) => {
    store.setMeta(k, v);
    cache.set(k, v);
  };
  const transaction = (f: () => void) => {
    try {
      store.transaction(f);
    } catch (err) {
      cache.clear(); // rolled back: read the store again
      throw err;
    }
  };
  transaction(() => {
    if (meta(EPOCH_META) !== undefined) return;
    set(EPOCH_META, "1");
    if (configured === "secondary") set(REPLICA_META, "1");
    else set(PRIMARY_EPOCH_META, "1");
  });
  if (configured !== (meta(REPLICA_META) === undefined ? "primary" : "secondary")) {
    log.warn(
      { configured, kept: meta(REPLICA_META) === undefined ? "primary or fenced" : "secondary" },
      "the store's replication role differs from the config's; the store's is kept (promotion and fencing change it)",
    );
  }
  const epoch = () => Number(meta(EPOCH_META) ?? "1");
  const name = (): RoleName => {
    if (meta(REPLICA_META) !== undefined) return "secondary";
    return Number(meta(PRIMARY_EPOCH_META) ?? "0") === epoch() ? "primary" : "fenced";
  };
  const changed = () => {
    for (const l of listeners) l();
  };
  return {
    name,
    isPrimary: () => name() === "primary",
    isSource: () => name() !== "secondary",
    epoch,
    requirePrimary() {
      const n = name();
      if (n === "primary") return;
      const where = primaryEndpoint ?? o.peers.join(", ");
      const what =
        n === "fenced"
          ? `this endpoint was the DP's primary until a primary of epoch ${epoch()} was promoted; it writes nothing now`
          : "this endpoint is a read-only secondary of the DP";
      throw new DiscoveryError(
        "failed_precondition",
        `${what}; send writes to the primary${where ? ` (one of ${where})` : ""}`,
        { details: { reason: "NOT_PRIMARY", metadata: { primary: where, epoch: String(epoch()) } } },
      );
    },
    observeEpoch(seen, from) {
      if (!Number.isSafeInteger(seen) || seen <= epoch()) return;
      const was = name();
      set(EPOCH_META, String(seen));
      if (was === "primary") {
        log.warn(
          { epoch: seen, from },
          "a primary of a later epoch was promoted: this endpoint writes nothing from now on and will follow it",
        );
      } else log.info({ epoch: seen, from }, "primary epoch advanced");
      changed();
    },
    following(seen, endpoint) {
      this.observeEpoch(seen, endpoint);
      primaryEndpoint = endpoint;
      if (name() !== "fenced") return;
      set(REPLICA_META, "1");
      log.warn({ epoch: epoch(), endpoint }, "fenced primary now follows the new primary as a secondary");
      changed();
    },
    vote(at, candidate, from) {
      if (!Number.isSafeInteger(at) || at < epoch() || candidate === "") return false;
      const voted = meta(VOTE_META);
      if (at === epoch() && voted !== undefined && voted !== `${at}:${candidate}`) return false;
      set(VOTE_META, `${at}:${candidate}`);
      this.observeEpoch(at, from);
      return true;
    },
    promote(next, candidate) {
      if (next !== epoch() || meta(VOTE_META) !== `${next}:${candidate}`) {
        throw new DiscoveryError(
          "failed_precondition",
          `another promotion took epoch ${epoch()} while this one ran; try again`,
        );
      }
      transaction(() => {
        set(EPOCH_META, String(next));
        set(PRIMARY_EPOCH_META, String(next));
        set(REPLICA_META, undefined);
      });
      primaryEndpoint = undefined;
      log.warn({ epoch: next }, "promoted: this endpoint is now the DP's primary");
      changed();
    },
    onChange(l) {
      listeners.push(l);
    },
  };
}
