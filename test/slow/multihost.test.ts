// Multi-host (issue 13): root, a root secondary, the DPs eu and us and a resolver, each the
// built server on a host of its own (a Linux network namespace with its own address and a
// certificate naming it), the test acting as an MSP host. Resolution, a claim's change pushed
// to the resolver's cache, and partitions made by cutting a host's link (its switch port goes
// down, so packets vanish without a reset, as on a real network): the root's (the resolver and
// DPs go on from their copies and follow the secondary), a DP's first of two links (the
// resolver asks the second), a DP's only link (stale answers, then a catch-up without resync).
// The last scenario holds a bug this test found (a resynced watcher resynced again at its next
// reconnect: ChangeLogStart now carries the time of its event). Needs root: on a machine
// that cannot make namespaces it says so loudly and every scenario is skipped.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { status } from "@grpc/grpc-js";
import { pb } from "@mimi/core";
import { waitUntilResolving } from "@mimi/devnet";
import { eventually, rejectsWith } from "../harness.js";
import {
  ANSWER_TTL_SECONDS,
  type EuReplicas,
  type HostNetwork,
  NEGATIVE_TTL_SECONDS,
  STALE_ANSWER_TTL_SECONDS,
  startHostNetwork,
} from "./multihost-network.js";
import { Lab, netnsUnavailable, warnSkipped } from "./netns.js";

// A cut link is silent: peers learn of it from gRPC keepalive (a ping every 30 s, 10 s for
// its answer) or a connection attempt timing out, so waits for that are long. Nothing is
// asserted about how long anything took.
const PARTITION_WAIT_MS = 180_000;

const unavailable = netnsUnavailable();
if (unavailable) warnSkipped(unavailable);

let net: HostNetwork | undefined;
if (!unavailable) {
  before(
    async () => {
      net = await startHostNetwork(new Lab());
    },
    { timeout: 300_000 },
  );
  after(async () => {
    await net?.stop();
  });
}

/** A scenario on the running network; skipped, saying why, where namespaces cannot be made. */
function scenario(name: string, fn: (n: HostNetwork) => Promise<void>): void {
  test(name, { timeout: 600_000 }, async (t) => {
    if (unavailable) {
      t.skip(`SKIPPED: network namespaces cannot be created here (${unavailable})`);
      return;
    }
    if (!net) throw new Error("the multi-host network did not start");
    try {
      await fn(net);
    } catch (err) {
      process.stderr.write(
        `\n--- logs for failed scenario "${name}" ---\n${net.logs().split("\n").slice(-200).join("\n")}\n`,
      );
      throw err;
    }
  });
}

const resolveJson = async (n: HostNetwork, csi: string) => {
  const r = await n.cli("msp", [
    "resolve",
    csi,
    "--json",
    "--verify",
    "--resolver",
    n.at.resolver,
    "--root",
    n.at.root,
  ]);
  assert.equal(r.code, 0, `mimi resolve ${csi} on the MSP host: ${r.stderr}`);
  return JSON.parse(r.stdout) as { status: string; dpIds: string[]; verified: boolean; stale: boolean };
};

const serialIn = (stdout: string) => {
  const serial = /serial (\d+)/.exec(stdout)?.[1];
  if (!serial) throw new Error(`no serial in: ${stdout}`);
  return BigInt(serial);
};

scenario(
  "an MSP on its own host resolves through the resolver on another, which asks the DPs on theirs, and verifies the answer",
  async (n) => {
    const eu = await resolveJson(n, "tel:+447700900123");
    assert.equal(eu.status, "FOUND");
    assert.deepEqual(eu.dpIds, ["eu"]);
    assert.equal(eu.verified, true, "the CLI checked the answer against the root's registry");
    const us = await resolveJson(n, "mailto:alice@example.org");
    assert.equal(us.status, "FOUND");
    assert.deepEqual(us.dpIds, ["us"]);
    assert.equal(us.verified, true);
    // The resolver follows the registry and both DPs' change logs across the network.
    await eventually(async () => {
      const s = await n.stats();
      assert.equal(s.registryConnected, true, "the registry watch is open");
      for (const dp of ["eu", "us"] as const) {
        assert.equal(s.subscriptions.find((x) => x.dpId === dp)?.connected, true, `subscribed to ${dp}`);
      }
    });
    // The secondary, which reaches the primary only over LAN b, serves the same signed registry.
    const snapshot = (address: string) =>
      n.channel(address, "cli").client(pb.RootService).getSnapshot({}, { timeoutMs: 5_000 });
    await eventually(async () => {
      const [p, s] = await Promise.all([snapshot(n.at.root), snapshot(n.at.sec)]);
      assert.deepEqual(s.snapshot, p.snapshot);
    });
  },
);

