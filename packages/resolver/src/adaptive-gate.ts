// How many lookups a resolver keeps in flight at one DP: a window that adapts to what the DP
// answers, as TCP's congestion window does: it starts small and grows by one per answer (slow
// start, doubling per round trip) until the first timeout, then by one per window of answers
// (additive increase), and halves when an attempt times out (multiplicative decrease, at most
// once per attempt deadline, so one slow burst halves it once). What is over the window waits in a bounded queue, for a bounded time, instead of
// being sent to a DP that cannot answer it within the deadline; a full queue or a wait past its
// bound fails at once with a clear status rather than after a timeout (the abuse issue's
// "bend, do not break"). A DP endpoint may also publish the rate it takes (R13; EndpointLimits
// at the start of each LookupStream): lookups then also leave the gate no faster than that rate
// (a GCRA schedule with a tenth of a second's burst), waiting in the same queue, and a lookup
// that could not leave within the queue's bound is refused at once (DP_CAPACITY).
// Without a published rate, once slow start is over, the same holds at the rate answers have
// come back over the last second: a lookup that would not leave the queue before its wait bound is refused at once
// (UPSTREAM_SATURATED, with the drain time as retry-after) instead of holding its caller until
// it times out. The window shrinks on timeouts only: a delay-based decrease (TCP Vegas, Netflix's
// gradient limiter: shrink when answers take well over the base round trip) was tried and
// collapsed the window where DPs and resolver share cores, since a resolver cannot tell a DP's
// queue from its own CPU contention (0.5x of the sustainable rate answered, from 0.8-0.98x).
import { DiscoveryError } from "@mimi/core";
import { callerGone } from "./call-bounds.js";

/** The gate's bounds. */
export interface GateOptions {
  readonly initialWindow: number;
  readonly minWindow: number;
  readonly maxWindow: number;
  /** Lookups waiting for the window at most; more are refused at once. */
  readonly maxQueue: number;
  /** How long a lookup may wait for the window when its caller named no deadline. */
  readonly maxWaitMs: number;
  /** A timeout halves the window at most once per this long (the attempt deadline). */
  readonly decreaseEveryMs: number;
  readonly now: () => number;
}

export const DEFAULT_GATE: Omit<GateOptions, "now" | "decreaseEveryMs"> = {
  initialWindow: 4,
  minWindow: 4,
  maxWindow: 1_024,
  maxQueue: 10_000,
  maxWaitMs: 10_000,
};

interface Waiter {
  start(): void;
  /** It stopped waiting (its time ran out, or it was dropped): its turn is skipped. */
  gone: boolean;
  /** Whether nobody waits for it any more: it is dropped at its turn, using no rate slot. */
  abandoned?: () => boolean;
  drop(): void;
}

/** Completions are counted over two buckets of this length to estimate the drain rate. */
const DRAIN_BUCKET_MS = 500;
/** Fewer completions than this in the buckets do not estimate a drain rate. */
const MIN_DRAIN_SAMPLES = 20;

/** The gate of one DP. */
export class AdaptiveGate {
  private window: number;
  private inflight = 0;
  private readonly queue: Waiter[] = [];
  private head = 0;
  private waiting = 0;
  private lastDecreaseMs = Number.NEGATIVE_INFINITY;
  /** Slow start lasts until the first timeout. */
  private slowStart = true;
  /** The published rate (lookups per second; 0: none), its schedule, and the timer that resumes it. */
  private rate = 0;
  private tatMs = 0;
  private paceTimer: NodeJS.Timeout | undefined;
  /** Completions in the current and the previous drain bucket. */
  private doneNow = 0;
  private donePrev = 0;
  private doneStart = Number.NEGATIVE_INFINITY;
  /** How much of the previous bucket counted (0 after an idle spell), and whether the current one began on time. */
  private prevSpanMs = 0;
  private nowSpanWhole = false;

