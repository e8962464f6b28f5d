// Waits for a position to reach a target (a table applying its change log up to an event), each
// bounded in time and all of them in number: past the bound a wait ends at once, so a burst of
// callers never queues without end and none waits longer than `maxWaitMs`.

/** The waits on one position. */
export interface PositionWaits {
  /**
   * Resolves once a release finds `target` reached, after `maxWaitMs`, or at once when `max`
   * waits are held already. The caller checks first that it is not reached.
   */
  until(target: number): Promise<void>;
  /** Ends the waits whose target `reached` says is reached (call after the position moved). */
  release(reached: (target: number) => boolean): void;
  /** Ends every wait. */
  close(): void;
  readonly waiting: number;
}

/** Runs `fn` after `ms`; returns how to cancel it (tests pass one they fire themselves). */
export type Timer = (fn: () => void, ms: number) => () => void;

const realTimer: Timer = (fn, ms) => {
  const t = setTimeout(fn, ms).unref();
  return () => clearTimeout(t);
};

export function createPositionWaits(o: { maxWaitMs: number; max: number; timer?: Timer }): PositionWaits {
  const timer = o.timer ?? realTimer;
  const waits = new Set<{ target: number; done: () => void }>();
  return {
    until(target) {
      if (waits.size >= o.max) return Promise.resolve();
      return new Promise<void>((resolve) => {
        const w = {
          target,
          done: () => {
            cancel();
            waits.delete(w);
            resolve();
          },
        };
        const cancel = timer(w.done, o.maxWaitMs);
        waits.add(w);
      });
    },
    release(reached) {
      for (const w of waits) if (reached(w.target)) w.done();
    },
    close() {
      for (const w of waits) w.done();
    },
    get waiting() {
      return waits.size;
    },
  };
}
