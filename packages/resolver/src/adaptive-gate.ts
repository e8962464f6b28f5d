// How many lookups a resolver keeps in flight at one DP: a window that adapts to what the DP
// answers, as TCP's congestion window does: it starts small and grows by one per answer (slow
// start, doubling per round trip) until the first timeout or the first sign of a queue (below),
// then by one per window of answers (additive increase), and halves when an attempt times out
// (multiplicative decrease, at most once per attempt deadline, so one slow burst halves it
// once). It grows only while it is the limit (lookups wait for it, or the most out at once in
// this round or the last filled it; half of it in slow start), as TCP's congestion window
// validation has it: a window grown by answers to lookups sent one at a time would later let a
// whole burst onto the DP before any answer told how it copes. A lookup that timed out keeps
// its place until the DP answers it late (`stillBusy`): the DP is still working on it, and
// what took its place would queue behind it there and time out as well (test/abuse.test.ts:
// on a starved DP, a burst of retries sent at once all timed out again 1.5 s later). What is
// over the window waits in a bounded queue, for a bounded time, instead of being sent to a DP
// that cannot answer it within the deadline; a full queue or a wait past its bound fails at once
// with a clear status rather than after a timeout (the abuse issue's "bend, do not break"). A
// DP endpoint may also publish the rate it takes (R13; EndpointLimits at the start of each
// LookupStream): lookups then also leave the gate no faster than that rate
// (a GCRA schedule with a tenth of a second's burst), waiting in the same queue, and a lookup
// that could not leave within the queue's bound is refused at once (DP_CAPACITY).
// The window alone refuses nothing: answered in time, it grows to its maximum whatever queue
// forms behind it (in overload runs every lookup then waited out its caller's deadline at the
// DP, and 0.16-0.37x of the sustainable rate was answered). So a plain lookup is also judged on
// arrival. While the DP has a queue (even the quickest answer of the last second took well
// over the base, the quickest of the last 5-10 s), it is judged by Little's law: with n lookups
// ahead of it (sent and waiting) and answers coming back at r a second over the last second,
// it would be answered in about (n + 1) / r. Without a queue, r is only what was asked (25
// lookups a second of light traffic would have refused all but 12 of a burst of 200 that the
// DP answered in 5 ms), and the window limits what is sent. A queue also ends slow start, as a
// rise in round trips does in TCP's HyStart. And when lookups wait for the window, the first of
// them has waited some time w, and the queue has not moved since: a lookup joining it would
// wait at least that (the standing queue CoDel reads), answers or not; so it would be answered
// in base + w at the soonest. Past its base plus half of the rest of its wait bound, it is
// refused at once
// (UPSTREAM_SATURATED, one to two times that time as retry-after) instead of queueing behind
// lookups that will use up its caller's deadline; a caller with less time than the base has too
// short a deadline (DEADLINE_TOO_SHORT). The other half is for what follows the DP's answer
// (verification, the reply) and for time the call spent before its handler ran, which the
// resolver cannot see (four fifths instead of half left so much late work that 0.48x of the
// sustainable rate was answered, against 0.72-0.75x). The base widens the budget, so a DP far
// away is not refused for its distance; it may fall but not rise while lookups are refused as
// late (every answer then carries the DP's queue, and a base that took it in would let answer
// times creep up to the bound). Private lookups (several calls, far slower) are neither judged
// nor counted, so asking privately cannot make plain lookups look late; nor are the retries
// after a timeout, whose caller hears that timeout when a retry is not sent. A lookup that
// timed out counts as ahead until the DP is done with it, and as answered only if it answered.
// The window shrinks on timeouts only: a delay-based decrease (TCP Vegas, Netflix's
// gradient limiter: shrink when answers take well over the base round trip) was tried and
// collapsed the window where DPs and resolver share cores, since a resolver cannot tell a DP's
// queue from its own CPU contention (0.5x of the sustainable rate answered, from 0.8-0.98x).
import { DiscoveryError } from "@mimi/core";
import { AnswerTimes } from "./answer-times.js";
import { callerGone, TOO_LATE } from "./call-bounds.js";

/** The reason of the gate's refusals for lack of room at the DP (RESOURCE_EXHAUSTED). */
export const UPSTREAM_SATURATED = "UPSTREAM_SATURATED";

