import assert from "node:assert/strict";
import { test } from "node:test";
import { DiscoveryError, parseCsi } from "@mimi/core";
import type { EnrolledMsp } from "../store/rows.js";
import { type ClaimLimits, createClaimThrottle, DEFAULT_CLAIM_LIMITS } from "./throttle.js";

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const msp = (mspId: string, enrolledUsers = 0): EnrolledMsp => ({
  mspId,
  tlsIdentity: mspId,
  enrolledUsers,
  enrolledAtMs: 0,
  signingPublicKey: new Uint8Array(32),
  mayBulk: false,
});
const A = parseCsi("tel:+447700900123");
const B = parseCsi("tel:+447700900124");
const C = parseCsi("tel:+447700900126");

/** The refusal `f` throws: its reason and retry-after, or "ok". */
function outcome(f: () => void): string {
  try {
    f();
    return "ok";
  } catch (err) {
    assert.ok(err instanceof DiscoveryError);
    assert.equal(err.code, "resource_exhausted");
    return `${err.details?.reason} ${err.details?.retryAfterMs}`;
  }
}

test("codes to one number stop at each MSP's budget and at a larger one for all MSPs, and refill", () => {
  const t = createClaimThrottle(DEFAULT_CLAIM_LIMITS);
  const x = msp("x.example");
  const y = msp("y.example");
  const z = msp("z.example");
  const w = msp("w.example");
  for (let i = 0; i < 3; i++)
    assert.equal(
      outcome(() => t.beforeCode(A, x, 0)),
      "ok",
    );
  // Regression: 200 codes to one number went out in 0.7 s.
  assert.equal(
    outcome(() => t.beforeCode(A, x, 0)),
    `CODE_LIMIT_CSI_HOUR ${HOUR / 3}`,
  );
  // Another MSP is not held by x's budget (x cannot spend the number's codes for everyone)...
  for (const m of [y, z])
    for (let i = 0; i < 3; i++)
      assert.equal(
        outcome(() => t.beforeCode(A, m, 0)),
        "ok",
      );
  assert.equal(
    outcome(() => t.beforeCode(A, w, 0)),
    "ok",
  );
  // ...but all MSPs together stop at 10 an hour: a flood through many MSPs stops too.
  assert.equal(
    outcome(() => t.beforeCode(A, w, 0)),
    `CODE_LIMIT_CSI_SHARED_HOUR ${HOUR / 10}`,
  );
  assert.equal(
    outcome(() => t.beforeCode(B, y, 0)),
    "ok",
    "another number has its own budgets",
  );
  const x2 = msp("x2.example");
  // One try every 20 minutes for a day: the hourly budget refills one code per 20 minutes, the
  // daily one (10) one per 2.4 hours, so a day holds its 10 at once and 10 refilled, never more.
  for (let i = 0; i < 3; i++) t.beforeCode(C, x2, 0);
  let sent = 3;
  for (let now = HOUR / 3; now <= 24 * HOUR; now += HOUR / 3) {
    if (outcome(() => t.beforeCode(A, x, now)) === "ok") sent++;
  }
  assert.equal(sent, 20);
  assert.match(
    outcome(() => t.beforeCode(A, x, 24 * HOUR)),
    /^CODE_LIMIT_CSI_DAY \d+$/,
  );
});

test("a refusal says which budget and when, and charges no budget", () => {
  const limits: ClaimLimits = { ...DEFAULT_CLAIM_LIMITS, smsCodesPerHour: 2, mspSharePercentOfChannel: 100 };
  const t = createClaimThrottle(limits);
  const x = msp("x.example");
  t.beforeCode(A, x, 0);
  t.beforeCode(B, x, 0);
  let err: DiscoveryError | undefined;
  try {
    t.beforeCode(parseCsi("tel:+447700900125"), x, 0);
  } catch (e) {
    err = e as DiscoveryError;
  }
  assert.ok(err);
  assert.match(err.message, /the budget of 2 sms codes per hour is spent; try again in 1800 s/);
  assert.deepEqual(err.details?.quota, [{ subject: "channel:sms", description: "2 sms codes per hour" }]);
  assert.equal(err.details?.retryAfterMs, 1_800_000);
  // Email has its own channel budget; the refused SMS did not spend the number's budget.
  assert.equal(
    outcome(() => t.beforeCode(parseCsi("mailto:a@example.org"), x, 0)),
    "ok",
  );
  assert.equal(
    outcome(() => t.beforeCode(parseCsi("tel:+447700900125"), x, 1_800_000)),
    "ok",
  );
});