  constructor(
    private readonly name: string,
    private readonly o: GateOptions,
  ) {
    this.window = o.initialWindow;
  }

  /** Whether a timeout has shrunk the window within the last attempt deadline. */
  get shrank(): boolean {
    return this.o.now() - this.lastDecreaseMs < this.o.decreaseEveryMs * 2;
  }

  /** Lookups in flight now, the window and the queue (for stats and tests). */
  get state(): { inflight: number; window: number; queued: number } {
    return { inflight: this.inflight, window: Math.floor(this.window), queued: this.waiting };
  }

  /** The rate the DP's endpoint published, in lookups per second (0: none). */
  setRate(perSecond: number): void {
    if (perSecond === this.rate) return;
    this.rate = perSecond > 0 && Number.isFinite(perSecond) ? perSecond : 0;
    this.tatMs = 0;
    this.next();
  }

  /**
   * Runs `f` once the window has room (and the published rate lets it go). A failure of `f` for
   * which `timedOut` is true halves the window; a success widens it.
   */
  async run<T>(
    f: () => Promise<T>,
    timedOut: (err: unknown) => boolean,
    waitUntilMs?: number,
    abandoned?: () => boolean,
  ): Promise<T> {
    // A waiter is counted in flight by whoever starts it, so the window is never overrun.
    if (this.inflight < Math.floor(this.window) && this.waiting === 0 && this.paced()) this.inflight++;
    else
      await this.wait(waitUntilMs === undefined ? this.o.maxWaitMs : waitUntilMs - this.o.now(), abandoned);
    try {
      const r = await f();
      this.window = Math.min(this.o.maxWindow, this.window + (this.slowStart ? 1 : 1 / this.window));
      return r;
    } catch (err) {
      if (timedOut(err)) this.shrink();
      throw err;
    } finally {
      this.countDone();
      this.inflight--;
      this.next();
    }
  }

  private countDone(): void {
    const now = this.o.now();
    const buckets = Math.floor((now - this.doneStart) / DRAIN_BUCKET_MS);
    if (buckets >= 1) {
      // The previous bucket counts only when it was the one just before and was counted whole.
      this.donePrev = buckets === 1 ? this.doneNow : 0;
      this.prevSpanMs = buckets === 1 && this.nowSpanWhole ? DRAIN_BUCKET_MS : 0;
      this.doneNow = 0;
      this.nowSpanWhole = buckets === 1;
      this.doneStart = buckets === 1 ? this.doneStart + DRAIN_BUCKET_MS : now;
    }
    this.doneNow++;
  }

  /**
   * Answers per second over the last half second to second, counting only time answers were
   * coming in (a burst after an idle spell is not averaged with the idle time), or 0 when too
   * few to tell.
   */
  private drainRate(): number {
    const age = this.o.now() - this.doneStart; // how far into the current bucket
    if (age >= 2 * DRAIN_BUCKET_MS) return 0;
    const withPrev = age < DRAIN_BUCKET_MS;
    const done = this.doneNow + (withPrev ? this.donePrev : 0);
    if (done < MIN_DRAIN_SAMPLES) return 0;
    const spanMs = age + (withPrev ? this.prevSpanMs : 0);
    return (done * 1_000) / Math.max(spanMs, 100);
  }

  private shrink(): void {
    const now = this.o.now();
    if (now - this.lastDecreaseMs < this.o.decreaseEveryMs) return;
    this.lastDecreaseMs = now;
    this.slowStart = false;
    this.window = Math.max(this.o.minWindow, this.window / 2);
  }

  /**
   * Whether the published rate lets one more lookup go now (and counts it); if not, arranges to
   * try the queue again when it will.
   */
  private paced(): boolean {
    if (this.rate === 0) return true;
    const now = this.o.now();
    const interval = 1_000 / this.rate;
    const tolerance = Math.max(1, Math.floor(this.rate / 10)) * interval;
    const due = Math.max(this.tatMs, now);
    const earliest = due - tolerance + interval;
    if (earliest <= now) {
      this.tatMs = due + interval;
      return true;
    }
    if (!this.paceTimer) {
      this.paceTimer = setTimeout(
        () => {
          this.paceTimer = undefined;
          this.next();
        },
        Math.ceil(earliest - now),
      );
      this.paceTimer.unref();
    }
    return false;
  }