scenario("a claim at the eu DP reaches the resolver's cache on another host at once", async (n) => {
  const csi = "tel:+447700900611";
  await eventually(async () => assert.equal((await n.subscription("eu")).connected, true));
  const first = await n.resolve(csi);
  assert.equal(first.answer?.status, pb.LookupStatus.NOT_FOUND);
  const ttl = first.answer?.ttlSeconds ?? 0;
  assert.ok(ttl >= 300, `NOT_FOUND is cached for ${ttl} s, far longer than this test waits`);
  const served = await n.lookupsServed("eu");
  assert.equal((await n.resolve(csi)).answer?.status, pb.LookupStatus.NOT_FOUND);
  assert.equal(await n.lookupsServed("eu"), served, "the second answer came from the cache");
  await n.claim("msp", "eu", n.at.eu, csi, "@newcomer:bluebird.example");
  await eventually(async () => {
    const r = await n.resolve(csi);
    assert.equal(r.answer?.status, pb.LookupStatus.FOUND);
    assert.equal(r.answer?.mappings[0]?.ssi, "@newcomer:bluebird.example");
  });
  assert.ok((await n.stats()).invalidations >= 1n);
});

scenario(
  "with the root's link cut, resolution goes on, and the resolver and the DPs follow the registry through the secondary",
  async (n) => {
    const csi = "tel:+12025550142";
    n.lab.cut("root");
    try {
      // The resolver needs no root to resolve: it walks to the DP from its registry copy.
      await n.flush(csi);
      const served = await n.lookupsServed("us");
      const r = await n.resolve(csi);
      assert.equal(r.answer?.status, pb.LookupStatus.FOUND);
      assert.equal(r.stale, false);
      assert.equal((await n.lookupsServed("us")) - served, 1n, "asked at the DP");
      // An admin on the root's host edits the registry; the secondary gets the change over
      // LAN b, and the resolver and eu, which cannot reach the root, get it from the secondary.
      const add = await n.cli("root", [
        "root",
        "delegation",
        "add",
        "+81",
        "--dp",
        "eu",
        "--root",
        "127.0.0.1:7400",
      ]);
      assert.equal(add.code, 0, add.stderr);
      const serial = serialIn(add.stdout);
      const euAdmin = n.channel(n.at.eu, "admin").client(pb.AuthoritativeAdminService);
      await eventually(async () => {
        const s = await n.stats();
        assert.ok(s.registrySerial >= serial, `the resolver is at serial ${s.registrySerial}, not ${serial}`);
        const e = await euAdmin.getStatus({}, { timeoutMs: 5_000 });
        assert.ok(e.registrySerial >= serial, `eu is at serial ${e.registrySerial}, not ${serial}`);
      }, PARTITION_WAIT_MS);
      const moved = await n.resolve("tel:+81312345678");
      assert.equal(moved.answer?.status, pb.LookupStatus.NOT_FOUND);
      assert.deepEqual(moved.answer?.dpIds, ["eu"]);
      await n.logged(
        new RegExp(`^resolver: .*"root":"${n.at.sec}".*"registry in sync"`, "m"),
        "the resolver says it follows the secondary",
      );
      await n.logged(new RegExp(`^dp-eu: .*"root":"${n.at.sec}".*"registry in sync"`, "m"));
    } finally {
      n.lab.restore("root");
    }
    // Back on the network, the root takes an admin's edit from another host again.
    const removed = await n.cli("msp", ["root", "delegation", "remove", "+81", "--root", n.at.root]);
    assert.equal(removed.code, 0, removed.stderr);
    const serial = serialIn(removed.stdout);
    await eventually(async () => assert.ok((await n.stats()).registrySerial >= serial), PARTITION_WAIT_MS);
    assert.ok(!(await n.resolve("tel:+81312345679")).answer?.dpIds.includes("eu"));
  },
);

