// Interop: an MSP's client in another language against a real network. test/interop/msp_client.py
// is Python's grpcio (gRPC's C core, with its own TLS stack) over stubs that protoc generates
// here from proto/, and checks every signature with the `cryptography` package, from what the
// proto comments say alone: the root's registry signature, each answer's DP seal (alone and
// in batches) and each mapping's MSP signature, and the rich error details of bad requests.
// It found the proto's canonical encodings ambiguous about their magic strings (now said to
// carry no length) and INVALID_ARGUMENT without machine-readable details (now every one has).
// Needs Debian's python3-grpcio, python3-protobuf, python3-cryptography, protobuf-compiler and
// protobuf-compiler-grpc (.ci/run installs them); without them it says so loudly and skips,
// or fails where MIMI_REQUIRE_INTEROP=1 (.ci/run sets it once they are installed).
import assert from "node:assert/strict";
import { execFile, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { readdir } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, test } from "node:test";
import { fileURLToPath } from "node:url";
import { scenario, useNetwork } from "../harness.js";

const REPO = resolve(fileURLToPath(import.meta.url), "../../..");
const CLIENT = join(REPO, "test/interop/msp_client.py");
const PACKAGES =
  "python3-grpcio python3-protobuf python3-cryptography protobuf-compiler protobuf-compiler-grpc libprotobuf-dev";

/** The Python and protoc plugin to use, or why there are none. */
function toolchain(): { python: string; plugin: string } | string {
  const run = (cmd: string, args: string[]) => spawnSync(cmd, args, { encoding: "utf8", timeout: 30_000 });
  if (run("protoc", ["--version"]).status !== 0) return "protoc is not installed";
  // The proto imports google.protobuf's well-known types, which Debian ships apart from protoc
  // (libprotobuf-dev, only recommended by protobuf-compiler).
  if (run("protoc", ["--descriptor_set_out=/dev/null", "google/protobuf/duration.proto"]).status !== 0)
    return "protoc finds no well-known types (google/protobuf/duration.proto)";
  const plugin = run("sh", ["-c", "command -v grpc_python_plugin"]).stdout.trim();
  if (!plugin) return "grpc_python_plugin is not installed";
  // Debian's packages are for Debian's Python, which another python3 on the PATH may not be.
  for (const python of ["/usr/bin/python3", "python3"]) {
    if (run(python, ["-c", "import grpc, google.protobuf, cryptography"]).status === 0)
      return { python, plugin };
  }
  return "no python3 with the grpc, protobuf and cryptography modules";
}

const NAME =
  "a Python gRPC client verifies the registry, sealed answers and batched seals, and reads the error details";
const tools = toolchain();
if (typeof tools === "string") {
  const bar = "!".repeat(78);
  process.stderr.write(
    `\n${bar}\n!! INTEROP TEST SKIPPED: ${tools}.\n` +
      `!! It needs Debian's ${PACKAGES}.\n` +
      `!! No client in another language was run against the network here.\n${bar}\n\n`,
  );
  // CI installs the packages and says so: there, a skip would hide a failed install.
  if (process.env.MIMI_REQUIRE_INTEROP === "1") {
    test(NAME, () => assert.fail(`MIMI_REQUIRE_INTEROP is set, but ${tools}`));
  } else {
    test(NAME, { skip: `SKIPPED: ${tools}` }, () => {});
  }
} else {
  interop(tools);
}

/** Runs `cmd`; resolves with its exit code and output (it is bounded by `timeoutMs`). */
function run(cmd: string, args: string[], timeoutMs: number): Promise<{ code: number; out: string }> {
  return new Promise((done) => {
    execFile(cmd, args, { cwd: REPO, timeout: timeoutMs, maxBuffer: 4 << 20 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === "number" ? err.code : 1) : 0;
      done({ code, out: `${stdout}${stderr}` });
    });
  });
}

async function protoFiles(dir: string): Promise<string[]> {
  const entries = await readdir(join(REPO, dir), { recursive: true });
  return entries.filter((f) => f.endsWith(".proto")).map((f) => join(dir, f));
}

function interop(tools: { python: string; plugin: string }): void {
  const t = useNetwork();
  const gen = mkdtempSync(join(tmpdir(), "mimi-interop-"));
  after(() => rmSync(gen, { recursive: true, force: true }));
  scenario(
    t,
    NAME,
    async () => {
      const protos = await protoFiles("proto");
      const generated = await run(
        "protoc",
        [
          "-Iproto",
          `--python_out=${gen}`,
          `--grpc_out=${gen}`,
          `--plugin=protoc-gen-grpc=${tools.plugin}`,
          ...protos,
        ],
        60_000,
      );
      assert.equal(generated.code, 0, `protoc failed on proto/:\n${generated.out}`);
      const n = t.net;
      const { code, out } = await run(
        tools.python,
        [
          CLIENT,
          ...["--gen", gen, "--pki", n.pkiDir, "--resolver", n.resolver.address, "--root", n.root.address],
          ...["--found", "tel:+447700900123", "--not-found", "tel:+447700900999"],
          ...["--stream-prefix", "tel:+1202555", "--stream-items", "200"],
        ],
        120_000,
      );
      const lines = out.split("\n");
      assert.equal(code, 0, `the Python client failed:\n${out}`);
      assert.ok(!lines.some((l) => l.startsWith("FAIL")), out);
      // Every check ran: the registry, health, two answers, the stream, the answers to change
      // as they came and six ways of changing them or the registry, and three bad CSIs.
      assert.equal(lines.filter((l) => l.startsWith("ok ")).length, 16, out);
      // A stream of 200 lookups is read by the DP many at a time, so some seals are batched and
      // were checked through their inclusion paths.
      const batched = Number(/^batched seals: (\d+)$/m.exec(out)?.[1] ?? "0");
      assert.ok(batched > 0, `no batched seal was checked:\n${out}`);
    },
    { timeoutMs: 300_000 },
  );
}
