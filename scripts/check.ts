// `npm run check`: lint and format (biome), types (tsc), proto lint (buf), generated code
// fresh, no circular imports, and the package dependency rules of ARCHITECTURE.md.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";

const bin = (name: string) => join("node_modules", ".bin", name);
const failures: string[] = [];

function step(name: string, cmd: string, args: string[]): void {
  process.stdout.write(`check: ${name}\n`);
  try {
    execFileSync(cmd, args, { stdio: "inherit" });
  } catch {
    failures.push(name);
  }
}

function files(dir: string, out: string[] = []): string[] {
  for (const e of readdirSync(dir)) {
    const p = join(dir, e);
    if (statSync(p).isDirectory()) files(p, out);
    else out.push(p);
  }
  return out;
}

step("biome (lint + format)", bin("biome"), ["ci", "."]);
step("tsc (packages)", bin("tsc"), ["-b"]);
step("tsc (tests, tools)", bin("tsc"), ["-p", "tsconfig.tools.json"]);
step("buf lint", bin("buf"), ["lint"]);

process.stdout.write("check: generated code is fresh\n");
const tmp = mkdtempSync(join(tmpdir(), "mimi-gen-"));
try {
  execFileSync(bin("buf"), ["generate", "-o", tmp], { stdio: "inherit" });
  const committed = "packages/core/src/gen";
  const fresh = join(tmp, committed);
  // index.ts is hand-written (it re-exports the generated files); everything else is generated.
  const generated = (root: string) =>
    files(root)
      .map((f) => relative(root, f))
      .filter((f) => f !== "index.ts")
      .sort();
  const a = generated(committed);
  const b = generated(fresh);
  const stale =
    a.join() !== b.join() ||
    a.some((f) => readFileSync(join(committed, f), "utf8") !== readFileSync(join(fresh, f), "utf8"));
  if (stale) failures.push("generated code differs from proto/: run npm run gen and commit");
} finally {
  rmSync(tmp, { recursive: true, force: true });
}

step("no circular imports", bin("madge"), [
  "--circular",
  "--extensions",
  "ts",
  "--ts-config",
  "tsconfig.base.json",
  "packages",
]);

// Dependency rules: servers import only core, never each other; grpc-js only in server.ts and
// upstream.ts (and core); better-sqlite3 only in store.ts; process.env/argv/exit only in main.ts.
process.stdout.write("check: dependency rules\n");
for (const pkg of ["root", "authoritative", "resolver"]) {
  for (const f of files(join("packages", pkg, "src"))) {
    if (!f.endsWith(".ts") || f.endsWith(".test.ts")) continue;
    const src = readFileSync(f, "utf8");
    const base = f.split("/").pop() ?? "";
    for (const other of ["root", "authoritative", "resolver"]) {
      if (other !== pkg && src.includes(`@mimi/${other}`)) failures.push(`${f} imports @mimi/${other}`);
    }
    if (
      /from "@grpc\/grpc-js"/.test(src) &&
      !/^import type/m.test(src.match(/.*@grpc\/grpc-js.*/)?.[0] ?? "") &&
      !["server.ts", "upstream.ts"].includes(base)
    ) {
      failures.push(`${f} imports @grpc/grpc-js (only server.ts and upstream.ts may)`);
    }
    if (src.includes('from "better-sqlite3"') && base !== "store.ts")
      failures.push(`${f} imports better-sqlite3`);
    if (/process\.(env|argv|exit)\b/.test(src) && base !== "main.ts")
      failures.push(`${f} uses process.env/argv/exit`);
  }
}

if (failures.length > 0) {
  process.stderr.write(`check failed:\n${failures.map((f) => `  - ${f}`).join("\n")}\n`);
  process.exit(1);
}
process.stdout.write("check: all passed\n");
