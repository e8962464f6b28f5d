// A resolver on several cores (the performance issue): `workers: 2` runs a primary and two
// worker processes on one port. Connections spread over the workers; a caller's budget and the
// enumeration detector are shared, so several connections buy no more lookups than one; the ops
// listener reports every worker; a worker that dies is replaced; a stop ends them all.
import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { type AddressInfo, createServer } from "node:net";
import { status } from "@grpc/grpc-js";
import { pb } from "@mimi/core";
import { type ServerProcess, startResolver, waitUntilServing } from "@mimi/devnet";
import { eventually, metricValue, rejectsWith, scenario, useNetwork } from "./harness.js";

const t = useNetwork();

/** The worker processes' pids, from their "worker listening" lines (newest per worker). */
function workerPids(proc: ServerProcess): Map<number, number> {
  const pids = new Map<number, number>();
  for (const line of proc.lines) {
    if (!line.includes('"worker listening"')) continue;
    const rec = JSON.parse(line.slice(line.indexOf("{"))) as { worker: number; pid: number };
    pids.set(rec.worker, rec.pid);
  }
  return pids;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

scenario(
  t,
  "two workers share one port, one budget and one enumeration detector; a dead worker is replaced",
  async () => {
    // Parrot has 2 enrolled users: 120 lookups a minute at most, whichever worker serves them.
    const resolver = await startResolver(t.net, {
      name: "resolver-cluster",
      rootEndpoints: [t.net.root.address],
      overrides: {
        workers: 2,
        admins: ["admin"],
        quotas: { enrolledUsers: { "msp-parrot": 2, "msp-wirechat": 100_000 } },
        enumeration: { mode: "enforce", minDistinct: 20 },
      },
    });
    let pids = new Map<number, number>();
    try {
      assert.ok(resolver.opsPort > 0, "the primary serves the ops listener");
      await waitUntilServing(t.net, resolver);
      await eventually(async () => {
        const r = await fetch(`http://127.0.0.1:${resolver.opsPort}/readyz`);
        assert.equal(r.status, 200, await r.text());
      });
      pids = workerPids(resolver);
      assert.equal(pids.size, 2, "two workers listening");

      // Eight connections of parrot's, asked in turn, one lookup at a time, each a number nobody
      // registered in a number block of its own (so only the budget stops them), until refused.
      const connections = Array.from({ length: 8 }, () =>
        t.net.channel(resolver.address, "msp-parrot").client(pb.ResolverService),
      );
      let asked = 0;
      const sweep = async (): Promise<number> => {
        for (let answered = 0; ; answered++) {
          const c = connections[asked % connections.length] as (typeof connections)[number];
          const csi = `tel:+4477${String(asked++).padStart(4, "0")}0000`;
          try {
            await c.resolve({ csi });
          } catch (err) {
            assert.match(String(err), /RESOURCE_EXHAUSTED: "msp-parrot" has spent its budget/);
            return answered;
          }
        }
      };
      const misses = async () =>
        Promise.all(
          ["1", "2"].map((w) =>
            metricValue(resolver.opsPort, `mimi_resolver_cache_misses_total{worker="${w}"}`),
          ),
        );
      const first = await sweep();
      // Both workers served parrot's misses.
      const [m1 = 0, m2 = 0] = await eventually(async () => {
        const m = await misses();
        assert.ok(
          m.every((n) => n > 0),
          `misses per worker: ${m}`,
        );
        return m;
      });
      // One budget: the minute's 120, overspent by what the other worker granted before it
      // heard (alone, each worker would grant 120, 240 in all).
      assert.ok(first >= 110 && first <= 150, `${first} answered over two workers`);
      // And one refill: half a minute later, half the minute's budget between them (each
      // worker refilling a budget of its own would give twice that).
      t.advanceClock(resolver, 30_000);
      const second = await sweep();
      assert.ok(second >= 30 && second <= 80, `${second} answered half a minute later`);

      // Enumeration: wirechat walks block +44770050 over four connections (over both workers);
      // 20 distinct numbers in all trip the one detector, and every connection is refused.
      const crawl = Array.from({ length: 4 }, () =>
        t.net.channel(resolver.address, "msp-wirechat").client(pb.ResolverService),
      );
      const number = (i: number) => `tel:+44770050${String(i).padStart(4, "0")}`;
      for (let i = 0; i < 20; i++) await (crawl[i % 4] as (typeof crawl)[number]).resolve({ csi: number(i) });
      await eventually(async () => {
        const [n1 = 0, n2 = 0] = await misses();
        assert.ok(n1 > m1 && n2 > m2, `both workers served the crawl: ${n1 - m1}, ${n2 - m2}`);
      });
      // The detection reaches the workers within a flush interval; each try asks a fresh number.
      let next = 100;
      for (const c of crawl) {
        await eventually(() =>
          rejectsWith(c.resolve({ csi: number(next++) }), status.RESOURCE_EXHAUSTED, /enumeration/),
        );
      }
      await t.logged(/enumeration suspected; lookups in the block refused/);
      const detections = t
        .logs()
        .split("\n")
        .filter((l) => l.includes("resolver-cluster") && l.includes("lookups in the block refused"));
      assert.equal(detections.length, 1, "the primary logs the detection once");

      // A worker killed outright is replaced, and the port keeps answering.
      const victim = pids.get(1) as number;
      process.kill(victim, "SIGKILL");
      await eventually(async () => {
        assert.equal(
          await metricValue(resolver.opsPort, 'mimi_cluster_worker_restarts_total{worker="primary"}'),
          1,
        );
        assert.equal(workerPids(resolver).size, 2);
        assert.notEqual(workerPids(resolver).get(1), victim);
      });
      const fresh = t.net.channel(resolver.address, "msp-wirechat").client(pb.ResolverService);
      const r = await eventually(() => fresh.resolve({ csi: "tel:+447700900123" }));
      assert.ok(r.answer);
      pids = workerPids(resolver);

      // SIGHUP to the primary reloads every worker, the restarted one included: parrot's new
      // budget (1,000 users: 695 lookups a minute) is what every connection reports.
      const config = JSON.parse(readFileSync(resolver.configPath, "utf8"));
      config.quotas.enrolledUsers["msp-parrot"] = 1_000;
      writeFileSync(resolver.configPath, JSON.stringify(config));
      process.kill(resolver.pid as number, "SIGHUP");
      const fourMore = Array.from({ length: 4 }, () =>
        t.net.channel(resolver.address, "msp-parrot").client(pb.ResolverService),
      );
      await eventually(async () => {
        for (const c of [...connections, ...fourMore])
          assert.equal((await c.getQuota({})).perMinuteLimit, 695n);
      });
    } finally {
      await resolver.stop();
    }
    // A stop ends every worker with the primary.
    for (const pid of pids.values())
      await eventually(async () => assert.ok(!alive(pid), `worker ${pid} exited`));
  },
);

scenario(t, "a worker that cannot start stops the whole resolver with exit code 1", async () => {
  // A key that is not the certificate's: every worker refuses it, and so would a retry.
  const tls = { ...t.net.tlsConfig("resolver"), keyFile: t.net.tlsConfig("cli").keyFile };
  const resolver = await startResolver(t.net, {
    name: "resolver-cluster-bad",
    rootEndpoints: [t.net.root.address],
    overrides: { workers: 2, tls },
  }).then(
    () => assert.fail("the resolver started"),
    (err: Error) => err,
  );
  assert.match(resolver.message, /exited \(1\) before listening/);
  assert.match(resolver.message, /worker \d exited \(1\) before listening/);
});

scenario(t, "a primary whose ops port is taken stops with exit code 1 and says why", async () => {
  const taken = createServer();
  await new Promise<void>((r) => taken.listen(0, "127.0.0.1", r));
  const port = (taken.address() as AddressInfo).port;
  try {
    const err = await startResolver(t.net, {
      name: "resolver-cluster-ops",
      rootEndpoints: [t.net.root.address],
      overrides: { workers: 2, ops: { port } },
    }).then(
      () => assert.fail("the resolver started"),
      (e: Error) => e,
    );
    assert.match(err.message, /exited \(1\) before listening/);
    assert.match(err.message, /resolver: ops listener: listen EADDRINUSE/);
  } finally {
    taken.close();
  }
});
