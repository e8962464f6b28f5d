// Failure handling: serve-stale when a DP is unreachable (RFC 8767), resolution without
// the root (H1: resolvers hold a synced copy of the delegation table), root failover.
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { status } from "@grpc/grpc-js";
import { pb } from "@mimi/core";
import { ServerProcess } from "../deploy/local/network.js";
import { rejectsWith, scenario, useNetwork } from "./harness.js";

// Short TTLs so expiry happens within the test; the stale window stays long.
const t = useNetwork({
  authoritative: { answerTtlSeconds: 1, negativeTtlSeconds: 1 },
  resolver: {
    cache: { minTtlSeconds: 0, staleWindowSeconds: 3600, staleAnswerTtlSeconds: 30 },
    upstreamTimeoutMs: 500,
  },
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

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
    assert.match(t.logs(), new RegExp(`resolver: .*"endpoint":"${old}".*"dp lookup failed"`));
  },
);

scenario(t, "an expired answer is served, marked stale, while its authoritative is down", async () => {
  const fresh = await t.resolve("tel:+447700900123");
  assert.equal(fresh.stale, false);
  await t.net.dps.eu.stop();
  await sleep(1_200);
  const stale = await t.resolve("tel:+447700900123");
  assert.equal(stale.stale, true);
  assert.equal(stale.answer?.ttlSeconds, 30);
  assert.deepEqual(stale.answer?.mappings, fresh.answer?.mappings);
  // Nothing cached: the failure is reported, naming the DP.
  await rejectsWith(t.resolve("tel:+447700900555"), status.UNAVAILABLE, /DP "eu"/);
  // The other region is unaffected.
  assert.equal((await t.resolve("tel:+12025550142")).answer?.status, pb.LookupStatus.FOUND);
});

scenario(t, "resolution goes on with the root stopped", async () => {
  await t.net.root.stop();
  await sleep(1_100); // let the cached +1 answer expire so the next lookup walks to the DP
  const before = await t.lookupsServed("us");
  const r = await t.resolve("tel:+12025550142");
  assert.equal(r.stale, false);
  assert.equal(r.answer?.status, pb.LookupStatus.FOUND);
  assert.equal((await t.lookupsServed("us")) - before, 1n);
});

scenario(t, "a restarted resolver resolves from its saved registry copy while the root is down", async () => {
  await t.net.resolver.stop();
  await t.net.resolver.start();
  const r = await t.resolve("mailto:alice@example.org");
  assert.equal(r.answer?.status, pb.LookupStatus.FOUND);
  assert.deepEqual(r.answer?.dpIds, ["us"]);
});

scenario(t, "a resolver whose first root endpoint is dead syncs from the next one", async () => {
  await t.net.root.start(); // back, on a new port
  const dir = t.net.dir;
  const config = join(dir, "config", "resolver-2.json");
  writeFileSync(
    config,
    JSON.stringify({
      port: 0,
      dataDir: join(dir, "resolver-2"),
      tls: {
        caFile: join(t.net.pkiDir, "ca.pem"),
        certFile: join(t.net.pkiDir, "resolver.pem"),
        keyFile: join(t.net.pkiDir, "resolver-key.pem"),
      },
      rootEndpoints: ["127.0.0.1:1", t.net.root.address],
      rootPublicKey: join(t.net.pkiDir, "root-signing.pub"),
    }),
  );
  const second = new ServerProcess("resolver-2", "resolver", config, "info");
  await second.start();
  try {
    const client = t.net.channel(second.address, "msp-parrot").client(pb.ResolverService);
    let answer: pb.ResolveResponse | undefined;
    for (let i = 0; i < 100 && !answer; i++) {
      answer = await client.resolve({ csi: "tel:+12025550142" }).catch(() => undefined);
      if (!answer) await sleep(100);
    }
    assert.equal(answer?.answer?.status, pb.LookupStatus.FOUND);
  } finally {
    await second.stop();
  }
});
