// The DP's own lookup limits: capacity, per calling resolver, per rate-limit context (per
// minute and per day), enumeration per context; a refusal costs no budget and says when to retry.
import assert from "node:assert/strict";
import { test } from "node:test";
import { ConfigReader, DEFAULT_ENUMERATION_POLICY, type Detection, DiscoveryError } from "@mimi/core";
import {
  createLookupLimits,
  DEFAULT_LOOKUP_LIMITS,
  type LookupLimitPolicy,
  readLookupLimits,
} from "./lookup-limits.js";

const ctx = (n: number) => new Uint8Array(16).fill(n);
const none = new Uint8Array(0);
const limits = (p: Partial<LookupLimitPolicy>, mode: "log" | "enforce" = "log") => {
  const seen: Detection[] = [];
  const l = createLookupLimits(
    { ...DEFAULT_LOOKUP_LIMITS, ...p },
    { ...DEFAULT_ENUMERATION_POLICY, mode },
    (d) => seen.push(d),
  );
  return { l, seen };
};
const refusal = (f: () => void, reason: string): DiscoveryError => {
  try {
    f();
  } catch (err) {
    assert.ok(err instanceof DiscoveryError);
    assert.equal(err.code, "resource_exhausted");
    assert.equal(err.details?.reason, reason);
    return err;
  }
  assert.fail(`expected a ${reason} refusal`);
};

test("a context is held to its minute and day; another context is not; no context is the caller's own", () => {
  const { l } = limits({ perContextPerMinute: 3, perContextPerDay: 5, ownPerMinute: 3 });
  for (let i = 0; i < 3; i++) l.admit("resolver", ctx(1), "tel:+447700900001", 0);
  const e = refusal(() => l.admit("resolver", ctx(1), "tel:+447700900001", 0), "DP_CONTEXT_LIMIT");
  assert.equal(e.details?.retryAfterMs, 20_000);
  l.admit("resolver", ctx(2), "tel:+447700900001", 0);
  // Without a context the caller is held to its own budget (its refreshes, larger by default).
  for (let i = 0; i < 3; i++) l.admit("resolver", none, "tel:+447700900001", 0);
  const own = refusal(() => l.admit("resolver", none, "tel:+447700900001", 0), "DP_RESOLVER_LIMIT");
  assert.match(own.message, /"resolver" has made its 3 lookups per minute without a context/);
  // The same bytes from another resolver are another context.
  for (let i = 0; i < 3; i++) l.admit("resolver-b", ctx(1), "tel:+447700900001", 0);
  // A minute later the minute has refilled, but the day has two left.
  l.admit("resolver", ctx(1), "tel:+447700900001", 60_000);
  l.admit("resolver", ctx(1), "tel:+447700900001", 60_000);
  refusal(() => l.admit("resolver", ctx(1), "tel:+447700900001", 60_000), "DP_CONTEXT_LIMIT");
  assert.deepEqual([l.refused.context, l.refused.resolver], [2, 1]);
});

test("a caller inventing a context per lookup is refused past its contexts for the day", () => {
  const { l } = limits({ maxContextsPerResolverPerDay: 3 });
  for (let n = 1; n <= 3; n++) l.admit("resolver", ctx(n), "tel:+1", 1_000);
  const e = refusal(() => l.admit("resolver", ctx(4), "tel:+1", 1_000), "DP_CONTEXTS_PER_RESOLVER");
  assert.match(e.message, /has opened its 3 rate-limit contexts at this DP today/);
  assert.equal(e.details?.retryAfterMs, 86_400_000 - 1_000);
  // Those it has go on; another caller has its own; a new day starts afresh.
  l.admit("resolver", ctx(2), "tel:+1", 1_000);
  l.admit("resolver-b", ctx(4), "tel:+1", 1_000);
  l.admit("resolver", ctx(4), "tel:+1", 86_400_000);
});

test("each calling resolver is held to its rate, and all of them to the endpoint's capacity, which is published", () => {
  const { l } = limits({ perResolverPerSecond: 4, capacityPerSecond: 6 });
  assert.equal(l.publishedRate(), 4);
  for (let i = 0; i < 4; i++) l.admit("resolver-a", none, "tel:+1", 0);
  const e = refusal(() => l.admit("resolver-a", none, "tel:+1", 0), "DP_RESOLVER_LIMIT");
  assert.equal(e.details?.retryAfterMs, 250);
  l.admit("resolver-b", none, "tel:+1", 0);
  l.admit("resolver-b", none, "tel:+1", 0);
  refusal(() => l.admit("resolver-b", none, "tel:+1", 0), "DP_CAPACITY");
  assert.deepEqual({ ...l.refused }, { capacity: 1, resolver: 1, context: 0, enumeration: 0 });
  // Refused lookups took nothing: after the refill both go again.
  l.admit("resolver-b", none, "tel:+1", 1_000);
  assert.equal(limits({ capacityPerSecond: 0, perResolverPerSecond: 9 }).l.publishedRate(), 9);
});

