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
