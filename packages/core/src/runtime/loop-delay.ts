// How far behind its event loop runs: the one measure of a Node server's overload that counts
// every cost at once (TLS, HTTP/2, decoding, verification, GC). A timer due every `everyMs`
// fires late by however long the loop was busy; the guard reads that lateness. It says
// "overloaded" when a sample is past `maxDelayMs`, and "recovered" only when one falls below
// half of it, so that a loop near the bound does not flip on every sample. A server refuses
// its expensive work (a resolver: lookups that need a DP) while overloaded and keeps serving
// what is cheap (cache hits), so that twice the load it can take still gets the load it can
// take answered, and the rest refused at once, instead of everyone's answer arriving late.

export interface LoopDelayOptions {
  /** A sample this late or later makes the loop overloaded; 0 turns the guard off. */
  readonly maxDelayMs: number;
  /** How often a sample is taken. */
  readonly everyMs: number;
  readonly now: () => number;
}

export class LoopDelayGuard {
  private delay = 0;
  private over = false;
  private peak = 0;
  private due = 0;
  private timer: ReturnType<typeof setInterval> | undefined;
  /** Expensive work refused so far (admit() said no). */
  refused = 0;

  constructor(private readonly o: LoopDelayOptions) {}

  /** Starts sampling on a timer that keeps no process alive. */
  start(): this {
    if (this.o.maxDelayMs <= 0 || this.timer) return this;
    this.due = this.o.now() + this.o.everyMs;
    this.timer = setInterval(() => this.sample(this.o.now()), this.o.everyMs);
    this.timer.unref();
    return this;
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** One sample, taken at `nowMs` by the timer that was due at the previous sample's due time. */
  sample(nowMs: number): void {
    this.delay = Math.max(0, nowMs - this.due);
    this.due = nowMs + this.o.everyMs;
    this.peak = Math.max(this.peak, this.delay);
    if (this.delay >= this.o.maxDelayMs) this.over = true;
    else if (this.delay < this.o.maxDelayMs / 2) this.over = false;
  }

  /** Whether expensive work should be refused now. Always false when the guard is off. */
  get overloaded(): boolean {
    return this.over && this.o.maxDelayMs > 0;
  }

  /** Whether to take on a piece of expensive work now; counts the refusals. */
  admit(): boolean {
    if (!this.overloaded) return true;
    this.refused++;
    return false;
  }

  get delayMs(): number {
    return this.delay;
  }

  /** The largest delay since the last call (for a gauge scraped now and then), and resets it. */
  takePeak(): number {
    const p = Math.max(this.peak, this.delay);
    this.peak = 0;
    return p;
  }
}
