// How many lookups a resolver keeps in flight at one DP: a window that adapts to what the DP
// answers, as TCP's congestion window does: it starts small and grows by one per answer (slow
// start, doubling per round trip) until the first timeout, then by one per window of answers
// (additive increase), and halves when an attempt times out (multiplicative decrease, at most once
// per attempt deadline, so one slow burst halves it once). In slow start it grows only while it is
// the limit (lookups wait for it, or the most out at once in this round or the last filled half of
// it), as TCP's congestion window validation has it: a window doubled by answers to lookups sent a
// few at a time would later let a whole burst onto the DP before any answer told how it copes. A
// lookup that timed out keeps its place until the DP answers it late (`stillBusy`): the DP is still
// working on it, and what took its place would queue behind it there and time out as well. What is
// over the window waits in a bounded queue, for a bounded time, instead of being sent to a DP that
// cannot answer it within the deadline; a full queue or a wait past its bound fails at once with a
// clear status rather than after a timeout (the abuse issue's "bend, do not break"). A DP endpoint
// may also publish the rate it takes (R13; EndpointLimits at the start of each LookupStream):
// lookups then also leave the gate no faster than that rate (a GCRA schedule with a tenth of a
// second's burst), waiting in the same queue, and a lookup that could not leave within the queue's
// bound is refused at once (DP_CAPACITY).
// The window alone refuses nothing: answered in time, it grows to its maximum whatever queue forms
// behind it. So a plain lookup is also judged on arrival, its answer time read two ways, the later
// counting. By Little's law: with n lookups ahead of it (sent, and waiting too once slow start is
// over or the window is at its largest) and answers coming back at r a second over the last second,
// about (n + 1) / r. While the DP shows no queue (its answers, late ones included and smoothed as
// TCP's SRTT, within a quarter and 10 ms of the base, and no timeout within two attempt deadlines),
// r is what was asked more than what the DP can answer, and a window drains w lookups per smoothed
// answer time s: a known r counts as at least w / s, w being the window's room for plain lookups
// but no more than twice the most plain ones that were out at once when one was answered that
// quickly in the last 5-15 s (slow start's doubling: a DP is not taken to answer more at once than
// it has shown; so after lookups one at a time answered in 5 ms, a caller with 900 ms to wait finds
// about 180 lookups ahead of it too many). Once answers slow, by a queue at the DP or the
// resolver's own loop behind, each takes longer the more are sent, w / s no longer tells what the
// window drains, and r alone counts. And when the queue has stood still for t (nothing sent since,
// though lookups wait), by base + t: a newcomer would wait about that long (the standing queue
// CoDel reads), whether or not answers come back to tell a rate, as when the resolver's own loop
// falls behind. Past its base (the quickest answer of the last 5-10 s) plus half of the rest of its
// wait bound, it is refused at once (UPSTREAM_SATURATED, one to two times that time as retry-after)
// instead of queueing behind lookups that will use up its caller's deadline; a caller with less
// time than the base, while a rate or a queue is known, has too short a deadline
// (DEADLINE_TOO_SHORT). The other half is for what follows the DP's answer (verification, the
// reply) and for time the call spent before its handler ran, which the resolver cannot see. The
// base widens the budget, so a DP far away is not refused for its distance; it may fall but not
// rise while lookups are refused as late (every answer then carries the DP's queue, and a base that
// took it in would let answer times creep up to the bound). Private lookups (several calls, far
// slower) are neither judged nor counted in n, so asking privately cannot make plain lookups look
// late by the rate; nor are the retries after a timeout, whose caller hears that timeout when a
// retry is not sent. A queue that stands still refuses newcomers whatever holds the window, since
// they would wait behind it all the same. A lookup that timed out counts as ahead until the DP is
// done with it, and towards r then if the DP answered it late (at once, if the DP holds nothing of
// it). What each rule fixed, and what was tried and dropped, with figures: ARCHITECTURE.md
// (upstream windows) and bench/README.md (Overload).
// The window shrinks on timeouts only: a delay-based one (TCP Vegas) collapsed where DPs and
// resolver share cores, since a resolver cannot tell a DP's queue from its own CPU contention.
import { DiscoveryError } from "@mimi/core";
import { AnswerTimes } from "./answer-times.js";
import { callerGone, TOO_LATE } from "./call-bounds.js";
import { notSent, notSentForBound } from "./gate-refusals.js";