/** The gate's failures of lookups it never sent. */
const unsent = new WeakSet<DiscoveryError>();
const notSent = (e: DiscoveryError): DiscoveryError => {
  unsent.add(e);
  return e;
};

/** Whether `err` is the gate's failure of a lookup it never sent (not the DP's doing). */
export function refusedUnsent(err: unknown): boolean {
  return err instanceof DiscoveryError && unsent.has(err);
}

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
  /**
   * For a lookup that failed: when the DP is done with it (true when it answered late), or
   * undefined when it holds nothing of it. Until then the lookup keeps its place in the window,
   * so what follows is not sent to queue behind it at the DP.
   */
  readonly stillBusy?: (err: unknown) => Promise<boolean> | undefined;
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
  /** When it began to wait. */
  readonly since: number;
  start(): void;
  /** It stopped waiting (its time ran out, or it was dropped): its turn is skipped. */
  gone: boolean;
  /** Whether nobody waits for it any more: it is dropped at its turn, using no rate slot. */
  abandoned?: () => boolean;
  drop(): void;
}

/**
 * A lookup is refused at once when, at the drain rate, the lookups ahead of it would take longer
 * than its base answer time plus this share of the rest of its wait bound (itself nine tenths
 * of its caller's deadline).
 */
const ANSWER_SHARE = 0.5;

/** The gate of one DP. */
export class AdaptiveGate {
  private window: number;
  private inflight = 0;
  /** Lookups refused unsent (too late by the answer-time rule, over the queue or the published rate). */
  private refusals = 0;
  /** Of those, the answer-time rule's (while it refuses, the base answer time may not rise). */
  private lateRefusals = 0;
  /** Of those in flight and waiting, the judged ones (the answer-time rule counts these, and their answers). */
  private judgedInflight = 0;
  private judgedWaiting = 0;
  private readonly queue: Waiter[] = [];
  private head = 0;
  private waiting = 0;
  private lastDecreaseMs = Number.NEGATIVE_INFINITY;
  /** The most lookups out at once in the current round (a window's worth of answers) and the last. */
  private outPeak = 0;
  private outPeakPrev = 0;
  private roundAnswers = 0;
  /** Slow start lasts until the first timeout. */
  private slowStart = true;
  /** The published rate (lookups per second; 0: none), its schedule, and the timer that resumes it. */
  private rate = 0;
  private tatMs = 0;
  private paceTimer: NodeJS.Timeout | undefined;
  /** What the judged lookups' answers tell: the drain rate, the base answer time, a queue. */
  private readonly answers: AnswerTimes;

  constructor(
    private readonly name: string,
    private readonly o: GateOptions,
  ) {
    this.window = o.initialWindow;
    this.answers = new AnswerTimes(o.now);
  }

  /** Whether a timeout has shrunk the window within the last attempt deadline. */
  get shrank(): boolean {
    return this.o.now() - this.lastDecreaseMs < this.o.decreaseEveryMs * 2;
  }

  /** Lookups refused unsent so far (mimi_resolver_upstream_refusals_total). */
  get refused(): number {
    return this.refusals;
  }

  /** Lookups in flight now, the window and the queue (for stats and tests). */
  get state(): { inflight: number; window: number; queued: number } {
    return { inflight: this.inflight, window: Math.floor(this.window), queued: this.waiting };
  }

