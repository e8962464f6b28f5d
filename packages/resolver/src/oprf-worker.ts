// The worker-thread side of oprf-pool.ts: the resolver's share of a private lookup's OPRF
// arithmetic (core's oprfBlind and oprfFinalize, the functions the event loop would run).
import { type BlindedCsi, oprfBlind, oprfFinalize } from "@mimi/core";

/** Blinding CSIs for an evaluation, or checking the DP's proof and unblinding its answer. */
export type OprfTask =
  | { readonly kind: "blind"; readonly uris: readonly string[] }
  | {
      readonly kind: "finalize";
      readonly items: readonly BlindedCsi[];
      readonly evaluated: readonly Uint8Array[];
      readonly publicKey: Uint8Array;
      readonly proof: Uint8Array;
    };

/** What a task gives, or why the DP's evaluation did not verify. */
export type OprfResult =
  | { readonly blinded: BlindedCsi[] }
  | { readonly outputs: Uint8Array[] }
  | { readonly problem: string };

/** Runs a task on the calling thread (a worker, or the event loop when the pool is busy). */
export function runOprf(task: OprfTask): OprfResult {
  if (task.kind === "blind") return { blinded: task.uris.map(oprfBlind) };
  try {
    return { outputs: oprfFinalize(task.items, task.evaluated, task.publicKey, task.proof) };
  } catch (err) {
    return { problem: (err as Error).message };
  }
}

/** What piscina calls in the worker. */
export default runOprf;
