import assert from "node:assert/strict";
import { createPublicKey, randomBytes } from "node:crypto";
import { test } from "node:test";
import { type AnswerSeal, generateSigningKey, type SigningKey, sealSignatureValid } from "@mimi/core";
import { createSealBatcher, PACE_FROM } from "./seal-batcher.js";

const key = generateSigningKey();
const statement = () => randomBytes(80);

/** A batcher whose turns end when the test says (run()). */
function manual(maxBatch?: number, k: SigningKey = key) {
  const due: (() => void)[] = [];
  const batcher = createSealBatcher(k, (f) => due.push(f), maxBatch);
  const run = () => {
    for (const f of due.splice(0)) f();
  };
  return { batcher, due, run };
}

test("the seals asked within one turn are signed together, once, when it ends", async () => {
  const { batcher, due, run } = manual();
  const asked = Array.from({ length: 5 }, () => batcher.seal(statement()));
  assert.equal(due.length, 1, "one signing is scheduled for the turn");
  assert.equal(batcher.counts.signatures, 0, "nothing is signed before the turn ends");
  run();
  const seals = await Promise.all(asked);
  assert.deepEqual(
    seals.map((s) => s.batch?.index),
    [0, 1, 2, 3, 4],
  );
  assert.equal(new Set(seals.map((s) => Buffer.from(s.signature).toString("hex"))).size, 1);
  for (const s of seals) assert.ok(sealSignatureValid(key.publicKey, s));
  assert.deepEqual(batcher.counts, { signatures: 1, seals: 5 });
  // The next turn's seal is a batch of its own: one alone is signed alone.
  const next = batcher.seal(statement());
  run();
  const alone = await next;
  assert.equal(alone.batch, undefined);
  assert.ok(sealSignatureValid(key.publicKey, alone));
  assert.deepEqual(batcher.counts, { signatures: 2, seals: 6 });
});

test("a batch holds one key's seals: each caller's batch is signed apart, at the same turn's end", async () => {
  const { batcher, due, run } = manual();
  const a = [batcher.seal(statement(), "resolver-1/ctx-a"), batcher.seal(statement(), "resolver-1/ctx-a")];
  const b = [batcher.seal(statement(), "resolver-1/ctx-b"), batcher.seal(statement(), "resolver-2")];
  const c = batcher.seal(statement(), "resolver-1/ctx-a");
  assert.equal(due.length, 1);
  run();
  const [a1, a2, a3] = [...(await Promise.all(a)), await c];
  const [b1, b2] = await Promise.all(b);
  assert.deepEqual(
    [a1, a2, a3].map((s) => [s?.batch?.index, s?.batch?.size]),
    [
      [0, 3],
      [1, 3],
      [2, 3],
    ],
  );
  assert.deepEqual(a1?.signature, a3?.signature);
  // Alone in their batches: another context of the same resolver, another resolver.
  assert.equal(b1?.batch, undefined);
  assert.equal(b2?.batch, undefined);
  assert.notDeepEqual(b1?.signature, a1?.signature);
  assert.deepEqual(batcher.counts, { signatures: 3, seals: 5 });
});

test("a batch of at most one signs every seal alone, at once; other sizes are refused", async () => {
  const { batcher, due } = manual(1);
  const [s1, s2] = await Promise.all([batcher.seal(statement()), batcher.seal(statement())]);
  assert.equal(due.length, 0, "nothing waits for the turn's end");
  assert.ok(s1 && s2 && !s1.batch && !s2.batch);
  assert.ok(sealSignatureValid(key.publicKey, s1) && sealSignatureValid(key.publicKey, s2));
  for (const bad of [0, 257, 1.5]) assert.throws(() => createSealBatcher(key, setImmediate, bad), RangeError);
});

