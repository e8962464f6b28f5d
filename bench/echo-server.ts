// The benchmark's references: servers with the resolver's API over the same mutual TLS 1.3 that
// do no work. They answer every Resolve with the same ResolveResponse bytes (a real cached
// answer, taken from the network at the start of the run) and every ResolveStream item with
// them, so lookups per CPU-second of the real resolver read as a ratio of what the stack allows
// on this machine in this hour. Two of them: "bare" is grpc-js alone (a raw handler, the
// request decoded by protobuf-es only where the stream needs its id), "core" adds core's server
// options, connection limits and service adapter (decoding, role checks, metrics hooks), the
// framework every server runs on. On request (--echoes): "options" has the raw handlers on a
// server made with the framework's options and limits, to tell what the options cost from what
// the adapter does; "fast" is the resolver's hit path without the hit (the framework, its call
// metrics and a fast path that answers every request with the same bytes), to tell what a hit's
// own work costs from what the framework around it does. Started by bench/references.ts; prints
// {"port":N}.
import { fromBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { createLogger, encodeResolveStreamItem, type ItemBytes, pb, readSimpleRequest } from "@mimi/core";
import { devTlsPaths } from "@mimi/devnet/paths";
import {
  addHealthService,
  addService,
  createGrpcServer,
  createServerMetrics,
  DEFAULT_CONNECTION_LIMITS,
  keepStreamMapsYoung,
  listen,
  loadTls,
  serverCredentials,
  silenceIpServernameWarning,
} from "@mimi/rpc";

interface EchoSpec {
  mode: "bare" | "options" | "core" | "fast";
  /** The local network's PKI: the echo presents the resolver's certificate. */
  pkiDir: string;
  /** An encoded ResolveResponse, hex. */
  responseHex: string;
}

silenceIpServernameWarning(process);
const spec = JSON.parse(process.argv[2] ?? "{}") as EchoSpec;
const response = new Uint8Array(Buffer.from(spec.responseHex, "hex"));
const log = createLogger({ name: "echo", level: "warn" });
const server =
  spec.mode === "bare"
    ? new grpc.Server({ "grpc.enable_channelz": 0 })
    : createGrpcServer(
        DEFAULT_CONNECTION_LIMITS,
        spec.mode === "fast" ? createServerMetrics("resolver").observers : undefined,
      );
addHealthService(server, log, [pb.ResolverService.typeName], true);
if (spec.mode === "fast") {
  // The resolver's hit path with the hit's own work taken out: the framework's fast-path
  // wrappers and call metrics around a fast path that answers every request with the same
  // bytes (a stream item with its request's id).
  const item = (req: Buffer, _call?: unknown, itemBytes?: ItemBytes) => {
    const r = readSimpleRequest(req, 2, 1);
    return r && encodeResolveStreamItem(r.id, response, itemBytes);
  };
  const declined = new Error("the fast echo answers every request on its fast path");
  addService(
    server,
    pb.ResolverService,
    {
      resolve: async () => {
        throw declined;
      },
      // The items' fast path runs as the handler reads them, and answers them all.
      async resolveStream(reqs) {
        for await (const _ of reqs) throw declined;
      },
      getQuota: async () => ({}),
    },
    { log, fast: { resolve: () => response, resolveStream: item } },
  );
} else if (spec.mode === "core") {
  // Typed as the message; the adapter writes Uint8Array answers as they are (core codec/encoded.ts).
  const answer = response as unknown as pb.ResolveResponse;
  addService(
    server,
    pb.ResolverService,
    {
      resolve: async () => answer,
      async resolveStream(reqs, _ctx, send) {
        for await (const req of reqs) {
          await send(encodeResolveStreamItem<pb.ResolveStreamResponse>(req.requestId, response));
        }
      },
      getQuota: async () => ({}),
    },
    { log },
  );
} else {
  const raw = (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.byteLength);
  const method = (name: string, stream: boolean): grpc.MethodDefinition<Buffer, Buffer> => ({
    path: `/${pb.ResolverService.typeName}/${name}`,
    requestStream: stream,
    responseStream: stream,
    requestSerialize: (b) => b,
    requestDeserialize: (b) => b,
    responseSerialize: (b) => b,
    responseDeserialize: (b) => b,
  });
  const bytes = raw(response);
  server.addService(
    { Resolve: method("Resolve", false), ResolveStream: method("ResolveStream", true) },
    {
      Resolve: (_call: grpc.ServerUnaryCall<Buffer, Buffer>, done: grpc.sendUnaryData<Buffer>) =>
        done(null, bytes),
      ResolveStream: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
        call.on("data", (req: Buffer) => {
          const { requestId } = fromBinary(pb.ResolveStreamRequestSchema, req);
          call.write(raw(encodeResolveStreamItem(requestId, response)));
        });
        call.on("end", () => call.end());
      },
    },
  );
}
const port = await listen(
  server,
  "127.0.0.1",
  0,
  serverCredentials(loadTls(devTlsPaths(spec.pkiDir, "resolver")), { handshakeTimeoutMs: 10_000 }),
);
// The framework's echoes get what runServer gives every server after it listens.
if (spec.mode !== "bare") keepStreamMapsYoung(server);
process.stdout.write(`${JSON.stringify({ port })}\n`);
// The benchmark holds our stdin open; when it goes, so do we.
process.stdin.on("end", () => process.exit(0));
process.stdin.resume();
