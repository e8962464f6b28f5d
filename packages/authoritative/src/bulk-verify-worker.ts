// The worker-thread side of bulk-verifier.ts: checks the MSP signatures of one slice of a bulk
// batch. It receives only record bytes, signatures and the MSP's public key, and answers one
// byte per record in order, so the batch reports its failures exactly as inline checking does.
import { SIGNING_CONTEXT, verifyWith } from "@mimi/core";

/**
 * One slice of a batch, packed into two buffers that are moved to the worker, not copied: a
 * record's bytes arrive as views into the whole gRPC message, which a structured clone would
 * copy once per slice.
 */
export interface VerifyTask {
  /** The MSP's raw Ed25519 public key. */
  readonly publicKey: Uint8Array;
  /** Record 0, its signature, record 1, its signature, ... back to back. */
  readonly bytes: Uint8Array<ArrayBuffer>;
  /** Where each record and each signature ends in `bytes`: record i at 2i, its signature at 2i+1. */
  readonly ends: Uint32Array<ArrayBuffer>;
}

/** Whether `signature` is the MSP's signature of a bulk record (R4): the one check made per record. */
export function mspSignatureValid(publicKey: Uint8Array, record: Uint8Array, signature: Uint8Array): boolean {
  return verifyWith(publicKey, SIGNING_CONTEXT.mappingMsp, signature, [record], { registryKey: true });
}

/** Checks every record of a slice; 1 where its signature verifies, 0 where it does not. */
export function verifySlice(task: VerifyTask): Uint8Array {
  const { bytes, ends } = task;
  const valid = new Uint8Array(ends.length / 2);
  let start = 0;
  for (let i = 0; i < valid.length; i++) {
    const recordEnd = ends[2 * i] ?? 0;
    const signatureEnd = ends[2 * i + 1] ?? 0;
    const record = bytes.subarray(start, recordEnd);
    valid[i] = mspSignatureValid(task.publicKey, record, bytes.subarray(recordEnd, signatureEnd)) ? 1 : 0;
    start = signatureEnd;
  }
  return valid;
}

/** What piscina calls in the worker. */
export default verifySlice;