/** A CSI in `dp`'s range that no other step uses. */
let fresh = 0;
const freshCsi = (dp: "eu" | "us") => `${dp === "eu" ? "tel:+44770090" : "tel:+1202555"}${9000 + ++fresh}`;

/**
 * Has the resolver apply one event of `dp`'s change log, so that it resumes from an event it
 * received, so these scenarios test partitions from a watcher's usual position (the last
 * scenario tests the position a resync leaves), and each holds when run alone.
 */
async function primeSubscription(n: HostNetwork, dp: "eu" | "us", address: string): Promise<void> {
  await eventually(async () => assert.equal((await n.subscription(dp)).connected, true));
  const before = (await n.subscription(dp)).events;
  await n.write(dp, address, freshCsi(dp), "parrot:prime");
  await eventually(async () => assert.ok((await n.subscription(dp)).events > before, "the event arrived"));
}

scenario(
  "with the first of a DP's two links cut, the resolver asks it on the second, and its changes arrive there",
  async (n) => {
    const known = "tel:+12025550142";
    const pending = "tel:+12025550177";
    await primeSubscription(n, "us", n.at.us);
    assert.equal((await n.resolve(known)).answer?.status, pb.LookupStatus.FOUND);
    await n.flush(pending);
    assert.equal((await n.resolve(pending)).answer?.status, pb.LookupStatus.NOT_FOUND);
    const before = await n.subscription("us");
    n.lab.cut("us", "a");
    try {
      await n.flush(known);
      const served = await n.lookupsServed("us", n.at.usSecond);
      const r = await n.resolve(known);
      assert.equal(r.answer?.status, pb.LookupStatus.FOUND);
      assert.equal(r.stale, false);
      assert.deepEqual(r.answer?.dpIds, ["us"]);
      assert.equal((await n.lookupsServed("us", n.at.usSecond)) - served, 1n, "asked on the second link");
      // Lookups are spread over both links: those sent to the cut one fail over to the second.
      const failed = new RegExp(`^resolver: .*"endpoint":"${n.at.us}".*"dp lookup failed"`, "m");
      for (let i = 0; i < 12 && !failed.test(n.logs()); i++) {
        const r = await n.resolve(`tel:+120255509${String(i).padStart(2, "0")}`);
        assert.deepEqual(r.answer?.dpIds, ["us"]);
      }
      await n.logged(failed);
      // A claim at us over its second link: the cached NOT_FOUND (10 minutes) goes only when
      // the change stream, moved to the second link, brings the event.
      await n.claim("msp", "us", n.at.usSecond, pending, "@second-link:bluebird.example");
      await eventually(async () => {
        const p = await n.resolve(pending);
        assert.equal(p.answer?.status, pb.LookupStatus.FOUND);
        assert.equal(p.answer?.mappings[0]?.ssi, "@second-link:bluebird.example");
      }, PARTITION_WAIT_MS);
      const moved = await n.subscription("us");
      assert.equal(moved.resyncs, before.resyncs, "the stream went on from where it was on the first link");
      assert.equal(moved.logId, before.logId);
      await n.logged(
        new RegExp(`^resolver: .*"endpoint":"${n.at.usSecond}".*"change subscription caught up"`, "m"),
      );
    } finally {
      n.lab.restore("us", "a");
    }
    // The first link is back: us answers on it again.
    await eventually(async () => assert.ok((await n.lookupsServed("us")) > 0n), PARTITION_WAIT_MS);
  },
);

