// Authoritative replicas (issue 17) across real processes: the network's eu DP as primary and
// two secondaries that follow it (the same DP: its certificate, signing key and root). Claims
// made at the primary are served by both (lookups, change streams, CSI filters) and reach a
// resolver through either; writes at a
// secondary are refused naming the primary; a secondary restarted from an old copy catches up;
// with the primary gone, lookups go on, a secondary is promoted, claims resume there, and the
// old primary, brought back, is fenced and follows; with ackFollowers 1 a kill -9 of the primary
// right after an acknowledged write loses nothing. Private lookups are on: every endpoint holds
// the primary's key and answers them from its own table. The scenarios run in order and share
// the replicas (started by whichever runs first).
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { after } from "node:test";
import { fromBinary } from "@bufbuild/protobuf";
import { status } from "@grpc/grpc-js";
import {
  FilterBits,
  layoutOf,
  loadPublicKey,
  openEntry,
  oprfBlind,
  oprfFinalize,
  pb,
  slotOf,
  verifyPrivateParams,
} from "@mimi/core";
import { devSigningKeyPaths, type ServerProcess, startDpSecondary, waitUntilServing } from "@mimi/devnet";
import { eventually, metricValue, rejectsWith, scenario, useNetwork, writeParrotMapping } from "./harness.js";

const t = useNetwork(undefined, undefined, { privateLookups: true });

const extras: ServerProcess[] = [];
after(async () => {
  await Promise.all(extras.map((p) => p.stop()));
});

/** Rewrites `proc`'s config with `patch` (merged one level deep) and restarts it on its port. */
async function reconfigure(proc: ServerProcess, patch: Record<string, Record<string, unknown>>) {
  const config = JSON.parse(readFileSync(proc.configPath, "utf8")) as Record<string, Record<string, unknown>>;
  for (const [k, v] of Object.entries(patch)) config[k] = { ...config[k], ...v };
  writeFileSync(proc.configPath, `${JSON.stringify(config, null, 2)}\n`);
  if (proc.running) await proc.stop();
  await proc.start({ samePort: true });
}

let s1: ServerProcess;
let s2: ServerProcess;
let started: Promise<void> | undefined;
/** Two secondaries of eu, each knowing the DP's other endpoints, listed in the registry. */
const withReplicas = () => {
  started ??= (async () => {
    const primary = t.net.dps.eu.address;
    const overrides = { privateLookups: { enabled: true } };
    s1 = await startDpSecondary(t.net, { name: "dp-eu-s1", overrides });
    extras.push(s1);
    s2 = await startDpSecondary(t.net, { name: "dp-eu-s2", peers: [primary, s1.address], overrides });
    extras.push(s2);
    await reconfigure(s1, { replication: { peers: [primary, s2.address] } });
    await Promise.all([waitUntilServing(t.net, s1), waitUntilServing(t.net, s2)]);
    await t.resolverApplied(await t.putDp("eu", [primary, s1.address, s2.address]));
  })();
  return started;
};

const lookupAt = (proc: ServerProcess, csi: string) =>
  t.net
    .channel(proc.address, "resolver")
    .client(pb.AuthoritativeService)
    .lookup({ csi }, { timeoutMs: 3_000 });
const ssisAt = async (proc: ServerProcess, csi: string) =>
  ((await lookupAt(proc, csi)).answer?.mappings ?? []).map((m) => m.ssi).sort();
const statusOf = (proc: ServerProcess) =>
  t.net
    .channel(proc.address, "admin")
    .client(pb.AuthoritativeAdminService)
    .getStatus({}, { timeoutMs: 3_000 });
const claimsAt = (proc: ServerProcess) => t.net.channel(proc.address, "msp-parrot").client(pb.ClaimService);
const write = (proc: ServerProcess, csi: string, ssi: string) =>
  writeParrotMapping(claimsAt(proc), t.net.signingKey("msp-parrot"), "eu", csi, ssi);

