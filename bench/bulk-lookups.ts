// Lookups during bulk registration (audit finding 14): how long a lookup on a DP can wait while
// the DP takes bulk batches, and how fast it takes them. Starts the local network, seeds the eu
// DP, then per round streams `--records` pre-signed records in batches of `--batch` while a
// closed loop of `--lookups` concurrent lookups runs against the same DP.
//   node --import tsx bench/bulk-lookups.ts [--records 10000] [--batch 2000] [--rounds 3] [--threads N]
// `--threads` sets the DP's bulkVerifyThreads (absent: the server's default).
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { bulkRegister } from "@mimi/client";
import { bulkRecord, pb } from "@mimi/core";
import { startNetwork } from "@mimi/devnet";
import { silenceIpServernameWarning } from "@mimi/rpc";

const { values } = parseArgs({
  options: {
    records: { type: "string", default: "10000" },
    batch: { type: "string", default: "2000" },
    rounds: { type: "string", default: "3" },
    lookups: { type: "string", default: "4" },
    threads: { type: "string" },
  },
});
const records = Number(values.records);
const batchSize = Number(values.batch);
const rounds = Number(values.rounds);
const concurrency = Number(values.lookups);
const SEED = 500;

silenceIpServernameWarning(process);
const dir = mkdtempSync(join(tmpdir(), "mimi-bulk-lookups-"));
const net = await startNetwork({
  dir,
  logLevel: "warn",
  overrides: {
    authoritative: values.threads === undefined ? {} : { bulkVerifyThreads: Number(values.threads) },
  },
});
try {
  const key = net.signingKey("msp-bluebird");
  const now = Date.now();
  const csiOf = (i: number) => `tel:+4479${String(i).padStart(8, "0")}`;
  const sign = (first: number, count: number) =>
    Array.from({ length: count }, (_, k) =>
      bulkRecord(
        {
          csi: csiOf(first + k),
          mspId: "bluebird.example",
          ssi: `b${first + k}@bluebird.example`,
          defaultRequested: true,
          tags: [],
          createdAtMs: now,
          dpId: "eu",
          expiresAtMs: now + 300 * 86_400_000,
        },
        key,
      ),
    );
  const claim = net.channel(net.dps.eu.address, "msp-bluebird").client(pb.ClaimService);
  const dp = net.channel(net.dps.eu.address, "resolver").client(pb.AuthoritativeService);
  await bulkRegister(claim, { sessionId: "seed", total: SEED, recordsFrom: sign, batchSize: SEED });

  const summary: { maxLookupMs: number; p99LookupMs: number; lookups: number; recordsPerSecond: number }[] =
    [];
  for (let round = 0; round < rounds; round++) {
    // Signed before the clock starts: the MSP's signing is not the DP's work.
    const base = SEED + round * records;
    const signed = sign(base, records);
    const latencies: number[] = [];
    let running = true;
    let i = 0;
    const loop = async () => {
      while (running) {
        const t = performance.now();
        const r = await dp.lookup({ csi: csiOf(i++ % SEED) }, { timeoutMs: 30_000 });
        latencies.push(performance.now() - t);
        if (r.answer?.status !== pb.LookupStatus.FOUND) throw new Error("seeded CSI not found");
      }
    };
    const loops = Array.from({ length: concurrency }, loop);
    const started = performance.now();
    const done = await bulkRegister(claim, {
      sessionId: `round-${round}`,
      total: records,
      recordsFrom: (first, count) => signed.slice(first, first + count),
      batchSize,
    });
    const elapsedS = (performance.now() - started) / 1000;
    running = false;
    await Promise.all(loops);
    if (done.stored !== records) throw new Error(`stored ${done.stored} of ${records}`);
    latencies.sort((a, b) => a - b);
    const r = {
      maxLookupMs: Math.round(latencies.at(-1) ?? 0),
      p99LookupMs: Math.round(latencies[Math.floor(latencies.length * 0.99)] ?? 0),
      lookups: latencies.length,
      recordsPerSecond: Math.round(records / elapsedS),
    };
    summary.push(r);
    process.stdout.write(
      `round ${round}: ${records} records in batches of ${batchSize}: ${r.recordsPerSecond} records/s; ${r.lookups} lookups meanwhile, p99 ${r.p99LookupMs} ms, worst ${r.maxLookupMs} ms\n`,
    );
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;
  process.stdout.write(
    `${JSON.stringify({
      threads: values.threads ?? "default",
      records,
      batchSize,
      rounds,
      worstLookupMs: Math.max(...summary.map((s) => s.maxLookupMs)),
      medianWorstLookupMs: median(summary.map((s) => s.maxLookupMs)),
      medianP99LookupMs: median(summary.map((s) => s.p99LookupMs)),
      medianRecordsPerSecond: median(summary.map((s) => s.recordsPerSecond)),
    })}\n`,
  );
} finally {
  await net.stop();
  rmSync(dir, { recursive: true, force: true });
}