scenario(
  "a resolver cut off from eu keeps its cached answers, and catches up without a resync once the link is back",
  async (n) => {
    const pending = "tel:+447700900812"; // claimed while eu is cut off
    await primeSubscription(n, "eu", n.at.eu);
    await n.flush(pending);
    assert.equal((await n.resolve(pending)).answer?.status, pb.LookupStatus.NOT_FOUND);
    const before = await n.subscription("eu");
    n.lab.cut("eu");
    try {
      await eventually(
        async () => assert.equal((await n.subscription("eu")).connected, false),
        PARTITION_WAIT_MS,
      );
      // An MSP on eu's side of the partition (on eu's host) claims the CSI the resolver holds
      // as NOT_FOUND; the resolver cannot hear of it and serves what it cached.
      await n.claim(
        "eu",
        "eu",
        `127.0.0.1:${n.at.eu.split(":")[1]}`,
        pending,
        "@while-apart:bluebird.example",
      );
      assert.equal((await n.resolve(pending)).answer?.status, pb.LookupStatus.NOT_FOUND);
    } finally {
      n.lab.restore("eu");
    }
    // The change stream resumes where it stopped: the claim evicts the cached NOT_FOUND.
    await eventually(async () => {
      const p = await n.resolve(pending);
      assert.equal(p.answer?.status, pb.LookupStatus.FOUND);
      assert.equal(p.answer?.mappings[0]?.ssi, "@while-apart:bluebird.example");
    }, PARTITION_WAIT_MS);
    const later = await n.subscription("eu");
    assert.equal(later.resyncs, before.resyncs, "the log continued where it left off");
    assert.equal(later.logId, before.logId);
    assert.ok(later.seq > before.seq);
  },
);

scenario(
  "with eu's only link cut, its expired answers are served stale and uncached ones fail naming it; the link back, it answers afresh",
  async (n) => {
    const kept = "tel:+447700900123"; // a demo mapping
    const uncached = "tel:+447700900555";
    const first = await n.resolve(kept);
    assert.equal(first.answer?.status, pb.LookupStatus.FOUND);
    // Past every TTL: the resolver's clock moves, as time would.
    const pastTtlsMs = (Math.max(ANSWER_TTL_SECONDS, NEGATIVE_TTL_SECONDS) + 60) * 1000;
    n.lab.cut("eu");
    try {
      n.servers.resolver.setClockOffset(pastTtlsMs);
      const stale = await n.resolve(kept);
      assert.equal(stale.stale, true, "served stale (RFC 8767)");
      assert.equal(stale.answer?.ttlSeconds, STALE_ANSWER_TTL_SECONDS);
      assert.deepEqual(stale.answer?.mappings, first.answer?.mappings);
      await rejectsWith(n.resolve(uncached), status.UNAVAILABLE, /DP "eu"/);
      // The other region is unaffected.
      const other = await n.resolve("tel:+12025550142");
      assert.equal(other.answer?.status, pb.LookupStatus.FOUND);
      assert.equal(other.stale, false);
      n.lab.restore("eu");
      // eu answers again (an answer never cached shows it), and once the stale copy's own
      // TTL has passed, the kept CSI is asked afresh.
      await eventually(
        async () => assert.equal((await n.resolve(uncached)).answer?.status, pb.LookupStatus.NOT_FOUND),
        PARTITION_WAIT_MS,
      );
      n.servers.resolver.setClockOffset(pastTtlsMs + (STALE_ANSWER_TTL_SECONDS + 1) * 1000);
      const back = await n.resolve(kept);
      assert.equal(back.answer?.status, pb.LookupStatus.FOUND);
      assert.equal(back.stale, false);
    } finally {
      n.lab.restore("eu");
      n.servers.resolver.setClockOffset(0);
    }
  },
);

