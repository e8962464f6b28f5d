// A private lookup's OPRF arithmetic at the resolver on worker threads (piscina): blinding
// (about 1.5 ms a CSI) and checking the DP's proof and unblinding (a few ms a batch) would
// otherwise hold the event loop that serves cache hits. Bounded like the verify pool: past a
// few tasks per thread in flight, the work is done inline (the event loop slows, which is the
// back-pressure), never queued without end.
import type { BlindedCsi } from "@mimi/core";
import { compiledWorkerUrl } from "@mimi/core";
import { Piscina } from "piscina";
import { type OprfResult, type OprfTask, runOprf } from "./oprf-worker.js";

/** The resolver's OPRF arithmetic, off the event loop unless made with no threads. */
export interface OprfPool {
  /** Worker threads; 0 computes on the calling thread. */
  readonly threads: number;
  /** Blinds each CSI (a fresh random blind each). */
  blind(uris: readonly string[]): Promise<BlindedCsi[]>;
  /** Checks the DP's proof over the batch and unblinds: the PRF outputs in order; throws when it does not verify. */
  finalize(
    items: readonly BlindedCsi[],
    evaluated: readonly Uint8Array[],
    publicKey: Uint8Array,
    proof: Uint8Array,
  ): Promise<Uint8Array[]>;
  close(): Promise<void>;
}

/** Tasks in flight per thread before work is done inline. */
const TASKS_PER_THREAD = 4;
/** Idle workers exit after this; the next private lookup starts them again. */
const IDLE_TIMEOUT_MS = 60_000;

const WORKER_URL = compiledWorkerUrl(import.meta.url, "oprf-worker.js");

/** Creates the pool with `threads` workers (0: inline). */
export function createOprfPool({ threads }: { threads: number }): OprfPool {
  if (!Number.isInteger(threads) || threads < 0) throw new RangeError("threads must be an integer >= 0");
  const maxInFlight = threads * TASKS_PER_THREAD;
  const pool =
    threads > 0
      ? new Piscina<OprfTask, OprfResult>({
          filename: WORKER_URL.href,
          minThreads: 0,
          maxThreads: threads,
          idleTimeout: IDLE_TIMEOUT_MS,
          maxQueue: maxInFlight,
        })
      : undefined;
  let inFlight = 0;
  const run = async (task: OprfTask): Promise<OprfResult> => {
    if (!pool || inFlight >= maxInFlight) return runOprf(task);
    inFlight++;
    try {
      return await pool.run(task);
    } finally {
      inFlight--;
    }
  };
  return {
    threads,
    async blind(uris) {
      const r = await run({ kind: "blind", uris });
      if (!("blinded" in r)) throw new Error("blinding gave no elements");
      return r.blinded;
    },
    async finalize(items, evaluated, publicKey, proof) {
      const r = await run({ kind: "finalize", items, evaluated, publicKey, proof });
      if ("problem" in r) throw new Error(r.problem);
      if (!("outputs" in r)) throw new Error("finalizing gave no outputs");
      return r.outputs;
    },
    close: async () => {
      await pool?.destroy();
    },
  };
}