test("a batch that fills up is signed at once, and the turn's end signs what came after", async () => {
  const { batcher, run } = manual(3);
  const settled: AnswerSeal[] = [];
  const asked = Array.from({ length: 4 }, () => batcher.seal(statement()).then((s) => settled.push(s)));
  await Promise.resolve();
  assert.equal(batcher.counts.signatures, 1);
  assert.equal(settled.length, 3, "the full batch is answered without waiting for the turn");
  run();
  await Promise.all(asked);
  assert.deepEqual(batcher.counts, { signatures: 2, seals: 4 });
  assert.equal(settled[3]?.batch, undefined, "the fourth was alone in its batch");
});

test("a batch that cannot be signed fails each of its seals, and the next batch is signed afresh", async () => {
  // A public key object in place of the private one makes signing throw.
  const k = { publicKey: key.publicKey, privateKey: createPublicKey(key.privateKey) };
  const { batcher, run } = manual(undefined, k);
  const asked = [batcher.seal(statement()), batcher.seal(statement())];
  run();
  for (const p of asked) await assert.rejects(p, /private/);
  assert.deepEqual(batcher.counts, { signatures: 0, seals: 0 });
  k.privateKey = key.privateKey;
  const again = [batcher.seal(statement()), batcher.seal(statement())];
  run();
  for (const p of again) assert.ok(sealSignatureValid(key.publicKey, await p));
  assert.deepEqual(batcher.counts, { signatures: 1, seals: 2 });
});

test("by default a batch is the turn of the event loop: seals asked in one turn share a signature", async () => {
  const batcher = createSealBatcher(key);
  const first = await Promise.all([batcher.seal(statement()), batcher.seal(statement())]);
  const later = await batcher.seal(statement());
  assert.equal(first[0]?.batch?.size, 2);
  assert.deepEqual(first[0]?.signature, first[1]?.signature);
  assert.equal(later.batch, undefined);
  assert.deepEqual(batcher.counts, { signatures: 2, seals: 3 });
});

test("after a round of PACE_FROM seals the next waits for the rest of the pace, and takes the seals of the turns between", async () => {
  let t = 0;
  const due: (() => void)[] = [];
  const timers: { f: () => void; ms: number }[] = [];
  const batcher = createSealBatcher(key, (f) => due.push(f), undefined, {
    ms: 1,
    now: () => t,
    after: (f, ms) => timers.push({ f, ms }),
  });
  const endTurn = () => {
    for (const f of due.splice(0)) f();
  };
  const round = () => Array.from({ length: PACE_FROM }, () => batcher.seal(statement()));
  // A busy turn is signed at its end.
  const busy = round();
  endTurn();
  assert.equal((await Promise.all(busy))[0]?.batch?.size, PACE_FROM);
  // 0.25 ms later the next round waits for the rest of the millisecond, across turns.
  t = 0.25;
  const a = batcher.seal(statement());
  endTurn();
  const b = batcher.seal(statement());
  endTurn();
  assert.equal(batcher.counts.signatures, 1, "nothing more is signed at the turns' ends");
  assert.deepEqual(
    timers.map((x) => x.ms),
    [0.75],
    "one round is scheduled, for when the millisecond is over",
  );
  t = 1;
  timers.shift()?.f();
  const [sa, sb] = await Promise.all([a, b]);
  assert.deepEqual([sa.batch?.size, sb.batch?.size], [2, 2], "the two turns' seals share a signature");
  assert.ok(sealSignatureValid(key.publicKey, sa) && sealSignatureValid(key.publicKey, sb));
  // That round was small (one caller at a time): the next is signed at its turn's end, within the pace.
  t = 1.1;
  const next = batcher.seal(statement());
  assert.equal(timers.length, 0, "no round paced");
  endTurn();
  assert.equal((await next).batch, undefined);
  // A clock set back holds a round no longer than the pace.
  const again = round();
  endTurn();
  await Promise.all(again);
  t = -1_000;
  const back = batcher.seal(statement());
  assert.deepEqual(
    timers.map((x) => x.ms),
    [1],
  );
  timers.shift()?.f();
  assert.ok(sealSignatureValid(key.publicKey, await back));
  assert.deepEqual(batcher.counts, { signatures: 5, seals: 2 * PACE_FROM + 4 });
});
