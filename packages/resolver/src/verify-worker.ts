// The worker-thread side of verify-pool.ts: makes one batch of Ed25519 checks (core's
// signatureValid, the one the event loop would run) and answers one byte per check, in order.
import { signatureValid } from "@mimi/core";

/**
 * A batch of checks packed into buffers that are moved to the worker, not copied: keys and
 * signatures back to back at fixed sizes, messages back to back with their ends.
 */
export interface CheckBatch {
  /** 32 bytes per check. */
  readonly keys: Uint8Array<ArrayBuffer>;
  /** 64 bytes per check. */
  readonly signatures: Uint8Array<ArrayBuffer>;
  readonly messages: Uint8Array<ArrayBuffer>;
  /** Where each check's message ends in `messages`. */
  readonly ends: Uint32Array<ArrayBuffer>;
  /** 1 where the key is a registry key (its key object is kept for the next check). */
  readonly registryKeys: Uint8Array<ArrayBuffer>;
}

/** Makes every check of a batch; 1 where the signature verifies. */
export function checkBatch(b: CheckBatch): Uint8Array {
  const valid = new Uint8Array(b.ends.length);
  let start = 0;
  for (let i = 0; i < valid.length; i++) {
    const end = b.ends[i] ?? 0;
    const ok = signatureValid(
      b.keys.subarray(32 * i, 32 * i + 32),
      b.messages.subarray(start, end),
      b.signatures.subarray(64 * i, 64 * i + 64),
      b.registryKeys[i] === 1,
    );
    valid[i] = ok ? 1 : 0;
    start = end;
  }
  return valid;
}

/** What piscina calls in the worker. */
export default checkBatch;