// Found by this test: a subscription that has applied no event since it (re)started holds the
// DP's latest sequence number with time 0, so its first reconnect (a link that failed, a
// connection at its maximum age, an endpoint change) asks to resume from an event whose time
// the DP finds different, and the DP answers DIVERGED: the resolver resyncs, dropping every
// answer of that DP, though nothing was missed. A quiet DP is hit at every reconnect.
scenario(
  "a subscription that has seen no event yet moves to another endpoint of the DP without a resync",
  async (n) => {
    await n.servers.resolver.stop();
    await n.servers.resolver.start();
    await waitUntilResolving(n.channel(n.at.resolver, "cli"));
    await eventually(async () => assert.equal((await n.subscription("us")).connected, true));
    const before = await n.subscription("us");
    const put = (endpoints: string[]) =>
      n.cli("msp", [
        "root",
        "dp",
        "put",
        "us",
        "--endpoint",
        ...endpoints,
        "--tls-identity",
        "dp-us",
        "--jurisdiction",
        "US",
        "--root",
        n.at.root,
      ]);
    try {
      const moved = await put([n.at.usSecond]);
      assert.equal(moved.code, 0, moved.stderr);
      const serial = serialIn(moved.stdout);
      await eventually(async () => assert.ok((await n.stats()).registrySerial >= serial));
      // The restarted resolver (its PID in the line) says its stream moved and caught up.
      await n.logged(
        new RegExp(
          `^resolver: .*"pid":${n.servers.resolver.pid},.*"endpoint":"${n.at.usSecond}".*"change subscription caught up"`,
          "m",
        ),
      );
      assert.equal((await n.subscription("us")).resyncs, before.resyncs, "no resync for a move");
    } finally {
      const back = await put([n.at.us, n.at.usSecond]);
      assert.equal(back.code, 0, back.stderr);
    }
  },
);

// Replicas (issue 17): eu as a primary with secondaries on the hosts eu2 and eu3. These run last
// and in order: they leave eu with three endpoints and eu2 as its primary.
let replicas: EuReplicas | undefined;
const ssisAt = async (n: HostNetwork, address: string, csi: string) => {
  const c = n.channel(address, "resolver").client(pb.AuthoritativeService);
  return ((await c.lookup({ csi }, { timeoutMs: 5_000 })).answer?.mappings ?? []).map((m) => m.ssi);
};
const replicationOf = async (n: HostNetwork, address: string) => {
  const c = n.channel(address, "admin").client(pb.AuthoritativeAdminService);
  return (await c.getStatus({}, { timeoutMs: 5_000 })).replication;
};

scenario(
  "eu on three hosts: a claim at the primary is served by both secondaries and reaches the resolver through them",
  async (n) => {
    replicas = await n.startEuReplicas();
    const csi = "tel:+447700900861";
    await n.claim("msp", "eu", n.at.eu, csi, "@replicated:bluebird.example");
    for (const address of [n.at.eu2, n.at.eu3]) {
      await eventually(async () =>
        assert.deepEqual(await ssisAt(n, address, csi), ["@replicated:bluebird.example"]),
      );
    }
    // The resolver spreads its lookups over the three hosts: each answers some of them.
    const served = () => Promise.all([n.at.eu, n.at.eu2, n.at.eu3].map((a) => n.lookupsServed("eu", a)));
    const before = await served();
    for (let i = 0; i < 30; i++) {
      const r = await n.resolve(`tel:+4477009008${String(i).padStart(2, "0")}`);
      assert.deepEqual(r.answer?.dpIds, ["eu"]);
    }
    const now = await served();
    for (const [i, v] of now.entries()) {
      assert.ok(v > (before[i] as bigint), `endpoint ${i + 1} of eu answered none of 30`);
    }
    const r = await n.resolve(csi);
    assert.equal(r.answer?.mappings[0]?.ssi, "@replicated:bluebird.example");
  },
);

