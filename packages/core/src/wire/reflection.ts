// gRPC server reflection (grpc.reflection.v1 and v1alpha), so grpcurl and similar tools can
// list and call a server's services without the .proto files. Off unless the config says
// `reflection: true`; like every service it is reached only over mutual TLS. It is served from
// the descriptors protoc-gen-es embedded in the generated code, so it always matches the build.
import { toBinary } from "@bufbuild/protobuf";
import type { GenFile } from "@bufbuild/protobuf/codegenv2";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import type * as grpc from "@grpc/grpc-js";
import { ReflectionService } from "@grpc/reflection";
import * as pb from "../gen/index.js";

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

/** Adds the reflection services to `server`, describing every service the generated code holds. */
export function addReflection(server: Pick<grpc.Server, "addService">): void {
  const fileDescriptorProtos = allFiles().map((f) =>
    Buffer.from(toBinary(FileDescriptorProtoSchema, f.proto)),
  );
  // @grpc/reflection reads only the descriptors of a proto-loader package definition.
  const definition = { mimi: { fileDescriptorProtos } } as unknown as ConstructorParameters<
    typeof ReflectionService
  >[0];
  new ReflectionService(definition).addToServer(server);
}
