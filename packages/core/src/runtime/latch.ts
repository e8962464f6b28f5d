// Wake-ups for loops that wait for changes: a producer fires, one consumer waits, and a fire
// that happens while the consumer is busy (e.g. sending) is not lost.

/** A one-consumer latch: fire() sets it, wait() returns once it is set and clears it. */
export class Latch {
  private isSet = false;
  private wake: (() => void) | undefined;

  /** Sets the latch, waking the waiter if there is one. */
  fire(): void {
    this.isSet = true;
    this.wake?.();
  }

  /**
   * Resolves when the latch is set (now or later) or `signal` aborts, and clears it; true when
   * it was set, false when the wait ended by the abort. One consumer only: a second concurrent
   * wait replaces the first one's wake-up.
   */
  async wait(signal: AbortSignal): Promise<boolean> {
    if (!this.isSet && !signal.aborted) {
      await new Promise<void>((resolve) => {
        const onAbort = () => resolve();
        this.wake = () => {
          signal.removeEventListener("abort", onAbort);
          resolve();
        };
        signal.addEventListener("abort", onAbort, { once: true });
      });
    }
    this.wake = undefined;
    const fired = this.isSet;
    this.isSet = false;
    return fired;
  }
}