  /**
   * The refusal a judged lookup that may wait until `waitUntilMs` gets now for being late
   * (UPSTREAM_SATURATED, counted as run() counts it), or undefined when run() would take it or
   * refuse it for another reason (a deadline shorter than the base, whose caller stays
   * charged). For a miss refused before the resolver decodes its request (fast-paths.ts).
   */
  refusalNow(waitUntilMs?: number): DiscoveryError | undefined {
    const verdict = this.lateVerdict(this.leftMs(waitUntilMs));
    return verdict?.details?.reason === UPSTREAM_SATURATED ? verdict : undefined;
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
   * which `timedOut` is true halves the window; a failure holds its place until the DP is done
   * with it (`stillBusy`); a success widens it. A `judged` lookup is first
   * judged by the answer-time rule (lateVerdict), and its answer counts towards the drain rate
   * that rule uses; others (private lookups, much slower than plain ones; a retry after a
   * timeout, whose caller should hear that timeout) only take the window.
   */
  async run<T>(
    f: () => Promise<T>,
    timedOut: (err: unknown) => boolean,
    waitUntilMs?: number,
    abandoned?: () => boolean,
    judged = true,
  ): Promise<T> {
    const leftMs = this.leftMs(waitUntilMs);
    if (judged) {
      const verdict = this.lateVerdict(leftMs);
      if (verdict) throw verdict;
    }
    // A waiter is counted in flight by whoever starts it, so the window is never overrun.
    if (this.inflight < Math.floor(this.window) && this.waiting === 0 && this.paced()) this.inflight++;
    else await this.wait(leftMs, judged, abandoned);
    this.outPeak = Math.max(this.outPeak, this.inflight);
    if (judged) this.judgedInflight++;
    const sentAt = judged ? this.o.now() : 0;
    let busy: Promise<boolean> | undefined;
    let answerMs: number | undefined;
    try {
      const r = await f();
      if (judged) {
        answerMs = this.o.now() - sentAt;
        this.answers.timely(answerMs, this.lateRefusals);
        // A queue ends slow start, as a rise in round trips does in TCP's HyStart: doubling the
        // window would only lengthen it, and the lookups waiting count from now on.
        if (this.slowStart && this.answers.queueing(answerMs)) this.slowStart = false;
      }
      // Only a window that is the limit grows (as TCP's congestion window validation has it):
      // one grown while fewer lookups were out would let a later burst onto the DP at once.
      if (++this.roundAnswers >= Math.floor(this.window)) {
        this.outPeakPrev = this.outPeak;
        this.outPeak = this.inflight;
        this.roundAnswers = 0;
      }
      if (this.limited()) {
        this.window = Math.min(this.o.maxWindow, this.window + (this.slowStart ? 1 : 1 / this.window));
      }
      return r;
    } catch (err) {
      if (timedOut(err)) this.shrink();
      busy = this.o.stillBusy?.(err);
      throw err;
    } finally {
      // Done when the DP is: a late answer counts towards the drain rate then, none not at all.
      if (busy) {
        void busy.then(
          (answered) => this.release(judged, answered),
          () => this.release(judged, false),
        );
      } else this.release(judged, true, answerMs);
    }
  }

  /**
   * Whether the window limits what is sent: lookups wait for it, or the most out at once in
   * this round of a window's answers or the last filled it (in slow start, which doubles it per
   * round, half of it: Linux's rule for its congestion window).
   */
  private limited(): boolean {
    const out = Math.max(this.outPeak, this.outPeakPrev);
    return this.waiting > 0 || (this.slowStart ? 2 * out > this.window : out >= Math.floor(this.window));
  }

  /** A lookup of the window is done at the DP (`answered`, or not): its place goes to the next. */
  private release(judged: boolean, answered: boolean, answerMs?: number): void {
    if (judged) {
      this.judgedInflight--;
      if (answered) this.answers.done(answerMs);
    }
    this.inflight--;
    this.next();
  }

  /**
   * How long the first lookup in the queue has waited (ms; 0 when none waits). One that left
   * stays first until the queue moves, so this is how long the queue has stood still at least.
   */
  private headWaitedMs(): number {
    const first = this.waiting > 0 ? this.queue[this.head] : undefined;
    return first ? Math.max(0, this.o.now() - first.since) : 0;
  }

  /** How long a lookup that may wait until `waitUntilMs` has (the default bound when none). */
  private leftMs(waitUntilMs: number | undefined): number {
    return waitUntilMs === undefined ? this.o.maxWaitMs : waitUntilMs - this.o.now();
  }

  /**
   * The refusal of a lookup that would be answered after its base answer time plus ANSWER_SHARE
   * of the rest of the `leftMs` its caller leaves it (at the rate answers come back, while the
   * DP has a queue; or behind the queue's first, which has waited so long already), or
   * undefined. With no rate known (too few answers in the last second) and nobody waiting,
   * nothing is refused.
   */
  private lateVerdict(leftMs: number): DiscoveryError | undefined {
    const drained = this.answers.drainRate();
    const waitedMs = this.headWaitedMs();
    if (drained === 0 && waitedMs === 0) return undefined;
    const base = this.answers.baseMs();
    if (drained > 0 && !(leftMs > base)) {
      // Less time than the DP's quickest answer: the caller's deadline, not the DP, is short
      // (charged like a miss answered at its deadline; call-bounds.ts).
      return notSent(
        new DiscoveryError(
          "upstream_unavailable",
          `DP "${this.name}" answers no faster than ${Math.round(base)} ms here, and this call's deadline leaves less; try again with a longer deadline`,
          { details: { reason: TOO_LATE } },
        ),
      );
    }
    // A lookup that would wait joins the queue behind one that has waited this long already,
    // and the queue has not moved since: it would wait at least as long (a queue that stands is
    // the sign CoDel reads), whether or not answers came back to tell a rate.
    let expectedMs = waitedMs > 0 ? base + waitedMs : 0;
    // Answers as quick as ever: the rate is the demand, not the DP's capacity, and the window
    // limits what is sent (a burst after light traffic would otherwise be refused at that rate).
    // With a queue, the lookups waiting for the window count too (and slow start is over).
    const byRate = drained > 0 && this.answers.queueing();
    if (byRate)
      expectedMs = Math.max(expectedMs, ((this.judgedInflight + this.judgedWaiting + 1) * 1_000) / drained);
    if (expectedMs < base + ANSWER_SHARE * (leftMs - base)) return undefined;
    // Spread (one to two times that, at least 100 ms) so that callers refused together do not
    // come back together.
    const retryAfterMs = Math.ceil(Math.max(100, Math.min(expectedMs, 10_000)) * (1 + Math.random()));
    this.refusals++;
    this.lateRefusals++;
    return notSent(
      new DiscoveryError(
        "resource_exhausted",
        `DP "${this.name}" ${byRate ? `answers about ${Math.round(drained)} lookups per second here` : `has had lookups waiting for ${Math.round(waitedMs)} ms here`} and ${this.judgedInflight} are sent and ${this.judgedWaiting} waiting: this one would not be answered within its deadline; try again in ${Math.ceil(retryAfterMs / 1_000)} s`,
        { details: { retryAfterMs, reason: UPSTREAM_SATURATED } },
      ),
    );
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

  private wait(maxWaitMs: number, judged: boolean, abandoned?: () => boolean): Promise<void> {
    if (maxWaitMs <= 0) {
      return Promise.reject(
        notSent(
          new DiscoveryError(
            "upstream_unavailable",
            `DP "${this.name}" has lookups waiting and the caller's deadline leaves no time to wait`,
          ),
        ),
      );
    }
    // At the published rate, the queue ahead drains in waiting / rate seconds: a lookup that
    // would not leave before its wait bound is refused now rather than after it.
    const drainMs = this.rate > 0 ? ((this.waiting + 1) * 1_000) / this.rate : 0;
    if (this.rate > 0 && drainMs >= maxWaitMs) {
      this.refusals++;
      return Promise.reject(
        notSent(
          new DiscoveryError(
            "resource_exhausted",
            `DP "${this.name}" takes ${this.rate} lookups per second and ${this.waiting} are waiting for it; try again in ${Math.ceil(drainMs / 1_000)} s`,
            { details: { retryAfterMs: Math.ceil(drainMs), reason: "DP_CAPACITY" } },
          ),
        ),
      );
    }
    if (this.waiting >= this.o.maxQueue) {
      this.refusals++;
      return Promise.reject(
        notSent(
          new DiscoveryError(
            "resource_exhausted",
            `DP "${this.name}" answers slower than lookups arrive: ${this.waiting} are waiting for it; try again shortly`,
            { details: { retryAfterMs: 1_000, reason: UPSTREAM_SATURATED } },
          ),
        ),
      );
    }
    this.waiting++;
    const counted = judged ? 1 : 0;
    this.judgedWaiting += counted;
    const left = () => {
      this.waiting--;
      this.judgedWaiting -= counted;
    };
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        w.gone = true;
        left();
        reject(
          notSent(
            new DiscoveryError(
              "upstream_unavailable",
              `DP "${this.name}" is overloaded: the lookup waited ${Math.round(maxWaitMs)} ms for it`,
            ),
          ),
        );
      }, maxWaitMs);
      const w: Waiter = {
        since: this.o.now(),
        gone: false,
        ...(abandoned && { abandoned }),
        start: () => {
          clearTimeout(timer);
          left();
          resolve();
        },
        drop: () => {
          clearTimeout(timer);
          w.gone = true;
          left();
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
