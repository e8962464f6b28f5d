// Following a resumable log over a stream (the root's registry, a DP's change log), client side:
// one loop that opens the stream at an endpoint and hands each message to the caller; when the
// stream fails or ends it moves to the next endpoint after a jittered pause that doubles while
// attempts make no progress and starts over once a stream catches up. Where to resume from is
// the caller's: open() asks for the stream from the position the caller holds.
import type { Logger } from "pino";
import { DiscoveryError } from "../domain/errors.js";
import { sleepUnlessAborted } from "../runtime/clock.js";

/**
 * The longest a refusal's retry-after holds an endpoint back (servers here say at most a
 * minute; this bounds what a server that says more can make a follower do).
 */
const MAX_RETRY_AFTER_MS = 600_000;

/** Options of followLog. */
export interface FollowLogOptions<M> {
  /** The endpoints to try, read again before every attempt (registry edits move them). */
  endpoints(): readonly string[];
  /**
   * An endpoint to try next instead of the one in turn, when the caller knows better (a
   * secondary that just voted for a new primary); undefined, or one not in endpoints(): in turn.
   */
  prefer?(): string | undefined;
  /** Opens the stream at `endpoint`, from the caller's current position. */
  open(endpoint: string, signal: AbortSignal): AsyncIterable<M>;
  /**
   * Applies one message; returns true when it says the stream has caught up with the log.
   * Throwing drops the stream and reconnects (a gap, a message that does not verify).
   */
  apply(msg: M, endpoint: string): boolean | undefined;
  log: Logger;
  /** Log lines for a stream that ended and one that failed. */
  messages: { readonly ended: string; readonly failed: string };
  /** Fields added to those lines (e.g. { dp: "eu" }). */
  logFields?: Record<string, unknown>;
  /** The field naming the endpoint in those lines (default "endpoint"). */
  endpointField?: string;
  /** First pause after a failure. */
  initialBackoffMs?: number;
  /** Longest pause between attempts. */
  maxBackoffMs: number;
  /** Jitter in [0, 1): a pause is between half and all of the backoff. Tests pass a fixed one. */
  random?: () => number;
  /** Waits between attempts; tests pass one that records the pause instead. */
  pause?: (ms: number, signal: AbortSignal) => Promise<void>;
  /** Milliseconds on a monotonic clock, for endpoints held back by a retry-after (tests pass one). */
  now?: () => number;
}

/** A running follower. */
export interface LogFollower {
  /** True while a stream is open and has caught up. */
  connected(): boolean;
  /** The endpoint of the stream being read, if any. */
  endpoint(): string | undefined;
  /** Drops the current stream and reconnects at once, from the same position. */
  reconnect(): void;
  /** Stops following; `done` resolves once the loop has ended. */
  close(): void;
  readonly done: Promise<void>;
}

/** Starts following; the first attempt goes to the first endpoint. */
export function followLog<M>(o: FollowLogOptions<M>): LogFollower {
  const closing = new AbortController();
  const initialBackoffMs = o.initialBackoffMs ?? 100;
  const random = o.random ?? Math.random;
  const pause = o.pause ?? sleepUnlessAborted;
  const now = o.now ?? (() => performance.now());
  let attemptAbort = new AbortController();
  let isConnected = false;
  let current: string | undefined;
  const field = o.endpointField ?? "endpoint";

  const run = async () => {
    let attempt = 0;
    let backoffMs = initialBackoffMs;
    /** Endpoints that refused with a retry-after, until when: the others are tried meanwhile. */
    const heldUntil = new Map<string, number>();
    while (!closing.signal.aborted) {
      const t = now();
      for (const [e, until] of heldUntil) if (until <= t) heldUntil.delete(e);
      const endpoints = o.endpoints().filter((e) => !heldUntil.has(e));
      if (endpoints.length === 0 && heldUntil.size > 0) {
        // Every endpoint asked us to wait: until the first of them may be asked again.
        await pause(Math.min(...heldUntil.values()) - t, closing.signal);
        continue;
      }
      const preferred = o.prefer?.();
      let endpoint: string | undefined;
      if (preferred !== undefined && endpoints.includes(preferred)) endpoint = preferred;
      else if (endpoints.length > 0) endpoint = endpoints[attempt++ % endpoints.length];
      let progressed = false;
      if (endpoint !== undefined) {
        attemptAbort = new AbortController();
        current = endpoint;
        try {
          const signal = AbortSignal.any([closing.signal, attemptAbort.signal]);
          for await (const msg of o.open(endpoint, signal)) {
            if (o.apply(msg, endpoint) === true) {
              isConnected = true;
              progressed = true;
              backoffMs = initialBackoffMs;
            }
          }
          if (!closing.signal.aborted) o.log.warn({ ...o.logFields, [field]: endpoint }, o.messages.ended);
        } catch (err) {
          if (closing.signal.aborted) break;
          if (attemptAbort.signal.aborted) {
            // Moved on purpose (reconnect): go on at once, from the same position.
            isConnected = false;
            current = undefined;
            continue;
          }
          o.log.warn({ ...o.logFields, [field]: endpoint, err: (err as Error).message }, o.messages.failed);
          const asked = err instanceof DiscoveryError ? (err.details?.retryAfterMs ?? 0) : 0;
          if (Number.isFinite(asked) && asked > 0)
            heldUntil.set(endpoint, now() + Math.min(asked, MAX_RETRY_AFTER_MS));
        }
      }
      isConnected = false;
      current = undefined;
      if (!progressed) backoffMs = Math.min(backoffMs * 2, o.maxBackoffMs);
      await pause(backoffMs * (0.5 + random() / 2), closing.signal);
    }
    isConnected = false;
    current = undefined;
  };
  const done = run();

  return {
    connected: () => isConnected,
    endpoint: () => current,
    reconnect: () => attemptAbort.abort(),
    close: () => closing.abort(),
    done,
  };
}
