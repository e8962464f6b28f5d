// The DP's OPRF work on worker threads (piscina): table builds and Evaluate calls use every
// core, and an evaluation of 32 elements (some 50 ms) no longer holds up the lookups queued
// behind it on the event loop. The queue is bounded: an Evaluate that finds it full is refused
// UNAVAILABLE at once with a retry hint, never queued without end; builds wait their turn.
import { compiledWorkerUrl, DiscoveryError, type OprfKeys } from "@mimi/core";
import { Piscina } from "piscina";
import { type OprfResult, type OprfTask, runOprf } from "./oprf-worker.js";
import { createSlots } from "./slots.js";

/** The DP's OPRF arithmetic, off the event loop unless made with no threads. */
export interface OprfPool {
  /** Worker threads; 0 computes on the calling thread. */
  readonly threads: number;
  /** PRF outputs of `csis` under `secretKey`, in order, split across the threads. */
  prf(secretKey: Uint8Array, csis: readonly string[]): Promise<Uint8Array[]>;
  /** Whether an Evaluate would be refused now (checked before the caller's budgets are charged). */
  full(): boolean;
  /**
   * Evaluates blinded elements with one proof (Evaluate). Throws not_ready at once when the
   * queue is full; rejects invalid_argument for an element that is not a group element. A task
   * still queued when `signal` aborts (the caller gave up) is dropped unrun; one already on a
   * thread runs to its end.
   */
  blindEvaluate(
    keys: OprfKeys,
    blinded: readonly Uint8Array[],
    signal?: AbortSignal,
  ): Promise<{ evaluated: Uint8Array[]; proof: Uint8Array }>;
  close(): Promise<void>;
}

/**
 * Tasks queued per thread before an Evaluate is refused: at most 32 elements each, under a
 * second of work, shorter than a resolver's deadline, so little queued is work for a caller who
 * has already gone (and what is, is dropped when its call ends).
 */
const QUEUED_PER_THREAD = 16;
/**
 * Table tasks a thread may have besides: a table has a build page and a change-log page in
 * flight at most, and a DP holds two tables (three for a moment while one is deleted).
 */
const BUILD_SLACK_PER_THREAD = 6;
/** Idle workers exit after this; the next task starts them again. */
const IDLE_TIMEOUT_MS = 60_000;

const WORKER_URL = compiledWorkerUrl(import.meta.url, "oprf-worker.js");

/** Creates the pool with `threads` workers (0: inline). */
export function createOprfPool({ threads }: { threads: number }): OprfPool {
  if (!Number.isInteger(threads) || threads < 0) throw new RangeError("threads must be an integer >= 0");
  const maxQueue = Math.max(1, threads) * QUEUED_PER_THREAD;
  const pool =
    threads > 0
      ? new Piscina<OprfTask, OprfResult>({
          filename: WORKER_URL.href,
          minThreads: 0,
          maxThreads: threads,
          idleTimeout: IDLE_TIMEOUT_MS,
          maxQueue: maxQueue + threads * BUILD_SLACK_PER_THREAD,
        })
      : undefined;
  let pending = 0;
  const compute = async (task: OprfTask): Promise<OprfResult> => (pool ? pool.run(task) : runOprf(task));
  const run = async (task: OprfTask): Promise<OprfResult> => {
    pending++;
    try {
      return await compute(task);
    } finally {
      pending--;
    }
  };
  // Evaluations wait here, not in piscina's queue, for one of the threads: piscina aborts a
  // running task by ending its worker (a new one then loads the whole module graph), so a caller
  // that cancels must not reach it. A waiter whose signal aborts is dropped.
  const slots = Math.max(1, threads);
  const evaluations = createSlots(
    slots,
    slots,
    () =>
      new DiscoveryError("not_ready", "the call ended before its evaluation started", {
        details: { reason: "CALL_ENDED" },
      }),
  );
  return {
    threads,
    async prf(secretKey, csis) {
      // One slice per thread; builds are paced by their own awaiting, one page at a time.
      const size = Math.max(1, Math.ceil(csis.length / Math.max(1, threads)));
      const runs: Promise<OprfResult>[] = [];
      for (let i = 0; i < csis.length; i += size)
        runs.push(run({ kind: "prf", secretKey, csis: csis.slice(i, i + size) }));
      const outputs = (await Promise.all(runs)).flatMap((r) => ("outputs" in r ? r.outputs : []));
      // Outputs out of step with their CSIs would seal entries into other CSIs' slots.
      if (outputs.length !== csis.length)
        throw new Error(`${outputs.length} PRF outputs for ${csis.length} CSIs`);
      return outputs;
    },
    full: () => pending >= maxQueue,
    async blindEvaluate(keys, blinded, signal) {
      if (pending >= maxQueue)
        throw new DiscoveryError(
          "not_ready",
          `this DP's private-lookup evaluations are at capacity (${pending} batches waiting); retry shortly`,
          { details: { retryAfterMs: 1_000, reason: "EVALUATIONS_AT_CAPACITY" } },
        );
      // Copies: a request's elements are views into its whole message, which would go along.
      const task: OprfTask = {
        kind: "evaluate",
        secretKey: keys.secretKey,
        publicKey: keys.publicKey,
        blinded: blinded.map((b) => b.slice()),
      };
      pending++;
      let r: OprfResult;
      try {
        r = await evaluations.run("", signal, () => compute(task));
      } finally {
        pending--;
      }
      if ("problem" in r) throw new DiscoveryError("invalid_argument", r.problem);
      if (!("evaluated" in r)) throw new Error("an evaluation gave no elements");
      return r;
    },
    close: async () => {
      await pool?.destroy();
    },
  };
}
