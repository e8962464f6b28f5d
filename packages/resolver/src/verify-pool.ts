// Ed25519 checks of cold lookups on worker threads (piscina), so that verifying a DP's answer
// (two or three signatures per mapping plus the seal, about 150-175 us each here) neither holds
// the event loop that serves cache hits nor keeps cold lookups to one core. Checks asked for in
// the same turn of the event loop go to the workers as one batch, each distinct check once; a
// lone lookup's few checks with no batch in flight are made inline. Bounded: past a few
// batches per thread in flight, checks are made inline (the event loop slows, which is the
// back-pressure), never queued without end.
import { compiledWorkerUrl, type PendingCheck, signatureValid, verifyDeferred } from "@mimi/core";
import { Piscina } from "piscina";
import type { CheckBatch } from "./verify-worker.js";

/** Makes deferred signature checks; resolves to one byte per check (1: valid), in order. */
export interface VerifyPool {
  /** Worker threads; 0 checks inline. */
  readonly threads: number;
  check(checks: readonly PendingCheck[]): Promise<Uint8Array>;
  /** Batches sent to the workers and checks made inline because they were busy, so far. */
  readonly stats: { batches: number; inline: number };
  close(): Promise<void>;
}

/** Checks in one batch at most (about 40 ms of one thread's work). */
const MAX_BATCH = 256;
/** Batches in flight per thread before checks are made inline. */
const BATCHES_PER_THREAD = 4;
/**
 * A batch this small is made inline while no batch is in flight: one lookup's checks with
 * nothing else to overlap, where the hand-off to a thread costs latency and CPU and frees the
 * event loop for nothing (cold unary c=1: 213-219 lookups/s through a thread, 232-235 inline).
 */
const INLINE_WHEN_IDLE = 8;
/** Idle workers exit after this; the next cold lookup starts them again. */
const IDLE_TIMEOUT_MS = 60_000;

const WORKER_URL = compiledWorkerUrl(import.meta.url, "verify-worker.js");

const inline = (checks: readonly PendingCheck[]) =>
  Uint8Array.from(checks, (c) =>
    signatureValid(c.publicKey, c.message, c.signature, c.registryKey) ? 1 : 0,
  );

/** One distinct check, with who waits for it. */
interface Waiters {
  readonly check: PendingCheck;
  readonly done: ((ok: boolean) => void)[];
}

/** Creates a pool of `threads` workers (0: every check inline, on the calling thread). */
export function createVerifyPool({ threads }: { threads: number }): VerifyPool {
  if (!Number.isInteger(threads) || threads < 0) throw new RangeError("threads must be an integer >= 0");
  const stats = { batches: 0, inline: 0 };
  if (threads === 0) {
    return {
      threads,
      stats,
      check: (checks) => {
        stats.inline += checks.length;
        return Promise.resolve(inline(checks));
      },
      close: async () => {},
    };
  }
  const maxInFlight = threads * BATCHES_PER_THREAD;
  const pool = new Piscina<CheckBatch, Uint8Array>({
    filename: WORKER_URL.href,
    minThreads: 0,
    maxThreads: threads,
    idleTimeout: IDLE_TIMEOUT_MS,
    // Admission below keeps to maxInFlight; piscina's own bound is the backstop.
    maxQueue: maxInFlight,
  });
  let inFlight = 0;
  // This turn's checks, by id (each distinct check made once), with who waits for them.
  let waiting = new Map<string, Waiters>();
  // Checks on a thread, by id: the same check asked for in a later turn waits for the one made
  // there (a DP's seal batch is one check for all its answers, which may arrive over several
  // reads). At most maxInFlight batches of MAX_BATCH.
  const onThread = new Map<string, Waiters>();
  let scheduled = false;

  const send = (batch: Waiters[]) => {
    const settle = (valid: Uint8Array) => {
      batch.forEach((w, i) => {
        for (const done of w.done) done(valid[i] === 1);
      });
    };
    const checks = batch.map((w) => w.check);
    if (inFlight >= maxInFlight || (inFlight === 0 && batch.length <= INLINE_WHEN_IDLE)) {
      stats.inline += batch.length;
      settle(inline(checks));
      return;
    }
    let run: Promise<Uint8Array>;
    try {
      const task = pack(checks);
      run = pool.run(task, {
        transferList: [
          task.keys.buffer,
          task.signatures.buffer,
          task.messages.buffer,
          task.ends.buffer,
          task.registryKeys.buffer,
        ],
      });
    } catch {
      // A pool that cannot take the batch (a thread that will not start) leaves it to us.
      stats.inline += batch.length;
      settle(inline(checks));
      return;
    }
    inFlight++;
    stats.batches++;
    for (const w of batch) onThread.set(w.check.id, w);
    run
      // A worker that failed (it should not: checks do not throw) leaves the checks to us.
      .catch(() => inline(checks))
      .then((valid) => {
        for (const w of batch) onThread.delete(w.check.id);
        settle(valid);
      })
      .finally(() => inFlight--);
  };

  const flush = () => {
    scheduled = false;
    const all = [...waiting.values()];
    waiting = new Map();
    for (let i = 0; i < all.length; i += MAX_BATCH) send(all.slice(i, i + MAX_BATCH));
  };

  return {
    threads,
    stats,
    check(checks) {
      const results = checks.map(
        (c) =>
          new Promise<boolean>((resolve) => {
            const w = onThread.get(c.id) ?? waiting.get(c.id);
            if (w) w.done.push(resolve);
            else waiting.set(c.id, { check: c, done: [resolve] });
          }),
      );
      if (!scheduled) {
        scheduled = true;
        setImmediate(flush);
      }
      return Promise.all(results).then((ok) => Uint8Array.from(ok, (v) => (v ? 1 : 0)));
    },
    close: () => pool.destroy(),
  };
}

/**
 * Runs `verify` (synchronous, e.g. verifyOutcome) with its Ed25519 checks made on `pool`: the
 * same result or error as running it inline (core verifyDeferred), with the event loop free
 * while the checks run. `state` is what `verify` reads besides signatures (the registry's
 * serial): when it moved meanwhile, `verify` runs again inline.
 */
export async function verifyOffLoop<T>(
  pool: VerifyPool,
  verify: () => T,
  state: () => unknown = () => undefined,
): Promise<T> {
  if (pool.threads === 0) return verify();
  return verifyDeferred(verify, (checks) => pool.check(checks), state);
}

function pack(checks: readonly PendingCheck[]): CheckBatch {
  const keys = new Uint8Array(32 * checks.length);
  const signatures = new Uint8Array(64 * checks.length);
  const ends = new Uint32Array(checks.length);
  const registryKeys = new Uint8Array(checks.length);
  let total = 0;
  for (const c of checks) total += c.message.length;
  const messages = new Uint8Array(total);
  let at = 0;
  checks.forEach((c, i) => {
    keys.set(c.publicKey, 32 * i);
    signatures.set(c.signature, 64 * i);
    messages.set(c.message, at);
    at += c.message.length;
    ends[i] = at;
    registryKeys[i] = c.registryKey ? 1 : 0;
  });
  return { keys, signatures, messages, ends, registryKeys };
}
