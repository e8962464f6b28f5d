// Public surface of @mimi/core: everything the servers, the CLI and tests share.
export * from "./answer.js";
export * from "./clock.js";
export * from "./config.js";
export * from "./convert.js";
export * from "./csi.js";
export * from "./encoded.js";
export * from "./errors.js";
export * from "./feed.js";
export * as pb from "./gen/index.js";
export * from "./grpc.js";
export * from "./health.js";
export * from "./latch.js";
export * from "./logger.js";
export * from "./registry.js";
export * from "./registry-sync.js";
export * from "./server-runtime.js";
export * from "./tls.js";
