// Seals the answers of one turn of the event loop together (core seal-batch.ts): every lookup
// read in that turn (a resolver's stream delivers many in one read) waits for the turn's end,
// and then one Ed25519 signature covers each batch, where each answer took one before (about
// 55 µs here). A lookup alone in its batch is signed alone. Unpaced, the wait is one
// setImmediate: the turn's I/O is done by then, and nothing else is waited for.
//
// Under load, rounds of signing are paced like a database's group commit: after a round of
// at least PACE_FROM seals, the next starts about `pacing.ms` after it began, so the lookups of
// the turns between join it. A DP asked a few lookups at a time (by all its callers together)
// signs each turn's at its end, as before (a pause would be a whole millisecond: Node's timers
// are no finer, and one caller's next lookup comes sooner than that); a busy one signs what
// arrived in that time, where one turn held about 5 (bench/README.md). The latency it adds is
// about `pacing.ms`, plus up to a millisecond of timer granularity and the turn then running;
// it is the DP's, not one caller's: a busy caller paces every caller's seals.
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

/** Seals in a round from which the next is paced: fewer say that callers ask one at a time. */
export const PACE_FROM = 4;

/** How rounds of signing are spaced (createSealBatcher). */
export interface SealPacing {
  /** A round starts at least this many ms after the previous one began; 0: every turn signs. */
  readonly ms: number;
  /** A monotonic clock (performance.now): a wall clock set back would hold no round longer than `ms` either. */
  readonly now: () => number;
  /** Runs `f` in `ms` (setTimeout, which waits whole milliseconds, at least 1; tests pass their own). */
  readonly after: (f: () => void, ms: number) => void;
}

/**
 * A batcher signing with `signingKey`. `defer` runs the signing after the statements of this
 * turn are in (setImmediate; tests pass their own), or later by `pacing`. A batch that reaches
 * `maxBatch` is signed at once; a `maxBatch` of 1 signs every seal alone (for verifiers older
 * than SealBatch).
 */
export function createSealBatcher(
  signingKey: SigningKey,
  defer: (f: () => void) => void = setImmediate,
  maxBatch = MAX_SEAL_BATCH,
  pacing?: SealPacing,
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
  // When the last round began (none yet), how many seals it held, and whether the next one is
  // scheduled.
  let lastRound = Number.NEGATIVE_INFINITY;
  let lastRoundSeals = 0;
  let scheduled = false;
  const signAll = () => {
    scheduled = false;
    if (pacing) lastRound = pacing.now();
    const turn = batches;
    batches = new Map();
    lastRoundSeals = 0;
    for (const batch of turn.values()) {
      lastRoundSeals += batch.length;
      signBatch(batch);
    }
  };
  const scheduleRound = () => {
    if (scheduled) return;
    scheduled = true;
    const paced = pacing && lastRoundSeals >= PACE_FROM;
    const wait = paced ? Math.min(lastRound + pacing.ms - pacing.now(), pacing.ms) : 0;
    if (pacing && wait > 0) pacing.after(signAll, wait);
    else defer(signAll);
  };
  return {
    seal: (statement, key = "") =>
      new Promise<AnswerSeal>((resolve, reject) => {
        const waiting = { statement, resolve, reject };
        const batch = batches.get(key);
        if (maxBatch === 1) {
          signBatch([waiting]);
        } else if (!batch) {
          scheduleRound();
          batches.set(key, [waiting]);
        } else if (batch.push(waiting) >= maxBatch) {
          batches.delete(key);
          signBatch(batch);
        }
      }),
    counts,
  };
}
