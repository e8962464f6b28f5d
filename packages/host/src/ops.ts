// The ops listener of a server (the operations issue): plain HTTP on its own port, loopback by
// default, for what cannot present a client certificate (Prometheus, kubelet, a load
// balancer): GET /metrics (Prometheus text), /healthz (the process is alive) and /readyz (it
// can serve: ready, not draining, and nothing its server reports missing). It serves nothing
// about mappings: counters carry no CSI, hash or pseudonym. Bounded like the gRPC side: no
// request bodies, short header and request timeouts, a connection cap.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { performance } from "node:perf_hooks";
import { ConfigError, type ConfigReader } from "@mimi/core";
import type { Logger } from "pino";
import type { Registry } from "prom-client";

/** The `ops` config section; absent, the server has no ops listener. */
export interface OpsConfig {
  readonly host: string;
  /** 0 picks a free port (tests); the bound port is logged. */
  readonly port: number;
}

const LOOPBACK = new Set(["127.0.0.1", "::1", "localhost"]);

/** Reads the optional `ops` section: undefined when it is absent. */
export function readOpsSection(r: ConfigReader): OpsConfig | undefined {
  if (!r.keys().includes("ops")) return undefined;
  const o = r.object("ops");
  const ops: OpsConfig = {
    host: o.string("host", "127.0.0.1"),
    port: o.integer("port", 0, 0, 65_535),
  };
  // Metrics are unauthenticated and say more than probes need (a quiet resolver's hit counter
  // tells whether someone asked a CSI lately), so leaving loopback is an explicit choice.
  const allowNonLoopback = o.boolean("allowNonLoopback", false);
  o.done();
  if (ops.host === "") throw new ConfigError("config.ops.host must not be empty");
  if (!LOOPBACK.has(ops.host) && !allowNonLoopback) {
    throw new ConfigError(
      `config.ops.host ${ops.host} is not loopback: the ops listener has no authentication and its metrics ` +
        "show cache activity; keep it on 127.0.0.1, or set ops.allowNonLoopback: true and restrict who can reach it (a firewall, a NetworkPolicy)",
    );
  }
  return ops;
}

/** What the ops listener reports. */
export interface OpsSources {
  /** A registry, or what renders like one (a cluster's primary aggregates its workers'). */
  readonly registry: Pick<Registry, "metrics" | "contentType">;
  /** Why the server is not ready now, or undefined when it is. */
  readonly notReady: () => string | undefined;
}

/** A running ops listener. */
export interface OpsListener {
  readonly port: number;
  close(): Promise<void>;
}

const MAX_CONNECTIONS = 64;
/** A scrape renders every series (about 1.6 ms); one rendering serves all scrapes for this long. */
const METRICS_CACHE_MS = 1_000;

/** Starts the ops listener on `config`. */
export function startOps(config: OpsConfig, sources: OpsSources, log: Logger): Promise<OpsListener> {
  // Concurrent scrapes share one rendering, and a rendering serves for METRICS_CACHE_MS, so a
  // flood of scrapes costs at most one rendering a second on the thread that serves gRPC.
  let cached: { atMs: number; text: Promise<string> } | undefined;
  const render = () => {
    const now = performance.now();
    if (!cached || now - cached.atMs >= METRICS_CACHE_MS) {
      const text = sources.registry.metrics();
      cached = { atMs: now, text };
      text.catch(() => {
        if (cached?.text === text) cached = undefined;
      });
    }
    return cached.text;
  };
  // Half-sent requests are cut after the header timeout, checked every second (Node's default
  // check every 30 s would let 64 silent connections hold every slot, probes included).
  const server: Server = createServer({ connectionsCheckingInterval: 1_000 }, (req, res) => {
    void answer(req, res, sources, render).catch((err: Error) => {
      log.warn({ err: err.message, path: req.url }, "ops request failed");
      if (!res.headersSent) send(res, 500, "internal error\n");
      else res.destroy();
    });
  });
  server.headersTimeout = 2_000;
  server.requestTimeout = 10_000;
  server.keepAliveTimeout = 5_000;
  server.maxHeadersCount = 50;
  server.maxConnections = MAX_CONNECTIONS;
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(config.port, config.host, () => {
      server.off("error", reject);
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : config.port;
      resolve({
        port,
        close: () => new Promise((done) => server.close(() => done())),
      });
    });
  });
}

async function answer(
  req: IncomingMessage,
  res: ServerResponse,
  sources: OpsSources,
  render: () => Promise<string>,
): Promise<void> {
  if (req.method !== "GET" && req.method !== "HEAD") {
    res.setHeader("allow", "GET, HEAD");
    return send(res, 405, "only GET and HEAD\n");
  }
  const path = (req.url ?? "/").split("?")[0];
  if (path === "/healthz") return send(res, 200, "ok\n");
  if (path === "/readyz") {
    const why = sources.notReady();
    return why === undefined ? send(res, 200, "ready\n") : send(res, 503, `not ready: ${why}\n`);
  }
  if (path === "/metrics") {
    const body = await render();
    return send(res, 200, body, sources.registry.contentType);
  }
  return send(res, 404, "not found: try /metrics, /healthz or /readyz\n");
}

function send(res: ServerResponse, code: number, body: string, type = "text/plain; charset=utf-8"): void {
  res.writeHead(code, { "content-type": type, "cache-control": "no-store" });
  res.end(res.req.method === "HEAD" ? undefined : body);
}