scenario(
  t,
  "a write at the primary is served by both secondaries, with the primary's log and in their CSI filters, and reaches a resolver through them",
  async () => {
    await withReplicas();
    await write(t.net.dps.eu, "tel:+447700900551", "@rep-1");
    for (const s of [s1, s2]) {
      await eventually(async () => assert.deepEqual(await ssisAt(s, "tel:+447700900551"), ["@rep-1"]));
    }
    const [p, a] = await Promise.all([statusOf(t.net.dps.eu), statusOf(s1)]);
    assert.equal(p.replication?.role, "primary");
    assert.equal(a.replication?.role, "secondary");
    assert.equal(a.replication?.followerState, "following");
    assert.equal(a.replication?.appliedSeq, p.replication?.appliedSeq, "the same log, to the same event");
    await eventually(async () =>
      assert.equal((await statusOf(t.net.dps.eu)).replication?.followers.length, 2),
    );
    // A resolver's change stream continues at a secondary: same log id, same position.
    const watch = async (proc: ServerProcess) => {
      const stream = t.net
        .channel(proc.address, "resolver")
        .client(pb.AuthoritativeService)
        .watchChanges({}, { signal: AbortSignal.timeout(3_000) });
      for await (const m of stream) if (m.event.case === "start") return m.event.value;
      throw new Error("no start");
    };
    const [ps, ss] = await Promise.all([watch(t.net.dps.eu), watch(s1)]);
    assert.equal(ss.logId, ps.logId);
    assert.deepEqual(ss.hashKey, ps.hashKey);
    // Its CSI filter (federated routing) holds the write, and a later write reaches it as an
    // addition on the same stream (each endpoint builds its own filter from its store). A DP
    // serves its filter only while a range names it as a federated DP: +800, us's, names eu.
    await rejectsWith(
      filterAt(s2, () => true),
      status.FAILED_PRECONDITION,
      /no range of the registry names this DP as a federated DP/,
    );
    const added = await t.cli(
      ["root", "delegation", "add", "+800", "--dp", "us", "--federated", "eu"].concat([
        "--root",
        t.net.root.address,
      ]),
    );
    assert.equal(added.code, 0, added.stderr);
    await eventually(() => filterAt(s2, (f) => f.mayHold("tel:+447700900551")));
    const later = filterAt(s2, (f) => f.mayHold("tel:+447700900559"));
    await write(t.net.dps.eu, "tel:+447700900559", "@rep-filter");
    await later;
    // The resolver finds it (whichever endpoint it asks).
    const r = await t.resolve("tel:+447700900551");
    assert.deepEqual(
      r.answer?.mappings.map((m) => m.ssi),
      ["@rep-1"],
    );
    // Its lookups are spread per call across the DP's endpoints, not kept to one connection.
    const endpoints = [t.net.dps.eu, s1, s2];
    const served = () => Promise.all(endpoints.map(async (p) => (await statusOf(p)).lookupsServed));
    const before = await served();
    for (let i = 0; i < 30; i++) await t.resolve(`tel:+4477009006${String(i).padStart(2, "0")}`);
    const now = await served();
    endpoints.forEach((p, i) => {
      const n = (now[i] as bigint) - (before[i] as bigint);
      assert.ok(n >= 1n, `${p.name} answered ${n} of 30 lookups`);
    });
  },
);

/**
 * Follows `proc`'s CSI filter (WatchFilter) as a resolver does until `done(bits)` holds for the
 * filter it has (whole, with the additions received since); fails after 10 s.
 */
async function filterAt(proc: ServerProcess, done: (bits: FilterBits) => boolean): Promise<void> {
  const stream = t.net
    .channel(proc.address, "resolver")
    .client(pb.CsiFilterService)
    .watchFilter({}, { signal: AbortSignal.timeout(10_000) });
  let building: FilterBits | undefined;
  let bits: FilterBits | undefined;
  for await (const m of stream) {
    if (m.item.case === "header") {
      const h = m.item.value;
      building = new FilterBits(h.key, { bits: Number(h.bits), hashes: h.hashes });
    } else if (m.item.case === "chunk" && building) {
      building.bytes.set(m.item.value.data, Number(m.item.value.offset));
      if (m.item.value.last) bits = building;
    } else if (m.item.case === "additions" && bits) {
      for (const b of m.item.value.bits) bits.set(Number(b));
    }
    if (bits && done(bits)) return;
  }
  throw new Error(`${proc.name}'s filter stream ended first`);
}

