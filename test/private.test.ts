// Private lookups (issue 16) across real processes: a resolver asks eu privately (blinded
// evaluation, then the bucket) and gets the answer a plain lookup gives, while eu learns
// neither the number nor whether it was found. The network logs at debug level, so the check
// of eu's logs covers everything eu could have written.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { status } from "@grpc/grpc-js";
import {
  changeHash,
  layoutOf,
  loadPublicKey,
  openEntry,
  oprfBlind,
  oprfFinalize,
  pb,
  slotOf,
  verifyPrivateParams,
} from "@mimi/core";
import { devSigningKeyPaths } from "@mimi/devnet";
import { eventually, metricValue, rejectsWith, scenario, useNetwork, writeMapping } from "./harness.js";

// A small context budget at the DPs, so the metering of evaluations shows within one test.
// Retired keys go at the next sweep (each second), so a rotation finishes within one test.
const t = useNetwork(
  {
    authoritative: {
      lookupLimits: { perContextPerMinute: 40 },
      privateLookups: { enabled: true, retireAfterSeconds: 0 },
      sweepIntervalSeconds: 1,
    },
  },
  "debug",
  { privateLookups: true },
);
const PRIVATE = pb.PrivacyMode.PRIVATE;
const PLAIN = pb.PrivacyMode.PLAIN;

const resolver = () => t.net.channel(t.net.resolver.address, "msp-bluebird").client(pb.ResolverService);
const resolve = (csi: string, privacy: pb.PrivacyMode) => resolver().resolve({ csi, privacy });
const flush = async (csi: string) => {
  const r = await t.cli(["resolver", "flush", csi, "--resolver", t.net.resolver.address]);
  assert.equal(r.code, 0, r.stderr);
};
const mimi = (args: string[]) =>
  t.cli([...args, "--resolver", t.net.resolver.address, "--root", t.net.root.address]);
/** `mimi root dp put eu` at eu's address with these flags; its output. */
const put = (...flags: string[]) => t.putDp("eu", [t.net.dps.eu.address], ...flags);
/** What two answers say, without how they were found or sealed. */
const gist = (a: pb.Answer | undefined) => ({
  status: pb.LookupStatus[a?.status ?? 0],
  mappings: a?.mappings.map((m) => [m.mspId, m.ssi, m.isDefault]),
  dpIds: a?.dpIds,
});
/** Every file under `dir`, read whole. */
const filesUnder = (dir: string): Buffer[] =>
  readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    return statSync(p).isDirectory() ? filesUnder(p) : [readFileSync(p)];
  });

scenario(
  t,
  "a private lookup gives the answer a plain one gives, for found, not found and opted-out CSIs",
  async () => {
    const optOut = await t.cli([
      "claim",
      "opt-out",
      "tel:+447700900558",
      "--as",
      "msp-bluebird",
      "--dp",
      t.net.dps.eu.address,
      "--dp-id",
      "eu",
      "--outbox",
      join(t.net.dir, "dp-eu", "outbox"),
    ]);
    assert.equal(optOut.code, 0, optOut.stderr);
    for (const [csi, want] of [
      ["tel:+447700900123", "FOUND"],
      ["tel:+447700900999", "NOT_FOUND"],
      ["tel:+447700900558", "OPTED_OUT"],
    ] as const) {
      await flush(csi);
      const plain = await resolve(csi, PLAIN);
      assert.equal(plain.answer?.privateLookup, false);
      await flush(csi);
      const priv = await eventually(async () => {
        const r = await resolve(csi, PRIVATE);
        // The table follows the opt-out's change shortly after it.
        assert.equal(pb.LookupStatus[r.answer?.status ?? 0], want, csi);
        return r;
      });
      assert.deepEqual(gist(priv.answer), gist(plain.answer), csi);
      assert.equal(priv.answer?.privateLookup, true, csi);
      // Found and opted-out answers carry the DP's seal as a plain one does; a miss carries none.
      assert.equal(priv.answer?.seal !== undefined, want !== "NOT_FOUND", csi);
      // The cached private answer verifies end to end, and says how it was found.
      const v = await mimi(["resolve", csi, "--verify"]);
      assert.equal(v.code, 0, v.stderr);
      assert.match(v.stdout, /found by a private lookup/);
      assert.match(
        v.stdout,
        want === "NOT_FOUND"
          ? /not verifiable end to end: NOT_FOUND by a private lookup at DP "eu"/
          : /verified: /,
      );
    }
    const ops = t.net.resolver.opsPort;
    await eventually(async () => {
      assert.ok((await metricValue(ops, "mimi_resolver_private_lookups_total")) >= 3);
      assert.ok((await metricValue(t.net.dps.eu.opsPort, "mimi_dp_private_evaluations_total")) >= 3);
      // Each lookup's bucket was fetched, or kept from an earlier fetch (the demo table is small).
      const served = await metricValue(t.net.dps.eu.opsPort, "mimi_dp_private_buckets_served_total");
      assert.ok(served >= 1);
      assert.ok(served + (await metricValue(ops, "mimi_resolver_private_bucket_hits_total")) >= 3);
    });
  },
);

