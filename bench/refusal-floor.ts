// What a refused unary call costs the framework alone: a bare grpc-js server over the resolver's
// mutual TLS 1.3 that answers every Resolve at once, either with 200 bytes (ok), refused with a
// short message and no details (refuse-short), or refused as the resolver's gate refuses in
// overload (refuse-full: RESOURCE_EXHAUSTED, its long message, and the google.rpc.Status with
// RetryInfo and ErrorInfo in grpc-status-details-bin), or as that with the message "busy"
// (refuse-terse). The server runs pinned to CPU 0 and the
// client (this process; pin it with taskset -c 1) keeps 64 calls in flight; the server reports
// its CPU per call over the calls after the first 1,000. The floor a resolver's fast refusal
// (resolver fast-paths.ts) is read against: bench/README.md, Overload.
//   taskset -c 1 node --import tsx bench/refusal-floor.ts [modes, default ok,refuse-short,refuse-terse,refuse-full]
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import { encodeStatusDetails } from "@mimi/core";
import { ensureDevPki } from "@mimi/devnet";
import { devTlsPaths } from "@mimi/devnet/paths";
import {
  channelCredentials,
  listen,
  loadTls,
  serverCredentials,
  silenceIpServernameWarning,
} from "@mimi/rpc";

const CALLS = 30_000;
const WARMUP = 1_000;
const PATH = "/mimi.discovery.v1.ResolverService/Resolve";
const MESSAGE =
  'DP "eu" answers about 297 lookups per second here and 135 are sent and 0 waiting: this one would not be answered within its deadline; try again in 1 s';
const asBytes = (b: Buffer) => b;

silenceIpServernameWarning(process);

/** The server: answers as `mode` says; prints {"port"} and, after WARMUP + CALLS calls, {"usPerCall"}. */
async function serve(pkiDir: string, mode: string): Promise<void> {
  const server = new grpc.Server({ "grpc.enable_channelz": 0 });
  const ok = Buffer.alloc(200, 1);
  let n = 0;
  let from: NodeJS.CpuUsage | undefined;
  const method: grpc.MethodDefinition<Buffer, Buffer> = {
    path: PATH,
    requestStream: false,
    responseStream: false,
    requestSerialize: asBytes,
    requestDeserialize: asBytes,
    responseSerialize: asBytes,
    responseDeserialize: asBytes,
  };
  const resolve = (_call: grpc.ServerUnaryCall<Buffer, Buffer>, done: grpc.sendUnaryData<Buffer>) => {
    n++;
    if (n === WARMUP) from = process.cpuUsage();
    if (n === WARMUP + CALLS && from) {
      const d = process.cpuUsage(from);
      process.stdout.write(`${JSON.stringify({ usPerCall: (d.user + d.system) / CALLS })}\n`);
    }
    if (mode === "ok") return done(null, ok);
    const metadata = new grpc.Metadata();
    if (mode === "refuse-short")
      return done({ code: grpc.status.RESOURCE_EXHAUSTED, details: "busy", metadata });
    const message = mode === "refuse-terse" ? "busy" : MESSAGE;
    const retryAfterMs = Math.ceil(1_000 * (1 + Math.random()));
    const details = encodeStatusDetails(grpc.status.RESOURCE_EXHAUSTED, message, {
      retryAfterMs,
      reason: "UPSTREAM_SATURATED",
    });
    metadata.set("grpc-status-details-bin", Buffer.from(details));
    done({ code: grpc.status.RESOURCE_EXHAUSTED, details: message, metadata });
  };
  server.addService({ Resolve: method }, { Resolve: resolve });
  const tls = loadTls(devTlsPaths(pkiDir, "resolver"));
  const port = await listen(server, "127.0.0.1", 0, serverCredentials(tls));
  process.stdout.write(`${JSON.stringify({ port })}\n`);
}

/** Runs the server of `mode` on CPU 0 and WARMUP + CALLS calls at it; its CPU per call. */
async function measure(pkiDir: string, mode: string): Promise<number> {
  const self = fileURLToPath(import.meta.url);
  const args = ["-c", "0", process.execPath, "--import", "tsx", self, "serve", pkiDir, mode];
  const child = spawn("taskset", args, { stdio: ["ignore", "pipe", "inherit"] });
  try {
    const lines: string[] = [];
    let wake: (() => void) | undefined;
    child.stdout.on("data", (d: Buffer) => {
      lines.push(...d.toString().trim().split("\n"));
      wake?.();
    });
    child.on("exit", () => wake?.());
    const next = async (): Promise<Record<string, number>> => {
      while (lines.length === 0) {
        if (child.exitCode !== null) throw new Error(`the ${mode} server exited (${child.exitCode})`);
        await new Promise<void>((r) => (wake = r));
      }
      return JSON.parse(lines.shift() as string);
    };
    const { port } = await next();
    const client = new grpc.Client(
      `127.0.0.1:${port}`,
      channelCredentials(loadTls(devTlsPaths(pkiDir, "msp-a"))),
    );
    const request = Buffer.from([10, 17, ...Buffer.from("tel:+447700900123")]);
    let sent = 0;
    let failure: string | undefined;
    const call = () =>
      new Promise<void>((done) =>
        client.makeUnaryRequest(PATH, asBytes, asBytes, request, { deadline: Date.now() + 10_000 }, (err) => {
          if (err && err.code !== grpc.status.RESOURCE_EXHAUSTED) failure ??= err.message;
          done();
        }),
      );
    const worker = async () => {
      while (sent < WARMUP + CALLS && failure === undefined) {
        sent++;
        await call();
      }
    };
    await Promise.all(Array.from({ length: 64 }, worker));
    client.close();
    if (failure) throw new Error(`${mode}: ${failure}`);
    return (await next()).usPerCall as number;
  } finally {
    child.kill();
  }
}

if (process.argv[2] === "serve") {
  await serve(process.argv[3] as string, process.argv[4] as string);
} else {
  const dir = mkdtempSync(join(tmpdir(), "mimi-refusal-floor-"));
  try {
    await ensureDevPki(dir, ["resolver", "msp-a"]);
    for (const mode of (process.argv[2] ?? "ok,refuse-short,refuse-terse,refuse-full").split(",")) {
      const us = await measure(dir, mode);
      process.stdout.write(`${mode.padEnd(13)} ${us.toFixed(1)} us of server CPU per call\n`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
