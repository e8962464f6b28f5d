// Failure handling: serve-stale when a DP is unreachable (RFC 8767), resolution without the
// root (H1: resolvers hold a synced copy of the delegation table), root and DP endpoint
// failover. Every scenario puts back what it stops, so each one can run alone.
import assert from "node:assert/strict";
import { status } from "@grpc/grpc-js";
import { pb } from "@mimi/core";
import { startResolver } from "@mimi/devnet";
import { eventually, rejectsWith, scenario, useNetwork } from "./harness.js";

// Short TTLs, expired by moving the resolver's clock; the stale window stays long.
const TTL_SECONDS = 1;
const t = useNetwork({
  authoritative: { answerTtlSeconds: TTL_SECONDS, negativeTtlSeconds: TTL_SECONDS },
  resolver: {
    cache: { minTtlSeconds: 0, staleWindowSeconds: 3600, staleAnswerTtlSeconds: 30 },
    upstreamTimeoutMs: 500,
  },
});

/** Lets every answer the resolver cached so far expire. */
const expireCachedAnswers = () => t.advanceClock(t.net.resolver, (TTL_SECONDS + 1) * 1000);

scenario(
  t,
  "when the endpoint a resolver used last dies, it fails over to the DP's next endpoint",
  async () => {
    // Warm the resolver's preference for us's current endpoint, then move us to a new port and
    // list the old (now dead) address first: the resolver must try it, fail, and go on.
    assert.equal((await t.resolve("tel:+12025550142")).answer?.status, pb.LookupStatus.FOUND);
    const old = t.net.dps.us.address;
    await t.net.dps.us.stop();
    await t.net.dps.us.start();
    await t.resolverApplied(await t.putDp("us", [old, t.net.dps.us.address]));
    const r = await t.resolve("mailto:alice@example.org"); // not cached yet; held by us
    assert.equal(r.answer?.status, pb.LookupStatus.FOUND);
    assert.equal(r.stale, false);
    await t.logged(new RegExp(`resolver: .*"endpoint":"${old}".*"dp lookup failed"`));
  },
);

scenario(t, "an expired answer is served, marked stale, while its authoritative is down", async () => {
  const fresh = await t.resolve("tel:+447700900123");
  assert.equal(fresh.stale, false);
  await t.net.dps.eu.stop();
  try {
    expireCachedAnswers();
    const stale = await t.resolve("tel:+447700900123");
    assert.equal(stale.stale, true);
    assert.equal(stale.answer?.ttlSeconds, 30);
    assert.deepEqual(stale.answer?.mappings, fresh.answer?.mappings);
    // Explained (to an admin): the stale copy, from the cache, every signature still good.
    const explained = await t.net
      .channel(t.net.resolver.address, "admin")
      .client(pb.ResolverService)
      .resolve({ csi: "tel:+447700900123", explain: true }, { timeoutMs: 10_000 });
    const e = explained.explanation;
    assert.equal(e?.cache, pb.Explanation_CacheState.STALE);
    assert.deepEqual([e?.delegation, e?.dpId, e?.endpoint], ["e164:44", "eu", ""]);
    assert.ok(e && e.signatures.length >= 2 && e.signatures.every((c) => c.ok));
    // Nothing cached: the failure is reported, naming the DP.
    await rejectsWith(t.resolve("tel:+447700900555"), status.UNAVAILABLE, /DP "eu"/);
    // The other region is unaffected.
    assert.equal((await t.resolve("tel:+12025550142")).answer?.status, pb.LookupStatus.FOUND);
  } finally {
    await t.net.dps.eu.start({ samePort: true });
  }
});

scenario(t, "resolution goes on with the root stopped", async () => {
  await t.resolve("tel:+12025550142");
  await t.net.root.stop();
  try {
    expireCachedAnswers(); // so the next lookup walks to the DP
    const before = await t.lookupsServed("us");
    const r = await t.resolve("tel:+12025550142");
    assert.equal(r.stale, false);
    assert.equal(r.answer?.status, pb.LookupStatus.FOUND);
    assert.equal((await t.lookupsServed("us")) - before, 1n);
  } finally {
    await t.net.root.start({ samePort: true });
  }
});

scenario(t, "a restarted resolver resolves from its saved registry copy while the root is down", async () => {
  await t.net.root.stop();
  try {
    await t.net.resolver.stop();
    await t.net.resolver.start({ samePort: true });
    const r = await t.resolve("mailto:alice@example.org");
    assert.equal(r.answer?.status, pb.LookupStatus.FOUND);
    assert.deepEqual(r.answer?.dpIds, ["us"]);
  } finally {
    await t.net.root.start({ samePort: true });
  }
});

scenario(t, "a resolver whose first root endpoint is dead syncs from the next one", async () => {
  const second = await startResolver(t.net, {
    name: "resolver-2",
    rootEndpoints: ["127.0.0.1:1", t.net.root.address],
  });
  try {
    const client = t.net.channel(second.address, "msp-parrot").client(pb.ResolverService);
    // Until its registry copy arrives the new resolver answers UNAVAILABLE; then it resolves.
    const answer = await eventually(() => client.resolve({ csi: "tel:+12025550142" }, { timeoutMs: 2_000 }));
    assert.equal(answer.answer?.status, pb.LookupStatus.FOUND);
  } finally {
    await second.stop();
  }
});
