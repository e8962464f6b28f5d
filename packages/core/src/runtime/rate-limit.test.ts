import assert from "node:assert/strict";
import { test } from "node:test";
import { createRateLimiter } from "./rate-limit.js";

const HOUR = 3_600_000;

test("a budget allows its limit at once, then one unit per refill interval, and says when", () => {
  const l = createRateLimiter({ limit: 3, windowMs: HOUR }, 100);
  for (let i = 0; i < 3; i++) assert.equal(l.take("a", 0), undefined);
  assert.equal(l.remaining("a", 0), 0);
  assert.deepEqual(l.take("a", 0), { retryAfterMs: HOUR / 3 });
  assert.deepEqual(l.take("a", 1_000), { retryAfterMs: HOUR / 3 - 1_000 }, "a refusal takes nothing");
  assert.equal(l.take("a", HOUR / 3), undefined, "one unit back after a third of the window");
  assert.ok(l.take("a", HOUR / 3));
  // Other keys have their own budget; after a whole window the budget is full again.
  assert.equal(l.take("b", 0), undefined);
  assert.equal(l.remaining("a", HOUR + HOUR / 3), 3);
});

test("check takes nothing; a cost above the limit is never available", () => {
  const l = createRateLimiter({ limit: 2, windowMs: 1_000 }, 10);
  assert.equal(l.check("k", 0, 2), undefined);
  assert.equal(l.remaining("k", 0), 2);
  assert.equal(l.take("k", 0, 2), undefined);
  assert.deepEqual(l.check("k", 0), { retryAfterMs: 500 });
  assert.equal(l.check("k", 0, 3)?.retryAfterMs, Number.POSITIVE_INFINITY);
});

test("keys are bounded: the least recently charged key goes first", () => {
  const l = createRateLimiter({ limit: 1, windowMs: HOUR }, 2);
  l.take("a", 0);
  l.take("b", 0);
  l.take("c", 0);
  assert.equal(l.size, 2);
  assert.equal(l.take("a", 0), undefined, "a was forgotten, so its budget is whole again");
  assert.ok(l.take("c", 0), "c is still held");
  assert.throws(() => createRateLimiter({ limit: 0, windowMs: 1 }, 1), RangeError);
});

test("a clock stepped back does not lock a key out for the jump", () => {
  const l = createRateLimiter({ limit: 2, windowMs: 1_000 }, 10);
  l.take("k", 3_600_000);
  l.take("k", 3_600_000);
  assert.ok(l.check("k", 3_600_000), "spent at the later time");
  assert.equal(l.take("k", 0), undefined, "an hour back: forgiven, not refused for an hour");
});

test("force takes units past the budget as debt, bounded by maxDebtBudgets, and it is paid off at the refill rate", () => {
  // 10 units a minute; two processes grant it, so a key may owe one budget beyond its own.
  const l = createRateLimiter({ limit: 10, windowMs: 60_000 }, 100, { maxDebtBudgets: 2 });
  for (let i = 0; i < 10; i++) assert.equal(l.take("k", 0), undefined);
  l.force("k", 0, 10); // what the other process granted meanwhile
  assert.equal(l.remaining("k", 0), 0);
  // Refused until the debt is paid: a whole minute for the other process's 10, then one unit.
  assert.equal(l.take("k", 60_000)?.retryAfterMs, 6_000);
  assert.equal(l.take("k", 66_000), undefined);
  // The debt stops at two budgets: more forced units are dropped, not owed.
  l.force("x", 0, 50);
  assert.equal(l.take("x", 0)?.retryAfterMs, 66_000);
  // Without debt allowed (the default), force stops at a used-up budget.
  const one = createRateLimiter({ limit: 10, windowMs: 60_000 }, 100);
  one.force("k", 0, 25);
  assert.equal(one.take("k", 0)?.retryAfterMs, 6_000);
});

test("entries and raise hand a limiter's state to another, never lowering it", () => {
  const a = createRateLimiter({ limit: 10, windowMs: 60_000 }, 100, { maxDebtBudgets: 2 });
  const b = createRateLimiter({ limit: 10, windowMs: 60_000 }, 100, { maxDebtBudgets: 2 });
  for (let i = 0; i < 4; i++) a.take("k", 0);
  for (let i = 0; i < 6; i++) b.take("j", 0);
  for (const [key, tat] of a.entries()) b.raise(key, tat, 0);
  b.raise("j", 0, 0);
  assert.equal(b.remaining("k", 0), 6);
  assert.equal(b.remaining("j", 0), 4);
});