/** The reason of the gate's refusals for lack of room at the DP (RESOURCE_EXHAUSTED). */
export const UPSTREAM_SATURATED = "UPSTREAM_SATURATED";

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
 * A lookup is refused at once when it would be answered (by the drain rate, or by how long the
 * queue has stood still) later than its base answer time plus this share of the rest of its
 * wait bound (itself nine tenths of its caller's deadline).
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
  /** When a lookup last timed out (whether or not it halved the window). */
  private lastTimeoutMs = Number.NEGATIVE_INFINITY;
  /** When the gate last sent a lookup (from the queue or straight away). */
  private lastSentMs = Number.NEGATIVE_INFINITY;
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
  /** What the judged lookups' answers tell: the drain rate, the base and the smoothed answer time. */
  private readonly answers: AnswerTimes;

  constructor(
    private readonly name: string,
    private readonly o: GateOptions,
  ) {
    this.window = o.initialWindow;
    this.answers = new AnswerTimes(o.now);
  }

  /** Whether a timeout has shrunk the window within the last two attempt deadlines. */
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
    // (next() marks the send of a waiter it starts.)
    if (!this.windowFull() && this.waiting === 0 && this.paced()) {
      this.inflight++;
      this.lastSentMs = this.o.now();
    } else await this.wait(leftMs, judged, abandoned);
    this.outPeak = Math.max(this.outPeak, this.inflight);
    if (judged) this.judgedInflight++;
    const sentAt = judged ? this.o.now() : 0;
    const plainOut = this.judgedInflight; // plain lookups out, this one included
    let busy: Promise<boolean> | undefined;
    try {
      const r = await f();
      if (judged) this.answers.timely(this.o.now() - sentAt, this.lateRefusals, plainOut);
      // In slow start only a window that is the limit grows (as TCP's congestion window
      // validation has it): one grown while fewer lookups were out would let a later burst onto
      // the DP at once.
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
      // Done when the DP is: a late answer counts towards the drain rate then (and its time
      // towards the smoothed answer time), none not at all.
      if (busy) {
        void busy.then(
          (answered) => {
            if (answered && judged) this.answers.late(this.o.now() - sentAt);
            this.release(judged, answered);
          },
          () => this.release(judged, false),
        );
      } else this.release(judged, true);
    }
  }

  /**
   * Whether the window may grow: past slow start, on every answer in time (as before); in slow
   * start, while it limits what is sent: lookups wait for it, full, or the most out at once in
   * this round of a window's answers or the last filled more than half of it (Linux's rule for
   * its congestion window in slow start).
   */
  private limited(): boolean {
    if (!this.slowStart || (this.waiting > 0 && this.windowFull())) return true;
    return 2 * Math.max(this.outPeak, this.outPeakPrev) > this.window;
  }

  /** Whether the window is full (lookups may also wait for a published rate with room in it). */
  private windowFull(): boolean {
    return this.inflight >= Math.floor(this.window);
  }

  /** A lookup of the window is done at the DP (`answered`, or not): its place goes to the next. */
  private release(judged: boolean, answered: boolean): void {
    if (judged) {
      this.judgedInflight--;
      if (answered) this.answers.done();
    }
    this.inflight--;
    this.next();
  }

  /**
   * How long the queue has stood still (ms; 0 when none waits): since the gate last sent a
   * lookup, or since the first lookup still waiting came if later. A lookup joining it would
   * wait about that long (CoDel reads a standing queue so), whether or not answers come back to
   * tell a rate. Those that left the queue's front are skipped, as next() would.
   */
  private standingMs(): number {
    // Lookups waiting for a published rate, with room in the window, wait for its schedule:
    // wait() judges those (DP_CAPACITY).
    if (this.waiting === 0 || !this.windowFull()) return 0;
    while (this.head < this.queue.length && (this.queue[this.head] as Waiter).gone) this.head++;
    const first = this.queue[this.head];
    return first ? Math.max(0, this.o.now() - Math.max(first.since, this.lastSentMs)) : 0;
  }

  /** How long a lookup that may wait until `waitUntilMs` has (the default bound when none). */
  private leftMs(waitUntilMs: number | undefined): number {
    return waitUntilMs === undefined ? this.o.maxWaitMs : waitUntilMs - this.o.now();
  }

  /**
   * The refusal of a lookup that would be answered after its base answer time plus ANSWER_SHARE
   * of the rest of the `leftMs` its caller leaves it, or undefined. Its answer time is judged
   * two ways, the later counting: at the rate answers come back (Little's law; while no queue
   * shows, at least the rate the window drains), and by how long the queue has stood still.
   * With no rate known (too few answers in the last second) and nobody waiting, nothing is refused.
   */
  private lateVerdict(leftMs: number): DiscoveryError | undefined {
    const drained = this.answers.drainRate();
    if (drained === 0 && this.waiting === 0) return undefined;
    const base = this.answers.baseMs();
    if (!(leftMs > base) && (base > 0 || drained > 0)) {
      // Less time than the DP's quickest answer: the caller's deadline, not the DP, is short
      // (charged like a miss answered at its deadline; call-bounds.ts).
      return notSentForBound(
        new DiscoveryError(
          "upstream_unavailable",
          `DP "${this.name}" answers no faster than ${Math.round(base)} ms here, and this call's deadline leaves less; try again with a longer deadline`,
          { details: { reason: TOO_LATE } },
        ),
      );
    }
    if (!(leftMs > 0)) return undefined; // no time to wait at all: wait() says so
    // Waiting lookups count once slow start is over, or once the window can grow no more.
    const waiting = !this.slowStart || this.window >= this.o.maxWindow ? this.judgedWaiting : 0;
    const ahead = this.judgedInflight + waiting + 1;
    const rate = Math.max(drained, drained > 0 ? this.unqueuedRate() : 0);
    const byRate = rate > 0 ? (ahead * 1_000) / rate : 0;
    const standing = this.standingMs();
    const expectedMs = Math.max(byRate, standing > 0 ? base + standing : 0);
    if (expectedMs < base + ANSWER_SHARE * (leftMs - base)) return undefined;
    // Spread (one to two times that, at least 100 ms) so that callers refused together do not
    // come back together.
    const retryAfterMs = Math.ceil(Math.max(100, Math.min(expectedMs, 10_000)) * (1 + Math.random()));
    this.refusals++;
    this.lateRefusals++;
    const why =
      expectedMs === byRate
        ? `answers about ${Math.round(rate)} lookups per second here`
        : `has sent nothing for ${Math.round(standing)} ms here while lookups wait`;
    return notSentForBound(
      new DiscoveryError(
        "resource_exhausted",
        `DP "${this.name}" ${why} and ${this.judgedInflight} are sent and ${this.judgedWaiting} waiting: this one would not be answered within its deadline; try again in ${Math.ceil(retryAfterMs / 1_000)} s`,
        { details: { retryAfterMs, reason: UPSTREAM_SATURATED } },
      ),
    );
  }

  /** The rate the window drains plain lookups at while the DP shows no queue (the header's w / s), or 0. */
  private unqueuedRate(): number {
    const timedOutLately = this.o.now() - this.lastTimeoutMs < 2 * this.o.decreaseEveryMs;
    const quick = timedOutLately ? undefined : this.answers.unqueued();
    if (!quick) return 0;
    const room = Math.min(Math.floor(this.window) - (this.inflight - this.judgedInflight), 2 * quick.out);
    return room > 0 ? (room * 1_000) / quick.ms : 0;
  }

  private shrink(): void {
    const now = this.o.now();
    this.lastTimeoutMs = now;
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
        notSentForBound(
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
        notSentForBound(
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
          notSentForBound(
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
    while (!this.windowFull() && this.head < this.queue.length) {
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
      this.lastSentMs = this.o.now();
      w.start();
    }
    // Emptied: let go of the waiters gone by (they hold their lookups' closures).
    if (this.head > 0 && this.head === this.queue.length) {
      this.queue.length = 0;
      this.head = 0;
    }
  }
}
