// Pieces every server's main.ts uses: reading the config file, binding a gRPC
// server, and the TLS section of configs. Kept here so the three mains stay alike.
import { readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { ConfigError, type ConfigReader } from "./config.js";
import type { TlsPaths } from "./tls.js";

/** Server options: keepalive pings to find dead clients, and tolerance for clients' pings on idle streams. */
const SERVER_OPTIONS: grpc.ServerOptions = {
  "grpc.keepalive_time_ms": 60_000,
  "grpc.keepalive_timeout_ms": 20_000,
  "grpc.http2.min_ping_interval_without_data_ms": 10_000,
  "grpc.max_receive_message_length": 16 * 1024 * 1024,
  // Channelz keeps per-call statistics for a debugging service we do not expose.
  "grpc.enable_channelz": 0,
};

/** A new grpc-js server with the project's options. */
export function createGrpcServer(): grpc.Server {
  return new grpc.Server(SERVER_OPTIONS);
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

/** Reads a JSON config file; returns the parsed value and the folder relative paths are resolved against. */
export function readConfigFile(path: string): { raw: unknown; baseDir: string } {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw new ConfigError(`cannot read config file ${path}: ${(err as Error).message}`);
  }
  try {
    return { raw: JSON.parse(text), baseDir: dirname(resolve(path)) };
  } catch (err) {
    throw new ConfigError(`config file ${path} is not valid JSON: ${(err as Error).message}`);
  }
}

/** Reads a `tls` section ({caFile, certFile, keyFile}); relative paths are resolved against `baseDir`. */
export function readTlsSection(r: ConfigReader, baseDir: string): TlsPaths {
  const t = r.object("tls");
  const paths = {
    caFile: resolve(baseDir, t.string("caFile")),
    certFile: resolve(baseDir, t.string("certFile")),
    keyFile: resolve(baseDir, t.string("keyFile")),
  };
  t.done();
  return paths;
}
