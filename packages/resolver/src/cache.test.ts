import assert from "node:assert/strict";
import { test } from "node:test";
import { createTtlCache } from "./cache.js";

function setup(over: Partial<Parameters<typeof createTtlCache>[0]> = {}) {
  const clock = { now: 1_000_000 };
  const cache = createTtlCache<string>({
    maxEntries: 10,
    minTtlSeconds: 5,
    maxTtlSeconds: 3600,
    staleWindowSeconds: 60,
    now: () => clock.now,
    ...over,
  });
  return { cache, clock };
}

test("ttl counts down and expires", () => {
  const { cache, clock } = setup();
  cache.set("tel:+44", "x", 60);
  clock.now += 59_000;
  assert.equal(cache.get("tel:+44")?.remainingTtlSeconds, 1);
  clock.now += 2_000;
  assert.equal(cache.get("tel:+44"), undefined);
});

test("ttls are clamped to [min, max]", () => {
  const { cache } = setup();
  assert.equal(cache.set("a", "x", 0), 5);
  assert.equal(cache.set("b", "x", 999_999), 3600);
  assert.equal(cache.get("b")?.remainingTtlSeconds, 3600);
});

test("expired entries are served stale only within the stale window", () => {
  const { cache, clock } = setup();
  cache.set("k", "v", 10);
  assert.equal(cache.getStale("k"), "v");
  clock.now += 30_000;
  assert.equal(cache.get("k"), undefined);
  assert.equal(cache.getStale("k"), "v");
  clock.now += 45_000; // 65 s past expiry
  assert.equal(cache.getStale("k"), undefined);
  assert.equal(cache.size, 0);
});

test("least recently used entries are evicted at maxEntries", () => {
  const { cache } = setup({ maxEntries: 2 });
  cache.set("a", "1", 60);
  cache.set("b", "2", 60);
  cache.get("a");
  cache.set("c", "3", 60);
  assert.equal(cache.get("b"), undefined);
  assert.equal(cache.get("a")?.value, "1");
  assert.equal(cache.get("c")?.value, "3");
});

test("entries are found by their second key, collisions included, and the index follows evictions", () => {
  // A deliberately colliding index: keys index by their first letter's code.
  const { cache } = setup({ maxEntries: 3, indexKey: (k: string) => k.charCodeAt(0) });
  const at = (c: string) => c.charCodeAt(0);
  cache.set("a1", "x", 60);
  cache.set("a2", "y", 60);
  cache.set("b1", "z", 60);
  cache.set("a1", "x2", 60); // an overwrite keeps a1 indexed once
  assert.equal(cache.deleteIndexed(at("a")), 2);
  assert.equal(cache.get("a1"), undefined);
  assert.equal(cache.get("b1")?.value, "z");
  assert.equal(cache.deleteIndexed(at("a")), 0);
  // LRU eviction removes the evicted key from the index: c1..c3 push b1 out.
  cache.set("c1", "1", 60);
  cache.set("c2", "2", 60);
  cache.set("c3", "3", 60);
  assert.equal(cache.size, 3);
  assert.equal(cache.deleteIndexed(at("b")), 0);
  cache.delete("c2");
  assert.equal(cache.deleteIndexed(at("c")), 2);
  cache.set("d1", "4", 60);
  cache.clear();
  assert.equal(cache.deleteIndexed(at("d")), 0);
});

test("a deletion by second key takes only the entries its filter accepts (another DP's stay)", () => {
  const { cache } = setup({ maxEntries: 10, indexKey: () => 7 });
  cache.set("k1", "dp-a", 60);
  cache.set("k2", "dp-b", 60);
  cache.set("k3", "dp-a", 60);
  assert.equal(
    cache.deleteIndexed(7, (v) => v === "dp-a"),
    2,
  );
  assert.equal(cache.get("k2")?.value, "dp-b");
  assert.equal(cache.get("k1"), undefined);
  assert.equal(
    cache.deleteIndexed(7, (v) => v === "dp-a"),
    0,
    "the index no longer lists them",
  );
  assert.equal(cache.deleteIndexed(7), 1);
});

test("hits are counted per stored value and report the TTL it was stored with", () => {
  const { cache, clock } = setup();
  cache.set("k", "v", 100);
  clock.now += 10_000;
  assert.deepEqual(
    [cache.get("k")?.hits, cache.get("k")?.hits, cache.get("k")?.ttlMs, cache.get("k")?.remainingMs],
    [1, 2, 100_000, 90_000],
  );
  cache.set("k", "w", 50);
  assert.equal(cache.get("k")?.hits, 1);
});

test("entries dropped for room are counted by kind", () => {
  const { cache } = setup({
    maxEntries: 2,
    kindOf: (v) => (String(v).startsWith("+") ? "positive" : "negative"),
  });
  cache.set("a", "+1", 60);
  cache.set("b", "-2", 60);
  cache.set("c", "+3", 60); // evicts a
  cache.set("d", "+4", 60); // evicts b
  cache.delete("c"); // a deletion is not an eviction
  cache.set("c", "-5", 60);
  cache.set("e", "-6", 60); // evicts d
  assert.deepEqual(cache.evictions, { positive: 2, negative: 1 });
});