/** A resolver's private lookup of `csi` at `proc` alone: the key it evaluated with, and what the entry says. */
async function privatelyAt(proc: ServerProcess, csi: string) {
  const dp = t.net.channel(proc.address, "resolver").client(pb.PrivateLookupService);
  const raw = await dp.getPrivateParameters({}, { timeoutMs: 3_000 });
  const dpKey = loadPublicKey(devSigningKeyPaths(t.net.pkiDir, "dp-eu").publicKeyFile);
  const params = verifyPrivateParams(raw.statement, raw.signature, "eu", dpKey);
  assert.ok(!("problem" in params), `${proc.name}'s parameters verify with eu's registry key`);
  const blinded = oprfBlind(csi);
  const ev = await dp.evaluate(
    { epoch: params.epoch, blinded: [blinded.blinded], rateContext: randomBytes(16) },
    { timeoutMs: 3_000 },
  );
  const [y] = oprfFinalize([blinded], ev.evaluated, params.publicKey, ev.proof);
  const layout = layoutOf(params);
  const slot = slotOf(y as Uint8Array, layout);
  const bucket = await dp.getBucket({ epoch: params.epoch, bucket: slot.bucket }, { timeoutMs: 3_000 });
  const plain = openEntry(layout, slot, bucket.data);
  return {
    key: Buffer.from(params.publicKey).toString("hex"),
    ssis: plain ? fromBinary(pb.AnswerSchema, plain).mappings.map((m) => m.ssi) : [],
    logId: bucket.logId,
    appliedSeq: bucket.appliedSeq,
  };
}

scenario(
  t,
  "private lookups: every endpoint evaluates with the primary's key and answers from its own table, and a resolver's private lookups reach them all",
  async () => {
    await withReplicas();
    await write(t.net.dps.eu, "tel:+447700900561", "@private-rep");
    const endpoints = [t.net.dps.eu, s1, s2];
    const primary = await privatelyAt(t.net.dps.eu, "tel:+447700900561");
    assert.deepEqual(primary.ssis, ["@private-rep"]);
    for (const s of [s1, s2]) {
      await eventually(async () => {
        const at = await privatelyAt(s, "tel:+447700900561");
        assert.deepEqual(at.ssis, ["@private-rep"], `${s.name} answers privately`);
        assert.equal(at.key, primary.key, `${s.name} holds the primary's key`);
        assert.equal(at.logId, primary.logId, "its bucket names the DP's log");
        assert.ok(at.appliedSeq >= primary.appliedSeq, "and says it had applied the write");
      });
    }
    // The secondaries' status shows the key the registry publishes as current.
    for (const s of [s1, s2]) {
      const keys = (await statusOf(s)).privateLookupKeys;
      assert.equal(keys.length, 1);
      assert.equal(keys[0]?.state, pb.PrivateLookupKeyState.CURRENT);
    }
    // Through the resolver, privately: answered, and spread over the three endpoints (each
    // lookup is evaluated where it goes; buckets are mostly kept by the resolver).
    const resolver = t.net.channel(t.net.resolver.address, "msp-bluebird").client(pb.ResolverService);
    const served = () =>
      Promise.all(endpoints.map((p) => metricValue(p.opsPort, "mimi_dp_private_evaluations_total")));
    const before = await served();
    const r = await resolver.resolve({ csi: "tel:+447700900561", privacy: pb.PrivacyMode.PRIVATE });
    assert.deepEqual(
      r.answer?.mappings.map((m) => m.ssi),
      ["@private-rep"],
    );
    assert.equal(r.answer?.privateLookup, true);
    for (let i = 0; i < 30; i++) {
      await resolver.resolve({
        csi: `tel:+4477009008${String(i).padStart(2, "0")}`,
        privacy: pb.PrivacyMode.PRIVATE,
      });
    }
    // Metrics are read as scraped (kept a moment between scrapes).
    await eventually(async () => {
      const now = await served();
      endpoints.forEach((p, i) => {
        const n = (now[i] as number) - ((before[i] as number) || 0);
        assert.ok(n >= 1, `${p.name} evaluated ${n} of 31 lookups`);
      });
    });
  },
);