scenario(
  t,
  "the DP learns nothing of a private lookup: no number, no hash of it, in its logs or its data",
  async () => {
    const csi = "tel:+447700900987";
    const digits = "447700900987";
    await flush(csi);
    const served = await t.lookupsServed("eu");
    const r = await resolve(csi, PRIVATE);
    assert.equal(r.answer?.status, pb.LookupStatus.NOT_FOUND);
    assert.equal(r.answer?.privateLookup, true);
    // eu answered no Lookup, the only call that carries a CSI (its evaluations are counted in
    // the first scenario).
    assert.equal(await t.lookupsServed("eu"), served);
    // A plain lookup of another number is a Lookup eu answers (the control).
    await resolve("tel:+447700900986", PLAIN);
    assert.equal(await t.lookupsServed("eu"), served + 1n);
    // The hashes eu could give the number: its change hash (the key every watcher gets).
    const watch = t.net.channel(t.net.dps.eu.address, "resolver").client(pb.AuthoritativeService);
    const ac = new AbortController();
    let hashKey: Uint8Array = new Uint8Array();
    for await (const m of watch.watchChanges({}, { signal: ac.signal })) {
      if (m.event.case === "start") hashKey = m.event.value.hashKey;
      break;
    }
    ac.abort();
    const forms = [digits, csi, Buffer.from(changeHash(hashKey, csi)).toString("hex")];
    const euLines = t
      .logs()
      .split("\n")
      .filter((l) => l.startsWith("dp-eu:"));
    // The number is used by this scenario alone, so eu's whole log (at debug level) is searched.
    assert.ok(
      euLines.some((x) => x.includes('"level":20')),
      "eu logs at debug level",
    );
    for (const f of forms) assert.ok(!euLines.some((l) => l.includes(f)), `eu's log holds ${f}`);
    const data = filesUnder(join(t.net.dir, "dp-eu"));
    for (const f of forms) assert.ok(!data.some((b) => b.includes(f)), `eu's data holds ${f}`);
    assert.ok(
      !data.some((b) => b.includes(Buffer.from(changeHash(hashKey, csi)))),
      "eu's data holds its change hash",
    );
    // The search finds what is there: a number eu holds is in its store.
    assert.ok(data.some((b) => b.includes("447700900123")));
  },
);

scenario(t, "a hit's bucket and a miss's bucket are the same size, over the DP's gRPC API", async () => {
  const dp = t.net.channel(t.net.dps.eu.address, "resolver").client(pb.PrivateLookupService);
  const dpKey = loadPublicKey(devSigningKeyPaths(t.net.pkiDir, "dp-eu").publicKeyFile);
  const raw = await dp.getPrivateParameters({});
  const params = verifyPrivateParams(raw.statement, raw.signature, "eu", dpKey);
  assert.ok(!("problem" in params), "the parameters verify with eu's registry key");
  const csis = ["tel:+447700900123", "tel:+447700900777"];
  const blinded = csis.map(oprfBlind);
  const ev = await dp.evaluate({
    epoch: params.epoch,
    blinded: blinded.map((b) => b.blinded),
    rateContext: randomBytes(16),
  });
  const outputs = oprfFinalize(blinded, ev.evaluated, params.publicKey, ev.proof);
  const layout = layoutOf(params);
  const slots = outputs.map((y) => slotOf(y, layout));
  const buckets = await Promise.all(
    slots.map((s) => dp.getBucket({ epoch: params.epoch, bucket: s.bucket })),
  );
  assert.equal(buckets[0]?.data.length, params.bucketBytes);
  assert.equal(buckets[1]?.data.length, params.bucketBytes);
  assert.ok(
    openEntry(layout, slots[0] as (typeof slots)[0], buckets[0]?.data as Uint8Array),
    "the hit opens",
  );
  assert.equal(openEntry(layout, slots[1] as (typeof slots)[0], buckets[1]?.data as Uint8Array), undefined);
  // Malformed requests get a status a person can act on.
  const bad = await rejectsWith(
    dp.evaluate({ epoch: params.epoch, blinded: [new Uint8Array(5)] }),
    status.INVALID_ARGUMENT,
  );
  assert.match(bad.message, /32 bytes/);
  const epoch = await rejectsWith(
    dp.evaluate({ epoch: params.epoch + 1, blinded: [blinded[0]?.blinded as Uint8Array] }),
    status.FAILED_PRECONDITION,
  );
  assert.equal(epoch.details?.reason, "EPOCH_CHANGED");
  // MSPs are not resolvers: they get no evaluations.
  const asMsp = t.net.channel(t.net.dps.eu.address, "msp-bluebird").client(pb.PrivateLookupService);
  await rejectsWith(asMsp.getPrivateParameters({}), status.PERMISSION_DENIED);
});

