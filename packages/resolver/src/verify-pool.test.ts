// Issue 14: a cold lookup's Ed25519 checks run on worker threads, batched per turn of the event
// loop, with exactly the outcome inline checking gives.
import assert from "node:assert/strict";
import { after, test } from "node:test";
import { generateSigningKey, SIGNING_CONTEXT, signWith, verifications, verifyWith } from "@mimi/core";
import { createVerifyPool, verifyOffLoop } from "./verify-pool.js";

const pool = createVerifyPool({ threads: 1 });
after(() => pool.close());

const key = generateSigningKey();
const other = generateSigningKey();
const message = (n: number) => Buffer.from(`record ${n} of a DP's answer`);
interface Signed {
  readonly n: number;
  readonly sig: Uint8Array;
}
const sign = (n: number): Signed => ({ n, sig: signWith(key, SIGNING_CONTEXT.mappingMsp, message(n)) });
const tamper = (s: Signed): Signed => {
  const sig = Uint8Array.from(s.sig);
  sig[10] = (sig[10] ?? 0) ^ 0x40;
  return { n: s.n, sig };
};
/** What verifyOutcome does with its checks: every one must hold, or it throws naming the first. */
const verifyAll =
  (items: readonly Signed[], by = key.publicKey) =>
  () => {
    for (const { n, sig } of items) {
      if (!verifyWith(by, SIGNING_CONTEXT.mappingMsp, sig, [message(n)], { registryKey: true }))
        throw new Error(`signature of record ${n} does not verify`);
    }
    return items.length;
  };

/** Records from..from+n-1, signed: more than a lone lookup's few checks, so they go to a thread. */
const records = (from: number, n = 10) => Array.from({ length: n }, (_, i) => sign(from + i));

test("checks made on a worker give what checking inline gives: a result, or the same error", async () => {
  const sigs = records(0);
  const computed = verifications.computed;
  const sent = pool.stats.batches;
  assert.equal(await verifyOffLoop(pool, verifyAll(sigs)), 10);
  assert.equal(pool.stats.batches, sent + 1, "made on the worker");
  assert.equal(verifications.computed, computed + 10, "counted as computed once made");
  // Remembered now: no check leaves the event loop again.
  const batches = pool.stats.batches;
  assert.equal(await verifyOffLoop(pool, verifyAll(sigs)), 10);
  assert.equal(pool.stats.batches, batches);
  // A bad signature among good ones, and a wrong key: the inline error, exactly.
  const bad = [...records(100, 9), tamper(sign(109))];
  await assert.rejects(verifyOffLoop(pool, verifyAll(bad)), /signature of record 109 does not verify/);
  await assert.rejects(
    verifyOffLoop(pool, verifyAll(records(200), other.publicKey)),
    /signature of record 200 does not verify/,
  );
  // An error before any check (a structural problem) passes through as it is.
  await assert.rejects(
    verifyOffLoop(pool, () => {
      throw new Error("answer names another CSI");
    }),
    /answer names another CSI/,
  );
});

test("the checks asked for in one turn go to the workers as one batch, each distinct one once", async () => {
  const sigs = records(300, 6);
  const batches = pool.stats.batches;
  const inline = pool.stats.inline;
  // Three lookups of the same answer and one of another, all in this turn: 8 distinct checks
  // would be made inline, but these are 6 + 4 = 10.
  const results = await Promise.all([
    verifyOffLoop(pool, verifyAll(sigs)),
    verifyOffLoop(pool, verifyAll(sigs)),
    verifyOffLoop(pool, verifyAll(sigs)),
    verifyOffLoop(pool, verifyAll(records(400, 4))),
  ]);
  assert.deepEqual(results, [6, 6, 6, 4]);
  assert.equal(pool.stats.batches, batches + 1, "one batch");
  assert.equal(pool.stats.inline, inline);
});

test("a check asked for while the same one is on a thread waits for it, and is not made again", async () => {
  const sigs = records(700);
  const batches = pool.stats.batches;
  const inline = pool.stats.inline;
  const first = verifyOffLoop(pool, verifyAll(sigs));
  // The next turn: the first lookup's checks have gone to the thread, and are not back.
  await new Promise((r) => setImmediate(r));
  assert.equal(pool.stats.batches, batches + 1);
  const second = verifyOffLoop(pool, verifyAll(sigs));
  assert.deepEqual(await Promise.all([first, second]), [10, 10]);
  assert.equal(pool.stats.batches, batches + 1, "no second batch");
  assert.equal(pool.stats.inline, inline, "nor checks made inline");
  // A bad check waited for this way fails both lookups alike.
  const bad = [...records(800, 9), tamper(sign(809))];
  const a = verifyOffLoop(pool, verifyAll(bad));
  await new Promise((r) => setImmediate(r));
  const b = verifyOffLoop(pool, verifyAll(bad));
  await assert.rejects(a, /record 809/);
  await assert.rejects(b, /record 809/);
});

test("a lone lookup's few checks, with the workers idle, are made inline", async () => {
  const batches = pool.stats.batches;
  const inline = pool.stats.inline;
  assert.equal(await verifyOffLoop(pool, verifyAll(records(500, 3))), 3);
  assert.equal(pool.stats.batches, batches);
  assert.equal(pool.stats.inline, inline + 3);
  await assert.rejects(verifyOffLoop(pool, verifyAll([sign(600), tamper(sign(601))])), /record 601/);
});

test("with no threads, checks are made inline on the event loop", async () => {
  const inline = createVerifyPool({ threads: 0 });
  const sigs = [sign(20)];
  assert.equal(await verifyOffLoop(inline, verifyAll(sigs)), 1);
  await assert.rejects(verifyOffLoop(inline, verifyAll([tamper(sign(21))])), /record 21 does not verify/);
  assert.equal(inline.stats.batches, 0);
  assert.throws(() => createVerifyPool({ threads: -1 }), RangeError);
});
