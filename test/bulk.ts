// Bulk registration at scale (G4): a trusted MSP streams signed mappings, the DP is killed
// mid-import, restarts, and the import resumes where the DP's committed count stands. Nothing
// committed before the crash is lost, nothing is stored twice, and the result verifies.
// bulk.test.ts runs it at a size that proves the logic; test/slow at a million.
import assert from "node:assert/strict";
import { type BulkProgress, bulkRegister } from "@mimi/client";
import { bulkRecord, DiscoveryError, mappingFromProto, mappingProblem, pb, registryKeys } from "@mimi/core";
import { scenario, useNetwork } from "./harness.js";

/** Declares the crash-and-resume scenario for a test file, with `TOTAL` records in batches of `batchSize`. */
export function bulkCrashScenario(TOTAL: number, batchSize: number): void {
  const t = useNetwork(undefined, "warn");
  const csiOf = (i: number) => `tel:+4475${String(i).padStart(8, "0")}`;

  scenario(t, `a ${TOTAL}-mapping bulk import survives a DP crash and resumes without loss`, async () => {
    const key = t.net.signingKey("msp-bluebird");
    const now = Date.now();
    const recordsFrom = (first: number, count: number) =>
      Array.from({ length: count }, (_, k) => {
        const i = first + k;
        return bulkRecord(
          {
            csi: csiOf(i),
            mspId: "bluebird.example",
            ssi: `u${i}@bluebird.example`,
            defaultRequested: true,
            tags: i % 4 === 0 ? ["Business"] : [],
            createdAtMs: now,
            dpId: "eu",
            expiresAtMs: now + 200 * 86_400_000,
          },
          key,
        );
      });
    const admin = () => t.net.channel(t.net.dps.eu.address, "admin").client(pb.AuthoritativeAdminService);
    const before = (await admin().getStatus({})).mappingCount;
    const run = (onProgress?: (p: BulkProgress) => void) =>
      bulkRegister(t.net.channel(t.net.dps.eu.address, "msp-bluebird").client(pb.ClaimService), {
        sessionId: "export-2026-11",
        total: TOTAL,
        recordsFrom,
        batchSize,
        ...(onProgress ? { onProgress } : {}),
      });

    // First run: kill the DP (SIGKILL, no graceful shutdown) once about 40% is acknowledged.
    let acked = 0;
    let killing: Promise<void> | undefined;
    const failure = await run((p) => {
      acked = p.committed;
      if (!killing && p.committed >= TOTAL * 0.4) killing = t.net.dps.eu.kill();
    }).then(
      () => undefined,
      (err: unknown) => err,
    );
    // The run must have failed because the DP died, not for a reason of its own.
    assert.ok(killing, `the import ended before 40% was acknowledged (${acked}): ${String(failure)}`);
    await killing;
    assert.ok(failure instanceof DiscoveryError, `the import failed with ${String(failure)}`);
    assert.equal(failure.code, "upstream_unavailable", `the import failed with ${failure.message}`);
    assert.ok(acked >= TOTAL * 0.4 && acked < TOTAL, `acknowledged ${acked} of ${TOTAL} before the crash`);

    await t.net.dps.eu.start();
    // Second run: the DP says where to resume; it is at least what was acknowledged.
    const second = await run();
    assert.ok(second.resumedAt >= acked, `resumed at ${second.resumedAt}, acknowledged ${acked}`);
    assert.equal(second.committed, TOTAL);
    assert.equal(second.stored + second.resumedAt, TOTAL, "every record stored exactly once");
    const after = (await admin().getStatus({})).mappingCount;
    assert.equal(after - before, BigInt(TOTAL));

    // A third run of the same session is a no-op; the same records under a new session are unchanged.
    const third = await run();
    assert.deepEqual([third.resumedAt, third.stored], [TOTAL, 0]);

    // Samples from both sides of the crash verify end to end against the registry.
    const snap = (await t.net.channel(t.net.root.address, "cli").client(pb.RootService).getSnapshot({}))
      .snapshot;
    const find = {
      dp: (id: string) => snap?.dps.find((d) => d.id === id),
      msp: (id: string) => snap?.msps.find((m) => m.id === id),
    };
    const dp = t.net.channel(t.net.dps.eu.address, "resolver").client(pb.AuthoritativeService);
    for (const i of [0, Math.floor(acked / 2), acked - 1, acked, TOTAL - 1]) {
      const a = (await dp.lookup({ csi: csiOf(i) })).answer;
      assert.equal(a?.mappings.length, 1, `record ${i}`);
      const m = mappingFromProto(a?.mappings[0] as pb.Mapping);
      assert.equal(m.ssi, `u${i}@bluebird.example`);
      assert.equal(m.proofMethod, "bulk");
      assert.equal(mappingProblem(csiOf(i), m, registryKeys(find), Date.now()), undefined);
    }
  });
}
