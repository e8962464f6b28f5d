// The benchmark's tiny mode, so its code never rots: every scenario runs against a real
// network (and the echo references beside it) and reports numbers. Nothing here is about speed; figures come from npm run bench.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

const REPO = resolve(fileURLToPath(import.meta.url), "../../..");

interface Report {
  machine: { cores: number; cpuModel: string; node: string };
  parameters: { mappings: number; quick: boolean };
  results: {
    scenario: string;
    variant: string;
    lookups: number;
    errors: number;
    firstError?: string;
    lookupsPerSec: number;
    latencyMs: Record<string, number>;
    cpuSeconds: Record<string, number>;
    rssMb: Record<string, number>;
    extra?: Record<string, number>;
    errorsByKind?: Record<string, number>;
    round?: number;
    startedAt?: string;
    lookupsPerDpCpuSecond?: number;
  }[];
  referenceRatios?: { reference: string; variant: string; rounds: number[] }[];
}

/** Longest the quick run may take; on a loaded 2-core machine it has needed about 3 minutes. */
const BENCH_LIMIT_MS = 900_000;

/** Runs `npm run bench -- --quick` with `args` into `dir`; its stdout and its JSON report. */
async function quickBench(dir: string, args: readonly string[]): Promise<{ out: string; report: Report }> {
  const out = await new Promise<string>((done, fail) =>
    execFile(
      process.execPath,
      [
        "--import",
        "tsx",
        join(REPO, "bench/run.ts"),
        "--quick",
        "--out",
        join(dir, "out"),
        "--data",
        join(dir, "data"),
        ...args,
      ],
      // SIGKILL on timeout: the benchmark's servers and load processes watch its pipes and
      // end with it, so nothing is left running.
      { timeout: BENCH_LIMIT_MS, killSignal: "SIGKILL", cwd: REPO, maxBuffer: 64 * 1024 * 1024 },
      (err, stdout, stderr) => (err ? fail(new Error(`${err.message}\n${stdout}\n${stderr}`)) : done(stdout)),
    ),
  );
  const files = readdirSync(join(dir, "out")).filter((f) => f.endsWith(".json"));
  assert.equal(files.length, 1, out);
  return { out, report: JSON.parse(readFileSync(join(dir, "out", files[0] as string), "utf8")) as Report };
}

