// Change propagation across real processes (G6, R20, D1): DPs' change logs streamed to the
// resolver, which evicts cached answers (negative ones included) as mappings change, catches
// up after a partition, and resyncs when a DP's log cannot be continued. A TCP proxy between
// the resolver and the eu DP plays the partition; moving the DP's clock past its retention
// window plays a long one.
import assert from "node:assert/strict";
import { copyFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { status } from "@grpc/grpc-js";
import { pb } from "@mimi/core";
import { eventually, rejectsWith, scenario, useNetwork, writeMapping } from "./harness.js";
import { startProxy, type TcpProxy } from "./proxy.js";

// The change-log window a partition outlasts once the DP's clock moves past it.
const RETENTION_SECONDS = 3_600;
// Prefetch once 90% of a TTL has passed (after 2 hits); the sweep prunes the log every second.
const t = useNetwork({
  authoritative: { changeLogRetentionSeconds: RETENTION_SECONDS, sweepIntervalSeconds: 1 },
  resolver: { cache: { prefetchMinHits: 2, prefetchPercent: 90 } },
});

const stats = () => t.stats();
const subscription = async (dp: "eu" | "us") => {
  const s = (await stats()).subscriptions.find((x) => x.dpId === dp);
  assert.ok(s, `a subscription to ${dp}`);
  return s;
};

const write = (dp: "eu" | "us", csi: string, ssi: string) => writeMapping(t, dp, csi, ssi);

/** Runs `mimi claim <action> <csi> ...` as bluebird at a DP, the code read from its outbox. */
const claimAs = async (action: "run" | "invalidate", dp: "eu" | "us", csi: string, ...extra: string[]) => {
  const r = await t.cli([
    "claim",
    action,
    csi,
    ...extra,
    "--as",
    "msp-bluebird",
    "--dp",
    t.net.dps[dp].address,
    "--dp-id",
    dp,
    "--outbox",
    join(t.net.dir, `dp-${dp}`, "outbox"),
  ]);
  assert.equal(r.code, 0, r.stderr);
};

scenario(t, "a claim becomes visible at once at a resolver that had cached NOT_FOUND", async () => {
  await eventually(async () => assert.equal((await subscription("eu")).connected, true));
  const csi = "tel:+447700900611";
  const before = await t.resolve(csi);
  assert.equal(before.answer?.status, pb.LookupStatus.NOT_FOUND);
  const ttl = before.answer?.ttlSeconds ?? 0;
  assert.ok(ttl >= 30, `NOT_FOUND is cached for ${ttl} s, far longer than this test waits`);
  const served = await t.lookupsServed("eu");
  assert.equal((await t.resolve(csi)).answer?.status, pb.LookupStatus.NOT_FOUND);
  assert.equal(await t.lookupsServed("eu"), served, "the second answer came from the cache");
  await claimAs("run", "eu", csi, "--ssi", "@newcomer:bluebird.example");
  await eventually(async () => {
    const r = await t.resolve(csi);
    assert.equal(r.answer?.status, pb.LookupStatus.FOUND);
    assert.equal(r.answer?.mappings[0]?.ssi, "@newcomer:bluebird.example");
  });
  assert.ok((await stats()).invalidations >= 1n);
});

scenario(t, "a removal is visible at once where the answer was cached", async () => {
  const csi = "tel:+447700900612";
  await claimAs("run", "eu", csi, "--ssi", "@leaving:bluebird.example");
  await eventually(async () => assert.equal((await t.resolve(csi)).answer?.status, pb.LookupStatus.FOUND));
  await claimAs("invalidate", "eu", csi);
  await eventually(async () => {
    assert.equal((await t.resolve(csi)).answer?.status, pb.LookupStatus.NOT_FOUND);
  });
});

scenario(t, "a delegation moved to another DP is followed by the resolver and both DPs", async () => {
  const csi = "tel:+447700900711";
  await write("eu", csi, "parrot:old-holder");
  const first = await t.resolve(csi);
  assert.deepEqual(first.answer?.dpIds, ["eu"]);
  assert.equal(first.answer?.status, pb.LookupStatus.FOUND);
  const add = await t.cli([
    "root",
    "delegation",
    "add",
    "+44770090071",
    "--dp",
    "us",
    "--root",
    t.net.root.address,
  ]);
  assert.equal(add.code, 0, add.stderr);
  await t.resolverApplied(add.stdout);
  // The cached eu answer is gone: us answers now, and has nothing yet.
  const moved = await t.resolve(csi);
  assert.deepEqual(moved.answer?.dpIds, ["us"]);
  assert.equal(moved.answer?.status, pb.LookupStatus.NOT_FOUND);
  // eu refuses the range it lost; us accepts it.
  await eventually(() =>
    rejectsWith(
      t.net.channel(t.net.dps.eu.address, "resolver").client(pb.AuthoritativeService).lookup({ csi }),
      status.FAILED_PRECONDITION,
      /delegated to DP "us"/,
    ).then(() => undefined),
  );
  await write("us", csi, "parrot:new-holder");
  await eventually(async () => {
    const r = await t.resolve(csi);
    assert.equal(r.answer?.mappings[0]?.ssi, "parrot:new-holder");
  });
});

scenario(
  t,
  "a first claimed mapping at a DP de-lists older mappings at the peer DP whose range covers it (R18)",
  async () => {
    const csi = "tel:+447700900911";
    await write("eu", csi, "parrot:previous-holder");
    // Carve +4477009009 out of eu's +44 for us: eu still covers the CSI with a shorter prefix.
    const add = await t.cli([
      "root",
      "delegation",
      "add",
      "+4477009009",
      "--dp",
      "us",
      "--root",
      t.net.root.address,
    ]);
    assert.equal(add.code, 0, add.stderr);
    await t.resolverApplied(add.stdout);
    const notices: pb.Notice[] = [];
    const watch = new AbortController();
    const watching = (async () => {
      const parrotAtEu = t.net.channel(t.net.dps.eu.address, "msp-parrot").client(pb.ClaimService);
      try {
        for await (const r of parrotAtEu.watchNotices({ sinceSeq: 0n }, { signal: watch.signal })) {
          if (r.notice) notices.push(r.notice);
        }
      } catch {
        // Cancelled at the end of the test.
      }
    })();
    try {
      await claimAs("run", "us", csi, "--ssi", "@new-holder:bluebird.example");
      // An SMS code is a stricter proof than the bulk registration at eu: removed at once, and
      // parrot hears of it from eu, without learning who the new holder is.
      await eventually(async () => {
        const removed = notices.find((n) => n.kind === pb.NoticeKind.MAPPING_REMOVED && n.csi === csi);
        assert.ok(removed, "parrot's mapping at eu was removed");
        assert.equal(removed.ssi, "parrot:previous-holder");
        assert.match(removed.reason, /new holder proved possession more strictly at DP "us"/);
        assert.doesNotMatch(removed.reason, /bluebird/);
      });
    } finally {
      watch.abort();
      await watching;
    }
    // The answer comes from us alone, and only the new holder's mapping is in it.
    const r = await t.resolve(csi);
    assert.deepEqual(r.answer?.dpIds, ["us"]);
    assert.deepEqual(
      r.answer?.mappings.map((m) => m.ssi),
      ["@new-holder:bluebird.example"],
    );
    // A DP that is not delegated the CSI cannot ask others to de-list: eu asking us is refused.
    await rejectsWith(
      t.net
        .channel(t.net.dps.us.address, "dp-eu")
        .client(pb.PeerService)
        .invalidateOlder({ csi, mapping: r.answer?.mappings[0] }),
      status.PERMISSION_DENIED,
      /DP "eu" is not delegated this CSI/,
    );
    // Nor can an MSP pose as a DP: its certificate lacks the dp role.
    await rejectsWith(
      t.net
        .channel(t.net.dps.eu.address, "msp-bluebird")
        .client(pb.PeerService)
        .invalidateOlder({ csi, mapping: r.answer?.mappings[0] }),
      status.PERMISSION_DENIED,
      /needs a certificate with role dp/,
    );
  },
);

/** Routes the resolver to eu through a TCP proxy for the length of `fn`, then back. */
async function throughProxy(fn: (proxy: TcpProxy) => Promise<void>): Promise<void> {
  const direct = t.net.dps.eu.address;
  const proxy = await startProxy(direct);
  try {
    // The subscription moves with the DP's endpoints.
    await t.resolverApplied(await t.putDp("eu", [proxy.address]));
    await eventually(async () => assert.equal((await subscription("eu")).connected, true));
    await fn(proxy);
  } finally {
    proxy.restore();
    await t.resolverApplied(await t.putDp("eu", [direct]));
    await proxy.close();
  }
}

/** The oldest event the DP still holds, as a new watcher's start message says. */
async function oldestHeldAt(dp: "eu" | "us"): Promise<bigint> {
  const abort = new AbortController();
  try {
    const stream = t.net
      .channel(t.net.dps[dp].address, "resolver")
      .client(pb.AuthoritativeService)
      .watchChanges({}, { signal: abort.signal });
    for await (const msg of stream) if (msg.event.case === "start") return msg.event.value.oldestSeq;
    throw new Error("the change stream ended without a start");
  } finally {
    abort.abort();
  }
}

scenario(t, "a resolver cut off from a DP catches up on reconnect, without a resync", async () => {
  await throughProxy(async (proxy) => {
    const csi = "tel:+447700900811";
    assert.equal((await t.resolve(csi)).answer?.status, pb.LookupStatus.NOT_FOUND);
    const before = await subscription("eu");
    proxy.cut();
    await eventually(async () => assert.equal((await subscription("eu")).connected, false));
    await write("eu", csi, "parrot:while-apart");
    // While apart the resolver still has (and serves) its cached NOT_FOUND.
    assert.equal((await t.resolve(csi)).answer?.status, pb.LookupStatus.NOT_FOUND);
    proxy.restore();
    await eventually(async () => {
      assert.equal((await t.resolve(csi)).answer?.status, pb.LookupStatus.FOUND);
    });
    const later = await subscription("eu");
    assert.equal(later.resyncs, before.resyncs, "the log continued where it left off");
    assert.ok(later.seq > before.seq);
    assert.equal(later.logId, before.logId);
  });
});

scenario(t, "a partition longer than the DP's change-log window forces a resync", async () => {
  await throughProxy(async (proxy) => {
    const kept = "tel:+447700900123"; // a demo mapping, cached below
    const changed = "tel:+447700900812";
    assert.equal((await t.resolve(kept)).answer?.status, pb.LookupStatus.FOUND);
    assert.equal((await t.resolve(changed)).answer?.status, pb.LookupStatus.NOT_FOUND);
    const before = await stats();
    proxy.cut();
    await eventually(async () => assert.equal((await subscription("eu")).connected, false));
    await write("eu", changed, "parrot:long-apart");
    const latest = (await subscription("eu")).seq + 1n;
    try {
      // The partition outlasts the window: the DP's next sweep prunes what the resolver missed.
      t.advanceClock(t.net.dps.eu, (RETENTION_SECONDS + 60) * 1000);
      await eventually(async () =>
        assert.ok((await oldestHeldAt("eu")) > latest, "the missed events are pruned"),
      );
    } finally {
      t.resetClocks();
    }
    proxy.restore();
    await eventually(async () => {
      const s = await stats();
      assert.equal(s.resyncs, before.resyncs + 1n);
    });
    assert.equal((await t.resolve(changed)).answer?.status, pb.LookupStatus.FOUND);
    // Everything eu answered was dropped, not only what changed: the kept answer is asked again.
    const served = await t.lookupsServed("eu");
    assert.equal((await t.resolve(kept)).answer?.status, pb.LookupStatus.FOUND);
    assert.equal((await t.lookupsServed("eu")) - served, 1n);
    await t.logged(/resolver: .*"reason":"our position left the DP's retention window".*resyncing/);
  });
});

scenario(t, "an authoritative restarted from an older copy of its store makes resolvers resync", async () => {
  const eu = t.net.dps.eu;
  const db = join(t.net.dir, "dp-eu", "mappings.sqlite");
  const backup = join(t.net.dir, "mappings-backup.sqlite");
  await eu.stop(); // a clean stop checkpoints the WAL, so the file alone is the whole store
  copyFileSync(db, backup);
  await eu.start({ samePort: true });
  const csi = "tel:+447700900813";
  await eventually(async () => assert.equal((await subscription("eu")).connected, true));
  await write("eu", csi, "parrot:after-backup");
  await eventually(async () => {
    assert.equal((await t.resolve(csi)).answer?.status, pb.LookupStatus.FOUND);
  });
  const before = await stats();
  await eu.stop();
  copyFileSync(backup, db);
  rmSync(`${db}-wal`, { force: true });
  rmSync(`${db}-shm`, { force: true });
  await eu.start({ samePort: true });
  await eventually(async () => {
    assert.equal((await stats()).resyncs, before.resyncs + 1n);
  });
  // The restored store does not hold the mapping, and the resolver no longer claims it does.
  assert.equal((await t.resolve(csi)).answer?.status, pb.LookupStatus.NOT_FOUND);
  await t.logged(/resolver: .*"reason":"the DP's log is behind what we saw.*resyncing/);
});

scenario(t, "a popular answer is refreshed in the background before it expires", async () => {
  const csi = "tel:+12025550199";
  const first = await t.resolve(csi);
  assert.equal(first.answer?.status, pb.LookupStatus.NOT_FOUND);
  const ttl = first.answer?.ttlSeconds ?? 0;
  // Let less than 90% of the TTL be left, then ask twice: the second hit makes it popular.
  t.advanceClock(t.net.resolver, Math.ceil(ttl * 0.1 + 1) * 1000);
  const before = await stats();
  const served = await t.lookupsServed("us");
  const hit = await t.resolve(csi);
  await t.resolve(csi);
  assert.ok((hit.answer?.ttlSeconds ?? ttl) < ttl * 0.9, "the cached answer had aged");
  await eventually(async () => assert.equal((await stats()).prefetches, before.prefetches + 1n));
  assert.equal((await t.lookupsServed("us")) - served, 1n, "one background lookup at the DP");
  // The callers never waited for it: no miss was counted, and the entry is fresh again.
  const after = await t.resolve(csi);
  assert.equal((await stats()).misses, before.misses);
  assert.ok((after.answer?.ttlSeconds ?? 0) > (hit.answer?.ttlSeconds ?? 0), "the TTL started over");
});

scenario(
  t,
  "cache hits answered from the request's bytes are the full path's answers, unary and streamed",
  async () => {
    const resolver = t.net.channel(t.net.resolver.address, "msp-bluebird").client(pb.ResolverService);
    const csi = "tel:+447700900123";
    const first = await t.resolve(csi);
    assert.equal(first.answer?.status, pb.LookupStatus.FOUND);
    const before = await stats();
    // The canonical URI takes the fast path; other spellings, options or explain take the full
    // one, which finds the same cache entry.
    const fast = await t.resolve(csi);
    const spelled = await t.resolve("tel:+44 7700 900123");
    const verbose = await resolver.resolve({ csi, options: { format: pb.AnswerFormat.VERBOSE } });
    const items = new Map<bigint, pb.ResolveStreamResponse>();
    async function* requests() {
      yield { requestId: 7n, csi };
      yield { requestId: 2n ** 60n, csi };
      yield { requestId: 9n, csi: "tel:+44 7700 900123" };
    }
    for await (const r of resolver.resolveStream(requests())) items.set(r.requestId, r);
    const after = await stats();
    assert.equal(after.misses, before.misses, "all of them were cache hits");
    assert.equal(after.hits - before.hits, 6n);
    const withoutTtl = (r: pb.ResolveResponse | undefined) => ({
      ...r,
      answer: { ...r?.answer, ttlSeconds: 0 },
    });
    const streamed = (id: bigint) => {
      const r = items.get(id)?.result;
      assert.equal(r?.case, "response", `item ${id} answered`);
      return r?.case === "response" ? r.value : undefined;
    };
    for (const other of [spelled, verbose, streamed(7n), streamed(2n ** 60n), streamed(9n)]) {
      assert.deepEqual(withoutTtl(other), withoutTtl(fast));
    }
    assert.ok(
      (fast.answer?.ttlSeconds ?? 0) > 0 && (fast.answer?.ttlSeconds ?? 0) <= (first.answer?.ttlSeconds ?? 0),
    );
    assert.equal(fast.stale, false);
  },
);

scenario(t, "operators flush one CSI, one DP's answers, or everything, and read the counters", async () => {
  const csi = "tel:+12025550142";
  assert.equal((await t.resolve(csi)).answer?.status, pb.LookupStatus.FOUND);
  const served = await t.lookupsServed("us");
  const one = await t.cli(["resolver", "flush", csi, "--resolver", t.net.resolver.address]);
  assert.equal(one.code, 0, one.stderr);
  assert.match(one.stdout, /^1 cached answer\(s\) dropped/);
  await t.resolve(csi);
  assert.equal((await t.lookupsServed("us")) - served, 1n, "the flushed CSI was asked again");
  const dp = await t.cli(["resolver", "flush", "--dp", "us", "--resolver", t.net.resolver.address]);
  assert.equal(dp.code, 0, dp.stderr);
  assert.match(dp.stdout, /^[1-9]\d* cached answer\(s\) dropped/);
  const all = await t.cli(["resolver", "flush", "--all", "--resolver", t.net.resolver.address]);
  assert.equal(all.code, 0, all.stderr);
  assert.equal((await stats()).cacheEntries, 0n);
  const bad = await t.cli(["resolver", "flush", csi, "--all", "--resolver", t.net.resolver.address]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /exactly one of/);
  const st = await t.cli(["resolver", "stats", "--json", "--resolver", t.net.resolver.address]);
  assert.equal(st.code, 0, st.stderr);
  const parsed = JSON.parse(st.stdout) as { flushed: number; subscriptions: { dpId: string }[] };
  assert.ok(parsed.flushed >= 2);
  assert.deepEqual(
    parsed.subscriptions.map((s) => s.dpId),
    ["eu", "us"],
  );
  // Only admins may flush.
  await rejectsWith(
    t.net
      .channel(t.net.resolver.address, "msp-bluebird")
      .client(pb.ResolverAdminService)
      .flush({ scope: { case: "all", value: true } }),
    status.PERMISSION_DENIED,
    /needs a certificate with role admin/,
  );
});