test("a caller named like another caller's context does not share its budget", () => {
  const { l } = limits({ perContextPerMinute: 2, ownPerMinute: 2 });
  const hex = "07".repeat(16);
  const subjects = [
    l.admit("a", ctx(7), "tel:+447700900001", 0),
    l.admit(`a/${hex}`, none, "tel:+447700900001", 0),
    l.admit("a", none, "tel:+447700900001", 0),
  ];
  assert.deepEqual(subjects, [`a/${hex}`, `a/${hex}/`, "a"]);
  // Each has its own budget: a second lookup each is still within it.
  l.admit("a", ctx(7), "tel:+447700900002", 0);
  l.admit(`a/${hex}`, none, "tel:+447700900002", 0);
  refusal(() => l.admit("a", ctx(7), "tel:+447700900003", 0), "DP_CONTEXT_LIMIT");
});

test("a crawl under one context is detected and, in enforce mode, refused in its block; other contexts go on", () => {
  const { l, seen } = limits({}, "enforce");
  for (let i = 0; i < 50; i++) {
    const csi = `tel:+44770030${String(i).padStart(4, "0")}`;
    const subject = l.admit("resolver", ctx(9), csi, 1_000);
    l.answered(subject, csi, true, 1_000);
  }
  assert.deepEqual(
    seen.map((d) => [d.subject, d.scope]),
    [
      [`resolver/${"09".repeat(16)}`, "all"],
      [`resolver/${"09".repeat(16)}`, "tel:+44770030"],
    ],
  );
  refusal(() => l.admit("resolver", ctx(9), "tel:+447700309999", 2_000), "ENUMERATION_SUSPECTED");
  l.admit("resolver", ctx(9), "tel:+15550000000", 2_000);
  l.admit("resolver", ctx(8), "tel:+447700300001", 2_000);
  // Lookups without a context are watched as the caller's own.
  for (let i = 0; i < 50; i++) {
    const csi = `tel:+44770031${String(i).padStart(4, "0")}`;
    l.answered(l.admit("resolver", none, csi, 3), csi, true, 3);
  }
  assert.equal(l.enumeration.counts.detections, 4);
  refusal(() => l.admit("resolver", none, "tel:+447700310077", 4), "ENUMERATION_SUSPECTED");
});

test("a context of the wrong size is INVALID_ARGUMENT; the config section has bounds", () => {
  const { l } = limits({});
  assert.throws(
    () => l.admit("resolver", new Uint8Array(3), "tel:+1", 0),
    /rate_context must be empty or 16 bytes/,
  );
  assert.deepEqual(readLookupLimits(ConfigReader.of({})), DEFAULT_LOOKUP_LIMITS);
  assert.throws(() => readLookupLimits(ConfigReader.of({ perResolverPerSecond: 0 })), /perResolverPerSecond/);
  assert.throws(() => readLookupLimits(ConfigReader.of({ perContext: 1 })), /perContext/);
});

test("a reload changes the budgets that changed and keeps what callers used of the others", () => {
  const { l } = limits({ perContextPerMinute: 3, perResolverPerSecond: 1_000 });
  for (let i = 0; i < 3; i++) l.admit("resolver", ctx(1), "tel:+447700900001", 0);
  refusal(() => l.admit("resolver", ctx(1), "tel:+447700900001", 0), "DP_CONTEXT_LIMIT");
  // The per-resolver budget changes; the context's minute does not, so its use stands.
  l.reconfigure(
    { ...DEFAULT_LOOKUP_LIMITS, perContextPerMinute: 3, perResolverPerSecond: 2 },
    { ...DEFAULT_ENUMERATION_POLICY, mode: "enforce" },
  );
  refusal(() => l.admit("resolver", ctx(1), "tel:+447700900001", 0), "DP_CONTEXT_LIMIT");
  assert.equal(l.publishedRate(), 2);
  assert.equal(l.enumeration.policy.mode, "enforce");
  // A larger minute is a new budget: the context may go on at once.
  l.reconfigure({ ...DEFAULT_LOOKUP_LIMITS, perContextPerMinute: 10 }, DEFAULT_ENUMERATION_POLICY);
  l.admit("resolver", ctx(1), "tel:+447700900001", 0);
});

test("a private lookup's evaluation counts its CPU against the caller's rate and the capacity, one lookup against the context", () => {
  const { l } = limits({ perResolverPerSecond: 100, capacityPerSecond: 1_000, perContextPerMinute: 10 });
  // Four evaluations at a load of 20 each: 80 of the resolver's 100 a second, 4 of the context's 10.
  l.admit("resolver", ctx(1), undefined, 0, 4, 80);
  refusal(() => l.admit("resolver", ctx(2), undefined, 0, 2, 40), "DP_RESOLVER_LIMIT");
  // A second later the rate has refilled, and the context has 6 lookups left, not none.
  for (let i = 0; i < 6; i++) l.admit("resolver", ctx(1), "tel:+1", 1_000);
  refusal(() => l.admit("resolver", ctx(1), undefined, 1_000, 1, 20), "DP_CONTEXT_LIMIT");
});
