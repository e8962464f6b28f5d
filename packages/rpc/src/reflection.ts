// gRPC server reflection (grpc.reflection.v1 and v1alpha), so grpcurl and similar tools can
// list and call a server's services without the .proto files. Off unless the config says
// `reflection: true`; reached over mutual TLS by certificates with the admin role only. It is
// served from the descriptors protoc-gen-es embedded in the generated code, so it always
// matches the build, and lists only the services this server registered.
//
// @grpc/reflection registers a raw grpc-js handler, outside addService's checks, so the gate is
// here: the caller's role, a few streams at a time, a bounded number of requests per stream
// (its handler answers every request without waiting for the reader).
import { toBinary } from "@bufbuild/protobuf";
import type { GenFile } from "@bufbuild/protobuf/codegenv2";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import { ReflectionService } from "@grpc/reflection";
import * as pb from "@mimi/core/pb";
import { peerOf } from "./grpc.js";
import { limitsOf } from "./server-limits.js";
import { sendable } from "./status.js";

/** Reflection streams served at once, across callers. */
const MAX_STREAMS = 4;
/** Requests one reflection stream may send (grpcurl sends a few dozen for a whole server). */
const MAX_REQUESTS_PER_STREAM = 1_000;

/** Every generated file and the files it imports, each once. */
function allFiles(): GenFile[] {
  const seen = new Map<string, GenFile>();
  const visit = (f: GenFile) => {
    if (seen.has(f.name)) return;
    seen.set(f.name, f);
    for (const d of f.dependencies) visit(d);
  };
  for (const [name, value] of Object.entries(pb)) {
    if (name.startsWith("file_")) visit(value as GenFile);
  }
  return [...seen.values()];
}

/** The services `server` registered so far ("pkg.Service"), read from grpc-js's handler table. */
function registeredServices(server: grpc.Server): string[] | undefined {
  const handlers = (server as unknown as { handlers?: Map<string, unknown> }).handlers;
  if (!(handlers instanceof Map)) return undefined;
  return [...new Set([...handlers.keys()].map((path) => path.split("/")[1] ?? ""))].filter(Boolean);
}

type Duplex = grpc.ServerDuplexStream<unknown, unknown>;

/** Adds the reflection services to `server`, describing the services registered before it. */
export function addReflection(server: grpc.Server): void {
  const fileDescriptorProtos = allFiles().map((f) =>
    Buffer.from(toBinary(FileDescriptorProtoSchema, f.proto)),
  );
  // @grpc/reflection reads only the descriptors of a proto-loader package definition.
  const definition = { mimi: { fileDescriptorProtos } } as unknown as ConstructorParameters<
    typeof ReflectionService
  >[0];
  const services = registeredServices(server);
  let open = 0;
  const refuse = (call: Duplex, code: grpc.status, details: string) =>
    call.emit("error", { code, details: sendable(details) });
  const gate =
    (handler: (call: Duplex) => void) =>
    (call: Duplex): void => {
      let peer: ReturnType<typeof peerOf>;
      try {
        peer = peerOf(call);
      } catch (err) {
        refuse(call, grpc.status.UNAUTHENTICATED, (err as Error).message);
        return;
      }
      if (!peer.roles.has("admin")) {
        refuse(
          call,
          grpc.status.PERMISSION_DENIED,
          `reflection is for admins; "${peer.name}" has no admin role`,
        );
        return;
      }
      if (open >= MAX_STREAMS) {
        refuse(
          call,
          grpc.status.RESOURCE_EXHAUSTED,
          `at most ${MAX_STREAMS} reflection streams at once; retry`,
        );
        return;
      }
      open++;
      let closed = false;
      const close = () => {
        if (!closed) open--;
        closed = true;
      };
      call.once("close", close);
      call.once("cancelled", close);
      call.once("finish", close);
      let requests = 0;
      call.on("data", () => {
        if (++requests === MAX_REQUESTS_PER_STREAM + 1) {
          refuse(
            call,
            grpc.status.RESOURCE_EXHAUSTED,
            `at most ${MAX_REQUESTS_PER_STREAM} requests per stream`,
          );
        }
      });
      handler(call);
    };
  const gated: Pick<grpc.Server, "addService"> = {
    addService(service, implementation) {
      const wrapped: grpc.UntypedServiceImplementation = {};
      for (const [name, handler] of Object.entries(implementation)) {
        wrapped[name] = gate(handler as (call: Duplex) => void) as grpc.UntypedHandleCall;
      }
      server.addService(service, wrapped);
      // Its requests are small (a symbol or a file name): held to the server's usual limit,
      // like every method addService registers (server-limits.ts limitRequests).
      const limits = limitsOf(server);
      for (const m of Object.values(service)) limits.requestBytes.set(m.path, limits.limits.maxRequestBytes);
    },
  };
  new ReflectionService(definition, services ? { services } : {}).addToServer(gated);
}
