// Abuse resistance across real processes (the abuse issue): an MSP sweeping random numbers is
// throttled within its first minute, while another MSP resolving its address book at a normal
// rate is not touched; each keeps the P1 floor; the caller can read its budget; a crawl of one
// number block is detected and, in enforce mode, refused.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { setPriority } from "node:os";
import { status } from "@grpc/grpc-js";
import { pb } from "@mimi/core";
import { startResolver, waitUntilServing } from "@mimi/devnet";
import { rejectsWith, scenario, useNetwork } from "./harness.js";

// The DPs hold each rate-limit context (one MSP behind one resolver, one day) to 1,500 lookups
// a minute; the resolvers' budgets below stop everything else first.
const t = useNetwork({ authoritative: { lookupLimits: { perContextPerMinute: 1_500 } } });

scenario(
  t,
  "a sweep of 20,000 random numbers is throttled in its first minute, and slowed; an address book is not",
  async () => {
    // Parrot has 2 enrolled users here (100 lookups per DP per day each, 120 a minute at most);
    // wirechat 100,000.
    const resolver = await startResolver(t.net, {
      name: "resolver-quotas",
      rootEndpoints: [t.net.root.address],
      overrides: {
        admins: ["admin"],
        quotas: { enrolledUsers: { "msp-parrot": 2, "msp-wirechat": 100_000 } },
      },
    });
    try {
      await waitUntilServing(t.net, resolver);
      const client = (identity: string) =>
        t.net.channel(resolver.address, identity).client(pb.ResolverService);
      const sweeper = client("msp-parrot");
      const book = client("msp-wirechat");
      const before = await sweeper.getQuota({});
      assert.equal(before.identity, "msp-parrot");
      assert.equal(before.enrolledUsers, 2n);
      assert.deepEqual(
        before.dps.map((d) => [d.dpId, d.dailyLimit, d.remaining]),
        [
          ["eu", 200n, 200n],
          ["us", 200n, 200n],
        ],
      );
      assert.equal(before.perMinuteLimit, 120n);

      // The sweep: 20,000 random UK numbers over one stream, as fast as the resolver takes them.
      // Meanwhile the address book: 20 numbers, asked 10 times each (cached after the first).
      const N = 20_000;
      async function* sweep() {
        for (let i = 0; i < N; i++) {
          yield {
            requestId: BigInt(i),
            csi: `tel:+447700${String(100_000 + ((i * 7919) % 900_000)).padStart(6, "0")}`,
          };
        }
      }
      const addresses = [
        "tel:+447700900123",
        "tel:+4915123456789",
        "tel:+33612345678",
        "mailto:alice@example.org",
        ...Array.from({ length: 16 }, (_, i) => `tel:+447700900${String(200 + i)}`),
      ];
      const bookRun = (async () => {
        let answered = 0;
        for (let round = 0; round < 10; round++) {
          for (const csi of addresses) {
            const r = await book.resolve({ csi });
            if (r.answer) answered++;
          }
        }
        return answered;
      })();
      let answered = 0;
      let refused = 0;
      let other = "";
      let retryAfter = 0n;
      // The sweeper ignores retry-after; it gives up after 500 refusals.
      const stream = sweeper.resolveStream(sweep(), { timeoutMs: 120_000 });
      for await (const res of stream) {
        if (res.result.case === "response") answered++;
        else if (res.result.case === "error" && res.result.value.code === status.RESOURCE_EXHAUSTED) {
          refused++;
          retryAfter = res.result.value.retryAfterMs;
          if (refused === 500) break;
        } else other = `${res.result.value?.message}`;
      }
      const bookAnswered = await bookRun;
      assert.equal(other, "");
      assert.equal(refused, 500, "the sweep was refused");
      assert.ok(answered > 0 && answered <= 200, `${answered} answered`);
      assert.ok(retryAfter > 0n && retryAfter <= 60_000n, `retry after ${retryAfter} ms`);
      // The address book was not touched: every lookup answered.
      assert.equal(bookAnswered, addresses.length * 10);
      const after = await sweeper.getQuota({});
      const spent = after.dps.reduce((n, d) => n + Number(d.dailyLimit - d.remaining), 0);
      // Within the first minute: the minute's 120 (and what refilled while the sweep ran) went to
      // a DP, never more than the day's 200 at eu; P1's floor (50 per user per DP per day) is inside.
      // Charged: the answers read, and those still in flight (being verified on the resolver's
      // threads) when the sweeper stopped reading at its 500th refusal.
      assert.ok(spent >= 100 && spent <= 200, `${spent} charged`);
      assert.ok(spent >= answered, `${spent} charged, ${answered} answered`);
      // The operator sees the refusals.
      const stats = await t.net
        .channel(resolver.address, "admin")
        .client(pb.ResolverAdminService)
        .getStats({});
      // Past 100 refusals a second the stream was read no faster than it was refused: the
      // resolver did not race through the 20,000 items to refuse them all.
      assert.ok(
        stats.quotaRefusals >= BigInt(refused) && stats.quotaRefusals < 1_500n,
        `${stats.quotaRefusals} refused at the resolver`,
      );
      assert.ok(after.perMinuteRemaining < 120n);
      // Asking again for what the cache holds is free, whatever the budget.
      const again = await sweeper.resolve({ csi: "tel:+447700100000" });
      assert.ok(again.answer);
    } finally {
      await resolver.stop();
    }
  },
);

