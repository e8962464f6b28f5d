// The fan-out of one federated query: every DP of the plan asked at once, failures reported
// per DP in the caller's words, the fan-out limit's leftovers named, and a query no DP answered
// failing with the authoritative DP's error.
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  DEFAULT_PARAMS,
  type Delegation,
  DiscoveryError,
  type DpInfo,
  type FederationPlan,
  type LookupOutcome,
} from "@mimi/core";
import { resolveFederated } from "./federation.js";
import type { Resolution } from "./lookup-context.js";

const UK: Delegation = {
  id: "e164:44",
  key: { kind: "e164", prefix: "44" },
  dpId: "eu",
  ttlSeconds: 60,
  federatedDpIds: ["fed", "tp", "gone"],
};
const dp = (id: string): DpInfo => ({
  id,
  endpoints: [`${id}:1`],
  tlsIdentity: id,
  jurisdiction: "EU",
  signingPublicKey: new Uint8Array(32),
});
const registry = { dp: (id: string) => (id === "gone" ? undefined : dp(id)) };
const notFound = (dpId: string, ttlSeconds: number): Resolution => ({
  outcome: { kind: "not_found", dpId, ttlSeconds } as LookupOutcome,
  ttlSeconds,
  stale: false,
  source: "upstream",
});

test("each DP of the plan is asked; failures and the fan-out limit's leftovers are reported per DP", async () => {
  const plan: FederationPlan = { delegation: UK, federated: ["fed", "tp", "gone"], overLimit: ["late"] };
  const asked: string[] = [];
  const r = await resolveFederated(plan, DEFAULT_PARAMS, registry, async (d) => {
    asked.push(d?.id ?? "eu");
    if (d?.id === "fed") {
      throw new DiscoveryError("resource_exhausted", 'DP "fed" refused the lookup', {
        details: { reason: "LOOKUP_LIMIT_DAY", retryAfterMs: 1500 },
      });
    }
    if (d?.id === "tp") throw new TypeError("a bug with an internal detail");
    return notFound("eu", 30);
  });
  assert.deepEqual(asked, ["eu", "fed", "tp"]);
  assert.equal(r.merged.kind, "not_found");
  assert.equal(r.ttlSeconds, 30);
  assert.deepEqual(
    r.sources.map((s) => [s.dpId, s.outcome, s.reason, s.retryAfterMs]),
    [
      ["eu", "answered", undefined, undefined],
      ["fed", "failed", "LOOKUP_LIMIT_DAY", 1500],
      ["tp", "failed", undefined, undefined],
      ["gone", "failed", undefined, undefined],
      ["late", "over_limit", "FANOUT_LIMIT", undefined],
    ],
  );
  // Nothing of an unexpected error's own text reaches the caller.
  assert.equal(r.sources[2]?.failure, "internal error");
  assert.match(r.sources[3]?.failure ?? "", /not in the registry/);
});

test("a query no DP answered fails with the authoritative DP's error", async () => {
  const plan: FederationPlan = { delegation: UK, federated: ["fed"], overLimit: [] };
  const down = new DiscoveryError("upstream_unavailable", 'DP "eu" did not answer');
  await assert.rejects(
    resolveFederated(plan, DEFAULT_PARAMS, registry, async (d) => {
      if (!d) throw down;
      throw new DiscoveryError("upstream_unavailable", 'DP "fed" did not answer');
    }),
    (e: unknown) => e === down,
  );
  // With the authoritative DP down, a federated DP's answer is served, the answer partial.
  const r = await resolveFederated(plan, DEFAULT_PARAMS, registry, async (d) => {
    if (!d) throw down;
    return notFound("fed", 20);
  });
  assert.deepEqual(
    r.sources.map((s) => [s.dpId, s.outcome]),
    [
      ["eu", "failed"],
      ["fed", "answered"],
    ],
  );
});
