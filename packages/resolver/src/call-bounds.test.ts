import assert from "node:assert/strict";
import { test } from "node:test";
import { DiscoveryError } from "@mimi/core";
import {
  answerBound,
  answerInTime,
  callerGone,
  chargedAnyway,
  isCallerGone,
  OVERLOADED,
  overloadRefusal,
  waitBound,
} from "./call-bounds.js";

test("a lookup that settles in time is answered with its own result or failure", async () => {
  const later = 60_000;
  assert.equal(await answerInTime(Promise.resolve("answer"), later), "answer");
  const own = new DiscoveryError("not_ready", "no registry yet");
  await assert.rejects(answerInTime(Promise.reject(own), later), (e) => e === own);
});

test("a lookup still pending at its bound is answered UNAVAILABLE, and its later failure goes nowhere", async () => {
  let fail = (_e: Error) => {};
  const pending = new Promise<string>((_, reject) => {
    fail = reject;
  });
  await assert.rejects(
    answerInTime(pending, 0),
    (e: unknown) =>
      e instanceof DiscoveryError &&
      e.code === "upstream_unavailable" &&
      e.details?.reason === "DEADLINE_TOO_SHORT" &&
      /deadline/.test(e.message),
  );
  // Nobody awaits the lookup any more: its rejection must not become an unhandled one.
  fail(new Error("the DP answered too late"));
  await new Promise((r) => setImmediate(r));
});

test("the wait bound is most of the caller's deadline, none without one", () => {
  const now = { wallMs: 1_700_000_000_000, monoMs: 5_000 };
  assert.equal(waitBound(Number.POSITIVE_INFINITY, now), undefined);
  assert.equal(waitBound(now.wallMs + 1_000, now), 5_900, "nine tenths of what is left");
  assert.equal(waitBound(now.wallMs - 5_000, now), 5_000, "a deadline gone leaves no wait");
  assert.equal(waitBound(now.wallMs + 3_600_000, now), 65_000, "at most a minute");
});

test("an overload refusal says why, names its reason and spreads its retry-after", () => {
  const seen = new Set<number>();
  for (let i = 0; i < 50; i++) {
    const e = overloadRefusal(150);
    assert.equal(e.code, "resource_exhausted");
    assert.equal(e.details?.reason, OVERLOADED);
    const after = e.details?.retryAfterMs as number;
    assert.ok(after >= 150 && after <= 300, String(after));
    seen.add(after);
    assert.match(e.message, /overloaded.*150 ms late.*cached answers are still served/);
  }
  assert.ok(seen.size > 1, "callers refused together do not all come back together");
  assert.ok((overloadRefusal(5).details?.retryAfterMs as number) >= 100, "at least 100 ms");
});

test("a failed lookup stays charged when the DP did the work or the deadline was too short", () => {
  const late = new DiscoveryError("upstream_unavailable", "late", {
    details: { reason: "DEADLINE_TOO_SHORT" },
  });
  assert.equal(chargedAnyway(late), true, "answered early: the lookup went on");
  assert.equal(chargedAnyway(callerGone(true)), true, "the DP answered; the caller had left");
  assert.equal(chargedAnyway(callerGone(false)), false, "dropped before it was sent");
  assert.equal(chargedAnyway(new DiscoveryError("upstream_unavailable", "DP down")), false);
  assert.equal(chargedAnyway(new Error("other")), false);
  assert.ok(isCallerGone(callerGone(false)) && !isCallerGone(late));
});

test("the answer bound is nine tenths of the deadline, however far, unlike the window's wait", () => {
  const now = { wallMs: 1_700_000_000_000, monoMs: 5_000 };
  assert.equal(answerBound(now.wallMs + 3_600_000, now), 5_000 + 3_240_000, "not capped at a minute");
  assert.equal(answerBound(now.wallMs + 1_000, now), 5_900);
  assert.equal(answerBound(now.wallMs - 1, now), 5_000);
  assert.equal(answerBound(Number.POSITIVE_INFINITY, now), undefined);
});