scenario(t, "evaluations are charged to the rate-limit context and refused past it", async () => {
  const dp = t.net.channel(t.net.dps.eu.address, "resolver").client(pb.PrivateLookupService);
  const raw = await dp.getPrivateParameters({});
  const dpKey = loadPublicKey(devSigningKeyPaths(t.net.pkiDir, "dp-eu").publicKeyFile);
  const params = verifyPrivateParams(raw.statement, raw.signature, "eu", dpKey);
  assert.ok(!("problem" in params));
  const context = randomBytes(16);
  const batch = () =>
    Array.from({ length: 32 }, (_, i) => oprfBlind(`tel:+4477009${String(10_000 + i)}`).blinded);
  await dp.evaluate({ epoch: params.epoch, blinded: batch(), rateContext: context });
  // 32 of the context's 40 a minute are spent: 32 more are refused, with when to retry.
  const err = await rejectsWith(
    dp.evaluate({ epoch: params.epoch, blinded: batch(), rateContext: context }),
    status.RESOURCE_EXHAUSTED,
  );
  assert.equal(err.details?.reason, "DP_CONTEXT_LIMIT");
  assert.ok((err.details?.retryAfterMs ?? 0) > 0);
  // Another context has its own budget.
  await dp.evaluate({ epoch: params.epoch, blinded: batch(), rateContext: randomBytes(16) });
});

scenario(
  t,
  "a claim made after a private NOT_FOUND was cached is visible at once, through the change push",
  async () => {
    const csi = "tel:+447700900612";
    await flush(csi);
    const before = await resolve(csi, PRIVATE);
    assert.equal(before.answer?.status, pb.LookupStatus.NOT_FOUND);
    assert.ok((before.answer?.ttlSeconds ?? 0) >= 30, "the miss is cached far longer than this test waits");
    await writeMapping(t, "eu", csi, "parrot:private");
    await eventually(async () => {
      const r = await resolve(csi, PRIVATE);
      assert.deepEqual(
        r.answer?.mappings.map((m) => m.ssi),
        ["parrot:private"],
      );
      assert.equal(r.answer?.privateLookup, true);
    });
    // Cached once no event raced the lookup (one that did is served but not cached, rather than
    // asked again where the DP would see it).
    await eventually(async () => {
      const admin = t.net.channel(t.net.resolver.address, "admin").client(pb.ResolverService);
      const r = await admin.resolve({ csi, privacy: PRIVATE, explain: true });
      assert.equal(r.explanation?.cache, pb.Explanation_CacheState.HIT);
    });
    // A plain query is answered from the same cache entry, which still says how it was found.
    const plain = await resolve(csi, PLAIN);
    assert.equal(plain.answer?.status, pb.LookupStatus.FOUND);
    assert.equal(plain.answer?.privateLookup, true);
  },
);

