// Injected time, so TTL logic is tested by moving a clock instead of sleeping.
import { readFileSync } from "node:fs";

/** Milliseconds since the Unix epoch. Production passes systemClock. */
export type Clock = () => number;

/** The wall clock. */
export const systemClock: Clock = () => Date.now();

/**
 * The wall clock plus an offset read from `path` (milliseconds as text) at every reading; a
 * missing or unreadable file reads as no offset. Integration tests move a server's clock by
 * rewriting the file (the servers' --test-clock flag); never used in production.
 */
export function fileOffsetClock(path: string): Clock {
  return () => Date.now() + readOffset(path);
}

function readOffset(path: string): number {
  try {
    const v = Number(readFileSync(path, "utf8").trim());
    return Number.isSafeInteger(v) ? v : 0;
  } catch {
    return 0;
  }
}

/** Waits `ms`, or less when `signal` aborts; leaves no timer or listener behind either way. */
export function sleepUnlessAborted(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) {
      resolve();
      return;
    }
    const onAbort = () => {
      clearTimeout(t);
      resolve();
    };
    const t = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal.addEventListener("abort", onAbort, { once: true });
  });
}