  private wait(maxWaitMs: number, abandoned?: () => boolean): Promise<void> {
    if (maxWaitMs <= 0) {
      return Promise.reject(
        new DiscoveryError(
          "upstream_unavailable",
          `DP "${this.name}" has lookups waiting and the caller's deadline leaves no time to wait`,
        ),
      );
    }
    // At the published rate, the queue ahead drains in waiting / rate seconds: a lookup that
    // would not leave before its wait bound is refused now rather than after it.
    const drainMs = this.rate > 0 ? ((this.waiting + 1) * 1_000) / this.rate : 0;
    if (this.rate > 0 && drainMs >= maxWaitMs) {
      return Promise.reject(
        new DiscoveryError(
          "resource_exhausted",
          `DP "${this.name}" takes ${this.rate} lookups per second and ${this.waiting} are waiting for it; try again in ${Math.ceil(drainMs / 1_000)} s`,
          { details: { retryAfterMs: Math.ceil(drainMs), reason: "DP_CAPACITY" } },
        ),
      );
    }
    // At the rate answers come back, the same: a lookup that would wait past its bound is
    // refused now, fast, instead of holding its caller until it times out.
    // Only once slow start is over: before, the window, not the DP, sets the rate.
    const drained = this.slowStart ? 0 : this.drainRate();
    const drainedMs = drained > 0 ? ((this.waiting + 1) * 1_000) / drained : 0;
    if (drained > 0 && drainedMs >= maxWaitMs) {
      const retryAfterMs = Math.ceil(Math.min(drainedMs, 10_000));
      return Promise.reject(
        new DiscoveryError(
          "resource_exhausted",
          `DP "${this.name}" answers about ${Math.round(drained)} lookups per second here and ${this.waiting} are waiting for it: this one would not leave within its deadline; try again in ${Math.ceil(retryAfterMs / 1_000)} s`,
          { details: { retryAfterMs, reason: "UPSTREAM_SATURATED" } },
        ),
      );
    }
    if (this.waiting >= this.o.maxQueue) {
      return Promise.reject(
        new DiscoveryError(
          "resource_exhausted",
          `DP "${this.name}" answers slower than lookups arrive: ${this.waiting} are waiting for it; try again shortly`,
          { details: { retryAfterMs: 1_000, reason: "UPSTREAM_SATURATED" } },
        ),
      );
    }
    this.waiting++;
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        w.gone = true;
        this.waiting--;
        reject(
          new DiscoveryError(
            "upstream_unavailable",
            `DP "${this.name}" is overloaded: the lookup waited ${Math.round(maxWaitMs)} ms for it`,
          ),
        );
      }, maxWaitMs);
      const w: Waiter = {
        gone: false,
        ...(abandoned && { abandoned }),
        start: () => {
          clearTimeout(timer);
          this.waiting--;
          resolve();
        },
        drop: () => {
          clearTimeout(timer);
          w.gone = true;
          this.waiting--;
          reject(callerGone(false));
        },
      };
      this.queue.push(w);
    });
  }

  /** Starts waiters while the window has room. */
  private next(): void {
    while (this.inflight < Math.floor(this.window) && this.head < this.queue.length) {
      const w = this.queue[this.head] as Waiter;
      if (!w.gone && w.abandoned?.()) w.drop();
      if (!w.gone && !this.paced()) return;
      this.head++;
      if (this.head >= 1_024) {
        this.queue.splice(0, this.head);
        this.head = 0;
      }
      if (w.gone) continue;
      this.inflight++;
      w.start();
    }
  }
}