scenario(t, "writes sent to a secondary are refused, naming the primary", async () => {
  await withReplicas();
  const err = await rejectsWith(
    write(s1, "tel:+447700900552", "@nope"),
    status.FAILED_PRECONDITION,
    /primary/,
  );
  assert.equal(err.details?.reason, "NOT_PRIMARY");
  assert.match(err.details?.metadata?.primary ?? "", new RegExp(t.net.dps.eu.address));
  const admin = t.net.channel(s1.address, "admin").client(pb.AuthoritativeAdminService);
  await rejectsWith(
    admin.enrolMsp({
      mspId: "x.example",
      tlsIdentity: "x",
      enrolledUsers: 1n,
      signingPublicKey: new Uint8Array(32),
    }),
    status.FAILED_PRECONDITION,
  );
  assert.deepEqual(await ssisAt(s1, "tel:+447700900552"), []);
});

scenario(t, "a secondary stopped while the primary writes catches up when it comes back", async () => {
  await withReplicas();
  await s2.stop();
  await write(t.net.dps.eu, "tel:+447700900553", "@while-away");
  await s2.start({ samePort: true });
  await waitUntilServing(t.net, s2);
  await eventually(async () => assert.deepEqual(await ssisAt(s2, "tel:+447700900553"), ["@while-away"]));
});

scenario(
  t,
  "the registry places each endpoint: a secondary it places outside its jurisdiction neither follows nor serves (H2)",
  async () => {
    await withReplicas();
    const primary = t.net.dps.eu.address;
    // s1 knows its registry address (startDpSecondary configured it for the EU).
    await reconfigure(s1, { replication: { endpoint: s1.address } });
    await waitUntilServing(t.net, s1);
    const elsewhere = await t.putDp(
      "eu",
      [primary, s1.address, s2.address],
      "--endpoint-jurisdiction",
      `${s1.address}=CH`,
    );
    const shown = await t.cli(["root", "show", "--root", t.net.root.address]);
    assert.match(shown.stdout, new RegExp(`${s1.address}=CH`), "the registry shows where it is");
    const health = t.net.channel(s1.address, "cli").client(pb.Health);
    await eventually(async () =>
      assert.equal(
        (await health.check({ service: "" }, { timeoutMs: 2_000 })).status,
        pb.HealthCheckResponse_ServingStatus.NOT_SERVING,
      ),
    );
    await rejectsWith(lookupAt(s1, "tel:+447700900551"), status.UNAVAILABLE, /"CH"/);
    // Private lookups too: it holds the keys, but answers nothing from a store it may not serve.
    await rejectsWith(privatelyAt(s1, "tel:+447700900551"), status.UNAVAILABLE, /"CH"/);
    await t.resolverApplied(elsewhere);
    // Resolvers still list it (the registry does), fail over past it, and every lookup is answered.
    for (let i = 0; i < 10; i++) {
      const r = await t.resolve(`tel:+4477009007${String(i).padStart(2, "0")}`);
      assert.deepEqual(r.answer?.dpIds, ["eu"]);
    }
    // A put that does not mention placements keeps them (as it keeps the DP's key).
    await t.putDp("eu", [primary, s1.address, s2.address]);
    assert.match(
      (await t.cli(["root", "show", "--root", t.net.root.address])).stdout,
      new RegExp(`${s1.address}=CH`),
    );
    // Back in the EU, it follows and serves again.
    await t.resolverApplied(
      await t.putDp("eu", [primary, s1.address, s2.address], "--endpoint-jurisdiction", `${s1.address}=EU`),
    );
    await waitUntilServing(t.net, s1, 20_000);
    assert.deepEqual(await ssisAt(s1, "tel:+447700900551"), ["@rep-1"]);
  },
);

