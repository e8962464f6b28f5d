import assert from "node:assert/strict";
import { test } from "node:test";
import { RecencyMap, setNewest } from "./bounded-map.js";

const keysOf = <K, V>(m: RecencyMap<K, V>) => [...m.entries()].map(([k]) => k);

test("setNewest keeps exact LRU order within its bound", () => {
  const m = new Map<string, number>();
  for (const k of ["a", "b", "c"]) setNewest(m, k, 0, 3);
  setNewest(m, "a", 1, 3);
  setNewest(m, "d", 0, 3);
  assert.deepEqual([...m.keys()], ["c", "a", "d"]);
});

test("a RecencyMap sets a present key in place until a sixteenth of its bound came after it", () => {
  const m = new RecencyMap<string, number>(32); // a sixteenth: 2 inserts or moves
  for (const k of ["a", "b", "c"]) m.set(k, 0);
  // "c" is the newest and "b" one behind it: setting them changes values, not the order.
  m.set("c", 1);
  m.set("b", 2);
  assert.deepEqual(
    [...m.entries()],
    [
      ["a", 0],
      ["b", 2],
      ["c", 1],
    ],
  );
  // Two entries came after "a": setting it makes it the newest.
  m.set("a", 3);
  assert.deepEqual(keysOf(m), ["b", "c", "a"]);
  assert.equal(m.get("a"), 3);
  assert.equal(m.get("z"), undefined);
});

test("a RecencyMap drops an entry only after fifteen sixteenths of its bound were set since its last use", () => {
  const max = 64;
  const m = new RecencyMap<number, number>(max);
  // Exact bookkeeping beside it: for each key, how many sets there had been in all at its last
  // set. Sets are at least the map's inserts and moves, so an entry the map drops must have
  // been left alone for 15/16 of the bound in sets too.
  let sets = 0;
  const lastUse = new Map<number, number>();
  let seed = 12345;
  const rand = () => {
    // xorshift32: exact in 32-bit integers.
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return (seed >>> 0) / 0x1_0000_0000;
  };
  let dropped = 0;
  for (let i = 0; i < 20_000; i++) {
    // A few hot keys among many one-off ones: the pattern of a crawl beside address books.
    const key = rand() < 0.3 ? Math.floor(rand() * 8) : 1_000 + i;
    const before = new Set(keysOf(m));
    m.set(key, i);
    sets++;
    lastUse.set(key, sets);
    assert.ok(m.size <= max);
    for (const k of before) {
      if (m.get(k) !== undefined) continue;
      const idle = sets - (lastUse.get(k) ?? 0);
      assert.ok(idle >= (15 * max) / 16, `key ${k} dropped after ${idle} sets, fewer than 15/16 of ${max}`);
      lastUse.delete(k);
      dropped++;
    }
  }
  // The bound was reached: thousands of entries were dropped, each checked above.
  assert.ok(dropped > 10_000, `${dropped} dropped`);
});

test("a RecencyMap whose bound is lowered drops the oldest at the next insert", () => {
  const m = new RecencyMap<string, number>(4);
  for (const k of ["a", "b", "c", "d"]) m.set(k, 0);
  m.max = 2;
  assert.equal(m.size, 4, "nothing is dropped before an insert");
  m.set("e", 0);
  assert.deepEqual(keysOf(m), ["d", "e"]);
  assert.equal(m.delete("d"), true);
  assert.equal(m.delete("d"), false);
  assert.deepEqual(keysOf(m), ["e"]);
});
