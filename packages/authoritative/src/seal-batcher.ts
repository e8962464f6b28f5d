// Seals the answers of one turn of the event loop together (core seal-batch.ts): every lookup
// read in that turn (a resolver's stream delivers many in one read) waits for the turn's end,
// and then one Ed25519 signature covers each batch, where each answer took one before (about
// 55 µs here). A lookup alone in its batch is signed alone. The wait is one setImmediate: the
// turn's I/O is done by then, and nothing else is waited for.
//
// A batch holds the lookups of one key only: the server's is the caller and its rate-limit
// context (one MSP behind a resolver). A path tells its reader the batch's size and its place
// in it, so a batch shared between callers would tell each how many lookups others made.
import { type AnswerSeal, MAX_SEAL_BATCH, type SigningKey, sealBatch } from "@mimi/core";

export interface SealBatcher {
  /** The seal of `statement` (sealStatement's), once its batch of `key` is signed. */
  seal(statement: Uint8Array, key?: string): Promise<AnswerSeal>;
  /** Signatures made so far, and seals they covered. */
  readonly counts: { readonly signatures: number; readonly seals: number };
}

interface Waiting {
  readonly statement: Uint8Array;
  readonly resolve: (s: AnswerSeal) => void;
  readonly reject: (err: unknown) => void;
}

/**
 * A batcher signing with `signingKey`. `defer` runs the signing after the statements of this
 * turn are in (setImmediate; tests pass their own). A batch that reaches `maxBatch` is signed
 * at once; a `maxBatch` of 1 signs every seal alone (for verifiers older than SealBatch).
 */
export function createSealBatcher(
  signingKey: SigningKey,
  defer: (f: () => void) => void = setImmediate,
  maxBatch = MAX_SEAL_BATCH,
): SealBatcher {
  if (!(Number.isInteger(maxBatch) && maxBatch >= 1 && maxBatch <= MAX_SEAL_BATCH)) {
    throw new RangeError(`a seal batch holds 1 to ${MAX_SEAL_BATCH} seals`);
  }
  // The batches of this turn by key; at most one entry per lookup read in the turn.
  let batches = new Map<string, Waiting[]>();
  const counts = { signatures: 0, seals: 0 };
  const signBatch = (batch: readonly Waiting[]) => {
    let seals: AnswerSeal[];
    try {
      seals = sealBatch(
        batch.map((w) => w.statement),
        signingKey,
      );
    } catch (err) {
      for (const w of batch) w.reject(err);
      return;
    }
    counts.signatures++;
    counts.seals += batch.length;
    batch.forEach((w, i) => {
      w.resolve(seals[i] as AnswerSeal);
    });
  };
  const signAll = () => {
    const turn = batches;
    batches = new Map();
    for (const batch of turn.values()) signBatch(batch);
  };
  return {
    seal: (statement, key = "") =>
      new Promise<AnswerSeal>((resolve, reject) => {
        const waiting = { statement, resolve, reject };
        const batch = batches.get(key);
        if (maxBatch === 1) {
          signBatch([waiting]);
        } else if (!batch) {
          if (batches.size === 0) defer(signAll);
          batches.set(key, [waiting]);
        } else if (batch.push(waiting) >= maxBatch) {
          batches.delete(key);
          signBatch(batch);
        }
      }),
    counts,
  };
}
