// The resolver's OPRF pool: what the workers compute finalizes to the DP's own PRF outputs, a
// proof under another key is refused, and a pool past its tasks in flight works inline.
import assert from "node:assert/strict";
import { test } from "node:test";
import { generateOprfKeys, oprfBlindEvaluate, oprfEvaluate } from "@mimi/core";
import { createOprfPool } from "./oprf-pool.js";

const uris = ["tel:+447700900001", "tel:+447700900002", "mailto:a@example.org"];
const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

for (const threads of [0, 1]) {
  test(`with ${threads} threads: blind, then finalize the DP's evaluation, to the DP's PRF outputs`, async (t) => {
    const pool = createOprfPool({ threads });
    t.after(() => pool.close());
    const keys = generateOprfKeys();
    // More tasks at once than the pool takes in flight: the rest are made inline, none lost.
    const rounds = await Promise.all(
      Array.from({ length: 6 }, async () => {
        const blinded = await pool.blind(uris);
        const ev = oprfBlindEvaluate(
          keys,
          blinded.map((b) => b.blinded),
        );
        return pool.finalize(blinded, ev.evaluated, keys.publicKey, ev.proof);
      }),
    );
    const want = uris.map((u) => hex(oprfEvaluate(keys.secretKey, u)));
    for (const outputs of rounds) assert.deepEqual(outputs.map(hex), want);
    // A DP that evaluated with a key other than the published one is caught by the proof.
    const blinded = await pool.blind(uris);
    const other = generateOprfKeys();
    const ev = oprfBlindEvaluate(
      other,
      blinded.map((b) => b.blinded),
    );
    await assert.rejects(pool.finalize(blinded, ev.evaluated, keys.publicKey, ev.proof));
  });
}
