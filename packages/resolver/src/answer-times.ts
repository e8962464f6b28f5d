// What an adaptive gate (adaptive-gate.ts) has seen of its DP's answers to judged lookups: the
// rate they come back at, the base answer time (the quickest of the last 5-10 s), the recent
// answer time (smoothed, as TCP's SRTT; late answers count in it too) and the most lookups that
// were out at once when one of them was answered that quickly.

/** Completions are counted over two buckets of this length to estimate the drain rate. */
const DRAIN_BUCKET_MS = 500;
/** Fewer completions than this in the buckets do not estimate a drain rate. */
const MIN_DRAIN_SAMPLES = 20;
/** The base answer time is the least of the current and the previous bucket of this length. */
const BASE_BUCKET_MS = 5_000;
/** Each answer moves the smoothed answer time this share of the way to its own (TCP's SRTT gain). */
const SMOOTHING = 1 / 8;
/** Answers that take more than the base by this share and this many ms show a queue at the DP. */
const QUEUE_SHARE = 0.25;
const QUEUE_MS = 10;

export class AnswerTimes {
  /** Completions in the current and the previous drain bucket. */
  private doneNow = 0;
  private donePrev = 0;
  private doneStart = Number.NEGATIVE_INFINITY;
  /** How much of the previous bucket counted (0 after an idle spell), and whether the current one began on time. */
  private prevSpanMs = 0;
  private nowSpanWhole = false;
  /** The quickest answer (ms) in the current and the previous base bucket. */
  private baseNow = Number.POSITIVE_INFINITY;
  private basePrev = Number.POSITIVE_INFINITY;
  private baseStart = Number.NEGATIVE_INFINITY;
  /** The gate's count of refusals for lateness when the current base bucket began. */
  private refusedAtBase = 0;
  /** The smoothed answer time (ms; undefined before the first answer and after an idle spell). */
  private smoothedMs: number | undefined;
  /** When the last answer in time came. */
  private lastTimelyMs = Number.NEGATIVE_INFINITY;
  /** The most lookups out when one was sent that was answered with no queue showing, in the current and the previous base bucket. */
  private quickOutNow = 0;
  private quickOutPrev = 0;

  constructor(private readonly now: () => number) {}

  /**
   * Counts an answer that came in time, `ms` after its lookup was sent with `out` lookups out
   * (itself included), towards the base and the smoothed answer time; `lateRefusals` is the
   * gate's count of refusals for lateness so far.
   */
  timely(ms: number, lateRefusals: number, out: number): void {
    const now = this.now();
    const buckets = Math.floor((now - this.baseStart) / BASE_BUCKET_MS);
    if (buckets >= 1) {
      // While the gate refuses, the DP is behind and every answer carries its queue: the base
      // may fall then but not rise, or it would take the queue in and let answer times creep
      // up to the callers' bounds.
      const refusing = lateRefusals !== this.refusedAtBase;
      if (refusing) this.basePrev = Math.min(this.basePrev, this.baseNow);
      else this.basePrev = buckets === 1 ? this.baseNow : Number.POSITIVE_INFINITY;
      this.baseNow = Number.POSITIVE_INFINITY;
      this.baseStart = buckets === 1 ? this.baseStart + BASE_BUCKET_MS : now;
      this.refusedAtBase = lateRefusals;
      this.quickOutPrev = buckets === 1 ? this.quickOutNow : 0;
      this.quickOutNow = 0;
      // After an idle spell the DP may answer differently: start the smoothed time afresh.
      if (buckets >= 2) this.smoothedMs = undefined;
    }
    this.lastTimelyMs = now;
    this.baseNow = Math.min(this.baseNow, ms);
    this.smooth(ms);
    if (!this.queueIn(ms)) this.quickOutNow = Math.max(this.quickOutNow, out);
  }

  /**
   * Counts a late answer (to a lookup that timed out), `ms` after its lookup was sent, towards
   * the smoothed answer time only: a DP answering late has a queue however quick it was before.
   */
  late(ms: number): void {
    this.smooth(ms);
  }

  private smooth(ms: number): void {
    this.smoothedMs =
      this.smoothedMs === undefined ? ms : this.smoothedMs + SMOOTHING * (ms - this.smoothedMs);
  }

  /** Whether an answer time of `ms` shows a queue at the DP: over the base by a quarter and 10 ms. */
  private queueIn(ms: number): boolean {
    return ms > this.baseMs() * (1 + QUEUE_SHARE) + QUEUE_MS;
  }

  /**
   * While the DP shows no queue (the smoothed answer time about the base, and an answer in time
   * within the last 5 s): that time (ms, at least 1) and the most lookups that were out at once
   * when one of them was answered so quickly in the last 5-15 s. Undefined when answers take
   * well over the base or none came lately.
   */
  unqueued(): { ms: number; out: number } | undefined {
    const ms = this.smoothedMs;
    const answeredLately = this.now() - this.lastTimelyMs < BASE_BUCKET_MS;
    if (ms === undefined || !answeredLately || this.queueIn(ms)) return undefined;
    return { ms: Math.max(1, ms), out: Math.max(this.quickOutNow, this.quickOutPrev, 1) };
  }

  /**
   * The quickest answer of the last 5-10 s, or of the spell before the gate began refusing (ms);
   * 0 when none came in the last 10 s.
   */
  baseMs(): number {
    if (this.now() - this.baseStart >= 2 * BASE_BUCKET_MS) return 0;
    const base = Math.min(this.baseNow, this.basePrev);
    return Number.isFinite(base) ? Math.max(0, base) : 0;
  }

  /** Counts an answer (or a failure, or a late answer) towards the drain rate. */
  done(): void {
    const now = this.now();
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
  drainRate(): number {
    const age = this.now() - this.doneStart; // how far into the current bucket
    if (age >= 2 * DRAIN_BUCKET_MS) return 0;
    const withPrev = age < DRAIN_BUCKET_MS;
    const done = this.doneNow + (withPrev ? this.donePrev : 0);
    if (done < MIN_DRAIN_SAMPLES) return 0;
    const spanMs = age + (withPrev ? this.prevSpanMs : 0);
    return (done * 1_000) / Math.max(spanMs, 100);
  }
}
