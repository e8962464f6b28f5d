// A gRPC server with the project's options, connection limits and call metrics; binding it and
// stopping it with a grace period. runServer builds on these; tests use them directly.
import * as grpc from "@grpc/grpc-js";
import type { CallObservers } from "./metrics.js";
import {
  attachLimits,
  type ConnectionLimits,
  DEFAULT_CONNECTION_LIMITS,
  grpcLimitOptions,
  limitRequests,
} from "./server-limits.js";

/**
 * Server options: keepalive pings to find dead clients. (grpc-js's server has no limit on a
 * client's pings: `grpc.http2.min_ping_interval_without_data_ms` is a C-core option it ignores;
 * Node's HTTP/2 answers each PING and bounds the answers it has not yet written.)
 */
const SERVER_OPTIONS: grpc.ServerOptions = {
  "grpc.keepalive_time_ms": 60_000,
  "grpc.keepalive_timeout_ms": 20_000,
  // Channelz keeps per-call statistics for a debugging service we do not expose.
  "grpc.enable_channelz": 0,
};

/** A new grpc-js server with the project's options, `limits` (connections section) and call metrics. */
export function createGrpcServer(
  limits: ConnectionLimits = DEFAULT_CONNECTION_LIMITS,
  observers?: CallObservers,
): grpc.Server {
  const requestBytes = new Map<string, number>();
  const server = new grpc.Server({
    ...SERVER_OPTIONS,
    ...grpcLimitOptions(limits),
    interceptors: [limitRequests(requestBytes)],
  });
  attachLimits(server, limits, observers, requestBytes);
  return server;
}

/** Binds `server` on host:port (0 picks a free port) and returns the bound port. */
export function listen(
  server: grpc.Server,
  host: string,
  port: number,
  credentials: grpc.ServerCredentials,
): Promise<number> {
  const address = host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
  return new Promise((resolvePort, reject) => {
    server.bindAsync(address, credentials, (err, bound) => (err ? reject(err) : resolvePort(bound)));
  });
}

/** Stops accepting calls and waits up to `graceMs` for running ones before cutting them off. */
export function shutdown(server: grpc.Server, graceMs: number): Promise<void> {
  return new Promise((done) => {
    const timer = setTimeout(() => {
      server.forceShutdown();
      done();
    }, graceMs);
    server.tryShutdown(() => {
      clearTimeout(timer);
      done();
    });
  });
}
