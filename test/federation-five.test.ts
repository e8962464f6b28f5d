// Five DPs on one range (issue 15's proof): +44 is delegated to eu and federated to fed and three
// more DPs, each a separate process. A claim at one of them is found by a federated lookup that
// asks that DP alone (besides eu), the others ruled out by their filters; lookups of numbers
// nobody holds ask only eu (false positives counted); and a DP that builds a new version of its
// filter loses no sign-up.
import assert from "node:assert/strict";
import { after } from "node:test";
import { bulkRegister } from "@mimi/client";
import { bulkRecord, keyToProto, parseDelegationKeyText, pb } from "@mimi/core";
import { type ServerProcess, startDp, waitForSerial } from "@mimi/devnet";
import { eventually, scenario, useNetwork, writeParrotMapping } from "./harness.js";

const t = useNetwork(undefined, undefined, { thirdParty: true });
const EXTRA = ["f2", "f3", "f4"];
const FEDERATED = ["fed", ...EXTRA];
const extra = new Map<string, ServerProcess>();
const ALL = { mode: pb.FederationMode.FEDERATE, dps: pb.FederationOptions_DpSelection.ALL };

// Started by the first scenario (root-level before hooks do not wait for the harness's).
let started: Promise<void> | undefined;
const fiveDps = () => {
  started ??= startFive();
  return started;
};
async function startFive(): Promise<void> {
  let serial = 0n;
  for (const id of EXTRA) {
    const started = await startDp(t.net, id);
    extra.set(id, started.proc);
    serial = started.serial;
  }
  const update = await t.net
    .channel(t.net.root.address, "admin")
    .client(pb.RegistryAdminService)
    .updateDelegation({
      key: keyToProto(parseDelegationKeyText("+44")),
      federatedDpIds: FEDERATED,
      setFederatedDpIds: true,
    });
  serial = update.serial > serial ? update.serial : serial;
  // Every DP (claims are refused for ranges a DP does not serve) and the resolver follow it.
  for (const p of [...extra.values()]) {
    await waitForSerial(t.net.channel(p.address, "admin").client(pb.AuthoritativeAdminService), serial);
  }
  await t.resolverApplied(`(serial ${serial})`);
}
after(async () => {
  await Promise.all([...extra.values()].map((p) => p.stop()));
});

const resolver = () => t.net.channel(t.net.resolver.address, "msp-bluebird").client(pb.ResolverService);
const addressOf = (id: string) => (id === "fed" ? t.net.dps.fed?.address : extra.get(id)?.address) as string;
const served = async (id: string) =>
  (await t.net.channel(addressOf(id), "admin").client(pb.AuthoritativeAdminService).getStatus({}))
    .lookupsServed;
/** The resolver's filter of each federated DP, once every one routes. */
const filters = () =>
  eventually(async () => {
    const fs = (await t.stats()).filters.filter((f) => FEDERATED.includes(f.dpId));
    assert.deepEqual(
      fs.map((f) => [f.dpId, f.routing]),
      [...FEDERATED].sort().map((id) => [id, true]),
    );
    return new Map(fs.map((f) => [f.dpId, f]));
  });
/** Writes a mapping at DP `id` and waits until the resolver's filter of it has the new bits. */
async function claimAt(id: string, csi: string, ssi: string): Promise<void> {
  const before = (await filters()).get(id)?.position ?? 0n;
  const claims = t.net.channel(addressOf(id), "msp-parrot").client(pb.ClaimService);
  await writeParrotMapping(claims, t.net.signingKey("msp-parrot"), id, csi, ssi);
  await eventually(async () => assert.ok(((await filters()).get(id)?.position ?? 0n) > before));
}

scenario(t, "a claim at one of five DPs is found by asking that DP alone", async () => {
  await fiveDps();
  await claimAt("f3", "tel:+447700901000", "parrot:five");
  const before = new Map(await Promise.all(FEDERATED.map(async (id) => [id, await served(id)] as const)));
  const r = await resolver().resolve({ csi: "tel:+447700901000", federation: ALL });
  assert.deepEqual(
    r.answer?.mappings.map((m) => [m.ssi, m.dpId]),
    [["parrot:five", "f3"]],
  );
  const asked = r.federation?.sources
    .filter((s) => s.outcome === pb.DpSource_Outcome.ANSWERED)
    .map((s) => s.dpId);
  assert.deepEqual(asked, ["eu", "f3"]);
  for (const id of FEDERATED) {
    const grew = (await served(id)) - (before.get(id) ?? 0n);
    assert.equal(grew, id === "f3" ? 1n : 0n, `lookups at ${id}`);
  }
});

scenario(t, "lookups of numbers nobody holds ask eu alone, but for measured false positives", async () => {
  await fiveDps();
  await filters();
  const N = 200;
  let federatedAsked = 0;
  for (let i = 0; i < N; i++) {
    const r = await resolver().resolve({ csi: `tel:+4477009${String(20_000 + i)}`, federation: ALL });
    assert.equal(r.answer?.status, pb.LookupStatus.NOT_FOUND);
    federatedAsked +=
      r.federation?.sources.filter((s) => !s.authoritative && s.outcome === pb.DpSource_Outcome.ANSWERED)
        .length ?? 0;
  }
  // Four filters of a few CSIs each, sized for 1,024 at 1%: a false positive is rare. Without
  // filters every lookup would ask all four (800 lookups).
  assert.ok(federatedAsked <= 8, `${federatedAsked} federated lookups for ${N} numbers nobody holds`);
});

scenario(t, "a DP that builds a new version of its filter loses no sign-up", async () => {
  await fiveDps();
  const f2 = extra.get("f2") as ServerProcess;
  const versions = (await filters()).get("f2")?.versions ?? 0n;
  // Builds are a minute apart: move f2's clock past that, then grow it past its filter's size
  // (1,024 CSIs) in one bulk session.
  t.advanceClock(f2, 61_000);
  const key = t.net.signingKey("msp-parrot");
  const now = Date.now();
  const records = Array.from({ length: 1_100 }, (_, i) =>
    bulkRecord(
      {
        csi: `tel:+4477009${String(40_000 + i)}`,
        mspId: "parrot.example",
        ssi: `parrot:bulk${i}`,
        defaultRequested: true,
        tags: [],
        createdAtMs: now,
        dpId: "f2",
        expiresAtMs: now + 86_400_000,
      },
      key,
    ),
  );
  await bulkRegister(t.net.channel(f2.address, "msp-parrot").client(pb.ClaimService), {
    sessionId: "five-rebuild",
    total: records.length,
    recordsFrom: (first, count) => records.slice(first, first + count),
  });
  await eventually(async () => assert.ok(((await filters()).get("f2")?.versions ?? 0n) > versions));
  // Every CSI written before and during the rebuild routes to f2.
  for (const i of [0, 550, 1_099]) {
    const r = await resolver().resolve({ csi: `tel:+4477009${String(40_000 + i)}`, federation: ALL });
    assert.deepEqual(
      r.answer?.mappings.map((m) => m.dpId),
      ["f2"],
      `number ${i}`,
    );
  }
  await claimAt("f2", "tel:+447700949999", "parrot:after");
  const after = await resolver().resolve({ csi: "tel:+447700949999", federation: ALL });
  assert.deepEqual(
    after.answer?.mappings.map((m) => m.ssi),
    ["parrot:after"],
  );
});
