// The generated wire types, re-exported as one namespace (`pb`) so they never mix with domain types.
export * from "./generated/grpc/health/v1/health_pb.js";
export * from "./generated/mimi/discovery/v1/authoritative_pb.js";
export * from "./generated/mimi/discovery/v1/claims_pb.js";
export * from "./generated/mimi/discovery/v1/common_pb.js";
export * from "./generated/mimi/discovery/v1/replication_pb.js";
export * from "./generated/mimi/discovery/v1/resolver_pb.js";
export * from "./generated/mimi/discovery/v1/root_pb.js";
