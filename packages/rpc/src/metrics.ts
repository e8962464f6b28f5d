// Prometheus metrics of one server process (the operations issue): a prom-client registry with
// build info, the process's own figures (CPU, memory, event-loop lag, from prom-client's
// defaults) and, for every gRPC call, the shape the grpc-ecosystem interceptors made common
// (grpc_server_started_total, grpc_server_handled_total by code, grpc_server_handling_seconds),
// fed by the server adapter (rpc/grpc.ts, which every service goes through) so no handler
// carries metric code. Not a grpc-js interceptor: its ServerInterceptingCall wraps every call
// in another layer of listeners and responders, which measured about 15 us per unary call here
// (a tenth of a cache hit); the adapter's hook costs two increments and a clock read, and the
// figures become metrics only when scraped (call-metrics.ts). Labels
// name only the service, method, call type and status code of registered methods, so a caller
// cannot invent label values. Servers add their own gauges and counters to
// the same registry (collect callbacks that read their stats when scraped).
import { createRequire } from "node:module";
import { versions } from "node:process";
import * as grpc from "@grpc/grpc-js";
import { verifications } from "@mimi/core";
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";
import { type CallObservers, callMetrics, type MethodObserver } from "./call-metrics.js";

export type { CallObservers, CallType, MethodObserver } from "./call-metrics.js";

/** This build's version (the packages' version). */
export const MIMI_VERSION: string = (createRequire(import.meta.url)("../package.json") as { version: string })
  .version;

/** How often the event-loop delay histogram is sampled, ms. */
const EVENT_LOOP_SAMPLE_MS = 100;

/** Latency buckets in seconds, from a cache hit (sub-millisecond) to a deadline (10 s). */
const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** A server's metrics: the registry to scrape and the observers that feed it. */
export interface ServerMetrics {
  readonly registry: Registry;
  readonly observers: CallObservers;
}

/** Creates the registry of a server of `role` ("root", "authoritative", "resolver"). */
export function createServerMetrics(role: string): ServerMetrics {
  const registry = new Registry();
  // Node's event-loop delay histogram (nodejs_eventloop_lag_*) sampled every 100 ms, not
  // prom-client's 10: its timer woke an idle server 100 times a second, about 2 ms of CPU a
  // second per process. A scrape every 15 s still reads percentiles of 150 samples; a stall
  // shorter than 100 ms is seen in part.
  collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: EVENT_LOOP_SAMPLE_MS });
  new Gauge({
    name: "mimi_build_info",
    help: "Always 1; the labels say which build and role this process runs.",
    labelNames: ["role", "version", "node"],
    registers: [registry],
  })
    .labels(role, MIMI_VERSION, versions.node)
    .set(1);
  countersFrom(
    registry,
    "mimi_signature_checks_total",
    "Ed25519 signature checks: computed, or answered from the memory of signatures that verified before.",
    "how",
    () => ({ computed: verifications.computed, remembered: verifications.remembered }),
  );
  const observers = callMetrics(registry, LATENCY_BUCKETS);
  return { registry, observers };
}

/**
 * Adds to `registry` a counter read from a running total when scraped (a server's existing
 * stats), so the hot path keeps its plain increments and pays nothing for metrics.
 */
export function counterFrom(registry: Registry, name: string, help: string, read: () => number): void {
  let last = 0;
  new Counter({
    name,
    help,
    registers: [registry],
    collect() {
      const now = safely(read, last);
      if (now > last) this.inc(now - last);
      last = Math.max(last, now);
    },
  });
}

/** Adds to `registry` a gauge read when scraped; `read` gives one value, or values by label. */
export function gaugeFrom(
  registry: Registry,
  name: string,
  help: string,
  read: () => number | readonly { labels: Record<string, string>; value: number }[],
  labelNames: readonly string[] = [],
): void {
  new Gauge({
    name,
    help,
    labelNames,
    registers: [registry],
    collect() {
      const v = safely(read, []);
      if (typeof v === "number") {
        this.set(v);
        return;
      }
      this.reset();
      for (const x of v) this.set(x.labels, x.value);
    },
  });
}

/** Like counterFrom, with one label: `read` gives the running total of each label value. */
export function countersFrom(
  registry: Registry,
  name: string,
  help: string,
  labelName: string,
  read: () => Readonly<Record<string, number>>,
): void {
  const last = new Map<string, number>();
  new Counter({
    name,
    help,
    labelNames: [labelName],
    registers: [registry],
    collect() {
      for (const [value, now] of Object.entries(safely(read, {}))) {
        const before = last.get(value) ?? 0;
        this.inc({ [labelName]: value }, Math.max(0, now - before));
        last.set(value, Math.max(before, now));
      }
    },
  });
}

