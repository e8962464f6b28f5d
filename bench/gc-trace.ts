// What the servers' garbage collections cost, run by run (`npm run bench -- --gc-trace <dir>`):
// each server runs under node --trace-gc-nvp, and its trace lines go to <dir>/<server>.log,
// each after the time it was read (ms since 1970). Then
//   node --import tsx bench/gc-trace.ts <dir> <bench result .json>
// sums each server's collections over each run of the result (from its startedAt, for the
// run's duration; results from before runs recorded theirs take --duration): scavenges and
// their pause, the phases of it that grow with what the program makes (parallel copying; the
// sweep of array buffers, one per typed array with memory of its own; the weak handles of
// native objects, such as a Hash per createHash), bytes allocated and promoted, and full
// collections. The echo references' go to <dir>/echo-<mode>.log, from when each listens.
// bench/README.md, "Fewer objects per lookup", read a DP's lookup stream this way.
import { appendFileSync, mkdirSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

/** A withNetwork onLine hook that keeps the servers' trace lines in `dir`. */
export function gcTraceWriter(dir: string): (server: string, line: string) => void {
  mkdirSync(dir, { recursive: true });
  return (server, line) => {
    if (line.includes(" gc=")) appendFileSync(join(dir, `${server}.log`), `${Date.now()} ${line}\n`);
  };
}

const PHASES = [
  "pause",
  "scavenge.parallel",
  "scavenge.sweep_array_buffers",
  "heap.external_weak_global_handles",
] as const;

interface Sums {
  scavenges: number;
  ms: Record<(typeof PHASES)[number], number>;
  allocatedMb: number;
  promotedMb: number;
  full: number;
  fullMs: number;
}

function sum(lines: readonly string[], from: number, to: number): Sums {
  const s: Sums = {
    scavenges: 0,
    ms: Object.fromEntries(PHASES.map((p) => [p, 0])) as Sums["ms"],
    allocatedMb: 0,
    promotedMb: 0,
    full: 0,
    fullMs: 0,
  };
  for (const line of lines) {
    const at = Number(line.slice(0, line.indexOf(" ")));
    if (!(at >= from && at < to)) continue;
    const kv = new Map([...line.matchAll(/ ([a-z_.]+)=([\d.]+)/g)].map((m) => [m[1], Number(m[2])]));
    const kind = / gc=([a-z]+)/.exec(line)?.[1];
    if (kind === "s") {
      s.scavenges++;
      for (const p of PHASES) s.ms[p] += kv.get(p) ?? 0;
      s.allocatedMb += (kv.get("allocated") ?? 0) / 2 ** 20;
      s.promotedMb += (kv.get("promoted") ?? 0) / 2 ** 20;
    } else if (kind === "mc" || kind === "mmc" || kind === "mms") {
      s.full++;
      s.fullMs += kv.get("pause") ?? 0;
    }
  }
  return s;
}

function main(dir: string, resultFile: string): void {
  const result = JSON.parse(readFileSync(resultFile, "utf8")) as {
    parameters: { durationMs: number };
    results: {
      scenario: string;
      variant: string;
      startedAt?: string;
      durationMs?: number;
      lookups: number;
    }[];
  };
  const logs = readdirSync(dir)
    .filter((f) => f.endsWith(".log"))
    .map((f) => ({ server: f.slice(0, -4), lines: readFileSync(join(dir, f), "utf8").split("\n") }));
  for (const run of result.results) {
    if (!run.startedAt) continue;
    const from = Date.parse(run.startedAt);
    process.stdout.write(`${run.scenario} ${run.variant} (${run.lookups} lookups, from ${run.startedAt})\n`);
    for (const { server, lines } of logs) {
      const s = sum(lines, from, from + (run.durationMs ?? result.parameters.durationMs));
      if (s.scavenges === 0 && s.full === 0) continue;
      const ms = (p: (typeof PHASES)[number]) => s.ms[p].toFixed(0);
      process.stdout.write(
        `  ${server}: ${s.scavenges} scavenges, ${ms("pause")} ms paused (copying ${ms("scavenge.parallel")}, ` +
          `array buffers ${ms("scavenge.sweep_array_buffers")}, weak handles ${ms("heap.external_weak_global_handles")}); ` +
          `${s.allocatedMb.toFixed(0)} MB allocated, ${s.promotedMb.toFixed(1)} MB promoted; ` +
          `${s.full} full collections, ${s.fullMs.toFixed(0)} ms\n`,
      );
    }
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [dir, resultFile] = process.argv.slice(2);
  if (!dir || !resultFile) {
    process.stderr.write("usage: node --import tsx bench/gc-trace.ts <trace dir> <bench result .json>\n");
    process.exit(2);
  }
  main(dir, resultFile);
}
