// Multi-core servers (the performance issue): one Node process uses one core, so a server whose
// config asks for `workers` > 1 runs as a primary that forks that many copies of itself on the
// same port (node:cluster: the primary accepts connections and hands them to the workers in
// turn; connection age limits make long-lived HTTP/2 clients reconnect and so spread). The
// primary serves no calls. It restarts a worker that dies (with backoff), hands what workers
// share (budgets, enumeration observations) through its spec's hook, serves the ops listener
// for all of them (every series gains a `worker` label), and stops them together.
import cluster, { type Worker } from "node:cluster";
import type { Clock } from "@mimi/core";
import { createServerMetrics } from "@mimi/rpc";
import type { Logger } from "pino";
import { AggregatorRegistry, Counter, type Registry } from "prom-client";

/** One metric family as getMetricsAsJSON gives it. */
type MetricJson = Awaited<ReturnType<Registry["getMetricsAsJSON"]>>[number];

import { type OpsListener, startOps } from "./ops.js";

/** The environment variable that tells a forked process which worker it is (1..n). */
export const WORKER_VARIABLE = "MIMI_CLUSTER_WORKER";

/** What a worker sees of its cluster. */
export interface ClusterLink {
  /** This worker's number, 1..workers. */
  readonly worker: number;
  readonly workers: number;
  /** Sends `body` to the primary's hook (the spec's `primary` part). */
  share(body: unknown): void;
  /** Receives what the primary broadcasts (or sends this worker alone). */
  onShare(handler: (body: unknown) => void): void;
}

/** What a spec's primary hook gets: the config, a logger, and a way to reach the workers. */
export interface PrimaryContext<C> {
  readonly config: C;
  readonly log: Logger;
  readonly clock: Clock;
  /** Sends `body` to every running worker. */
  broadcast(body: unknown): void;
}

/** A spec's part in the primary. */
export interface PrimaryPart<C> {
  /** A worker's shared `body` (from worker `from`); what the hook does not know it ignores. */
  onShare(body: unknown, from: number): void;
  /** What a worker that has just started listening gets (a restarted one catches up), if anything. */
  welcome?(worker: number): unknown;
  reload?(config: C): void;
  close?(): void;
}

/** How a spec runs under a primary. */
export interface ClusterSpec<C> {
  /** Workers the config asks for; 1 runs the server in this process. */
  workers(config: C): number;
  /** Runs once in the primary before any worker starts: files every worker shares (keys). */
  prepare?(config: C): void;
  primary?(ctx: PrimaryContext<C>): PrimaryPart<C>;
}

/** Messages between a primary and its workers. */
export type ClusterMessage =
  | { mimi: "listening"; port: number }
  | { mimi: "state"; notReady: string | null }
  | { mimi: "share"; body: unknown }
  | { mimi: "metrics?"; id: number }
  | { mimi: "metrics"; id: number; json: MetricJson[] | null }
  // Stops and reloads go to workers over IPC, never as signals: systemd and a terminal signal the
  // whole process group, and a worker must not count the group's SIGTERM and the primary's as two.
  | { mimi: "stop"; fast: boolean }
  | { mimi: "reload" };

export function isClusterMessage(m: unknown): m is ClusterMessage {
  return typeof m === "object" && m !== null && typeof (m as { mimi?: unknown }).mimi === "string";
}

/** What the primary needs from runServer. */
export interface PrimaryOptions<C> {
  readonly role: string;
  readonly config: C & { readonly host: string; readonly ops?: { host: string; port: number } | undefined };
  readonly workers: number;
  readonly log: Logger;
  readonly clock: Clock;
  /** The script and arguments each worker runs (--stop-with-parent removed: workers follow the primary). */
  readonly exec: string;
  readonly args: readonly string[];
  readonly spec: ClusterSpec<C>;
  /** The shutdown a worker takes at most, lame duck included (read at the stop); workers still running after it are killed. */
  readonly stopBoundMs: () => number;
  readonly exit: (code: number) => void;
  readonly stderr: { write(text: string): unknown };
}

/** How long the primary waits for a worker's metrics before rendering without it. */
const METRICS_TIMEOUT_MS = 2_000;
/** Workers report their state every second; one silent this long counts as not ready... */
const STATE_STALE_MS = 3_000;
/** ...and one silent this long is hung (its messages would pile up in the primary): killed and restarted. */
const HUNG_MS = 30_000;
/** A worker that lived this long before dying is restarted at once; sooner, with backoff. */
const HEALTHY_LIFE_MS = 60_000;
const MAX_RESTART_DELAY_MS = 30_000;

