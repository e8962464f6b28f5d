// The per-call figures of the grpc-ecosystem shape (grpc_server_started_total,
// grpc_server_handled_total by code, grpc_server_handling_seconds), kept as plain numbers per
// registered method and turned into metrics only when scraped. prom-client's bound children
// still check and hash their labels on every increment (a string built per call), which the
// cache-hit path measured as one of its larger costs; here a call costs two increments, a map
// read and a bucket search.

import { performance } from "node:perf_hooks";
import { status as grpcStatus } from "@grpc/grpc-js";
import type { Registry } from "prom-client";

/** The kind of a gRPC method, as the metrics label it. */
export type CallType = "unary" | "client_stream" | "server_stream" | "bidi_stream";

/** Counts one method's calls: `begin` when a call starts, `end` with its status code. */
export interface MethodObserver {
  begin(): number;
  end(t0: number, code: number): void;
}

/** Makes the observer of each registered method (addService calls it once per method). */
export type CallObservers = (path: string, type: CallType) => MethodObserver;

/** What one method has counted since the process started. */
interface MethodFigures {
  readonly labels: Readonly<Record<string, string>>;
  readonly timed: boolean;
  started: number;
  readonly handled: Map<number, number>;
  /** Unary calls per latency bucket (not cumulative), the last one past every bound. */
  readonly buckets: Float64Array;
  sum: number;
  count: number;
}

/** One metric line's value as prom-client's registry formats it. */
interface Value {
  labels: Record<string, string | number>;
  value: number;
  metricName?: string;
}

/** Registers on `registry` the call metrics of a server; returns the observers that feed them. */
export function callMetrics(registry: Registry, bounds: readonly number[]): CallObservers {
  const methods: MethodFigures[] = [];
  scraped(registry, "grpc_server_started_total", "counter", "RPCs started on the server.", () =>
    methods.filter((m) => m.started > 0).map((m) => ({ labels: { ...m.labels }, value: m.started })),
  );
  scraped(
    registry,
    "grpc_server_handled_total",
    "counter",
    "RPCs completed on the server, by status code.",
    () =>
      methods.flatMap((m) =>
        [...m.handled].map(([code, n]) => ({
          labels: { ...m.labels, grpc_code: grpcStatus[code] ?? String(code) },
          value: n,
        })),
      ),
  );
  scraped(
    registry,
    "grpc_server_handling_seconds",
    "histogram",
    "Time from the start of a unary RPC to its status (streams are not timed: their length is the caller's).",
    () =>
      methods
        .filter((m) => m.timed && m.count > 0)
        .flatMap((m) => histogramValues("grpc_server_handling_seconds", m, bounds)),
  );
  return (path, type) => {
    const [, service = "", method = ""] = path.split("/");
    const m: MethodFigures = {
      labels: { grpc_type: type, grpc_service: service, grpc_method: method },
      timed: type === ("unary" satisfies CallType),
      started: 0,
      handled: new Map(),
      buckets: new Float64Array(bounds.length + 1),
      sum: 0,
      count: 0,
    };
    methods.push(m);
    return {
      begin() {
        m.started++;
        return performance.now();
      },
      end(t0, code) {
        m.handled.set(code, (m.handled.get(code) ?? 0) + 1);
        if (!m.timed) return;
        const seconds = (performance.now() - t0) / 1000;
        let i = 0;
        while (i < bounds.length && seconds > (bounds[i] as number)) i++;
        m.buckets[i] = (m.buckets[i] ?? 0) + 1;
        m.sum += seconds;
        m.count++;
      },
    };
  };
}

/** The cumulative buckets, sum and count of one method, as Prometheus's text format has them. */
function histogramValues(name: string, m: MethodFigures, bounds: readonly number[]): Value[] {
  const out: Value[] = [];
  let below = 0;
  bounds.forEach((le, i) => {
    below += m.buckets[i] ?? 0;
    out.push({ labels: { le, ...m.labels }, value: below, metricName: `${name}_bucket` });
  });
  out.push({ labels: { le: "+Inf", ...m.labels }, value: m.count, metricName: `${name}_bucket` });
  out.push({ labels: { ...m.labels }, value: m.sum, metricName: `${name}_sum` });
  out.push({ labels: { ...m.labels }, value: m.count, metricName: `${name}_count` });
  return out;
}

/** A metric whose values are read when the registry is scraped. */
function scraped(
  registry: Registry,
  name: string,
  type: "counter" | "histogram",
  help: string,
  values: () => Value[],
): void {
  const metric = {
    name,
    help,
    type,
    aggregator: "sum",
    get: async () => ({ name, help, type, aggregator: "sum", values: values() }),
    reset() {},
  };
  registry.registerMetric(metric as unknown as Parameters<Registry["registerMetric"]>[0]);
}