scenario(
  t,
  "a 1,000-item stream of uncached numbers on a CPU-starved machine completes: slower, not failed",
  async () => {
    // Two busy loops (the machine has two cores), each ending by itself within two minutes.
    const hogs = [0, 1].map(() =>
      spawn(process.execPath, ["-e", "const end = Date.now() + 120000; while (Date.now() < end) {}"], {
        stdio: "ignore",
      }),
    );
    // And the DP gets the least of what is left: it answers far slower than the stream asks.
    const dpPid = t.net.dps.eu.pid as number;
    setPriority(dpPid, 10);
    try {
      const client = t.net.channel(t.net.resolver.address, "msp-wirechat").client(pb.ResolverService);
      const N = 1_000;
      async function* items() {
        for (let i = 0; i < N; i++) yield { requestId: BigInt(i), csi: `tel:+447700${String(300_000 + i)}` };
      }
      let answered = 0;
      const failed: string[] = [];
      // Regression: up to 1,024 items went to one DP at once with a 1.5 s deadline, and 770 of
      // 900 failed UNAVAILABLE under CPU pressure.
      for await (const res of client.resolveStream(items(), { timeoutMs: 120_000 })) {
        if (res.result.case === "response") answered++;
        else failed.push(`${res.result.value?.code}: ${res.result.value?.message}`);
      }
      assert.deepEqual(failed.slice(0, 3), []);
      assert.equal(answered, N);
      // The operator sees the window the DP was given, and nothing left waiting.
      const stats = await t.net
        .channel(t.net.resolver.address, "admin")
        .client(pb.ResolverAdminService)
        .getStats({});
      const eu = stats.upstreamWindows.find((w) => w.dpId === "eu");
      assert.ok(
        eu && eu.window >= 4n && eu.queued === 0n,
        JSON.stringify(eu, (_k, v) => (typeof v === "bigint" ? String(v) : v)),
      );
    } finally {
      for (const h of hogs) h.kill();
      try {
        setPriority(dpPid, 0);
      } catch {
        // Raising a priority back may need privileges; the DP stays slow for this file's end.
      }
    }
  },
);

scenario(
  t,
  "a crawl of one number block is detected at its 50th number and refused; cached answers and other MSPs are not",
  async () => {
    // Budgets far above the crawl, so only the detector can stop it.
    const resolver = await startResolver(t.net, {
      name: "resolver-enumeration",
      rootEndpoints: [t.net.root.address],
      overrides: {
        admins: ["admin"],
        quotas: { enrolledUsers: { "msp-parrot": 100_000, "msp-wirechat": 100_000 } },
        enumeration: { mode: "enforce" },
      },
    });
    try {
      await waitUntilServing(t.net, resolver);
      const client = (identity: string) =>
        t.net.channel(resolver.address, identity).client(pb.ResolverService);
      const crawler = client("msp-parrot");
      const book = client("msp-wirechat");
      // Wirechat's address book first: mostly found, and asked twice; never a crawl.
      const contacts = ["tel:+447700900123", "tel:+4915123456789", "tel:+33612345678"];
      for (let round = 0; round < 2; round++) for (const csi of contacts) await book.resolve({ csi });

      // Parrot walks block +44770030 (nobody registered there) one number at a time.
      const number = (i: number) => `tel:+44770030${String(i).padStart(4, "0")}`;
      let answered = 0;
      for (; answered < 50; answered++) {
        const r = await crawler.resolve({ csi: number(answered) });
        assert.equal(r.answer?.status, pb.LookupStatus.NOT_FOUND);
      }
      const err = await rejectsWith(
        crawler.resolve({ csi: number(50) }),
        status.RESOURCE_EXHAUSTED,
        /in number block tel:\+44770030 looked like enumeration \(50 distinct numbers asked of DPs in a window, 50 of 50 not found\)/,
      );
      assert.equal(err.details?.reason, "ENUMERATION_SUSPECTED");
      assert.ok((err.details?.retryAfterMs ?? 0) > 290_000, `retry after ${err.details?.retryAfterMs} ms`);
      // Only that block is refused: a whole MSP is never switched off by what its users ask
      // (a third party could make them ask for unknown numbers); that detection is logged.
      const elsewhere = await crawler.resolve({ csi: "tel:+15555550100" });
      assert.equal(elsewhere.answer?.status, pb.LookupStatus.NOT_FOUND);
      // What the cache holds is still answered: it tells the crawler nothing new.
      assert.equal((await crawler.resolve({ csi: number(7) })).answer?.status, pb.LookupStatus.NOT_FOUND);
      assert.ok((await crawler.resolve({ csi: contacts[0] as string })).answer);
      // Another MSP asking in the same block is not held by parrot's detection.
      assert.equal((await book.resolve({ csi: number(77) })).answer?.status, pb.LookupStatus.NOT_FOUND);

      // The operator sees it.
      const stats = await t.net
        .channel(resolver.address, "admin")
        .client(pb.ResolverAdminService)
        .getStats({});
      assert.equal(stats.enumerationMode, "enforce");
      assert.equal(stats.enumerationDetections, 2n);
      assert.equal(stats.enumerationRefusals, 1n);
      assert.deepEqual(
        stats.recentDetections.map((d) => [
          d.subject,
          d.scope,
          d.distinct,
          d.notFound,
          d.blockedUntilMs > 0n,
        ]),
        [
          ["msp-parrot", "tel:+44770030", 50n, 50n, true],
          ["msp-parrot", "all", 50n, 50n, false],
        ],
      );
    } finally {
      await resolver.stop();
    }
  },
);

