// `npm run check`: lint and format (biome), types (tsc), proto lint (buf), generated code
// fresh, no circular imports, and the layout rules of ARCHITECTURE.md for every package.
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
    if (statSync(p).isDirectory()) {
      if (e !== "node_modules" && e !== "dist") files(p, out);
    } else out.push(p);
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
  const committed = "packages/core/src/gen/generated";
  const fresh = join(tmp, committed);
  const generated = (root: string) =>
    files(root)
      .map((f) => relative(root, f))
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
  "bench",
  "test",
]);

// ---- layout rules --------------------------------------------------------------------------
process.stdout.write("check: layout rules\n");

/** The shared libraries, for the parts that may use all of them. */
const SHARED = ["@mimi/core", "@mimi/core/pb", "@mimi/rpc", "@mimi/host", "@mimi/client"];
/** Which workspace packages each part of the tree may import (subpaths included). */
const MAY_IMPORT: Record<string, readonly string[]> = {
  core: [],
  rpc: ["@mimi/core", "@mimi/core/pb"],
  host: ["@mimi/core", "@mimi/core/pb", "@mimi/rpc"],
  client: ["@mimi/core", "@mimi/core/pb", "@mimi/rpc"],
  root: [...SHARED],
  authoritative: [...SHARED],
  resolver: [...SHARED],
  devnet: [...SHARED],
  cli: [
    "@mimi/core",
    "@mimi/core/pb",
    "@mimi/rpc",
    "@mimi/client",
    "@mimi/devnet/paths",
    "@mimi/devnet/pki",
    "@mimi/root/offline",
    "@mimi/authoritative/offline",
  ],
  bench: [
    ...SHARED,
    "@mimi/devnet",
    "@mimi/devnet/paths",
    "@mimi/authoritative/offline",
    "@mimi/resolver/offline",
  ],
  test: [...SHARED, "@mimi/devnet"],
};
/** What tests anywhere may import besides (helpers for tests, never for production code). */
const TESTS_MAY_IMPORT = ["@mimi/core/testing"];
/** Libraries: no process of their own, so they read no process global. */
const LIBRARIES = ["core", "rpc", "host", "client"];
const SERVERS = ["root", "authoritative", "resolver"];
/** Largest hand-written source file, in lines (generated code and tests are exempt). */
const MAX_FILE_LINES = 500;

const parts = [
  ...Object.keys(MAY_IMPORT)
    .filter((p) => p !== "bench" && p !== "test")
    .map((p) => ({ part: p, dir: join("packages", p, "src") })),
  { part: "bench", dir: "bench" },
  { part: "test", dir: "test" },
];
for (const { part, dir } of parts) {
  for (const f of files(dir)) {
    if (!f.endsWith(".ts") || f.includes("/generated/")) continue;
    const src = readFileSync(f, "utf8");
    const base = f.split("/").pop() ?? "";
    const isTest = f.endsWith(".test.ts");
    const code = src
      .split("\n")
      .filter((l) => !/^\s*(\/\/|\*|\/\*)/.test(l))
      .join("\n");
    for (const m of code.matchAll(/(?:from|import\()\s*"(@mimi\/[^"]+)"/g)) {
      const spec = m[1] as string;
      const allowed = MAY_IMPORT[part] ?? [];
      // Unit tests of a package may use the dev network's helpers (PKI, in-process servers).
      const testOk =
        isTest && (TESTS_MAY_IMPORT.includes(spec) || (part !== "test" && spec.startsWith("@mimi/devnet")));
      if (!allowed.includes(spec) && !testOk) failures.push(`${f} imports ${spec}`);
    }
    if (/(?:from|import\()\s*"\.\.\/packages\//.test(code))
      failures.push(`${f} reaches into packages/ by path`);
    if (isTest) continue;
    // The test helpers by path too (core's own files would reach them so).
    if (base !== "testing.ts" && /(?:\bfrom|\bimport\(?)\s*"\.\.?\/(?:[^"]*\/)?testing\.js"/.test(code))
      failures.push(`${f} imports the test helpers (testing.ts), which only tests may`);
    const lines = src.split("\n").length;
    if (lines > MAX_FILE_LINES) failures.push(`${f} has ${lines} lines (at most ${MAX_FILE_LINES})`);
    if (/from "better-sqlite3"/.test(code) && base !== "store.ts")
      failures.push(`${f} imports better-sqlite3 (only store.ts may)`);
    const grpcValue = /^import (?!type)[^;]*from "@grpc\/grpc-js"/m.test(code);
    // core is the protocol's model: no network, so a client in any language can mirror it.
    if (part === "core" && /from "@grpc\/grpc-js"/.test(code))
      failures.push(`${f} imports @grpc/grpc-js (core has no network; gRPC lives in @mimi/rpc)`);
    // The shared clients speak through @mimi/rpc's typed channels, never grpc-js directly.
    if (part === "client" && grpcValue) failures.push(`${f} imports @grpc/grpc-js (clients use @mimi/rpc)`);
    if (SERVERS.includes(part) && grpcValue && !["server.ts", "upstream.ts"].includes(base))
      failures.push(`${f} imports @grpc/grpc-js (only server.ts and upstream.ts may)`);
    // Libraries: the process is what main.ts hands to runServer, never a global.
    if (LIBRARIES.includes(part) && /\bprocess\./.test(code)) failures.push(`${f} uses the process global`);
    if ([...SERVERS, "cli"].includes(part) && /process\.(env|argv|exit)\b/.test(code) && base !== "main.ts")
      failures.push(`${f} uses process.env/argv/exit (only main.ts may)`);
  }
}

if (failures.length > 0) {
  process.stderr.write(`check failed:\n${failures.map((f) => `  - ${f}`).join("\n")}\n`);
  process.exit(1);
}
process.stdout.write("check: all passed\n");
