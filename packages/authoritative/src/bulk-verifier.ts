// Verifies the MSP signatures of bulk batches on worker threads (piscina), so that a batch of
// thousands of records neither stalls lookups on the event loop nor keeps the import to one
// core. The queue is bounded: a flood of batches is refused at once, never queued without end.
import { compiledWorkerUrl, DiscoveryError } from "@mimi/core";
import { Piscina } from "piscina";
import { type VerifyTask, verifySlice } from "./bulk-verify-worker.js";

/** A record of a bulk batch with the MSP's signature over it. */
export interface SignedBulkRecord {
  readonly record: Uint8Array;
  readonly mspSignature: Uint8Array;
}

/** Checks MSP signatures of bulk records, off the event loop unless made with no threads. */
export interface BulkVerifier {
  /** Worker threads; 0 checks on the calling thread. */
  readonly threads: number;
  /**
   * Checks each record's signature with `publicKey`; resolves to one byte per record, in
   * order: 1 where it verifies. Throws not_ready at once, before any work is queued and
   * before the caller does its own, when the queue is full.
   */
  verify(publicKey: Uint8Array, items: readonly SignedBulkRecord[]): Promise<Uint8Array>;
  /** Stops the workers; checks still waiting fail. */
  close(): Promise<void>;
}

/** Slices of this many records or fewer keep every thread busy and a slice's cost small. */
const MAX_SLICE = 512;
const MIN_SLICE = 64;
/** About 1.5 s of work per thread (a slice of 512 takes some 45 ms): more is refused. */
const QUEUED_SLICES_PER_THREAD = 32;
/** The retry hint of a refusal: by then the queue has drained by most of a full load. */
const RETRY_AFTER_SECONDS = 1;
/** Idle workers exit after this; the next batch starts them again. */
const IDLE_TIMEOUT_MS = 60_000;

const WORKER_URL = compiledWorkerUrl(import.meta.url, "bulk-verify-worker.js");

/** Creates a verifier with `threads` workers (0: check inline, on the calling thread). */
export function createBulkVerifier({ threads }: { threads: number }): BulkVerifier {
  if (!Number.isInteger(threads) || threads < 0) throw new RangeError("threads must be an integer >= 0");
  if (threads === 0) {
    return {
      threads,
      verify: (publicKey, items) => Promise.resolve(verifyInline(publicKey, items)),
      close: async () => {},
    };
  }
  const maxQueue = threads * QUEUED_SLICES_PER_THREAD;
  const pool = new Piscina<VerifyTask, Uint8Array>({
    filename: WORKER_URL.href,
    minThreads: 0,
    maxThreads: threads,
    idleTimeout: IDLE_TIMEOUT_MS,
    // Own admission below refuses a whole batch before any slice is queued; piscina's bound
    // stays as the backstop and is never reached.
    maxQueue,
  });
  let pendingSlices = 0;
  return {
    threads,
    verify(publicKey, items) {
      // One slice per thread for small batches, never more slices than the queue holds.
      const size = Math.max(
        Math.min(MAX_SLICE, Math.max(MIN_SLICE, Math.ceil(items.length / threads))),
        Math.ceil(items.length / maxQueue),
      );
      const count = Math.ceil(items.length / size);
      if (pendingSlices + count > maxQueue) {
        throw new DiscoveryError(
          "not_ready",
          `bulk verification is at capacity (${pendingSlices} slices of records waiting); retry the batch in about ${RETRY_AFTER_SECONDS} s`,
          { details: { retryAfterMs: RETRY_AFTER_SECONDS * 1_000, reason: "VERIFICATION_AT_CAPACITY" } },
        );
      }
      pendingSlices += count;
      const runs: Promise<Uint8Array>[] = [];
      for (let i = 0; i < items.length; i += size) {
        const task = packSlice(publicKey, items.slice(i, i + size));
        runs.push(
          pool
            .run(task, { transferList: [task.bytes.buffer, task.ends.buffer] })
            .finally(() => pendingSlices--),
        );
      }
      return Promise.all(runs).then((slices) => {
        const valid = new Uint8Array(items.length);
        for (const [k, v] of slices.entries()) valid.set(v, k * size);
        return valid;
      });
    },
    close: () => pool.destroy(),
  };
}

/** Checks the signatures on the calling thread, with the same code the workers run. */
export function verifyInline(publicKey: Uint8Array, items: readonly SignedBulkRecord[]): Uint8Array {
  return verifySlice(packSlice(publicKey, items));
}

function packSlice(publicKey: Uint8Array, items: readonly SignedBulkRecord[]): VerifyTask {
  let total = 0;
  for (const x of items) total += x.record.length + x.mspSignature.length;
  const bytes = new Uint8Array(total);
  const ends = new Uint32Array(items.length * 2);
  let at = 0;
  items.forEach((x, i) => {
    bytes.set(x.record, at);
    at += x.record.length;
    ends[2 * i] = at;
    bytes.set(x.mspSignature, at);
    at += x.mspSignature.length;
    ends[2 * i + 1] = at;
  });
  return { publicKey: new Uint8Array(publicKey), bytes, ends };
}
