// For the packages' tests (exported as @mimi/core/testing; nothing in production imports it).
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";

/**
 * Resolves once `ok()` holds, checking it after each turn of the event loop (setImmediate: I/O
 * callbacks, timers and worker threads' messages run between two checks), never on a clock.
 * Fails, naming `what`, after `turns` turns: a bound for a condition that never comes, not a
 * timing (a busy machine runs fewer turns a second, not fewer turns).
 */
export async function until(
  ok: () => boolean | Promise<boolean>,
  what = "the condition held",
  turns = 2_000_000,
): Promise<void> {
  for (let i = 0; i < turns; i++) {
    if (await ok()) return;
    await new Promise((r) => setImmediate(r));
  }
  if (!(await ok())) throw new Error(`never: ${what} (after ${turns} turns of the event loop)`);
}

/**
 * Waits until at most `atMost` of `refs` still hold their object, forcing a full collection
 * before each look (up to `turns` turns of the event loop): for tests that something lets go of
 * what it no longer needs.
 */
export async function untilCollected(
  refs: readonly WeakRef<object>[],
  atMost: number,
  what: string,
  turns = 50,
): Promise<void> {
  setFlagsFromString("--expose-gc");
  const gc = runInNewContext("gc") as () => void;
  await until(
    () => {
      gc();
      return refs.filter((w) => w.deref() !== undefined).length <= atMost;
    },
    what,
    turns,
  );
}
