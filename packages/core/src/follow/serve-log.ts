// Serving a log to one watcher, server side (the root's WatchRegistry, a DP's WatchChanges and
// WatchNotices): subscribe before reading ("watch first, read second", so a commit between a
// read and the wait still wakes the loop), send pages until one comes back short, say once that
// the watcher has caught up, then wait for the next commit. Positions are the caller's.
import { Latch } from "../runtime/latch.js";

/** Options of serveLog. */
export interface ServeLogOptions<E, P> {
  /** Registers `wake` to run after every commit to the log; returns the unsubscribe function. */
  subscribe(wake: () => void): () => void;
  /** Up to `limit` entries after `position`, oldest first; may throw (e.g. on a gap) to end the stream. */
  read(position: P, limit: number): readonly E[];
  /** Sends one entry and returns the position after it. */
  send(entry: E): Promise<P>;
  /** Entries read at a time. */
  pageSize: number;
  /** Runs before each read and may move the position (e.g. send a snapshot, return its serial). */
  check?(position: P): Promise<P> | P;
  /** Runs once, the first time the watcher holds everything the log held. */
  caughtUp?(position: P): Promise<void>;
  /** Ends the loop (the call was cancelled). */
  signal: AbortSignal;
}

/** Serves entries after `from` until the signal aborts or a step throws. */
export async function serveLog<E, P>(from: P, o: ServeLogOptions<E, P>): Promise<void> {
  const latch = new Latch();
  const unsubscribe = o.subscribe(() => latch.fire());
  try {
    let position = from;
    let caughtUp = false;
    while (!o.signal.aborted) {
      for (;;) {
        // A check that answers at once is followed by the read in the same turn, so nothing can
        // commit between them; only one that sent something (a snapshot) yields first.
        const checked = o.check?.(position);
        if (checked !== undefined) position = checked instanceof Promise ? await checked : checked;
        const page = o.read(position, o.pageSize);
        for (const entry of page) position = await o.send(entry);
        if (page.length < o.pageSize) break;
      }
      if (!caughtUp) {
        caughtUp = true;
        await o.caughtUp?.(position);
      }
      await latch.wait(o.signal);
    }
  } finally {
    unsubscribe();
  }
}
