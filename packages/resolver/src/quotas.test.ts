import assert from "node:assert/strict";
import { test } from "node:test";
import { DiscoveryError } from "@mimi/core";
import { createQuotas, DEFAULT_QUOTA_POLICY } from "./quotas.js";

const MINUTE = 60_000;
/** How many charges pass before the first refusal, and that refusal. */
function spend(charge: () => void, max = 1_000_000): { passed: number; refusal: DiscoveryError } {
  for (let passed = 0; passed < max; passed++) {
    try {
      charge();
    } catch (err) {
      assert.ok(err instanceof DiscoveryError);
      return { passed, refusal: err };
    }
  }
  throw new Error("never refused");
}

test("a caller's budget per DP per day follows its enrolled users, never below 50 per user", () => {
  const q = createQuotas({ ...DEFAULT_QUOTA_POLICY, lookupsPerUserPerDay: 10, perMinuteFloor: 1_000_000 });
  // 10 per user is below P1's floor: 50 per user per DP per day holds.
  const { passed, refusal } = spend(() => q.charge("msp-a", "eu", 0));
  assert.equal(passed, 50);
  assert.equal(refusal.code, "resource_exhausted");
  assert.match(
    refusal.message,
    /"msp-a" has spent its budget of 50 lookups per day at DP "eu"; .*try again in 1728 s/,
  );
  assert.equal(refusal.details?.reason, "LOOKUP_LIMIT_DAY");
  assert.equal(refusal.details?.retryAfterMs, 86_400_000 / 50);
  // Each DP has its own budget, and so does each caller.
  assert.equal(spend(() => q.charge("msp-a", "us", 0)).passed, 50);
  assert.equal(spend(() => q.charge("msp-b", "eu", 0)).passed, 50);
  assert.equal(q.refused, 3);
  // allows() says what charge would do, and takes and counts nothing.
  assert.equal(q.allows("msp-a", "eu", 0), false, "the day's budget at eu is spent");
  assert.equal(q.allows("msp-c", "eu", 0), true);
  for (let i = 0; i < 100; i++) assert.equal(q.allows("msp-c", "eu", 0), true);
  assert.equal(spend(() => q.charge("msp-c", "eu", 0)).passed, 50, "allows took nothing");
  assert.equal(q.refused, 4, "allows counted no refusal");
});

test("allows() sees the minute's budget as charge does, at any DP", () => {
  const q = createQuotas({ ...DEFAULT_QUOTA_POLICY, perMinuteFloor: 5, burstFactor: 0 });
  // 5 a minute across DPs (the floor), well inside each DP's day.
  assert.equal(spend(() => q.charge("msp-a", "eu", 0)).passed, 5);
  assert.equal(q.allows("msp-a", "us", 0), false, "the minute is across DPs");
  assert.equal(q.allows("msp-a", "us", MINUTE), true, "a minute later it has room again");
});

test("enrolled users scale the budget; a sweep is stopped within its first minute", () => {
  const q = createQuotas({ ...DEFAULT_QUOTA_POLICY, enrolledUsers: { big: 1_000 } });
  // big: 100,000 a day per DP, so at most 100,000 / 1,440 * 10 = 695 a minute across DPs.
  let now = 0;
  const { passed, refusal } = spend(() => q.charge("big", now++ % 2 ? "eu" : "us", 0));
  assert.equal(passed, 695);
  assert.equal(refusal.details?.reason, "LOOKUP_LIMIT_MINUTE");
  assert.ok((refusal.details?.retryAfterMs ?? 0) <= MINUTE);
  const r = q.report("big", ["eu", "us"], 0);
  assert.equal(r.enrolledUsers, 1_000);
  assert.deepEqual(
    r.dps.map((d) => [d.dpId, d.dailyLimit, d.remaining]),
    [
      ["eu", 100_000, 100_000 - 347],
      ["us", 100_000, 100_000 - 348],
    ],
  );
  assert.equal(r.perMinuteLimit, 695);
  assert.equal(r.perMinuteRemaining, 0);
  // A minute later the rate is back; an identity not listed has one user's budget.
  assert.equal(q.report("big", [], MINUTE).perMinuteRemaining, 695);
  assert.equal(q.report("stranger", ["eu"], 0).dps[0]?.dailyLimit, 100);
});

test("a lookup that got no answer is given back; odd identity names are just unlisted identities", () => {
  const q = createQuotas({ ...DEFAULT_QUOTA_POLICY, perMinuteFloor: 1_000_000 });
  for (let i = 0; i < 1_000; i++) {
    q.charge("msp-a", "eu", 0);
    q.refund("msp-a", "eu", 0);
  }
  assert.equal(q.report("msp-a", ["eu"], 0).dps[0]?.remaining, 100, "a DP outage spends nothing");
  for (const name of ["__proto__", "constructor", "toString"]) {
    assert.equal(spend(() => q.charge(name, "eu", 0)).passed, 100, name);
  }
});

test("a query that fans out to several DPs costs more than a local one (R12)", () => {
  const q = createQuotas({ ...DEFAULT_QUOTA_POLICY, enrolledUsers: { msp: 2 }, fanOutCostPerExtraDp: 2 });
  assert.equal(q.lookupCost(1), 1);
  assert.equal(q.lookupCost(3), 5);
  // Two users: 200 a day at eu, 120 a minute. A query asking 3 DPs takes 5 of them.
  for (let i = 0; i < 24; i++) q.charge("msp", "eu", 0, q.lookupCost(3));
  assert.throws(() => q.charge("msp", "eu", 0, q.lookupCost(3)), /120 lookups per minute/);
  assert.equal(q.report("msp", ["eu"], 0).perMinuteRemaining, 0);
  q.refund("msp", "eu", 0, q.lookupCost(3));
  assert.equal(q.report("msp", ["eu"], 0).perMinuteRemaining, 5);
});

test("a reload of the policy moves a caller whose enrolled users changed; others keep their use", () => {
  const policy = { ...DEFAULT_QUOTA_POLICY, lookupsPerUserPerDay: 50, perMinuteFloor: 1_000_000 };
  const q = createQuotas({ ...policy, enrolledUsers: { grown: 1, same: 1 } });
  assert.equal(spend(() => q.charge("grown", "eu", 0)).passed, 50);
  for (let i = 0; i < 20; i++) q.charge("same", "eu", 0);
  q.setPolicy({ ...policy, enrolledUsers: { grown: 2, same: 1 } });
  // "grown" now has 100 a day, a budget of a new size; "same" keeps the 20 it spent.
  assert.equal(spend(() => q.charge("grown", "eu", 0)).passed, 100);
  assert.equal(spend(() => q.charge("same", "eu", 0)).passed, 30);
  assert.equal(q.report("grown", ["eu"], 0).enrolledUsers, 2);
});
