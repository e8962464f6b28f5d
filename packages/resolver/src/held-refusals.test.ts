// A DP's refusal of a caller's context holds that caller's lookups there until its retry-after:
// a context budget at the whole DP, an enumeration block in its number block only.
import assert from "node:assert/strict";
import { test } from "node:test";
import { DiscoveryError } from "@mimi/core";
import { createHeldRefusals } from "./held-refusals.js";

const refusal = (reason: string, retryAfterMs: number) =>
  new DiscoveryError("resource_exhausted", "refused", { details: { reason, retryAfterMs } });

test("a context refusal holds the caller at that DP until its retry-after, and nobody else", () => {
  const h = createHeldRefusals();
  h.hold("msp-a", "eu", "tel:+447700900001", refusal("DP_CONTEXT_LIMIT", 5_000), 1_000);
  const e = h.check("msp-a", "eu", "tel:+15550000000", 2_000);
  assert.equal(e?.code, "resource_exhausted");
  assert.equal(e?.details?.reason, "DP_CONTEXT_LIMIT");
  assert.equal(e?.details?.retryAfterMs, 4_000);
  assert.match(e?.message ?? "", /^DP "eu" refused the lookup \(DP_CONTEXT_LIMIT\); try again in 4 s$/);
  assert.equal(h.check("msp-b", "eu", "tel:+15550000000", 2_000), undefined);
  assert.equal(h.check("msp-a", "us", "tel:+15550000000", 2_000), undefined);
  assert.equal(h.check("msp-a", "eu", "tel:+15550000000", 6_000), undefined, "over at its retry-after");
});

test("an enumeration refusal holds only its number block", () => {
  const h = createHeldRefusals();
  h.hold("msp-a", "eu", "tel:+447700300001", refusal("ENUMERATION_SUSPECTED", 300_000), 0);
  assert.ok(h.check("msp-a", "eu", "tel:+447700309999", 1));
  assert.equal(h.check("msp-a", "eu", "tel:+447700310000", 1), undefined);
  // A refusal without a retry-after holds nothing.
  h.hold("msp-a", "eu", "tel:+1", refusal("DP_CONTEXT_LIMIT", 0), 0);
  assert.equal(h.check("msp-a", "eu", "tel:+1555", 0), undefined);
});
