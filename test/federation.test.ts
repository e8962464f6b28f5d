// Federation (D4, R10-R12, R15): +44 is delegated to eu and federated to the third-party DP fed,
// which holds demo mappings of its own. Local queries see eu alone; federated ones merge both,
// carry each DP's seal and verify end to end; a DP that is down makes the answer partial.
import assert from "node:assert/strict";
import { status } from "@grpc/grpc-js";
import { pb } from "@mimi/core";
import { eventually, metricValue, rejectsWith, scenario, useNetwork, writeMapping } from "./harness.js";

const t = useNetwork(undefined, undefined, { thirdParty: true });
const FOUND = pb.LookupStatus.FOUND;
const NOT_FOUND = pb.LookupStatus.NOT_FOUND;
const FEDERATE = { mode: pb.FederationMode.FEDERATE };

const resolver = () => t.net.channel(t.net.resolver.address, "msp-bluebird").client(pb.ResolverService);
const resolve = (
  csi: string,
  federation?: Parameters<ReturnType<typeof resolver>["resolve"]>[0]["federation"],
) => resolver().resolve({ csi, ...(federation && { federation }) });
/** The CLI against this network's resolver and root. */
const mimi = (args: string[]) =>
  t.cli([...args, "--resolver", t.net.resolver.address, "--root", t.net.root.address]);
/** `mimi root dp put eu` at eu's address, publishing this federation default. */
const putEu = (mode: "local" | "federate") => t.putDp("eu", [t.net.dps.eu.address], "--federation", mode);
/** Waits until the resolver's filter of fed does (or does not) route federated lookups. */
const filterRouting = (routing: boolean) =>
  eventually(async () => {
    const f = (await t.stats()).filters.find((x) => x.dpId === "fed");
    assert.equal(f?.routing, routing, `fed's filter routing: ${f?.routing}`);
    return f;
  });
const outcomes = (r: pb.ResolveResponse) =>
  r.federation?.sources.map((s) => [s.dpId, s.authoritative, pb.DpSource_Outcome[s.outcome]]);

scenario(t, "a local query sees the authoritative DP alone; a federated one merges both DPs", async () => {
  const local = await resolve("tel:+447700900123");
  assert.deepEqual(local.answer?.dpIds, ["eu"]);
  assert.equal(local.federation, undefined);
  assert.deepEqual(
    local.answer?.mappings.map((m) => m.mspId),
    ["bluebird.example", "wirechat.example"],
  );

  const fed = await resolve("tel:+447700900123", FEDERATE);
  assert.equal(fed.answer?.status, FOUND);
  assert.deepEqual(fed.answer?.dpIds, ["eu", "fed"]);
  assert.deepEqual(outcomes(fed), [
    ["eu", true, "ANSWERED"],
    ["fed", false, "ANSWERED"],
  ]);
  assert.equal(fed.federation?.partial, false);
  // Each DP's seal travels with the merge, and each mapping names its DP (R15).
  assert.ok(fed.federation?.sources.every((s) => (s.seal?.signature.length ?? 0) > 0));
  assert.equal(fed.answer?.seal, undefined);
  // The federated part is cached under a key of its own, which no caller's text reaches.
  await rejectsWith(resolve("fed:fed/tel:+447700900123"), status.INVALID_ARGUMENT);
  // fed's default was registered after eu's (the demo loads eu first): the later default leads
  // (GLADOS's timestamp rule), and it is the only mapping marked default.
  assert.deepEqual(
    fed.answer?.mappings.map((m) => [m.mspId, m.dpId, m.isDefault]),
    [
      ["parrot.example", "fed", true],
      ["bluebird.example", "eu", false],
      ["wirechat.example", "eu", false],
    ],
  );
});

scenario(t, "the CLI's --verify checks a federated answer end to end", async () => {
  const r = await mimi(["resolve", "tel:+447700900123", "--federate", "--verify"]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /at DP fed/);
  assert.match(r.stdout, /verified: the merge of the sealed answers of DP\(s\) eu, fed/);
  const json = await mimi(["resolve", "tel:+447700900456", "--federate", "--json"]);
  assert.equal(json.code, 0, json.stderr);
  const parsed = JSON.parse(json.stdout) as { status: string; mappings: { msp: string; dp: string }[] };
  assert.equal(parsed.status, "FOUND");
  assert.deepEqual(
    parsed.mappings.map((m) => [m.msp, m.dp]),
    [["wirechat.example", "fed"]],
  );
});

