// Seals the answers of one turn of the event loop together (core seal-batch.ts): every lookup
// read in that turn (a resolver's stream delivers many in one read) waits for the turn's end,
// and then one Ed25519 signature covers them all, where each took one before (about 55 µs
// here). A lookup alone is signed alone. The wait is one setImmediate: the turn's I/O is done
// by then, and nothing else is waited for.
import { type AnswerSeal, MAX_SEAL_BATCH, type SigningKey, sealBatch } from "@mimi/core";

export interface SealBatcher {
  /** The seal of `statement` (sealStatement's), once its batch is signed. */
  seal(statement: Uint8Array): Promise<AnswerSeal>;
  /** Signatures made so far, and seals they covered. */
  readonly counts: { readonly signatures: number; readonly seals: number };
}

interface Waiting {
  readonly statement: Uint8Array;
  readonly resolve: (s: AnswerSeal) => void;
  readonly reject: (err: unknown) => void;
}

/**
 * A batcher signing with `key`. `defer` runs the signing after the statements of this turn are
 * in (setImmediate; tests pass their own). A batch that reaches MAX_SEAL_BATCH is signed at once.
 */
export function createSealBatcher(
  key: SigningKey,
  defer: (f: () => void) => void = setImmediate,
  maxBatch = MAX_SEAL_BATCH,
): SealBatcher {
  let waiting: Waiting[] = [];
  const counts = { signatures: 0, seals: 0 };
  const sign = () => {
    const batch = waiting;
    if (batch.length === 0) return; // signed when it filled up
    waiting = [];
    let seals: AnswerSeal[];
    try {
      seals = sealBatch(
        batch.map((w) => w.statement),
        key,
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
  return {
    seal: (statement) =>
      new Promise<AnswerSeal>((resolve, reject) => {
        waiting.push({ statement, resolve, reject });
        if (waiting.length >= maxBatch) sign();
        else if (waiting.length === 1) defer(sign);
      }),
    counts,
  };
}
