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
  const gc = fullCollection();
  await until(
    () => {
      gc();
      return refs.filter((w) => w.deref() !== undefined).length <= atMost;
    },
    what,
    turns,
  );
}

let collect: (() => void) | undefined;
/** V8's full collection: the process's own `gc` when it runs with --expose-gc, else made once. */
function fullCollection(): () => void {
  if (!collect) {
    const own = (globalThis as { gc?: () => void }).gc;
    if (own) collect = own;
    else {
      setFlagsFromString("--expose-gc");
      collect = runInNewContext("gc") as () => void;
    }
  }
  return collect;
}

/**
 * Whether `o` keeps its getter `name` on a prototype, as objects made per call must
 * (ARCHITECTURE.md, "Hot paths": an object literal's getters keep what they hold out of V8's
 * young generation).
 */
export function getterOnPrototype(o: object, name: string): boolean {
  const own = Object.getOwnPropertyDescriptor(o, name);
  const inherited = Object.getOwnPropertyDescriptor(Object.getPrototypeOf(o), name);
  return own === undefined && typeof inherited?.get === "function";
}

/**
 * Fills what is left of Node's current buffer pool (Buffer.allocUnsafe's shared slab) with
 * 0xff, first moving to a fresh pool when less than half a pool is left, so the next
 * short-lived allocations (canonical-bytes.ts shortLivedBytes) come from dirty bytes: a writer
 * that leaves one byte unwritten then shows it. Says which pool it dirtied, and how many bytes
 * of it the next allocations may take.
 */
export function dirtyBufferPool(): { buffer: ArrayBufferLike; left: number } {
  const half = Buffer.poolSize >>> 1;
  let probe = Buffer.allocUnsafe(1);
  const rest = () => probe.buffer.byteLength - probe.byteOffset - 1;
  // A slice of what is left takes it all, and the next allocation opens a new pool.
  if (rest() < half) Buffer.allocUnsafe(Math.max(1, rest() - 8));
  probe = Buffer.allocUnsafe(1);
  new Uint8Array(probe.buffer, probe.byteOffset + 1).fill(0xff);
  // Allocations are aligned to 8 bytes within the pool.
  return { buffer: probe.buffer, left: rest() - 8 };
}
