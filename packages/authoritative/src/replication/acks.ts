// Which followers hold which changes (FollowAck), and the wait a write makes for them before it
// is acknowledged to its caller (`replication.ackFollowers`): with 1, a claim is answered only
// once it is stored at the primary and at least one secondary, so losing the primary's disk
// loses no acknowledged claim. The wait is bounded in waiters and in time.
import { DiscoveryError, sleepUnlessAborted } from "@mimi/core";

/** One follower's stream, as the primary sees it. */
export interface FollowerHandle {
  /** The follower stored every change up to `seq` and every writer event up to `writerSeq`. */
  ack(seq: number, writerSeq: number): void;
  /** The stream ended. */
  leave(): void;
}

/** What a follower reported, for status and metrics. */
export interface FollowerStatus {
  readonly name: string;
  readonly ackedSeq: number;
  readonly ackedWriterSeq: number;
  readonly connectedAtMs: number;
  readonly ackedAtMs: number;
}

/** The followers of this primary. */
export interface Followers {
  /** A follower's stream opens; one with the same `id` (a stream of the same follower) is dropped. */
  join(name: string, id: string): FollowerHandle;
  /**
   * Resolves once `needed` followers hold change `seq` and writer event `writerSeq`; throws
   * UNAVAILABLE when they do not in time.
   */
  waitFor(seq: number, writerSeq: number, needed: number, signal?: AbortSignal): Promise<void>;
  list(): FollowerStatus[];
  /**
   * Followers that acknowledged within the last `freshMs` (they ack every heartbeat): those a
   * write can count on.
   */
  available(): number;
}

/** Writes waiting for followers at most; more are refused at once. */
const MAX_WAITERS = 10_000;

interface Waiter {
  readonly seq: number;
  readonly writerSeq: number;
  readonly needed: number;
  readonly done: () => void;
}

/** Options of createFollowers. */
export interface FollowersOptions {
  now: () => number;
  /** The longest a write waits for followers. */
  timeoutMs: number;
  /** A follower whose last ack is older than this does not count as available (3 heartbeats). */
  freshMs: number;
  /** Waits between the checks of a waiter's time; tests pass one they control. */
  sleep?: (ms: number, signal: AbortSignal) => Promise<void>;
}

export function createFollowers(o: FollowersOptions): Followers {
  const streams = new Map<
    number,
    { name: string; id: string; acked: number; ackedWriter: number; connectedAtMs: number; ackedAtMs: number }
  >();
  const waiters = new Set<Waiter>();
  const sleep = o.sleep ?? sleepUnlessAborted;
  let next = 0;
  const holding = (seq: number, writerSeq: number) => {
    let n = 0;
    for (const s of streams.values()) if (s.acked >= seq && s.ackedWriter >= writerSeq) n++;
    return n;
  };
  const settle = () => {
    for (const w of waiters) {
      if (holding(w.seq, w.writerSeq) >= w.needed) {
        waiters.delete(w);
        w.done();
      }
    }
  };
  return {
    join(name, followerId) {
      const id = next++;
      const nowMs = o.now();
      if (followerId !== "") {
        for (const [k, s] of streams) if (s.id === followerId) streams.delete(k);
      }
      streams.set(id, { name, id: followerId, acked: 0, ackedWriter: 0, connectedAtMs: nowMs, ackedAtMs: 0 });
      return {
        ack(seq, writerSeq) {
          const s = streams.get(id);
          if (!s || (seq <= s.acked && writerSeq <= s.ackedWriter)) return;
          s.acked = Math.max(s.acked, seq);
          s.ackedWriter = Math.max(s.ackedWriter, writerSeq);
          s.ackedAtMs = o.now();
          settle();
        },
        leave() {
          streams.delete(id);
        },
      };
    },
    async waitFor(seq, writerSeq, needed, signal) {
      if (needed <= 0 || holding(seq, writerSeq) >= needed) return;
      if (waiters.size >= MAX_WAITERS) {
        throw new DiscoveryError(
          "resource_exhausted",
          "too many writes are waiting for secondaries to store them; try again shortly",
          { details: { retryAfterMs: 1_000, reason: "REPLICATION_BACKLOG" } },
        );
      }
      const stop = new AbortController();
      const onAbort = () => stop.abort();
      signal?.addEventListener("abort", onAbort, { once: true });
      let held = false;
      const w: Waiter = {
        seq,
        writerSeq,
        needed,
        done: () => {
          held = true;
          stop.abort();
        },
      };
      waiters.add(w);
      try {
        await sleep(o.timeoutMs, stop.signal);
      } finally {
        waiters.delete(w);
        signal?.removeEventListener("abort", onAbort);
      }
      if (held) return;
      throw new DiscoveryError(
        "upstream_unavailable",
        `the write is stored at the primary, but ${needed === 1 ? "no secondary" : `fewer than ${needed} secondaries`} confirmed it within ${Math.round(o.timeoutMs / 1000)} s (replication.ackFollowers); it stands unless the primary is lost before they copy it: look it up before trying again`,
        { details: { reason: "NOT_REPLICATED", retryAfterMs: 1_000, metadata: { seq: String(seq) } } },
      );
    },
    available: () => {
      const since = o.now() - o.freshMs;
      return [...streams.values()].filter((s) => s.ackedAtMs > 0 && s.ackedAtMs >= since).length;
    },
    list: () =>
      [...streams.values()].map((s) => ({
        name: s.name,
        ackedSeq: s.acked,
        ackedWriterSeq: s.ackedWriter,
        connectedAtMs: s.connectedAtMs,
        ackedAtMs: s.ackedAtMs,
      })),
  };
}