interface Slot {
  readonly n: number;
  worker: Worker | undefined;
  startedAtMs: number;
  listened: boolean;
  /** null: ready; a string: why not; undefined: not heard from since it started. */
  notReady: string | null | undefined;
  /** When it last reported its state (performance.now()). */
  heardAtMs: number;
  quickDeaths: number;
  restartTimer: NodeJS.Timeout | undefined;
}

/** The running primary: `stop` begins a shutdown (a second call, or `fast`, ends the workers' lame duck). */
export interface Primary {
  stop(reason: string, fast?: boolean): void;
  /**
   * A reload (SIGHUP): the hook's reload with the config read again (undefined when it did not
   * load: the primary keeps what it has), and a reload of every worker.
   */
  reload(config: unknown): void;
}

/** Forks the workers and supervises them until stopped; exits the process when they are gone. */
export function runPrimary<C>(o: PrimaryOptions<C>): Primary {
  const { log } = o;
  o.spec.prepare?.(o.config);
  const metrics = o.config.ops ? createServerMetrics(o.role) : undefined;
  const restarts = new Counter({
    name: "mimi_cluster_worker_restarts_total",
    help: "Workers restarted after they died.",
    registers: metrics ? [metrics.registry] : [],
  });
  const slots: Slot[] = Array.from({ length: o.workers }, (_, i) => ({
    n: i + 1,
    worker: undefined,
    startedAtMs: 0,
    listened: false,
    notReady: undefined,
    heardAtMs: 0,
    quickDeaths: 0,
    restartTimer: undefined,
  }));
  let port = 0;
  let stopping = false;
  let listening = false;
  let ops: OpsListener | undefined;
  let nextMetricsId = 1;
  const pendingMetrics = new Map<number, (json: MetricJson[] | null) => void>();
  // A send to a worker that has just died fails; the callback takes the error (unhandled, it
  // would be an 'error' event that ends the primary). Its exit is handled on its own.
  const send = (slot: Slot, m: ClusterMessage) => {
    const w = slot.worker;
    if (w?.isConnected()) w.send(m, undefined, undefined, () => {});
  };
  const broadcast = (body: unknown) => {
    for (const s of slots) send(s, { mimi: "share", body });
  };
  const part = o.spec.primary?.({ config: o.config, log, clock: o.clock, broadcast });

  // Structured clone, not JSON: metric values such as NaN arrive as they were.
  cluster.setupPrimary({ exec: o.exec, args: [...o.args], serialization: "advanced" });
  const fork = (slot: Slot) => {
    slot.restartTimer = undefined;
    slot.listened = false;
    slot.notReady = undefined;
    slot.startedAtMs = performance.now();
    slot.heardAtMs = slot.startedAtMs;
    const worker = cluster.fork({
      [WORKER_VARIABLE]: String(slot.n),
      MIMI_CLUSTER_WORKERS: String(o.workers),
    });
    slot.worker = worker;
    worker.on("message", (m: unknown) => {
      if (isClusterMessage(m)) onMessage(slot, m);
    });
    worker.on("exit", (code, signal) => onExit(slot, worker, code, signal));
    worker.on("error", (err: Error) =>
      log.warn({ worker: slot.n, err: err.message }, "worker channel error"),
    );
  };

  const onMessage = (slot: Slot, m: ClusterMessage) => {
    switch (m.mimi) {
      case "listening": {
        slot.listened = true;
        port = m.port;
        const welcome = part?.welcome?.(slot.n);
        if (welcome !== undefined) send(slot, { mimi: "share", body: welcome });
        if (!listening && slots.every((s) => s.listened)) void allListening();
        return;
      }
      case "state":
        slot.notReady = m.notReady;
        slot.heardAtMs = performance.now();
        return;
      case "share":
        part?.onShare(m.body, slot.n);
        return;
      case "metrics":
        pendingMetrics.get(m.id)?.(m.json);
        return;
      default:
        return;
    }
  };

  const allListening = async () => {
    listening = true;
    if (stopping) return;
    if (o.config.ops && metrics) {
      try {
        ops = await startOps(
          o.config.ops,
          { registry: { metrics: render, contentType: metrics.registry.contentType }, notReady },
          log,
        );
      } catch (err) {
        // Its port taken, say: the resolver stops with the reason, as a single process would.
        if (stopping) return;
        o.stderr.write(`${o.role}: ops listener: ${(err as Error).message}\n`);
        stop("the ops listener failed", 1);
        return;
      }
      if (stopping) {
        // A stop began while it started: finish may have closed nothing yet, or already run.
        void ops.close();
        ops = undefined;
        return;
      }
    }
    log
      .child({}, { level: "info" })
      .info(
        { host: o.config.host, port, workers: o.workers, ...(ops && { opsPort: ops.port }) },
        "listening",
      );
  };

  // Ready when every worker taking connections (running and listening) said so within the last
  // few seconds, and at least one is. A worker waiting to be restarted takes none, so it does
  // not hold the others back.
  const notReady = (): string | undefined => {
    if (stopping) return "shutting down";
    const now = performance.now();
    let serving = 0;
    for (const s of slots) {
      if (!s.worker || !s.listened) continue;
      if (now - s.heardAtMs > STATE_STALE_MS)
        return `worker ${s.n} has not reported for ${Math.round((now - s.heardAtMs) / 1000)} s`;
      if (s.notReady === undefined) return `worker ${s.n} is starting`;
      if (s.notReady !== null) return `worker ${s.n}: ${s.notReady}`;
      serving++;
    }
    return serving > 0 ? undefined : "no worker is serving";
  };
  const watchdog = setInterval(() => {
    const now = performance.now();
    for (const s of slots) {
      if (s.worker && now - s.heardAtMs > HUNG_MS) {
        log.error({ worker: s.n, silentMs: Math.round(now - s.heardAtMs) }, "worker hung; killing it");
        signal(s.worker, "SIGKILL");
        s.heardAtMs = now;
      }
    }
  }, 1_000);
  watchdog.unref();

  // Every worker's series with a `worker` label, beside the primary's own (worker="primary").
  const render = async (): Promise<string> => {
    const own = metrics ? await metrics.registry.getMetricsAsJSON() : [];
    const parts = await Promise.all(slots.map((s) => workerMetrics(s)));
    const labelled = [own, ...parts].map((json, i) =>
      (json ?? []).map((family) => ({
        ...family,
        values: family.values.map((v) => ({
          ...v,
          labels: { ...v.labels, worker: i === 0 ? "primary" : String(i) },
        })),
      })),
    );
    // Every series is apart by its worker label, so "sum" only gathers them (prom-client drops
    // families whose aggregator is "omit", such as process_start_time_seconds).
    for (const family of labelled.flat()) (family as { aggregator?: string }).aggregator = "sum";
    return AggregatorRegistry.aggregate(labelled).metrics();
  };
  const workerMetrics = (slot: Slot) =>
    new Promise<MetricJson[] | null>((resolve) => {
      if (!slot.worker?.isConnected()) return resolve(null);
      const id = nextMetricsId++;
      const t = setTimeout(() => done(null), METRICS_TIMEOUT_MS);
      const done = (json: MetricJson[] | null) => {
        clearTimeout(t);
        pendingMetrics.delete(id);
        resolve(json);
      };
      pendingMetrics.set(id, done);
      send(slot, { mimi: "metrics?", id });
    });

  const onExit = (slot: Slot, worker: Worker, code: number | null, signal: string | null) => {
    if (slot.worker !== worker) return;
    slot.worker = undefined;
    if (stopping) {
      if (slots.every((s) => !s.worker)) finish(0);
      return;
    }
    const lived = performance.now() - slot.startedAtMs;
    if (!slot.listened && !listening) {
      // A worker that cannot even start (a port in use, a bad key) will not start on a retry either.
      o.stderr.write(`${o.role}: worker ${slot.n} exited (${signal ?? code}) before listening\n`);
      stop("a worker failed to start", 1);
      return;
    }
    slot.quickDeaths = lived >= HEALTHY_LIFE_MS ? 0 : slot.quickDeaths + 1;
    const delayMs = slot.quickDeaths === 0 ? 0 : Math.min(MAX_RESTART_DELAY_MS, 500 * 2 ** slot.quickDeaths);
    log.error(
      { worker: slot.n, code, signal, livedMs: Math.round(lived), restartInMs: delayMs },
      "worker died",
    );
    restarts.inc();
    slot.restartTimer = setTimeout(() => fork(slot), delayMs);
  };

  let exitCode = 0;
  let killTimer: NodeJS.Timeout | undefined;
  let finished = false;
  const finish = (code: number) => {
    if (finished) return;
    finished = true;
    clearTimeout(killTimer);
    clearInterval(watchdog);
    part?.close?.();
    void (ops?.close() ?? Promise.resolve()).then(() => o.exit(code || exitCode));
  };
  const stop = (reason: string, code = 0, fast = false) => {
    exitCode ||= code;
    const again = stopping;
    if (!stopping) {
      stopping = true;
      log.info({ signal: reason }, "shutdown");
      for (const s of slots) clearTimeout(s.restartTimer);
      // Workers that outstay their lame duck and grace are killed: the primary never hangs.
      killTimer = setTimeout(() => {
        for (const s of slots) signal(s.worker, "SIGKILL");
      }, o.stopBoundMs());
    }
    // A second stop is passed on as a fast one: it ends the workers' lame duck.
    for (const s of slots) send(s, { mimi: "stop", fast: fast || again });
    if (slots.every((s) => !s.worker)) finish(exitCode);
  };

  for (const s of slots) fork(s);
  return {
    stop: (reason, fast) => stop(reason, 0, fast),
    reload(config) {
      if (config !== undefined) part?.reload?.(config as C);
      // Only to workers that listen: one still starting reads the new file itself.
      for (const s of slots) if (s.listened) send(s, { mimi: "reload" });
    },
  };
}