scenario(
  t,
  "a DP caps one MSP behind a shared resolver by its pseudonymous context, without learning who it is",
  async () => {
    // A lax resolver: budgets far above what the DP lets one context make.
    const resolver = await startResolver(t.net, {
      name: "resolver-lax",
      rootEndpoints: [t.net.root.address],
      overrides: { quotas: { enrolledUsers: { "msp-parrot": 1_000_000, "msp-wirechat": 1_000_000 } } },
    });
    try {
      await waitUntilServing(t.net, resolver);
      const client = (identity: string) =>
        t.net.channel(resolver.address, identity).client(pb.ResolverService);
      const N = 2_000;
      async function* sweep() {
        for (let i = 0; i < N; i++) yield { requestId: BigInt(i), csi: `tel:+447700${400_000 + i}` };
      }
      let answered = 0;
      const reasons = new Map<string, number>();
      let message = "";
      let retryAfter = 0n;
      for await (const res of client("msp-parrot").resolveStream(sweep(), { timeoutMs: 120_000 })) {
        if (res.result.case === "response") answered++;
        else if (res.result.case === "error") {
          const e = res.result.value;
          reasons.set(`${e.code}/${e.reason}`, (reasons.get(`${e.code}/${e.reason}`) ?? 0) + 1);
          message = e.message;
          retryAfter = e.retryAfterMs;
        }
      }
      // The DP let the context make its minute's 1,500 (and what refilled meanwhile), no more.
      // (Fewer on a loaded machine: a lookup the resolver timed out and asked again is charged
      // twice at the DP.)
      assert.ok(answered > 0 && answered < 1_800, `${answered} answered`);
      assert.deepEqual([...reasons], [[`${status.RESOURCE_EXHAUSTED}/DP_CONTEXT_LIMIT`, N - answered]]);
      // In the resolver's words: the DP's own text may name the resolver.
      assert.match(message, /^DP "eu" refused the lookup \(DP_CONTEXT_LIMIT\); try again in \d+ s$/);
      assert.ok(retryAfter > 0n && retryAfter <= 60_000n, `retry after ${retryAfter} ms`);
      // Another MSP behind the same resolver has its own context: not held by parrot's.
      const other = client("msp-wirechat");
      for (let i = 0; i < 5; i++) {
        const r = await other.resolve({ csi: `tel:+447700${410_000 + i}` });
        assert.equal(r.answer?.status, pb.LookupStatus.NOT_FOUND);
      }
      // The DP counted the refusals and saw the crawl, under a pseudonym only: the resolver's
      // identity and 16 bytes that name no MSP.
      const dpAdmin = t.net.channel(t.net.dps.eu.address, "admin").client(pb.AuthoritativeAdminService);
      const dp = await dpAdmin.getStatus({});
      // The refusals came from the DP. (How many reached it is not bounded by the items refused:
      // on a loaded machine a lookup the resolver timed out and asked again is counted twice
      // there; held-refusals.test.ts shows the resolver holding a refused context itself.)
      assert.ok(dp.refusedContext >= 1n, `${dp.refusedContext}`);
      assert.equal(dp.enumerationMode, "log");
      assert.ok(dp.recentDetections.length > 0);
      for (const d of dp.recentDetections) assert.match(d.subject, /^resolver\/[0-9a-f]{32}$/);
      const dpLines = t
        .logs()
        .split("\n")
        .filter((l) => l.startsWith("dp-eu"));
      assert.ok(dpLines.some((l) => l.includes("enumeration suspected")));
      assert.ok(!dpLines.some((l) => l.includes("msp-parrot")));
    } finally {
      await resolver.stop();
    }
  },
);
