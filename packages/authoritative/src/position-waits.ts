// Waits for a position to reach a target (a table applying its change log up to an event), each
// bounded in time and all of them in number: past the bound a wait ends at once, so a burst of
// callers never queues without end and none waits longer than `maxWaitMs`.

/** The waits on one position. */
export interface PositionWaits {
  /** Resolves once `reached(target)` holds at a release, after `maxWaitMs`, or at once past `max` waiting. */
  until(target: number): Promise<void>;
  /** Ends the waits whose target is reached (call after the position moved). */
  release(): void;
  /** Ends every wait. */
  close(): void;
}

export function createPositionWaits(o: {
  /** Whether the position is at `target` or past it. */
  reached: (target: number) => boolean;
  maxWaitMs: number;
  max: number;
}): PositionWaits {
  const waits = new Set<{ target: number; done: () => void }>();
  return {
    until(target) {
      if (o.reached(target) || waits.size >= o.max) return Promise.resolve();
      return new Promise<void>((resolve) => {
        const w = {
          target,
          done: () => {
            clearTimeout(timer);
            waits.delete(w);
            resolve();
          },
        };
        const timer = setTimeout(w.done, o.maxWaitMs).unref();
        waits.add(w);
      });
    },
    release() {
      for (const w of waits) if (o.reached(w.target)) w.done();
    },
    close() {
      for (const w of waits) w.done();
    },
  };
}
