// The federation scenario (issue 15): +44 federated to K more DPs (1, 5 and 20; separate
// processes, each holding a few hundred mappings of its own), and cold lookups of eu's numbers
// asked three ways on the same network: locally, federated with the DPs' CSI filters routing,
// and federated asking every DP (ignore_filters). Reported: lookups per second and per
// CPU-second of all servers (the K DPs included), and the DPs asked per lookup from the DPs'
// own counters. Then the filter's memory per million CSIs, from a DP holding the generated
// mappings (us, federated to +44 for the purpose) as the resolver received its filter.
import { bulkRegister } from "@mimi/client";
import { bulkRecord, keyToProto, parseDelegationKeyText, pb } from "@mimi/core";
import { type Network, type ServerProcess, startDp, waitForSerial } from "@mimi/devnet";
import type { KeySpec } from "./load.js";
import { type Bench, cacheEntriesFor, type Options, round, withNetwork } from "./measure.js";

/** Mappings each federated DP holds (numbers no other DP has). */
const PER_DP = 200;

export async function federationScenario(
  o: Options,
  bench: Bench,
  netDir: string,
  log: (s: string) => void,
): Promise<void> {
  const sizes = o.quick ? [1, 2] : [1, 5, 20];
  // Lookups per run: never asked before, so each is a miss at the resolver (cold).
  const perRun = o.quick ? 300 : Math.min(20_000, Math.floor(o.mappings / 2 / (4 * sizes.length)));
  let cursor = 0;
  const cold = (): KeySpec => {
    const from = cursor;
    cursor += perRun;
    return { mode: "eu-cold", warmCount: 0, cold: [from, from + perRun], absent: [0, 0], universe: 0 };
  };
  for (const k of sizes) {
    await withNetwork(bench, netDir, cacheEntriesFor(o), async (net) => {
      const dps: ServerProcess[] = [];
      try {
        await federationRuns(bench, net, o, k, dps, cold, log);
      } finally {
        // The data folder is reused by later runs: +44 goes back to no federated DPs, and the
        // registry lists the DPs started here no more (a later run's resolver would follow their
        // change logs and filters, retrying endpoints that no longer answer: at 1M mappings an
        // idle resolver spent 23-30 ms of CPU a second on it).
        await setFederated(net, []);
        const registry = net.channel(net.root.address, "admin").client(pb.RegistryAdminService);
        for (let i = 1; i <= dps.length; i++) await registry.deleteDp({ id: `x${i}` });
        await Promise.all(dps.map((p) => p.stop()));
      }
    });
  }
  // The filter's size per CSI: us holds half the generated mappings; federated to +44, its filter
  // goes to the resolver, which reports its bits.
  await withNetwork(bench, netDir, cacheEntriesFor(o), async (net) => {
    await setFederated(net, ["us"]);
    const stats = net.channel(net.resolver.address, "admin").client(pb.ResolverAdminService);
    let f: pb.FilterStatus | undefined;
    for (let i = 0; i < 600 && !f?.routing; i++) {
      f = (await stats.getStats({})).filters.find((x) => x.dpId === "us");
      if (!f?.routing) await new Promise((r) => setTimeout(r, 100));
    }
    await setFederated(net, []);
    const csis = Math.ceil(o.mappings / 2);
    const bytes = Number(f?.bits ?? 0n) / 8;
    log(
      `federation filter: ${csis} CSIs in ${bytes} bytes, ${f?.hashes} hashes: ` +
        `${round(bytes / csis, 2)} bytes per CSI, ${round(((bytes / csis) * 1e6) / 2 ** 20, 2)} MiB per million CSIs ` +
        "(sized for twice the CSIs at 1%)",
    );
    bench.results.push({
      scenario: "federation",
      variant: "filter size",
      lookups: 0,
      errors: 0,
      lookupsPerSec: 0,
      latencyMs: { p50: 0, p90: 0, p99: 0, p999: 0, max: 0 },
      cpuSeconds: {},
      rssMb: {},
      lookupsPerServerCpuSecond: 0,
      extra: { csis, filterBytes: bytes, bytesPerCsi: round(bytes / csis, 2), hashes: f?.hashes ?? 0 },
    });
  });
}

