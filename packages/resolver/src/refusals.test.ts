import assert from "node:assert/strict";
import { test } from "node:test";
import { DiscoveryError } from "@mimi/core";
import { UPSTREAM_SATURATED } from "./adaptive-gate.js";
import { overloadRefusal } from "./call-bounds.js";
import { dpRefusal, dpRefusalError, earnedRefusal, isCallerRefusal } from "./refusals.js";

test("a caller earns the refusals of its budgets and contexts, not those of anyone's capacity", () => {
  const refusal = (reason: string) =>
    new DiscoveryError("resource_exhausted", reason, { details: { reason, retryAfterMs: 1_000 } });
  const earned = [
    refusal("LOOKUP_LIMIT_DAY"),
    refusal("LOOKUP_LIMIT_MINUTE"),
    refusal("ENUMERATION_SUSPECTED"),
    dpRefusalError("eu", "DP_CONTEXT_LIMIT", 1_000),
    dpRefusalError("eu", "ENUMERATION_SUSPECTED", 1_000),
    // A DP's limit it gave no known reason for may be the caller's.
    dpRefusalError("eu", "DP_LIMIT", 1_000),
  ];
  const capacity = [
    overloadRefusal(50),
    refusal(UPSTREAM_SATURATED),
    refusal("DP_CAPACITY"), // the gate's: over the DP's published rate
    dpRefusalError("eu", "DP_CAPACITY", 1_000),
    dpRefusalError("eu", "DP_RESOLVER_LIMIT", 1_000),
    dpRefusalError("eu", "DP_CONTEXTS_PER_RESOLVER", 1_000),
  ];
  for (const e of earned) assert.equal(earnedRefusal(e), true, e.message);
  for (const e of capacity) assert.equal(earnedRefusal(e), false, e.message);
  assert.equal(earnedRefusal(new DiscoveryError("upstream_unavailable", "down")), false, "not a refusal");
});

test("a DP's refusal reaches the caller in the resolver's words; only one of the caller's own context is the caller's", () => {
  const fromDp = (reason: string, retryAfterMs: number, text = "spent") =>
    new DiscoveryError("resource_exhausted", `${text} at 10.1.2.3:7443`, {
      remoteStatus: 8, // RESOURCE_EXHAUSTED, as the DP sent it
      details: { reason, retryAfterMs },
    });
  const context = dpRefusal("eu", fromDp("DP_CONTEXT_LIMIT", 5_000));
  assert.equal(context.message, 'DP "eu" refused the lookup (DP_CONTEXT_LIMIT); try again in 5 s');
  assert.equal(isCallerRefusal(context), true);
  const odd = dpRefusal("eu", fromDp("SOMETHING_NEW", Number.POSITIVE_INFINITY));
  assert.equal(odd.details?.reason, "DP_LIMIT", "an unknown reason reads DP_LIMIT");
  assert.equal(odd.details?.retryAfterMs, 86_400_000, "a retry-after of at most a day");
  assert.equal(isCallerRefusal(odd), false);
  assert.equal(isCallerRefusal(dpRefusal("eu", fromDp("DP_CAPACITY", 100))), false);
  // Held by the resolver (no DP status): repeated to the caller, never taken for a new refusal.
  assert.equal(isCallerRefusal(dpRefusalError("eu", "DP_CONTEXT_LIMIT", 1_000)), false);
});