/** `raw` (a grpc-js method handler of `kind`), counting each call's start and its end with its status. */
export function observed(
  raw: grpc.UntypedHandleCall,
  observer: MethodObserver,
  kind: "unary" | "client_streaming" | "server_streaming" | "bidi_streaming",
): grpc.UntypedHandleCall {
  const codeOf = (err: unknown) => {
    const code = (err as { code?: unknown } | null)?.code;
    return typeof code === "number" ? code : grpc.status.UNKNOWN;
  };
  if (kind === "unary" || kind === "client_streaming") {
    const f = raw as (call: unknown, callback: grpc.sendUnaryData<unknown>) => void;
    return ((call: unknown, callback: grpc.sendUnaryData<unknown>) => {
      const t0 = observer.begin();
      f(call, (err, value, trailer, flags) => {
        observer.end(t0, err ? codeOf(err) : grpc.status.OK);
        callback(err, value, trailer, flags);
      });
    }) as grpc.UntypedHandleCall;
  }
  const f = raw as (call: grpc.ServerWritableStream<unknown, unknown>) => void;
  return ((call: grpc.ServerWritableStream<unknown, unknown>) => {
    const t0 = observer.begin();
    let ended = false;
    const finish = (code: number) => {
      if (ended) return;
      ended = true;
      observer.end(t0, code);
    };
    // The stream adapter (grpc.ts) says how the stream ends (streamEnded). Nothing of the call
    // is wrapped: a wrapper on emit would run for every message the stream carries.
    (call as unknown as { [STREAM_END]?: (code: number) => void })[STREAM_END] = finish;
    // grpc-js says "cancelled" for any stream that closes without our status, a deadline too.
    call.once("cancelled", () => finish(grpc.status.CANCELLED));
    try {
      f(call);
    } catch (err) {
      finish(grpc.status.UNKNOWN);
      throw err;
    }
  }) as grpc.UntypedHandleCall;
}

/** Where observed() keeps a stream's end hook on its call. */
const STREAM_END = Symbol("mimi.streamEnd");

/** Tells the metrics of a streaming call (observed) that it ends with `code`; once per call. */
export function streamEnded(call: object, code: number): void {
  (call as { [STREAM_END]?: (code: number) => void })[STREAM_END]?.(code);
}

/** What `read` gives, or `fallback` when it throws: one broken source must not fail a scrape. */
function safely<T>(read: () => T, fallback: T): T {
  try {
    return read();
  } catch {
    return fallback;
  }
}

/**
 * The registry copy a server answers with: its serial, how old its root signature is, and how
 * long until it expires (a copy that stops refreshing shows as a growing age and a shrinking
 * expiry, long before it is refused). A server without a copy yet reports neither time.
 */
export function registryGauges(
  registry: Registry,
  copy: { serial(): bigint; seal(): { signedAtMs: number; expiresAtMs: number } | undefined; now(): number },
): void {
  gaugeFrom(registry, "mimi_registry_serial", "Serial of the registry copy in use.", () =>
    Number(copy.serial()),
  );
  const since = (pick: (s: { signedAtMs: number; expiresAtMs: number }, now: number) => number) => () => {
    const s = copy.seal();
    return s ? [{ labels: {}, value: pick(s, copy.now()) / 1000 }] : [];
  };
  gaugeFrom(
    registry,
    "mimi_registry_age_seconds",
    "Seconds since the root signed the registry copy in use.",
    since((s, now) => now - s.signedAtMs),
  );
  gaugeFrom(
    registry,
    "mimi_registry_expires_in_seconds",
    "Seconds until the registry copy in use expires unless refreshed.",
    since((s, now) => s.expiresAtMs - now),
  );
}

/**
 * A histogram of durations (`names.seconds`) and a counter of outcomes (`names.total`, result
 * "ok" or "failed") by one label whose values the caller bounds (a DP id from the registry);
 * returns the observer.
 */
export function outcomesBy(
  registry: Registry,
  names: { readonly total: string; readonly seconds: string },
  help: string,
  labelName: string,
): (label: string, seconds: number, failed: boolean) => void {
  const durations = new Histogram({
    name: names.seconds,
    help: `${help}: how long each took.`,
    labelNames: [labelName],
    buckets: LATENCY_BUCKETS,
    registers: [registry],
  });
  const outcomes = new Counter({
    name: names.total,
    help: `${help}, by result.`,
    labelNames: [labelName, "result"],
    registers: [registry],
  });
  return (label, seconds, failed) => {
    durations.observe({ [labelName]: label }, seconds);
    outcomes.inc({ [labelName]: label, result: failed ? "failed" : "ok" });
  };
}