scenario(
  t,
  "the primary goes: lookups go on, a secondary is promoted, claims resume there, and the old primary is fenced",
  async () => {
    await withReplicas();
    const p = t.net.dps.eu;
    await write(p, "tel:+447700900554", "@before-loss");
    await eventually(async () => assert.deepEqual(await ssisAt(s1, "tel:+447700900554"), ["@before-loss"]));
    await eventually(async () => assert.deepEqual(await ssisAt(s2, "tel:+447700900554"), ["@before-loss"]));
    const key = (await privatelyAt(p, "tel:+447700900554")).key;
    await p.kill();

    // Lookups go on: the resolver has not asked for this CSI yet, and the primary is listed first.
    const r = await t.resolve("tel:+447700900554");
    assert.deepEqual(
      r.answer?.mappings.map((m) => m.ssi),
      ["@before-loss"],
    );
    await rejectsWith(write(s1, "tel:+447700900555", "@refused"), status.FAILED_PRECONDITION);

    // Promote s2: its vote and s1's are two of the DP's three endpoints.
    const promoted = await t.net
      .channel(s2.address, "admin")
      .client(pb.AuthoritativeAdminService)
      .promote({}, { timeoutMs: 20_000 });
    assert.equal(promoted.epoch, 2n);
    await write(s2, "tel:+447700900555", "@after-promotion");
    await eventually(async () =>
      assert.deepEqual(await ssisAt(s1, "tel:+447700900555"), ["@after-promotion"]),
    );
    // Private lookups go on with the primary's key: the new primary and s1 answer the new claim.
    for (const e of [s2, s1]) {
      await eventually(async () => {
        const at = await privatelyAt(e, "tel:+447700900555");
        assert.deepEqual([at.ssis, at.key], [["@after-promotion"], key], e.name);
      });
    }

    // The old primary comes back, knowing its peers: it learns of epoch 2 before it writes,
    // follows the new primary, and refuses writes.
    await reconfigure(p, { replication: { peers: [s1.address, s2.address] } });
    await eventually(async () => assert.equal((await statusOf(p)).replication?.role, "secondary"));
    await rejectsWith(write(p, "tel:+447700900556", "@split-brain"), status.FAILED_PRECONDITION);
    await eventually(async () =>
      assert.deepEqual(await ssisAt(p, "tel:+447700900555"), ["@after-promotion"]),
    );
    assert.deepEqual(await ssisAt(s2, "tel:+447700900556"), []);
    // As a secondary, it holds the new primary's keys (the same) and answers privately too.
    await eventually(async () =>
      assert.deepEqual((await privatelyAt(p, "tel:+447700900555")).ssis, ["@after-promotion"]),
    );
  },
  { timeoutMs: 120_000 },
);

scenario(
  t,
  "with ackFollowers 1, a kill -9 of the primary right after an acknowledged write loses nothing",
  async () => {
    await withReplicas();
    const primary = s2; // promoted by the scenario before
    assert.equal((await statusOf(primary)).replication?.role, "primary");
    // The setting is the DP's: every endpoint has it (a promotion counts on it too).
    for (const proc of [s1, t.net.dps.eu, primary])
      await reconfigure(proc, { replication: { ackFollowers: 1 } });
    // With no secondary following, a write is refused before anything is stored.
    await Promise.all([s1.stop(), t.net.dps.eu.stop()]);
    await eventually(async () => assert.equal((await statusOf(primary)).replication?.followers.length, 0));
    const refused = await rejectsWith(write(primary, "tel:+447700900557", "@durable"), status.UNAVAILABLE);
    assert.equal(refused.details?.reason, "NOT_ENOUGH_SECONDARIES");
    await Promise.all([s1.start({ samePort: true }), t.net.dps.eu.start({ samePort: true })]);
    // A write counts only followers that have acknowledged a change (a stream just opened has
    // not yet, and on a busy machine its first acknowledgement can trail the status's list).
    await eventually(async () => {
      const followers = (await statusOf(primary)).replication?.followers ?? [];
      assert.equal(followers.filter((f) => f.ackedSeq > 0n).length, 2);
    });
    await write(primary, "tel:+447700900557", "@durable");
    await primary.kill();
    // Promote whichever endpoint holds the write: a promotion refuses to lose changes another
    // endpoint holds, and names it.
    const promote = (proc: ServerProcess) =>
      t.net
        .channel(proc.address, "admin")
        .client(pb.AuthoritativeAdminService)
        .promote({}, { timeoutMs: 20_000 });
    const others = [s1, t.net.dps.eu];
    let next: ServerProcess = others[0] as ServerProcess;
    try {
      await promote(next);
    } catch (err) {
      assert.match((err as Error).message, /promote/);
      next = others[1] as ServerProcess;
      await promote(next);
    }
    assert.deepEqual(await ssisAt(next, "tel:+447700900557"), ["@durable"]);
    await primary.start({ samePort: true });
  },
  { timeoutMs: 120_000 },
);
