// The time bounds of one caller's lookup at the resolver: how long a miss may wait for its DP's
// window, when a miss is answered whatever the DP has done (before the caller's deadline, so
// the caller never cancels), and the refusal of misses while the event loop runs late.
import { performance } from "node:perf_hooks";
import { DiscoveryError } from "@mimi/core";

/** The longest a lookup waits for a DP's window, however far its caller's deadline. */
const MAX_CALLER_WAIT_MS = 60_000;

/** The two clocks a bound is read against: the deadline's (wall, ms) and the timers' (monotonic). */
export interface BoundClocks {
  readonly wallMs: number;
  readonly monoMs: number;
}

/** The clocks now. */
export const clocksNow = (): BoundClocks => ({ wallMs: Date.now(), monoMs: performance.now() });

/**
 * Until when (monotonic ms) a lookup may wait for its DP's window: most of what is left of its
 * caller's deadline (a ResolveStream's items share the stream's), so a caller that allows a
 * slow DP a minute is not failed after the gate's default; none named: the gate's default.
 */
export function waitBound(deadlineMs: number, now: BoundClocks): number | undefined {
  if (!Number.isFinite(deadlineMs)) return undefined;
  return now.monoMs + Math.max(0, Math.min(MAX_CALLER_WAIT_MS, (deadlineMs - now.wallMs) * 0.9));
}

/**
 * When (monotonic ms) a miss is answered whatever its DP has done: nine tenths of what is left
 * of its caller's deadline, however far (the window's wait is capped apart, by waitBound).
 */
export function answerBound(deadlineMs: number, now: BoundClocks): number | undefined {
  if (!Number.isFinite(deadlineMs)) return undefined;
  return now.monoMs + Math.max(0, (deadlineMs - now.wallMs) * 0.9);
}

/** The reason of the failure answerInTime gives, which the caller is still charged for. */
export const TOO_LATE = "DEADLINE_TOO_SHORT";

/** The reason of a lookup dropped because nobody waits for it any more. */
const GONE = "CALLER_GONE";

/**
 * The failure of a lookup dropped because its caller went away and nobody joined it (nobody
 * hears it; a caller that joins in the instant it fails asks again under its own name).
 */
export function callerGone(sent: boolean): DiscoveryError {
  return new DiscoveryError("upstream_unavailable", "the lookup was dropped: nobody was waiting for it", {
    details: { reason: GONE, metadata: { sent: String(sent) } },
  });
}

/** Whether `err` is callerGone's. */
export function isCallerGone(err: unknown): boolean {
  return err instanceof DiscoveryError && err.details?.reason === GONE;
}

/**
 * Whether the caller of a failed lookup keeps its charge: the DP did the work (an answer heard
 * only after the caller's deadline, or one its caller left before it came) or the caller asked
 * for it with too short a deadline. Otherwise the lookup is given back.
 */
export function chargedAnyway(err: unknown): boolean {
  if (!(err instanceof DiscoveryError)) return false;
  return err.details?.reason === TOO_LATE || (isCallerGone(err) && err.details?.metadata?.sent === "true");
}

/**
 * `pending`, or UNAVAILABLE when it has not settled within `inMs`: a miss still
 * waiting for its DP at nine tenths of the caller's deadline is answered then, so that the caller
 * hears a status before its deadline instead of cancelling. Each cancellation is a reset stream,
 * and a server's HTTP/2 stack closes a connection whose peer resets more than 1,000 streams in a
 * burst (nghttp2's CVE-2023-44487 defence: 33 a second after that), failing every call on it.
 */
export function answerInTime<T>(pending: Promise<T>, inMs: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () =>
        reject(
          new DiscoveryError(
            "upstream_unavailable",
            "the DP did not answer within this call's deadline; try again, or with a longer deadline",
            { details: { reason: TOO_LATE } },
          ),
        ),
      Math.max(0, inMs),
    );
  });
  pending.catch(() => {}); // heard through the race, or by nobody once the deadline answered
  return Promise.race([pending, late]).finally(() => clearTimeout(timer));
}

export const OVERLOADED = "RESOLVER_OVERLOADED";

/**
 * RESOURCE_EXHAUSTED for a lookup that needs a DP while the event loop is `delayMs` behind. The
 * retry-after is spread (one to two times the delay, at least 100 ms) so that refused callers
 * do not all come back in the same instant.
 */
export function overloadRefusal(delayMs: number): DiscoveryError {
  const retryAfterMs = Math.round(Math.max(100, delayMs) * (1 + Math.random()));
  return new DiscoveryError(
    "resource_exhausted",
    `this resolver is overloaded (its event loop runs ${Math.round(delayMs)} ms late), so lookups that need a DP are refused for now; ` +
      `cached answers are still served; retry after ${retryAfterMs} ms, or through another resolver`,
    { details: { retryAfterMs, reason: OVERLOADED } },
  );
}
