// The DP's OPRF pool: the workers compute what the event loop would, in order; a bad element
// is the caller's mistake; a full queue refuses an evaluation at once, with when to retry.
import assert from "node:assert/strict";
import { test } from "node:test";
import { type DiscoveryError, generateOprfKeys, oprfBlind, oprfEvaluate, oprfFinalize } from "@mimi/core";
import { createOprfPool } from "./oprf-pool.js";

const csis = Array.from({ length: 7 }, (_, i) => `tel:+4477009000${i}`);

for (const threads of [0, 2]) {
  test(`with ${threads} threads: PRF outputs and evaluations are the event loop's, in order`, async (t) => {
    const pool = createOprfPool({ threads });
    t.after(() => pool.close());
    const keys = generateOprfKeys();
    const outputs = await pool.prf(keys.secretKey, csis);
    assert.deepEqual(
      outputs.map((y) => Buffer.from(y).toString("hex")),
      csis.map((c) => Buffer.from(oprfEvaluate(keys.secretKey, c)).toString("hex")),
    );
    assert.deepEqual(await pool.prf(keys.secretKey, []), []);
    // A resolver's view: blinded, evaluated with one proof, finalized to the same outputs.
    const blinded = csis.slice(0, 3).map(oprfBlind);
    const ev = await pool.blindEvaluate(
      keys,
      blinded.map((b) => b.blinded),
    );
    const ys = oprfFinalize(blinded, ev.evaluated, keys.publicKey, ev.proof);
    assert.deepEqual(ys, outputs.slice(0, 3));
    await assert.rejects(
      pool.blindEvaluate(keys, [new Uint8Array(32).fill(0xff)]),
      (e: DiscoveryError) => e.code === "invalid_argument",
    );
  });
}

test("a full queue refuses an evaluation at once, with a retry hint; the queued ones complete", async (t) => {
  const pool = createOprfPool({ threads: 1 });
  t.after(() => pool.close());
  const keys = generateOprfKeys();
  const element = oprfBlind(csis[0] as string).blinded;
  // 16 batches a thread are queued; the 17th is refused before any work, and the server can
  // tell before it charges anyone (full()).
  assert.equal(pool.full(), false);
  const queued = Array.from({ length: 16 }, () => pool.blindEvaluate(keys, [element]));
  assert.equal(pool.full(), true);
  await assert.rejects(
    pool.blindEvaluate(keys, [element]),
    (e: DiscoveryError) =>
      e.code === "not_ready" && e.details?.retryAfterMs === 1_000 && /at capacity/.test(e.message),
  );
  const done = await Promise.all(queued);
  assert.equal(done.length, 16);
  assert.equal(pool.full(), false);
  // Drained: accepted again.
  assert.equal((await pool.blindEvaluate(keys, [element])).evaluated.length, 1);
});

// piscina ends a worker to abort a task it runs: a resolver cancelling its calls made the DP
// start a thread (and load its modules) per call.
test("a cancelled evaluation on a thread runs to its end; one still waiting is dropped unrun", async (t) => {
  const pool = createOprfPool({ threads: 1 });
  t.after(() => pool.close());
  const keys = generateOprfKeys();
  const element = oprfBlind(csis[0] as string).blinded;
  await pool.blindEvaluate(keys, [element]);
  const running = new AbortController();
  const waiting = new AbortController();
  const first = pool.blindEvaluate(keys, [element], running.signal);
  const second = pool.blindEvaluate(keys, [element], waiting.signal).then(
    () => undefined,
    (e: DiscoveryError) => e,
  );
  const third = pool.blindEvaluate(keys, [element]);
  running.abort();
  waiting.abort();
  assert.equal((await first).evaluated.length, 1, "the running evaluation completes");
  const refused = await second;
  assert.equal(refused?.code, "not_ready", "the waiting one is dropped");
  assert.equal(refused?.details?.reason, "CALL_ENDED");
  assert.equal((await third).evaluated.length, 1, "the one behind it still runs");
  assert.equal(pool.full(), false);
});
