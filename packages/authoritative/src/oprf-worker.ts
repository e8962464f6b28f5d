// The worker-thread side of oprf-pool.ts: the DP's OPRF arithmetic (about 1.4 ms of pure
// JavaScript per element), so a table build and Evaluate calls use every core and leave the
// event loop to lookups. A worker holds nothing between tasks: each brings the key it needs.
import { oprfBlindEvaluate, oprfEvaluate } from "@mimi/core";

/** One task: PRF outputs of CSIs (a table build), or the evaluation of blinded elements (Evaluate). */
export type OprfTask =
  | { readonly kind: "prf"; readonly secretKey: Uint8Array; readonly csis: readonly string[] }
  | {
      readonly kind: "evaluate";
      readonly secretKey: Uint8Array;
      readonly publicKey: Uint8Array;
      readonly blinded: readonly Uint8Array[];
    };

/** What a task gives: the outputs in order, or why the input was refused (a bad element). */
export type OprfResult =
  | { readonly outputs: Uint8Array[] }
  | { readonly evaluated: Uint8Array[]; readonly proof: Uint8Array }
  | { readonly problem: string };

/** Runs a task on the calling thread (the pool's workers, or inline with no threads). */
export function runOprf(task: OprfTask): OprfResult {
  if (task.kind === "prf") return { outputs: task.csis.map((csi) => oprfEvaluate(task.secretKey, csi)) };
  try {
    return oprfBlindEvaluate({ secretKey: task.secretKey, publicKey: task.publicKey }, task.blinded);
  } catch (err) {
    return { problem: (err as Error).message };
  }
}

/** What piscina calls in the worker. */
export default runOprf;