/** Signals a worker's process (Worker.kill would disconnect it first, which ends its lame duck). */
function signal(worker: Worker | undefined, sig: NodeJS.Signals): void {
  if (!worker) return;
  const { process: child } = worker;
  child.kill(sig);
}

/** The ClusterLink of a forked worker, or undefined when this process is not one. */
export function workerLink(host: {
  readonly env: Readonly<Record<string, string | undefined>>;
  send?(m: unknown, handle?: undefined, options?: undefined, callback?: (err: Error | null) => void): boolean;
  on(event: "message", listener: (m: unknown) => void): unknown;
}):
  | (ClusterLink & { onRequest(handler: (m: ClusterMessage) => void): void; post(m: ClusterMessage): void })
  | undefined {
  const n = Number(host.env[WORKER_VARIABLE]);
  const send = host.send?.bind(host);
  if (!cluster.isWorker || !Number.isInteger(n) || n < 1 || !send) return undefined;
  const shareHandlers: ((body: unknown) => void)[] = [];
  const requestHandlers: ((m: ClusterMessage) => void)[] = [];
  // A stop or reload that comes while the worker is still starting is kept (the latest of each)
  // and given to each handler as it registers: runServer listens for them once it serves.
  const held = new Map<string, ClusterMessage>();
  host.on("message", (m) => {
    if (!isClusterMessage(m)) return;
    if (m.mimi === "share") for (const h of shareHandlers) h(m.body);
    else {
      if (m.mimi === "stop" || m.mimi === "reload") held.set(m.mimi, m);
      for (const h of requestHandlers) h(m);
    }
  });
  // A send after the primary went away fails into the callback (the worker ends on disconnect).
  const post = (m: ClusterMessage) => {
    try {
      send(m, undefined, undefined, () => {});
    } catch {
      // The channel is closed.
    }
  };
  return {
    worker: n,
    workers: Number(host.env.MIMI_CLUSTER_WORKERS) || n,
    share: (body) => post({ mimi: "share", body }),
    onShare: (h) => shareHandlers.push(h),
    onRequest(h) {
      requestHandlers.push(h);
      for (const m of held.values()) h(m);
    },
    post,
  };
}

/** Answers the primary's metrics requests from `registry` (a worker has no ops listener of its own). */
export function answerMetrics(
  link: { onRequest(handler: (m: ClusterMessage) => void): void; post(m: ClusterMessage): void },
  registry: Registry | undefined,
): void {
  link.onRequest((m) => {
    if (m.mimi !== "metrics?") return;
    const id = m.id;
    if (!registry) return link.post({ mimi: "metrics", id, json: null });
    registry.getMetricsAsJSON().then(
      (json) => link.post({ mimi: "metrics", id, json }),
      () => link.post({ mimi: "metrics", id, json: null }),
    );
  });
}
