// Summarizes V8 CPU profiles (.cpuprofile, from node --cpu-prof): the functions with the
// most self time, and self time by package, so an optimisation starts from evidence.
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
}
interface Profile {
  nodes: Node[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

function where(url: string): string {
  const m = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (m) return m[1] ?? url;
  const p = /packages\/([^/]+)\//.exec(url);
  if (p) return `@mimi/${p[1]}`;
  if (url.startsWith("node:")) return url.split("/")[0] ?? url;
  return url === "" ? "(native/gc/idle)" : url;
}

function summarize(file: string, top: number): void {
  const prof = JSON.parse(readFileSync(file, "utf8")) as Profile;
  const byId = new Map(prof.nodes.map((n) => [n.id, n]));
  const self = new Map<number, number>();
  for (const [i, id] of prof.samples.entries()) self.set(id, (self.get(id) ?? 0) + (prof.timeDeltas[i] ?? 0));
  const total = [...self.values()].reduce((a, b) => a + b, 0);
  const fns = new Map<string, number>();
  const pkgs = new Map<string, number>();
  for (const [id, us] of self) {
    const n = byId.get(id);
    if (!n) continue;
    const f = n.callFrame;
    if (f.functionName === "(idle)") continue;
    const key = `${f.functionName || "(anonymous)"}  ${f.url.replace(/^.*node_modules\//, "").replace(/^file:\/\/.*\/packages\//, "")}:${f.lineNumber + 1}`;
    fns.set(key, (fns.get(key) ?? 0) + us);
    const pkg = where(f.url);
    pkgs.set(pkg, (pkgs.get(pkg) ?? 0) + us);
  }
  const busy = [...fns.values()].reduce((a, b) => a + b, 0);
  const pct = (us: number) => `${((100 * us) / busy).toFixed(1).padStart(5)}%`;
  process.stdout.write(
    `\n== ${file}: ${(busy / 1e6).toFixed(2)} s busy of ${(total / 1e6).toFixed(2)} s sampled\n`,
  );
  process.stdout.write("-- by package\n");
  for (const [k, v] of [...pkgs].sort((a, b) => b[1] - a[1]).slice(0, 12))
    process.stdout.write(`${pct(v)}  ${k}\n`);
  process.stdout.write("-- top functions (self time)\n");
  for (const [k, v] of [...fns].sort((a, b) => b[1] - a[1]).slice(0, top))
    process.stdout.write(`${pct(v)}  ${k}\n`);
}

const target = process.argv[2];
if (!target) {
  process.stderr.write("usage: profile-summary <file.cpuprofile | folder> [top]\n");
  process.exit(2);
}
const top = Number(process.argv[3] ?? 25);
const files = target.endsWith(".cpuprofile")
  ? [target]
  : readdirSync(target)
      .filter((f) => f.endsWith(".cpuprofile"))
      .map((f) => join(target, f));
for (const f of files) summarize(f, top);