scenario(
  t,
  "a private-lookup key the registry does not publish is refused; published again, it is used",
  async () => {
    const show = async () =>
      (
        JSON.parse((await t.cli(["root", "show", "--json", "--root", t.net.root.address])).stdout) as {
          dps: { id: string; privateLookupKeys?: string[] }[];
        }
      ).dps.find((d) => d.id === "eu");
    const snapshot = await t.net.channel(t.net.root.address, "cli").client(pb.RootService).getSnapshot({});
    const key = snapshot.snapshot?.dps.find((d) => d.id === "eu")?.privateLookupKeys[0];
    assert.ok(key, "the network published eu's key");
    await t.resolverApplied(await put("--no-private-lookup-keys"));
    try {
      await flush("tel:+447700900123");
      await rejectsWith(
        resolve("tel:+447700900123", PRIVATE),
        status.FAILED_PRECONDITION,
        /registry publishes no private-lookup key for DP "eu"/,
      );
      // Plain lookups go on.
      assert.equal((await resolve("tel:+447700900123", PLAIN)).answer?.status, pb.LookupStatus.FOUND);
    } finally {
      await t.resolverApplied(
        await put("--private-lookup-key", `${key.epoch}:${Buffer.from(key.publicKey).toString("hex")}`),
      );
    }
    await flush("tel:+447700900123");
    assert.equal((await resolve("tel:+447700900123", PRIVATE)).answer?.privateLookup, true);
    assert.deepEqual((await show())?.privateLookupKeys, [
      `${key.epoch}:${Buffer.from(key.publicKey).toString("hex")}`,
    ]);
  },
);

scenario(
  t,
  "a key rotation: the next key's table is built while the old key serves, published it is used, unpublished the old key goes",
  async () => {
    const admin = t.net.channel(t.net.dps.eu.address, "admin").client(pb.AuthoritativeAdminService);
    const keys = async () =>
      (await admin.getStatus({})).privateLookupKeys.map((k) => ({
        text: `${k.epoch}:${Buffer.from(k.publicKey).toString("hex")}`,
        epoch: k.epoch,
        state: pb.PrivateLookupKeyState[k.state],
      }));
    const [old] = await keys();
    assert.equal(old?.state, "CURRENT");
    const csi = "tel:+447700900123";
    const privately = async () => {
      await flush(csi);
      const r = await resolve(csi, PRIVATE);
      assert.equal(r.answer?.status, pb.LookupStatus.FOUND);
      assert.equal(r.answer?.privateLookup, true);
    };

    const rolled = await t.cli(["auth", "roll-private-key", "--dp", t.net.dps.eu.address]);
    assert.equal(rolled.code, 0, rolled.stderr);
    assert.match(rolled.stdout, /rolled to \d+:[0-9a-f]{64} (BUILDING|READY)/);
    const next = await eventually(async () => {
      const [o, n] = await keys();
      assert.deepEqual([o?.state, n?.state], ["CURRENT", "READY"]);
      return n as { text: string; epoch: number };
    });
    const shown = await t.cli(["auth", "status", "--dp", t.net.dps.eu.address]);
    assert.match(
      shown.stdout,
      new RegExp(`next step: publish the new key: .*--private-lookup-key ${next.text}`),
    );
    await privately();

    // Published beside the old key: every resolver moves to it; the old key is still served.
    await t.resolverApplied(await put("--private-lookup-key", old.text, "--private-lookup-key", next.text));
    await eventually(async () =>
      assert.deepEqual(
        (await keys()).map((k) => k.state),
        ["PREVIOUS", "CURRENT"],
      ),
    );
    await privately();
    await rejectsWith(admin.rollPrivateLookupKey({}), status.FAILED_PRECONDITION, /still published/);

    // Published alone: the old key and its table go at the next sweep (retireAfterSeconds 0).
    await t.resolverApplied(await put("--private-lookup-key", next.text));
    await eventually(async () =>
      assert.deepEqual(
        (await keys()).map((k) => [k.epoch, k.state]),
        [[next.epoch, "CURRENT"]],
      ),
    );
    const file = JSON.parse(readFileSync(join(t.net.dir, "dp-eu", "oprf-key.json"), "utf8")) as {
      keys: { epoch: number }[];
    };
    assert.deepEqual(
      file.keys.map((k) => k.epoch),
      [next.epoch],
    );
    await privately();
    const dp = t.net.channel(t.net.dps.eu.address, "resolver").client(pb.PrivateLookupService);
    const gone = await rejectsWith(
      dp.evaluate({ epoch: old.epoch, blinded: [oprfBlind(csi).blinded] }),
      status.FAILED_PRECONDITION,
    );
    assert.equal(gone.details?.reason, "EPOCH_CHANGED");
  },
);