test("an MSP's daily codes follow its enrolled users, never below the floor", () => {
  const limits: ClaimLimits = {
    ...DEFAULT_CLAIM_LIMITS,
    mspCodesPerDayFloor: 2,
    mspCodesPerThousandUsersPerDay: 1,
  };
  const t = createClaimThrottle(limits);
  const small = msp("small.example", 10); // 0.01 codes a day: the floor of 2 applies
  const big = msp("big.example", 4_000); // 4 a day
  let n = 0;
  const numbers = () => parseCsi(`tel:+4477009001${String(n++).padStart(2, "0")}`);
  for (let i = 0; i < 2; i++)
    assert.equal(
      outcome(() => t.beforeCode(numbers(), small, 0)),
      "ok",
    );
  assert.match(
    outcome(() => t.beforeCode(numbers(), small, 0)),
    /^CODE_LIMIT_MSP /,
  );
  for (let i = 0; i < 4; i++)
    assert.equal(
      outcome(() => t.beforeCode(numbers(), big, 0)),
      "ok",
    );
  assert.equal(
    outcome(() => t.beforeCode(numbers(), big, 0)),
    `CODE_LIMIT_MSP ${86_400_000 / 4}`,
  );
});

test("failed proofs lock a number's challenges for the MSP that failed, across challenges, for a while", () => {
  const t = createClaimThrottle({ ...DEFAULT_CLAIM_LIMITS, failuresPerCsiPerHour: 3 });
  for (let i = 0; i < 3; i++) {
    assert.equal(
      outcome(() => t.beforeProof(A.uri, "x.example", 0)),
      "ok",
    );
    t.failed(A.uri, "x.example", 0);
  }
  assert.equal(
    outcome(() => t.beforeProof(A.uri, "x.example", 0)),
    `CSI_LOCKED ${HOUR / 3}`,
  );
  assert.equal(
    outcome(() => t.beforeCode(A, msp("x.example"), 0)),
    `CSI_LOCKED ${HOUR / 3}`,
    "no new codes either",
  );
  // The holder's own MSP is not locked out by another's failures.
  assert.equal(
    outcome(() => t.beforeProof(A.uri, "y.example", 0)),
    "ok",
  );
  assert.equal(
    outcome(() => t.beforeProof(B.uri, "x.example", 0)),
    "ok",
    "only that number",
  );
  assert.equal(
    outcome(() => t.beforeProof(A.uri, "x.example", HOUR / 3)),
    "ok",
    "the lock lifts",
  );
});

test("a code that could not be sent spends no budget", () => {
  const t = createClaimThrottle(DEFAULT_CLAIM_LIMITS);
  const x = msp("x.example");
  for (let i = 0; i < 10; i++) {
    t.beforeCode(A, x, 0);
    t.notSent(A, x, 0);
  }
  for (let i = 0; i < 3; i++)
    assert.equal(
      outcome(() => t.beforeCode(A, x, 0)),
      "ok",
    );
});

test("a number's day is remembered however many attempts, sent or given back, the channels make that day", () => {
  // 100 SMS an hour (200 attempts), all to one MSP; each number one code a day.
  const limits: ClaimLimits = {
    ...DEFAULT_CLAIM_LIMITS,
    codesPerCsiPerHour: 1,
    codesPerCsiPerDay: 1,
    smsCodesPerHour: 100,
    emailCodesPerHour: 1,
    mspSharePercentOfChannel: 100,
    mspCodesPerDayFloor: 10_000,
  };
  // Bounds sized from the channels alone (no floor), so a day's attempts must fit.
  const t = createClaimThrottle(limits, 1);
  const x = msp("x.example");
  const number = (i: number) => parseCsi(`tel:+4477009${String(i).padStart(5, "0")}`);
  assert.equal(
    outcome(() => t.beforeCode(number(0), x, 0)),
    "ok",
  );
  // The rest of the channel's burst at once, then its rate for the rest of the day: a code
  // sent to a number of its own, after an attempt given back (a send that failed) beside it.
  let at = 0;
  let n = 1;
  for (let i = 1; at < DAY - HOUR / 50; i++) {
    if (i >= 100) at += HOUR / 100;
    const failed = number(n++);
    assert.equal(
      outcome(() => t.beforeCode(failed, x, at)),
      "ok",
      `attempt ${i}`,
    );
    t.notSent(failed, x, at);
    assert.equal(
      outcome(() => t.beforeCode(number(n++), x, at)),
      "ok",
      `code ${i}`,
    );
  }
  assert.match(
    outcome(() => t.beforeCode(number(0), x, at)),
    /^CODE_LIMIT_CSI_DAY /,
    "still spent that day",
  );
});

