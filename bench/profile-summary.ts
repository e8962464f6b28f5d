// Summarizes V8 CPU profiles (.cpuprofile, from node --cpu-prof): the functions with the
// most self time, self time by package, and the total (inclusive) time of this project's
// functions, so an optimisation starts from evidence. `--window a:b` keeps the samples from a
// to b seconds after the profile started (e.g. one scenario of a bench run); a negative bound
// counts back from its end.
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
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

function label(f: Node["callFrame"]): string {
  const file = f.url.replace(/^.*node_modules\//, "").replace(/^file:\/\/.*\/packages\//, "");
  return `${f.functionName || "(anonymous)"}  ${file}:${f.lineNumber + 1}`;
}

function summarize(file: string, top: number, window: [number, number]): void {
  const prof = JSON.parse(readFileSync(file, "utf8")) as Profile;
  const byId = new Map(prof.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of prof.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const self = new Map<number, number>();
  // A negative bound counts back from the end of the profile.
  const length = prof.timeDeltas.reduce((a, b) => a + b, 0) / 1e6;
  const [from, to] = window.map((b) => (b < 0 ? length + b : b)) as [number, number];
  let at = 0;
  for (const [i, id] of prof.samples.entries()) {
    const dt = prof.timeDeltas[i] ?? 0;
    at += dt;
    if (at < from * 1e6 || at > to * 1e6) continue;
    self.set(id, (self.get(id) ?? 0) + dt);
  }
  const total = [...self.values()].reduce((a, b) => a + b, 0);
  const fns = new Map<string, number>();
  const pkgs = new Map<string, number>();
  for (const [id, us] of self) {
    const n = byId.get(id);
    if (!n) continue;
    const f = n.callFrame;
    if (f.functionName === "(idle)") continue;
    const key = label(f);
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
  // Inclusive time: each sample counts once for every distinct project function on its stack.
  const inclusive = new Map<string, number>();
  for (const [id, us] of self) {
    if (byId.get(id)?.callFrame.functionName === "(idle)") continue;
    const seen = new Set<string>();
    for (let n: number | undefined = id; n !== undefined; n = parent.get(n)) {
      const f = byId.get(n)?.callFrame;
      if (f?.url.includes("/packages/") && !seen.has(label(f))) seen.add(label(f));
    }
    for (const k of seen) inclusive.set(k, (inclusive.get(k) ?? 0) + us);
  }
  process.stdout.write("-- this project's functions (total time, callees included)\n");
  for (const [k, v] of [...inclusive].sort((a, b) => b[1] - a[1]).slice(0, top))
    process.stdout.write(`${pct(v)}  ${k}\n`);
}

const args = process.argv.slice(2);
const w = args.indexOf("--window");
const window = (w >= 0 ? (args.splice(w, 2)[1] ?? "") : "0:")
  .split(":")
  .map((x) => (x === "" ? Infinity : Number(x)));
window[0] = Number.isFinite(window[0]) ? (window[0] as number) : 0;
const [target, topArg] = args;
if (!target || window.some(Number.isNaN)) {
  process.stderr.write(
    "usage: profile-summary <file.cpuprofile | folder> [top] [--window from:to seconds]\n",
  );
  process.exit(2);
}
const top = Number(topArg ?? 25);
const files = target.endsWith(".cpuprofile")
  ? [target]
  : readdirSync(target)
      .filter((f) => f.endsWith(".cpuprofile"))
      .map((f) => join(target, f));
for (const f of files) summarize(f, top, [window[0] as number, window[1] ?? Infinity]);