scenario(
  "with the primary's host cut off, lookups go on from the secondaries, claims are refused naming the primary, a secondary is promoted and claims resume; the old primary comes back fenced",
  async (n) => {
    assert.ok(replicas, "the replicas started");
    n.lab.cut("eu");
    const resumed = "tel:+447700900862";
    try {
      // No failed lookup: every never-cached CSI is answered afresh by a secondary.
      for (let i = 0; i < 10; i++) {
        const r = await n.resolve(`tel:+4477009008${50 + i}`);
        assert.equal(r.stale, false);
        assert.deepEqual(r.answer?.dpIds, ["eu"]);
      }
      const refused = await rejectsWith(
        n.write("eu", n.at.eu2, resumed, "@too-early"),
        status.FAILED_PRECONDITION,
        /primary/,
      );
      assert.equal(refused.details?.reason, "NOT_PRIMARY");
      // The operator promotes eu2: eu3 votes for it; eu, cut off, cannot answer.
      const promoted = await n.cli("msp", ["auth", "promote", "--dp", n.at.eu2]);
      assert.equal(promoted.code, 0, promoted.stderr);
      assert.match(promoted.stdout, /epoch 2/);
      assert.match(promoted.stdout, new RegExp(`${n.at.eu3}: fenced`));
      await n.write("eu", n.at.eu2, resumed, "@after-promotion");
      await eventually(async () =>
        assert.deepEqual(await ssisAt(n, n.at.eu3, resumed), ["@after-promotion"]),
      );
      assert.equal((await n.resolve(resumed)).answer?.mappings[0]?.ssi, "@after-promotion");
    } finally {
      n.lab.restore("eu");
    }
    // Back on the network, the old primary hears of epoch 2 from its peers: it writes nothing
    // more and follows eu2, from which it gets the claim made while it was away.
    await eventually(async () => {
      const r = await replicationOf(n, n.at.eu);
      assert.equal(r?.role, "secondary");
      assert.equal(r?.epoch, 2n);
    }, PARTITION_WAIT_MS);
    await eventually(async () => assert.deepEqual(await ssisAt(n, n.at.eu, resumed), ["@after-promotion"]));
    const fenced = await rejectsWith(
      n.write("eu", n.at.eu, "tel:+447700900863", "@old-primary"),
      status.FAILED_PRECONDITION,
    );
    assert.equal(fenced.details?.reason, "NOT_PRIMARY");
  },
);

scenario("a secondary restarted from an old copy catches up from the new primary", async (n) => {
  assert.ok(replicas, "the replicas started");
  const csi = "tel:+447700900864";
  await replicas.eu3.stop();
  await n.write("eu", n.at.eu2, csi, "@while-eu3-was-down");
  await replicas.eu3.start({ samePort: true });
  await eventually(async () => assert.deepEqual(await ssisAt(n, n.at.eu3, csi), ["@while-eu3-was-down"]));
  const [p, s] = await Promise.all([replicationOf(n, n.at.eu2), replicationOf(n, n.at.eu3)]);
  await eventually(async () =>
    assert.equal(
      (await replicationOf(n, n.at.eu3))?.appliedSeq,
      (await replicationOf(n, n.at.eu2))?.appliedSeq,
    ),
  );
  assert.equal(s?.epoch, p?.epoch);
});

scenario(
  "with ackFollowers 1, a kill -9 of the primary right after an acknowledged claim loses nothing",
  async (n) => {
    assert.ok(replicas, "the replicas started");
    const { eu2, eu3 } = replicas;
    const durable = { replication: { ackFollowers: 1 } };
    await Promise.all([n.reconfigure(eu3, durable), n.reconfigure(n.servers.eu, durable)]);
    await n.reconfigure(eu2, durable);
    // Both secondaries follow eu2 again before the write (one is enough for the ack).
    await eventually(async () => assert.equal((await replicationOf(n, n.at.eu2))?.followers.length, 2));
    const csi = "tel:+447700900865";
    await n.write("eu", n.at.eu2, csi, "@acknowledged");
    await eu2.kill();
    // Whichever secondary holds more is promoted (the other refuses its vote to one behind it).
    let promoted: string | undefined;
    await eventually(async () => {
      for (const address of [n.at.eu, n.at.eu3]) {
        const r = await n.cli("msp", ["auth", "promote", "--dp", address]);
        if (r.code === 0) {
          promoted = address;
          return;
        }
      }
      assert.fail("neither secondary could be promoted");
    }, PARTITION_WAIT_MS);
    assert.ok(promoted);
    assert.deepEqual(await ssisAt(n, promoted, csi), ["@acknowledged"]);
  },
);