test("attempts are never given back: failed sends stop at twice an MSP's share of the channel, and at twice the channel", () => {
  const t = createClaimThrottle(DEFAULT_CLAIM_LIMITS);
  const number = (i: number) => parseCsi(`tel:+4477009${String(i).padStart(5, "0")}`);
  // An MSP's share is 250 SMS an hour: 500 attempts, all of them failing and given back.
  const x = msp("x.example", 1_000_000);
  for (let i = 0; i < 500; i++) {
    t.beforeCode(number(i), x, 0);
    t.notSent(number(i), x, 0);
  }
  assert.match(
    outcome(() => t.beforeCode(number(500), x, 0)),
    /^CODE_LIMIT_MSP_ATTEMPTS /,
  );
  // The codes were given back: another MSP's code to one of those numbers goes, and so does
  // an email code of the same MSP (another channel).
  assert.equal(
    outcome(() => t.beforeCode(number(0), msp("y.example"), 0)),
    "ok",
  );
  assert.equal(
    outcome(() => t.beforeCode(parseCsi("mailto:a@example.org"), x, 0)),
    "ok",
  );
  // The channel's 2,000 SMS attempts an hour, whichever MSPs make them.
  let made = 501;
  for (let m = 0; made < 2_000; m++) {
    const other = msp(`m${m}.example`, 1_000_000);
    for (let i = 0; i < 500 && made < 2_000; i++, made++) {
      const n = number(1_000 + made);
      t.beforeCode(n, other, 0);
      t.notSent(n, other, 0);
    }
  }
  assert.match(
    outcome(() => t.beforeCode(number(99_999), msp("z.example"), 0)),
    /^CODE_LIMIT_CHANNEL_ATTEMPTS /,
  );
});

test("an MSP's failed sends stop at twice its codes a day; its code budgets are met first; a refused call spends nothing", () => {
  const t = createClaimThrottle(DEFAULT_CLAIM_LIMITS);
  const number = (i: number) => parseCsi(`tel:+4477009${String(i).padStart(5, "0")}`);
  // An MSP of no users: 100 codes a day (the floor), 200 attempts.
  const x = msp("x.example");
  for (let i = 0; i < 200; i++) {
    t.beforeCode(number(i), x, 0);
    t.notSent(number(i), x, 0);
  }
  const at = 0;
  assert.match(
    outcome(() => t.beforeCode(number(200), x, at)),
    /^CODE_LIMIT_MSP_DAY_ATTEMPTS /,
  );
  // Refused on its attempts, the call took nothing: the number's 10 codes an hour for all MSPs
  // are whole (three MSPs of 3, then one more).
  for (let i = 0; i < 10; i++) {
    assert.equal(
      outcome(() => t.beforeCode(number(200), msp(`y${Math.floor(i / 3)}.example`), at)),
      "ok",
      `${i}`,
    );
  }
  // Codes sent spend both: once its 100 codes are spent, the refusal names its codes.
  const z = msp("z.example");
  for (let i = 0; i < 100; i++) t.beforeCode(number(1_000 + i), z, 0);
  assert.match(
    outcome(() => t.beforeCode(number(2_000), z, 0)),
    /^CODE_LIMIT_MSP /,
  );
});

test("one MSP takes at most its share of a channel's hour; the rest stays for the others", () => {
  const limits: ClaimLimits = { ...DEFAULT_CLAIM_LIMITS, smsCodesPerHour: 8, mspSharePercentOfChannel: 25 };
  const t = createClaimThrottle(limits);
  const [x, y] = [msp("x.example"), msp("y.example")];
  const number = (i: number) => parseCsi(`tel:+4477009002${String(i).padStart(2, "0")}`);
  assert.equal(
    outcome(() => t.beforeCode(number(0), x, 0)),
    "ok",
  );
  assert.equal(
    outcome(() => t.beforeCode(number(1), x, 0)),
    "ok",
  );
  assert.equal(
    outcome(() => t.beforeCode(number(2), x, 0)),
    "CODE_LIMIT_MSP_CHANNEL 1800000",
    "2 of 8 an hour",
  );
  // Email is another channel, with its own share.
  assert.equal(
    outcome(() => t.beforeCode(parseCsi("mailto:a@example.org"), x, 0)),
    "ok",
  );
  // The other MSPs still have the rest of the channel, until it is spent.
  for (let i = 3; i < 9; i++) {
    const who = i < 5 ? y : msp(`z${i}.example`);
    assert.equal(
      outcome(() => t.beforeCode(number(i), who, 0)),
      "ok",
      `code ${i}`,
    );
  }
  assert.match(
    outcome(() => t.beforeCode(number(9), msp("w.example"), 0)),
    /^CODE_LIMIT_CHANNEL /,
  );
  assert.equal(t.refused.CODE_LIMIT_MSP_CHANNEL, 1);
});
