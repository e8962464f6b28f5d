// Prometheus metrics of one server process (the operations issue): a prom-client registry with
// build info, the process's own figures (CPU, memory, event-loop lag, from prom-client's
// defaults) and, for every gRPC call, the shape the grpc-ecosystem interceptors made common
// (grpc_server_started_total, grpc_server_handled_total by code, grpc_server_handling_seconds),
// fed by a grpc-js server interceptor so no handler carries metric code. Labels name only the
// service, method, call type and status code; grpc-js runs interceptors only for registered
// methods, so a caller cannot invent label values. Servers add their own gauges and counters to
// the same registry (collect callbacks that read their stats when scraped).
import { createRequire } from "node:module";
import { performance } from "node:perf_hooks";
import { versions } from "node:process";
import * as grpc from "@grpc/grpc-js";
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";

/** This build's version (the packages' version). */
export const MIMI_VERSION: string = (
  createRequire(import.meta.url)("../../package.json") as { version: string }
).version;

/** Latency buckets in seconds, from a cache hit (sub-millisecond) to a deadline (10 s). */
const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** A server's metrics: the registry to scrape and the interceptor that feeds it. */
export interface ServerMetrics {
  readonly registry: Registry;
  readonly interceptor: grpc.ServerInterceptor;
}

type CallType = "unary" | "client_stream" | "server_stream" | "bidi_stream";

/** Creates the registry of a server of `role` ("root", "authoritative", "resolver"). */
export function createServerMetrics(role: string): ServerMetrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  new Gauge({
    name: "mimi_build_info",
    help: "Always 1; the labels say which build and role this process runs.",
    labelNames: ["role", "version", "node"],
    registers: [registry],
  })
    .labels(role, MIMI_VERSION, versions.node)
    .set(1);
  const labels = ["grpc_type", "grpc_service", "grpc_method"] as const;
  const started = new Counter({
    name: "grpc_server_started_total",
    help: "RPCs started on the server.",
    labelNames: labels,
    registers: [registry],
  });
  const handled = new Counter({
    name: "grpc_server_handled_total",
    help: "RPCs completed on the server, by status code.",
    labelNames: [...labels, "grpc_code"],
    registers: [registry],
  });
  const seconds = new Histogram({
    name: "grpc_server_handling_seconds",
    help: "Time from the start of a unary RPC to its status (streams are not timed: their length is the caller's).",
    labelNames: labels,
    buckets: LATENCY_BUCKETS,
    registers: [registry],
  });

  // Bound children per method (and code), made on first use: a call costs two increments and
  // one observation, not label hashing.
  const perMethod = new Map<
    string,
    {
      type: CallType;
      started: Counter.Internal;
      seconds: Histogram.Internal<string>;
      handled: Map<number, Counter.Internal>;
      labels: [string, string, string];
    }
  >();
  const methodOf = (d: grpc.ServerMethodDefinition<unknown, unknown>) => {
    let m = perMethod.get(d.path);
    if (!m) {
      const type: CallType = d.requestStream
        ? d.responseStream
          ? "bidi_stream"
          : "client_stream"
        : d.responseStream
          ? "server_stream"
          : "unary";
      const [, service = "", method = ""] = d.path.split("/");
      const l: [string, string, string] = [type, service, method];
      m = {
        type,
        started: started.labels(...l),
        seconds: seconds.labels(...l),
        handled: new Map(),
        labels: l,
      };
      perMethod.set(d.path, m);
    }
    return m;
  };
  const codeName = (code: number) => grpc.status[code] ?? String(code);

  const interceptor: grpc.ServerInterceptor = (definition, call) => {
    const m = methodOf(definition);
    m.started.inc();
    const t0 = performance.now();
    return new grpc.ServerInterceptingCall(call, {
      sendStatus(status, next) {
        let h = m.handled.get(status.code);
        if (!h) {
          h = handled.labels(...m.labels, codeName(status.code));
          m.handled.set(status.code, h);
        }
        h.inc();
        if (m.type === "unary") m.seconds.observe((performance.now() - t0) / 1000);
        next(status);
      },
    });
  };
  return { registry, interceptor };
}