scenario(
  t,
  "a federated DP whose filter rules the CSI out is not asked, and the answer is not partial",
  async () => {
    const f = await filterRouting(true);
    // Sized for the DP's CSIs (at least 1,024) at 1% false positives: 9.6 bits a CSI, 7 hashes.
    assert.equal(f?.hashes, 7);
    assert.ok((f?.bits ?? 0n) >= 9_792n);
    const served = await t.lookupsServed("fed");
    const r = await resolve("tel:+447700900999", FEDERATE);
    assert.equal(r.answer?.status, NOT_FOUND);
    assert.deepEqual(outcomes(r), [
      ["eu", true, "ANSWERED"],
      ["fed", false, "SKIPPED_BY_FILTER"],
    ]);
    assert.equal(r.federation?.partial, false);
    assert.equal(await t.lookupsServed("fed"), served);
    // A number fed holds passes its filter and is asked (or answered from its cached part).
    const held = await resolve("tel:+447700900456", FEDERATE);
    assert.deepEqual(outcomes(held)?.[1], ["fed", false, "ANSWERED"]);
    // Asked to ignore filters, the resolver asks fed too, and the answer can be shown complete.
    const all = await resolve("tel:+447700900999", { mode: pb.FederationMode.FEDERATE, ignoreFilters: true });
    assert.deepEqual(outcomes(all)?.[1], ["fed", false, "ANSWERED"]);
    assert.ok((await t.lookupsServed("fed")) > served);
    const cli = await mimi(["resolve", "tel:+447700900999", "--federate", "--verify"]);
    assert.equal(cli.code, 0, cli.stderr);
    assert.match(cli.stdout, /DP fed: not asked: its filter rules the CSI out/);
    assert.match(cli.stdout, /skipped by their filters, the resolver's word/);
    // Operators see the same on the resolver's metrics (a rendering is served for a second).
    const ops = t.net.resolver.opsPort;
    await eventually(async () => {
      assert.ok((await metricValue(ops, 'mimi_resolver_federated_sources_total{outcome="skipped"}')) >= 2);
      assert.equal(await metricValue(ops, 'mimi_resolver_csi_filter_routing{dp="fed"}'), 1);
      assert.ok((await metricValue(ops, "mimi_resolver_csi_filter_bytes")) >= 9_792 / 8);
    });
  },
);

scenario(t, "a number only the third-party DP holds is NOT_FOUND locally and FOUND federated", async () => {
  const local = await resolve("tel:+447700900456");
  assert.equal(local.answer?.status, NOT_FOUND);
  const fed = await resolve("tel:+447700900456", FEDERATE);
  assert.equal(fed.answer?.status, FOUND);
  assert.deepEqual(
    fed.answer?.mappings.map((m) => [m.mspId, m.dpId]),
    [["wirechat.example", "fed"]],
  );
});

scenario(
  t,
  "a client-selected DP list is honoured, and a DP not federated for the range is refused",
  async () => {
    const listed = await resolve("tel:+447700900123", {
      mode: pb.FederationMode.FEDERATE,
      dps: pb.FederationOptions_DpSelection.LISTED,
      dpIds: ["fed"],
    });
    assert.deepEqual(listed.answer?.dpIds, ["eu", "fed"]);
    const err = await rejectsWith(
      resolve("tel:+447700900123", {
        mode: pb.FederationMode.FEDERATE,
        dps: pb.FederationOptions_DpSelection.LISTED,
        dpIds: ["us"],
      }),
      status.INVALID_ARGUMENT,
    );
    assert.match(err.message, /DP "us" is not a federated DP of e164:44/);
    assert.equal(err.details?.reason, "UNKNOWN_DP");
    // +1 has no federated DPs: federating asks us alone, and says so.
    const us = await resolve("tel:+12025550142", FEDERATE);
    assert.deepEqual(outcomes(us), [["us", true, "ANSWERED"]]);
  },
);

scenario(
  t,
  "a new sign-up at the federated DP is routable at once, through its filter's additions",
  async () => {
    await filterRouting(true);
    const before = await resolve("tel:+447700900777", FEDERATE);
    assert.equal(before.answer?.status, NOT_FOUND);
    assert.deepEqual(outcomes(before)?.[1], ["fed", false, "SKIPPED_BY_FILTER"]);
    const position = (await filterRouting(true))?.position ?? 0n;
    await writeMapping(t, "fed", "tel:+447700900777", "parrot:new");
    // fed's filter sends the new CSI's bits; no negative cache stands in the way (nothing was cached).
    await eventually(async () => assert.ok(((await filterRouting(true))?.position ?? 0n) > position));
    await eventually(async () => {
      const r = await resolve("tel:+447700900777", FEDERATE);
      assert.deepEqual(
        r.answer?.mappings.map((m) => [m.ssi, m.dpId]),
        [["parrot:new", "fed"]],
      );
    });
  },
);

scenario(
  t,
  "each DP a federated lookup asks is charged to the caller, a federated one more; cached parts are free",
  async () => {
    // A number fed holds (so its filter lets the lookup through), asked for the first time.
    const position = (await filterRouting(true))?.position ?? 0n;
    await writeMapping(t, "fed", "tel:+447700900321", "parrot:charged");
    await eventually(async () => assert.ok(((await filterRouting(true))?.position ?? 0n) > position));
    // An identity the resolver's quotas do not list has one user's budget (50 a DP a day), which
    // refills too slowly to hide a charge.
    const asAdmin = t.net.channel(t.net.resolver.address, "admin").client(pb.ResolverService);
    const quota = async () => {
      const q = await asAdmin.getQuota({});
      return Object.fromEntries(q.dps.map((d) => [d.dpId, d.remaining]));
    };
    const q0 = await quota();
    const r = await asAdmin.resolve({ csi: "tel:+447700900321", federation: FEDERATE });
    assert.deepEqual(outcomes(r)?.[1], ["fed", false, "ANSWERED"]);
    const q1 = await quota();
    assert.equal((q0.eu ?? 0n) - (q1.eu ?? 0n), 1n, "eu charged one lookup");
    // A federated DP's part costs the resolver's fan-out cost (quotas.fanOutCostPerExtraDp, 2).
    assert.equal((q0.fed ?? 0n) - (q1.fed ?? 0n), 2n, "fed charged the fan-out cost");
    await asAdmin.resolve({ csi: "tel:+447700900321", federation: FEDERATE });
    const q2 = await quota();
    // Budgets refill over the day, so a second look may only have gained.
    assert.ok((q2.fed ?? 0n) >= (q1.fed ?? 0n), "a cached part is not charged again");
  },
);

scenario(t, "a federated DP that is down gives a partial answer, marked and still verifiable", async () => {
  const fed = t.net.dps.fed;
  assert.ok(fed);
  await fed.stop();
  try {
    // Without its filter stream the resolver asks fed, which is down: a failure, not a skip.
    await filterRouting(false);
    const r = await resolve("tel:+447700900888", FEDERATE);
    assert.equal(r.federation?.partial, true);
    assert.deepEqual(outcomes(r), [
      ["eu", true, "ANSWERED"],
      ["fed", false, "FAILED"],
    ]);
    assert.match(r.federation?.sources[1]?.failure ?? "", /DP "fed"/);
    const cli = await mimi(["resolve", "tel:+447700900888", "--federate", "--verify"]);
    assert.equal(cli.code, 0, cli.stderr);
    assert.match(cli.stdout, /PARTIAL/);
    const ops = t.net.resolver.opsPort;
    await eventually(async () => {
      assert.ok((await metricValue(ops, "mimi_resolver_federated_partial_total")) >= 2);
      assert.ok((await metricValue(ops, 'mimi_resolver_federated_sources_total{outcome="failed"}')) >= 2);
      assert.equal(await metricValue(ops, 'mimi_resolver_csi_filter_routing{dp="fed"}'), 0);
    });
  } finally {
    await fed.start({ samePort: true });
    await filterRouting(true);
  }
});

scenario(
  t,
  "a DP that publishes federation as its default gets federated answers for plain queries",
  async () => {
    await t.resolverApplied(await putEu("federate"));
    try {
      // A plain request (the resolver's cache-hit fast path included) follows the DP's default (R11).
      await resolve("tel:+447700900123");
      const r = await resolve("tel:+447700900123");
      assert.deepEqual(r.answer?.dpIds, ["eu", "fed"]);
      const local = await resolve("tel:+447700900123", { mode: pb.FederationMode.LOCAL });
      assert.equal(local.federation, undefined);
      const show = await t.cli(["root", "show", "--json", "--root", t.net.root.address]);
      const dps = (JSON.parse(show.stdout) as { dps: { id: string; federation: { defaultMode: string } }[] })
        .dps;
      assert.equal(dps.find((d) => d.id === "eu")?.federation.defaultMode, "federate");
    } finally {
      await t.resolverApplied(await putEu("local"));
    }
  },
);

scenario(
  t,
  "filter streams resume: across a clean restart of the DP without a whole filter, and a restarted resolver routes again",
  async () => {
    const fed = t.net.dps.fed;
    assert.ok(fed);
    const before = await filterRouting(true);
    await fed.stop();
    await fed.start({ samePort: true });
    // fed kept its version (csi-filter.bin): the resolver resumes from its position and is sent
    // only what is new, here one sign-up.
    await writeMapping(t, "fed", "tel:+447700900654", "parrot:resumed");
    const after = await eventually(async () => {
      const f = await filterRouting(true);
      assert.ok((f?.position ?? 0n) > (before?.position ?? 0n), "the sign-up's bits arrived");
      return f;
    });
    assert.equal(after?.versions, before?.versions, "no whole filter was sent again");
    const r = await resolve("tel:+447700900654", FEDERATE);
    assert.deepEqual(
      r.answer?.mappings.map((m) => [m.ssi, m.dpId]),
      [["parrot:resumed", "fed"]],
    );
    // A resolver holds filters in memory: restarted, it takes fed's whole, routes by it, and a
    // sign-up made while it was down is found.
    await t.net.resolver.stop();
    await writeMapping(t, "fed", "tel:+447700900655", "parrot:while-down");
    await t.net.resolver.start({ samePort: true });
    const fresh = await filterRouting(true);
    assert.equal(fresh?.versions, 1n);
    assert.ok((fresh?.position ?? 0n) > (after?.position ?? 0n), "the whole filter holds the later sign-up");
    const down = await resolve("tel:+447700900655", FEDERATE);
    assert.deepEqual(
      down.answer?.mappings.map((m) => [m.ssi, m.dpId]),
      [["parrot:while-down", "fed"]],
    );
    const skipped = await resolve("tel:+447700900656", FEDERATE);
    assert.deepEqual(outcomes(skipped)?.[1], ["fed", false, "SKIPPED_BY_FILTER"]);
  },
);
