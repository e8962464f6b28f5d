// Slots for work that must not pile up: at most so many tasks at once, and so many of one key
// (a caller's identity), the rest waiting in line; a waiter whose call ended leaves the line.
// The DP's whole filter sends and its OPRF evaluations take turns through these.

/**
 * At most `n` tasks at once, and `perKey` of one key; the others wait in order (a waiter whose
 * key is at its share lets later ones of other keys by). A waiter whose `signal` aborts (its call
 * ended) leaves the line, rejected with `gone()`; a task once started runs to its end.
 */
export function createSlots(n: number, perKey: number, gone: () => Error) {
  let free = n;
  const held = new Map<string, number>();
  const waiting: { key: string; go: () => void }[] = [];
  const room = (key: string) => free > 0 && (held.get(key) ?? 0) < perKey;
  const take = (key: string) => {
    free--;
    held.set(key, (held.get(key) ?? 0) + 1);
  };
  const wait = (key: string, signal?: AbortSignal) =>
    new Promise<void>((resolve, reject) => {
      const w = {
        key,
        go: () => {
          signal?.removeEventListener("abort", leave);
          resolve();
        },
      };
      const leave = () => {
        const at = waiting.indexOf(w);
        if (at >= 0) waiting.splice(at, 1);
        reject(gone());
      };
      signal?.addEventListener("abort", leave, { once: true });
      waiting.push(w);
    });
  return {
    get waiting() {
      return waiting.length;
    },
    async run<T>(key: string, signal: AbortSignal | undefined, task: () => Promise<T>): Promise<T> {
      if (signal?.aborted) throw gone();
      if (room(key)) take(key);
      else await wait(key, signal);
      try {
        return await task();
      } finally {
        free++;
        const left = (held.get(key) ?? 1) - 1;
        if (left > 0) held.set(key, left);
        else held.delete(key);
        const next = waiting.findIndex((w) => room(w.key));
        if (next >= 0) {
          const [w] = waiting.splice(next, 1);
          if (w) {
            take(w.key);
            w.go();
          }
        }
      }
    },
  };
}
