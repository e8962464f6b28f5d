// Helpers for this package's tests only (scripts/check.ts keeps other code from importing them).
import type * as grpc from "@grpc/grpc-js";

/** A unary method of raw bytes at `path`, for a test server that needs no .proto. */
export function bytesMethod(path: string): grpc.MethodDefinition<Buffer, Buffer> {
  return {
    path,
    requestStream: false,
    responseStream: false,
    requestSerialize: (b) => b,
    requestDeserialize: (b) => b,
    responseSerialize: (b) => b,
    responseDeserialize: (b) => b,
  };
}
