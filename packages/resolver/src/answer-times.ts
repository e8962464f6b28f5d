// What an adaptive gate (adaptive-gate.ts) has seen of its DP's answers to judged lookups: the
// rate they come back at, the base answer time (the quickest of the last 5-10 s) and whether the
// DP has a queue (even the quickest answer of the last second took well over the base).

/** Completions are counted over two buckets of this length to estimate the drain rate. */
const DRAIN_BUCKET_MS = 500;
/** Fewer completions than this in the buckets do not estimate a drain rate. */
const MIN_DRAIN_SAMPLES = 20;
/**
 * The DP is taken to have a queue (and the drain rate to be its capacity) when even the quickest
 * answer of the drain rate's span took longer than the base by this share of the base, and by
 * this much at least (the jitter of a shared machine's loopback).
 */
const QUEUE_SHARE = 0.25;
const QUEUE_MIN_MS = 10;
/** The base answer time is the least of the current and the previous bucket of this length. */
const BASE_BUCKET_MS = 5_000;

export class AnswerTimes {
  /** Completions in the current and the previous drain bucket. */
  private doneNow = 0;
  private donePrev = 0;
  /** The quickest timely answer (ms) in the current and the previous drain bucket. */
  private quickestNow = Number.POSITIVE_INFINITY;
  private quickestPrev = Number.POSITIVE_INFINITY;
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

  constructor(private readonly now: () => number) {}

  /**
   * Counts an answer that came in time, `ms` after its lookup was sent, towards the base answer
   * time; `lateRefusals` is the gate's count of refusals for lateness so far.
   */
  timely(ms: number, lateRefusals: number): void {
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
    }
    this.baseNow = Math.min(this.baseNow, ms);
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

  /** Counts an answer towards the drain rate, and its time (ms; none for a late one) towards the quickest. */
  done(answerMs = Number.POSITIVE_INFINITY): void {
    const now = this.now();
    const buckets = Math.floor((now - this.doneStart) / DRAIN_BUCKET_MS);
    if (buckets >= 1) {
      // The previous bucket counts only when it was the one just before and was counted whole.
      this.donePrev = buckets === 1 ? this.doneNow : 0;
      this.quickestPrev = buckets === 1 ? this.quickestNow : Number.POSITIVE_INFINITY;
      this.prevSpanMs = buckets === 1 && this.nowSpanWhole ? DRAIN_BUCKET_MS : 0;
      this.doneNow = 0;
      this.quickestNow = Number.POSITIVE_INFINITY;
      this.nowSpanWhole = buckets === 1;
      this.doneStart = buckets === 1 ? this.doneStart + DRAIN_BUCKET_MS : now;
    }
    this.doneNow++;
    this.quickestNow = Math.min(this.quickestNow, answerMs);
  }

  /**
   * Whether the DP (or the resolver's own loop, which its answers wait for too) has a queue:
   * even the quickest answer of the drain rate's span (and `answerMs`, one not counted yet) took
   * well over the base answer time, or every answer there was late. Without one, answers come
   * back as fast as the DP can give them, and the rate they come back at is what was asked,
   * not what the DP could answer. (Answers older than the span do not count: after an idle
   * spell, only `answerMs` does.)
   */
  queueing(answerMs = Number.POSITIVE_INFINITY): boolean {
    const age = this.now() - this.doneStart;
    const recent = age < 2 * DRAIN_BUCKET_MS ? this.quickestNow : Number.POSITIVE_INFINITY;
    const quickest = Math.min(
      answerMs,
      recent,
      age < DRAIN_BUCKET_MS ? this.quickestPrev : Number.POSITIVE_INFINITY,
    );
    const base = this.baseMs();
    return quickest > base + Math.max(QUEUE_MIN_MS, base * QUEUE_SHARE);
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