test("npm run bench -- --quick runs every scenario and reports its numbers", {
  timeout: BENCH_LIMIT_MS + 60_000,
}, async () => {
  const dir = mkdtempSync(join(tmpdir(), "mimi-bench-"));
  try {
    const { out, report } = await quickBench(dir, []);
    assert.ok(report.machine.cores > 0 && report.machine.node.startsWith("v"));
    assert.equal(report.parameters.quick, true);
    const scenarios = new Set(report.results.map((r) => r.scenario));
    assert.deepEqual([...scenarios].sort(), [
      "abuse",
      "authoritative",
      "bulk",
      "cluster",
      "cold",
      "echo-bare",
      "echo-core",
      "federation",
      "idle",
      "memory",
      "mixed",
      "negative",
      "overload",
      "private",
      "propagation",
      "replication",
      "warm",
    ]);
    const bulk = report.results.find((r) => r.scenario === "bulk");
    assert.ok((bulk?.extra?.recordsPerSecond ?? 0) > 0, "the bulk run reports signed mappings per second");
    // The abuse run's sweep is refused (its errors), within its budget, beside an address book
    // that is not.
    const sweep = report.results.find((r) => r.scenario === "abuse" && r.variant.startsWith("sweep"));
    assert.ok(sweep && sweep.errors > 0, "the sweep was refused");
    assert.match(sweep?.firstError ?? "", /RESOURCE_EXHAUSTED|budget|enumeration/);
    assert.ok((sweep?.extra?.granted ?? 0) <= 120, "no more than its minute's budget went to a DP");
    // The cache's heap per answer is measured in a process of its own (checked below), not a load run.
    // The federation filter's size is read from the resolver's stats, and the private table's
    // build from the DP's CPU, not from load runs.
    // A secondary's bring-up and lag are measured on the secondary and the primary, not by a load run.
    const replicaOnly = (x: Report["results"][number]) =>
      x.scenario === "replication" && (x.variant.startsWith("bring-up") || x.variant.startsWith("lag"));
    const bringUp = report.results.find(
      (r) => r.scenario === "replication" && r.variant.startsWith("bring-up"),
    );
    assert.ok(
      (bringUp?.lookups ?? 0) > 0 && (bringUp?.extra?.bringUpSeconds ?? 0) > 0,
      "a secondary was brought up",
    );
    const lag = report.results.find((r) => r.scenario === "replication" && r.variant.startsWith("lag"));
    assert.ok(
      lag && lag.lookups > 0 && lag.errors === 0,
      `every write reached the secondary: ${lag?.firstError ?? ""}`,
    );
    assert.ok(Number.isFinite(lag?.latencyMs.p99), "the lag's p99");
    for (const r of report.results.filter(
      (x) =>
        !x.variant.startsWith("cache heap") &&
        x.variant !== "filter size" &&
        x.variant !== "table build" &&
        x.scenario !== "idle" &&
        !replicaOnly(x),
    )) {
      const what = `${r.scenario} ${r.variant}`;
      assert.ok(r.lookups > 0, `${what} made lookups`);
      // Overload runs ask twice what the resolver takes, with a 1 s deadline: failures are
      // expected there, and each is reported by its status.
      if (r.scenario === "overload") {
        const kinds = Object.values(r.errorsByKind ?? {}).reduce((a, b) => a + b, 0);
        assert.equal(kinds, r.errors, `${what}: every failure is counted by its status`);
      } else if (r !== sweep) assert.equal(r.errors, 0, `${what} had no errors`);
      assert.ok(r.lookupsPerSec > 0, what);
      for (const p of ["p50", "p90", "p99", "p999", "max"])
        assert.ok(Number.isFinite(r.latencyMs[p]), `${what} ${p}`);
      // Federation runs count their federated DPs' CPU too.
      const extraDps = Object.keys(r.cpuSeconds).filter(
        (k) => r.scenario === "federation" && /^dp-x\d+$/.test(k),
      );
      assert.deepEqual(
        Object.keys(r.cpuSeconds)
          .filter((k) => !extraDps.includes(k))
          .sort(),
        ["dp-eu", "dp-us", "resolver", "root"],
        what,
      );
      assert.ok((r.rssMb.resolver ?? 0) > 0, `${what} resolver RSS`);
      // Tiny runs may use less than one clock tick (10 ms) of CPU, so only the form is checked.
      assert.ok(
        Object.values(r.cpuSeconds).every((s) => Number.isFinite(s) && s >= 0),
        `${what} CPU`,
      );
    }
    // The reference and the warm runs alternate in rounds, each result saying its round.
    for (const scenario of ["echo-bare", "echo-core", "warm"]) {
      const rounds = report.results.filter((r) => r.scenario === scenario && r.variant === "unary c=1");
      assert.deepEqual(
        rounds.map((r) => r.round),
        [1, 2],
        `${scenario} ran in two rounds`,
      );
    }
    // The authoritative alone runs the echoes' shapes (its stream a LookupStream), each per CPU-second
    // of its DP and, where both measured CPU, over each echo's run of the same shape.
    const warmShapes = report.results
      .filter((r) => r.scenario === "warm" && r.round === 1)
      .map((r) => r.variant);
    const dpRuns = report.results.filter((r) => r.scenario === "authoritative");
    assert.deepEqual(
      dpRuns.map((r) => r.variant.slice(r.variant.indexOf(" ") + 1)),
      warmShapes,
      "the authoritative alone in the echoes' shapes",
    );
    for (const r of dpRuns) {
      if ((r.cpuSeconds["dp-eu"] ?? 0) === 0) continue; // less than a clock tick: no figure
      assert.ok((r.lookupsPerDpCpuSecond ?? 0) > 0, `${r.variant}: lookups per DP CPU-second`);
      const shape = r.variant.slice(r.variant.indexOf(" ") + 1);
      for (const reference of ["echo-bare", "echo-core"]) {
        const echoMeasured = report.results.some(
          (e) => e.scenario === reference && e.variant === shape && (e.cpuSeconds.resolver ?? 0) > 0,
        );
        if (!echoMeasured) continue;
        assert.ok(
          (report.referenceRatios ?? []).some(
            (x) => x.reference === reference && x.variant === `authoritative ${r.variant}`,
          ),
          `${r.variant} over ${reference}`,
        );
      }
    }
    // The cluster runs: one worker and one per core, each reporting its workers and hit share.
    const cluster = report.results.filter((r) => r.scenario === "cluster");
    assert.deepEqual(
      [...new Set(cluster.map((r) => r.extra?.workers))].sort(),
      [...new Set([1, report.machine.cores])].sort(),
    );
    for (const r of cluster) {
      const hits = r.extra?.hitPercent ?? -1;
      assert.ok(hits >= 0 && hits <= 100, `${r.variant}: hit share ${hits}%`);
    }
    // Federation: with K federated DPs, a local lookup asks 1 DP, one asking every DP 1 + K, and
    // one routed by the DPs' filters about 1 (the numbers asked are eu's alone).
    for (const k of [1, 2]) {
      const asked = (variant: string) =>
        report.results.find(
          (r) => r.scenario === "federation" && r.variant === `${k} federated DPs, ${variant}`,
        )?.extra?.dpsAskedPerLookup ?? -1;
      assert.equal(asked("local"), 1, `${k} DPs, local`);
      assert.equal(asked("every DP"), 1 + k, `${k} DPs, every DP`);
      assert.ok(
        asked("filters") >= 1 && asked("filters") < 1 + k / 2,
        `${k} DPs, filters: ${asked("filters")}`,
      );
    }
    // Private lookups: the table was built and measured, and private lookups fetched buckets.
    const build = report.results.find((r) => r.scenario === "private" && r.variant === "table build");
    assert.ok((build?.extra?.csisPerCpuSecond ?? 0) > 0, "the table build's CSIs per CPU-second");
    const priv = report.results.find((r) => r.scenario === "private" && r.variant === "private cold lookups");
    assert.ok(
      (priv?.extra?.bucketBytesPerLookup ?? 0) >= 4096,
      "a bucket of at least 4 KiB per private lookup",
    );
    const filter = report.results.find((r) => r.scenario === "federation" && r.variant === "filter size");
    assert.ok((filter?.extra?.bytesPerCsi ?? 0) > 1, "the filter's bytes per CSI");
    const propagation = report.results.find((r) => r.scenario === "propagation");
    assert.ok((propagation?.extra?.samples ?? 0) > 0, "the propagation run saw writes become visible");
    assert.ok((propagation?.latencyMs.p50 ?? 0) > 0, "and measured how long that took");
    const memory = report.results.find((r) => r.scenario === "memory" && r.variant.startsWith("fill"));
    const heap = report.results.filter((r) => r.scenario === "memory" && r.variant.startsWith("cache heap"));
    assert.equal(heap.length, 2, "the cache's heap per answer, for answers of one and two mappings");
    for (const h of heap) {
      assert.ok((h.extra?.heapBytesPerAnswer ?? 0) > 0, `${h.variant}: heap per answer`);
      // The encoding is kept whole, outside the heap: at least the answer's bytes on the wire.
      assert.ok((h.extra?.externalBytesPerAnswer ?? 0) >= (h.extra?.answerWireBytes ?? 1) * 0.9, h.variant);
    }
    assert.ok((memory?.extra?.cachedAnswers ?? 0) > 0, "the memory run cached answers");
    assert.ok(Number.isFinite(memory?.extra?.bytesPerCachedAnswer), "and reported bytes per answer");
    // The idle run measures every server and echo-bare with no load: CPU, not lookups.
    const idle = report.results.find((r) => r.scenario === "idle");
    assert.equal(idle?.lookups, 0, "the idle run sends nothing");
    for (const k of ["root", "dp-eu", "dp-us", "resolver", "echo-bare"]) {
      assert.ok(
        Number.isFinite(idle?.extra?.[k]) && (idle?.extra?.[k] ?? -1) >= 0,
        `idle ms a second of ${k}`,
      );
    }
    assert.match(out, /idle: ms of CPU a second/, "and is printed");
    assert.match(out, /scenario\s+variant\s+lookups\/s/, "the table is printed");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("--paired runs each warm shape and the echo references at the same moment", {
  timeout: BENCH_LIMIT_MS + 60_000,
}, async () => {
  const dir = mkdtempSync(join(tmpdir(), "mimi-bench-"));
  try {
    const echoes = ["echo-bare", "echo-options", "echo-core", "echo-fast"];
    const { out, report } = await quickBench(dir, [
      "--paired",
      "--scenarios",
      "echo,warm",
      "--echoes",
      "bare,options,core,fast",
    ]);
    const paired = report.results.filter((r) => r.round !== undefined);
    const shapes = [...new Set(paired.map((r) => r.variant))];
    assert.equal(shapes.length, 3, "unary c=1, unary c=N and the stream");
    for (const variant of shapes) {
      for (const round of [1, 2]) {
        const runs = paired.filter((r) => r.variant === variant && r.round === round);
        assert.deepEqual(
          runs.map((r) => r.scenario).sort(),
          [...echoes, "warm"].sort(),
          `${variant}, round ${round}`,
        );
        // Started together (one start time for all of them, where runs in turn have one each),
        // each with the figures of the servers it loaded: its own server's as the resolver's,
        // no other run's echo among them.
        assert.equal(new Set(runs.map((r) => r.startedAt)).size, 1, `${variant}, round ${round}: at once`);
        for (const r of runs) {
          assert.ok(r.lookups > 0 && r.errors === 0, `${r.scenario} ${variant}: ${r.firstError ?? ""}`);
          assert.deepEqual(Object.keys(r.cpuSeconds).sort(), ["dp-eu", "dp-us", "resolver", "root"]);
        }
      }
    }
    // A ratio for every round in which both the warm run and the reference's run measured
    // their server's CPU (a tiny run may use less than a clock tick, and then has no figure).
    const ratios = report.referenceRatios ?? [];
    const perCpu = (r: Report["results"][number]) => (r.cpuSeconds.resolver ?? 0) > 0;
    for (const reference of echoes) {
      for (const variant of shapes) {
        const rounds = [1, 2].filter((round) =>
          ["warm", reference].every((scenario) =>
            paired.some(
              (r) => r.scenario === scenario && r.variant === variant && r.round === round && perCpu(r),
            ),
          ),
        );
        const got = ratios.find((r) => r.reference === reference && r.variant === variant);
        assert.equal(got?.rounds.length ?? 0, rounds.length, `${reference} ${variant}: ${out}`);
      }
    }
    assert.ok(ratios.length > 0, "some ratio was measured");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
