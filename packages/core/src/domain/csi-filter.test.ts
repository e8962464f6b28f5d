// CSI filters: their shape for a target false-positive rate, keyed positions, no false
// negatives, and a measured false-positive rate near the target.
import assert from "node:assert/strict";
import { test } from "node:test";
import { expectedFpr, FilterBits, filterPositions, filterShape, MIN_FILTER_CSIS } from "./csi-filter.js";

const key = (b: number) => new Uint8Array(32).fill(b);

test("a filter is sized by the classic optimum, with a floor and a 64-bit multiple", () => {
  assert.deepEqual(filterShape(100_000, 0.01), { bits: 958_528, hashes: 7 });
  assert.deepEqual(filterShape(0, 0.01), filterShape(MIN_FILTER_CSIS, 0.01));
  assert.equal(filterShape(1_000_000, 0.001).bits % 64, 0);
  assert.ok(Math.abs(expectedFpr(filterShape(100_000, 0.01), 100_000) - 0.01) < 0.001);
});

test("positions depend on the key, lie in range and are distinct", () => {
  const shape = filterShape(10_000, 0.01);
  const a = filterPositions(key(1), shape, "tel:+447700900123");
  assert.equal(a.length, shape.hashes);
  assert.ok(a.every((b) => Number.isInteger(b) && b >= 0 && b < shape.bits));
  assert.equal(new Set(a).size, a.length);
  assert.deepEqual(filterPositions(key(1), shape, "tel:+447700900123"), a);
  assert.notDeepEqual(filterPositions(key(2), shape, "tel:+447700900123"), a);
});

test("every CSI added is held; others test positive at about the target rate", () => {
  const n = 20_000;
  const shape = filterShape(n, 0.01);
  const f = new FilterBits(key(7), shape);
  let newBits = 0;
  for (let i = 0; i < n; i++) newBits += f.add(`tel:+4477${String(i).padStart(8, "0")}`).length;
  assert.ok(newBits > 0);
  for (let i = 0; i < n; i++) assert.ok(f.mayHold(`tel:+4477${String(i).padStart(8, "0")}`));
  let positives = 0;
  for (let i = 0; i < n; i++) if (f.mayHold(`tel:+4478${String(i).padStart(8, "0")}`)) positives++;
  const rate = positives / n;
  assert.ok(rate > 0.004 && rate < 0.02, `false positives ${rate}`);
  // A CSI already in sets no bit again.
  assert.deepEqual(f.add("tel:+447700000001"), []);
});