/** The three runs (local, filters, every DP) with K federated DPs; started DPs go into `dps`. */
async function federationRuns(
  bench: Bench,
  net: Network,
  o: Options,
  k: number,
  dps: ServerProcess[],
  cold: () => KeySpec,
  log: (s: string) => void,
): Promise<void> {
  await federate(net, k, dps);
  // A run to warm the servers up (JIT, connections), not kept: the first measured run would pay for it.
  const warmUp = cold();
  await bench.measure(net, "federation", "warm-up", {
    service: "resolver",
    api: "stream",
    concurrency: o.streamConcurrency,
    keys: () => warmUp,
    workers: 1,
    extraServers: Object.fromEntries(dps.map((p) => [p.name, p])),
  });
  bench.results.pop();
  const extraServers = Object.fromEntries(dps.map((p) => [p.name, p]));
  const served = async () => {
    let n = 0n;
    for (const p of [net.dps.eu, ...dps]) {
      n += (await net.channel(p.address, "admin").client(pb.AuthoritativeAdminService).getStatus({}))
        .lookupsServed;
    }
    return Number(n);
  };
  for (const [variant, federation] of [
    ["local", undefined],
    ["filters", { mode: pb.FederationMode.FEDERATE, dps: pb.FederationOptions_DpSelection.ALL }],
    [
      "every DP",
      { mode: pb.FederationMode.FEDERATE, dps: pb.FederationOptions_DpSelection.ALL, ignoreFilters: true },
    ],
  ] as const) {
    const before = await served();
    const keys = cold();
    const r = await bench.measure(net, "federation", `${k} federated DPs, ${variant}`, {
      service: "resolver",
      api: "stream",
      concurrency: o.streamConcurrency,
      keys: () => keys,
      workers: 1,
      ...(federation && { request: { federation } }),
      extraServers,
    });
    const asked = (await served()) - before;
    r.extra = { federatedDps: k, dpsAskedPerLookup: r.lookups > 0 ? round(asked / r.lookups, 3) : 0 };
    log(
      `federation ${k} DPs, ${variant}: ${r.lookupsPerSec}/s, ${r.lookupsPerServerCpuSecond} per CPU-s of all servers, ` +
        `${r.extra.dpsAskedPerLookup} DPs asked per lookup`,
    );
  }
}

/** Starts K DPs (into `procs`), each with PER_DP mappings of its own, and names them as +44's federated DPs; returns once the resolver routes by their filters. */
async function federate(net: Network, k: number, procs: ServerProcess[]): Promise<void> {
  const ids = Array.from({ length: k }, (_, i) => `x${i + 1}`);
  for (const id of ids) procs.push((await startDp(net, id, { overrides: { logLevel: "warn" } })).proc);
  const serial = await setFederated(net, ids);
  const key = net.signingKey("msp-parrot");
  const now = Date.now();
  for (const [i, p] of procs.entries()) {
    const id = ids[i] as string;
    await waitForSerial(net.channel(p.address, "admin").client(pb.AuthoritativeAdminService), serial);
    const records = Array.from({ length: PER_DP }, (_, j) =>
      bulkRecord(
        {
          csi: `tel:+4479${String(i * PER_DP + j).padStart(8, "0")}`,
          mspId: "parrot.example",
          ssi: `parrot:${id}-${j}`,
          defaultRequested: true,
          tags: [],
          createdAtMs: now,
          dpId: id,
          expiresAtMs: now + 86_400_000,
        },
        key,
      ),
    );
    await bulkRegister(net.channel(p.address, "msp-parrot").client(pb.ClaimService), {
      sessionId: `bench-${id}`,
      total: records.length,
      recordsFrom: (first, count) => records.slice(first, first + count),
    });
  }
  // The resolver routes by every filter before anything is measured.
  const stats = net.channel(net.resolver.address, "admin").client(pb.ResolverAdminService);
  for (let i = 0; i < 600; i++) {
    const fs = (await stats.getStats({})).filters.filter((f) => ids.includes(f.dpId) && f.routing);
    if (fs.length === k) break;
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Names `ids` as +44's federated DPs; returns the root's serial after the change. */
async function setFederated(net: Network, ids: string[]): Promise<bigint> {
  const r = await net
    .channel(net.root.address, "admin")
    .client(pb.RegistryAdminService)
    .updateDelegation({
      key: keyToProto(parseDelegationKeyText("+44")),
      federatedDpIds: ids,
      setFederatedDpIds: true,
    });
  return r.serial;
}
