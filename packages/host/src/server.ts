// How every server process runs: argv and environment -> config -> logger -> the server's own
// wiring -> health -> listen -> signals -> graceful shutdown. The three mains call runServer
// with `process`, so the lifecycle lives in one place and nothing else touches the process.
import { statSync } from "node:fs";
import { resolve } from "node:path";
import type * as grpc from "@grpc/grpc-js";
import {
  type Clock,
  ConfigError,
  type ConfigReader,
  createLogger,
  fileOffsetClock,
  LOG_LEVELS,
  logListening,
  readConfigFile,
  setLogLevel,
  systemClock,
} from "@mimi/core";
import {
  addHealthService,
  addReflection,
  type ConnectionLimits,
  capConnections,
  createGrpcServer,
  createServerMetrics,
  endUntrustedSessions,
  keepStreamMapsYoung,
  listen,
  MIMI_VERSION,
  readConnectionLimits,
  readTlsSection,
  serverCredentials,
  shutdown,
  silenceIpServernameWarning,
  type TlsPaths,
  trackSessions,
  type WarningEmitter,
} from "@mimi/rpc";
import type { Logger } from "pino";
import type { Registry } from "prom-client";
import { answerMetrics, type ClusterLink, type ClusterSpec, runPrimary, workerLink } from "./cluster.js";
import { type OpsConfig, readOpsSection, startOps } from "./ops.js";
import { applyReload, logTlsReload } from "./reload.js";
import { holdsDevelopmentCa, TlsFiles } from "./tls-files.js";

/** How long a stopping server lets running calls finish before cutting them off. */
const SHUTDOWN_GRACE_MS = 2_000;
/** How long a peer no longer trusted keeps the calls it was making on a connection it holds. */
const UNTRUSTED_GRACE_MS = 2_000;

/** The keys every server's configuration has. */
export interface ServerBasics {
  readonly host: string;
  readonly port: number;
  readonly tls: TlsPaths;
  readonly logLevel: string;
  /**
   * Whether the server may trust the development CA that `npm start` and `mimi dev-pki` make.
   * Off by default: with it, any development certificate (anyone's laptop has one) is a member.
   */
  readonly allowDevelopmentCa: boolean;
  /** What peers may hold open: connections, streams, watchers, handshake, idle, age, sizes. */
  readonly connections: ConnectionLimits;
  /** The ops listener (metrics, probes); undefined: none. */
  readonly ops: OpsConfig | undefined;
  /** How long a stopping server keeps serving while it reports not ready (`lameDuckSeconds`). */
  readonly lameDuckMs: number;
  /** Whether gRPC server reflection is served (for grpcurl; off by default). */
  readonly reflection: boolean;
}

/** Reads host, port, tls and logLevel; relative paths resolve against `baseDir`. */
export function readServerBasics(
  r: ConfigReader,
  baseDir: string,
  defaults: { host: string; port: number },
): ServerBasics {
  const logLevel = r.string("logLevel", "info");
  if (!(LOG_LEVELS as readonly string[]).includes(logLevel)) {
    throw new ConfigError(`config.logLevel must be one of ${LOG_LEVELS.join(", ")}`);
  }
  return {
    host: r.string("host", defaults.host),
    port: r.integer("port", defaults.port, 0, 65535),
    tls: readTlsSection(r, baseDir),
    logLevel,
    allowDevelopmentCa: r.boolean("allowDevelopmentCa", false),
    connections: readConnectionLimits(r),
    ops: readOpsSection(r),
    lameDuckMs: r.integer("lameDuckSeconds", 0, 0, 600) * 1000,
    reflection: r.boolean("reflection", false),
  };
}

export { DEVELOPMENT_CA_SUBJECT, holdsDevelopmentCa } from "./tls-files.js";

/** The parts of Node's `process` a server uses; main.ts passes `process` itself. */
export interface ProcessHost extends WarningEmitter {
  readonly argv: readonly string[];
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly pid: number;
  readonly stdin: NodeJS.ReadableStream;
  readonly stdout: { write(text: string): unknown };
  readonly stderr: { write(text: string): unknown };
  on(event: "SIGINT" | "SIGTERM" | "SIGHUP" | "disconnect", listener: () => void): unknown;
  on(event: "message", listener: (message: unknown) => void): unknown;
  /** Set in a forked process (a cluster worker): sends to its primary. */
  send?(
    message: unknown,
    sendHandle?: undefined,
    options?: undefined,
    callback?: (error: Error | null) => void,
  ): boolean;
  exit(code: number): void;
}

/** What a server's own wiring gets to work with. */
export interface ServerContext<C> {
  readonly config: C;
  readonly log: Logger;
  /** The server's clock: the wall clock, or the test clock given by --test-clock. */
  readonly clock: Clock;
  /** The server's TLS files; they rotate on SIGHUP or when they change (channels made from them follow). */
  readonly tls: TlsFiles;
  /** Register services here; health is added by runServer. */
  readonly server: grpc.Server;
  /** The metrics registry the ops listener serves (undefined without one): add the server's own here. */
  readonly metrics: Registry | undefined;
  /** Set when this process is one worker of several (the spec's `cluster`): what it shares with the others. */
  readonly cluster: ClusterLink | undefined;
}

/** A server's parts once wired, as runServer needs to know them. */
export interface RunningServer<C = never> {
  /** Services reported by grpc.health.v1 besides "" (the whole server). */
  readonly healthServices: readonly string[];
  /** Resolves once the server can answer; health reports NOT_SERVING until then. */
  readonly ready: Promise<void>;
  /** After `ready`: why the server cannot serve now (its registry copy expired...), or undefined. */
  notReady?(): string | undefined;
  /** Extra fields of the `listening` line. */
  readonly listening?: Record<string, unknown>;
  /** Stops background work when shutdown begins, before running calls drain. */
  stop(): void;
  /** Releases what calls use (stores) once the gRPC server has shut down. */
  close?(): void;
  /** Fields of the `shutdown` line (counters worth keeping). */
  shutdownFields?(): Record<string, unknown>;
  /**
   * Applies a reloaded config (SIGHUP): `applied` names the changed keys among the spec's
   * `reloadable` ones (and the basics runServer applies itself: logLevel, tls, lameDuckMs).
   */
  reload?(config: C, applied: readonly string[]): void;
}

/** How runServer starts one kind of server. */
export interface ServerSpec<C extends ServerBasics> {
  /** "root", "authoritative" or "resolver": names messages and the port variable (ROOT_PORT). */
  readonly role: string;
  parseConfig(raw: unknown, baseDir: string): C;
  /** The logger's name; default the role. */
  logName?(config: C): string;
  /** Builds the server's parts and registers its services. */
  start(ctx: ServerContext<C>): Promise<RunningServer<C>> | RunningServer<C>;
  /** Config keys this server applies on SIGHUP through RunningServer.reload (admins, limits). */
  readonly reloadable?: readonly (keyof C & string)[];
  /**
   * For --check: loads what `start` would load besides TLS (keys, key files) and throws, naming
   * the file, what does not load. Nothing is opened for writing and no port is bound.
   */
  check?(config: C): void;
  /** Present when the server can run as several worker processes on one port (cluster.ts). */
  readonly cluster?: ClusterSpec<C>;
}

/** Usage of every server binary. */
const SERVER_USAGE = "--config <file.json> [--check] [--stop-with-parent] [--test-clock <file>] | --version";

/**
 * Runs a server process until SIGINT or SIGTERM (or, with --stop-with-parent, until standard
 * input closes: launchers pass a pipe, so their servers never outlive them). Shutdown reports
 * NOT_SERVING, stops background work, lets running calls finish for a grace period, releases
 * stores and exits 0. A failure to start is printed as `<role>: <reason>` and exits 1.
 *
 * `--test-clock <file>` is for tests only: the server's clock becomes the wall clock plus the
 * offset in that file. It is a flag, not a config key, so a deployed config cannot turn it on;
 * the file must not be writable by group or others, and the server says so at every start.
 */
export function runServer<C extends ServerBasics>(host: ProcessHost, spec: ServerSpec<C>): void {
  start(host, spec).catch((err) => {
    host.stderr.write(`${spec.role}: ${err instanceof Error ? err.message : String(err)}\n`);
    host.exit(1);
  });
}

async function start<C extends ServerBasics>(host: ProcessHost, spec: ServerSpec<C>): Promise<void> {
  silenceIpServernameWarning(host);
  // SIGHUP's default action ends the process: a reload sent while the server is still starting
  // (systemctl reload right after start) is put off with a note instead.
  let reload: (() => void) | undefined;
  host.on("SIGHUP", () => {
    if (reload) reload();
    else host.stderr.write(`${spec.role}: reload (SIGHUP) ignored: still starting\n`);
  });
  if (host.argv.includes("--version")) {
    host.stdout.write(`mimi ${spec.role} ${MIMI_VERSION}\n`);
    host.exit(0);
    return;
  }
  const configPath = argValue(host.argv, "--config");
  if (!configPath) throw new ConfigError(`usage: ${spec.role} ${SERVER_USAGE}`);
  const portVariable = `${spec.role.toUpperCase()}_PORT`;
  const envPort = host.env[portVariable];
  // Kubernetes' service links set <SERVICE>_PORT=tcp://ip:port in every pod of a namespace.
  if (envPort !== undefined && !/^[0-9]{1,5}$/.test(envPort)) {
    throw new ConfigError(
      `${portVariable}=${envPort} is not a port number (Kubernetes service links set such variables: ` +
        "set enableServiceLinks: false in the pod, or unset it)",
    );
  }
  const readConfig = (): C => {
    const { raw, baseDir } = readConfigFile(configPath);
    return spec.parseConfig(
      { ...(raw as object), ...(envPort !== undefined ? { port: Number(envPort) } : {}) },
      baseDir,
    );
  };
  let config = readConfig();
  const log = createLogger({
    name: spec.logName?.(config) ?? spec.role,
    level: host.env.LOG_LEVEL ?? config.logLevel,
    pid: host.pid,
  });
  const clockFile = argValue(host.argv, "--test-clock");
  const clock = clockFile ? testClock(resolve(clockFile)) : systemClock;
  // Said whatever the configured level, like the listening line: a moved clock must not go unnoticed.
  if (clockFile) {
    log
      .child({}, { level: "warn" })
      .warn({ file: resolve(clockFile) }, "test clock in use; never in production");
  }
  if (host.argv.includes("--check")) {
    checkConfig(spec, config);
    const ops = config.ops ? `, ops port ${config.ops.port}` : "";
    host.stdout.write(`${configPath}: ok (${spec.role}; port ${config.port}${ops})\n`);
    host.exit(0);
    return;
  }
  const link = workerLink(host);
  const workers = link ? 1 : (spec.cluster?.workers(config) ?? 1);
  if (spec.cluster && workers > 1) {
    const primary = runPrimary({
      role: spec.role,
      config,
      workers,
      log,
      clock,
      exec: host.argv[1] ?? "",
      args: host.argv.slice(2).filter((a) => a !== "--stop-with-parent"),
      spec: spec.cluster,
      stopBoundMs: () => config.lameDuckMs + SHUTDOWN_GRACE_MS + 5_000,
      exit: (code) => host.exit(code),
      stderr: host.stderr,
    });
    reload = () => {
      let next: C | undefined;
      try {
        next = readConfig();
        config = next;
        // The primary's own lines (worker deaths, detections) follow the level like the workers'.
        setLogLevel(log, host.env.LOG_LEVEL ?? next.logLevel);
      } catch (err) {
        log.error(
          { err: (err as Error).message },
          "reload: the config does not load; the workers will say so too",
        );
      }
      primary.reload(next);
    };
    host.on("SIGINT", () => primary.stop("SIGINT"));
    host.on("SIGTERM", () => primary.stop("SIGTERM"));
    if (host.argv.includes("--stop-with-parent")) {
      // The launcher is gone: no lame duck (a second stop ends it at once).
      const gone = () => primary.stop("parent exited", true);
      host.stdin.on("end", gone);
      host.stdin.on("error", gone);
      host.stdin.resume();
    }
    return;
  }
  const tls = new TlsFiles(config.tls, { allowDevelopmentCa: config.allowDevelopmentCa });
  if (holdsDevelopmentCa(tls.material.ca)) {
    if (!config.allowDevelopmentCa) {
      throw new ConfigError(
        `${config.tls.caFile} holds the development CA (made by npm start or mimi dev-pki), which anyone can ` +
          "have; use your network's own CA, or set allowDevelopmentCa: true for a development network",
      );
    }
    log
      .child({}, { level: "warn" })
      .warn({ caFile: config.tls.caFile }, "trusting the development CA; never in production");
  }
  if (tls.summary.crl) {
    log.child({}, { level: "info" }).info({ crl: tls.summary.crl }, "certificate revocation lists in use");
  }
  const metrics = config.ops ? createServerMetrics(spec.role) : undefined;
  const server = createGrpcServer(config.connections, metrics?.observers);
  const running = await spec.start({
    config,
    log,
    clock,
    tls,
    server,
    metrics: metrics?.registry,
    cluster: link,
  });
  const health = addHealthService(server, log, running.healthServices);
  if (config.reflection) addReflection(server);
  let ready = false;
  let stopping = false;
  let stopWatching = watchTls(tls, config.tls, log);
  // Health follows readiness once started: a server that cannot answer now (an expired registry
  // copy, a secondary that may not serve its store) says NOT_SERVING, as /readyz does.
  let crlSaid: string | undefined;
  const followReadiness = () => {
    if (ready && !stopping) health.setServing((tls.problem() ?? running.notReady?.()) === undefined);
    // A CRL near or past its next update is said once, when that becomes so.
    const crl = tls.problem() ?? tls.crlWarning();
    if (crl !== crlSaid && crl !== undefined) log.child({}, { level: "warn" }).warn({}, crl);
    crlSaid = crl;
  };
  const readinessTimer = setInterval(followReadiness, 1_000);
  readinessTimer.unref();
  void running.ready.then(() => {
    ready = true;
    followReadiness();
  });
  const credentials = serverCredentials(tls, { handshakeTimeoutMs: config.connections.handshakeTimeoutMs });
  const port = await listen(server, config.host, config.port, credentials);
  capConnections(server, config.connections);
  // A peer the server stops trusting (its CA removed, its certificate revoked) loses the
  // connections it holds too, not only new ones.
  trackSessions(
    server,
    (chain) => tls.trustsPeer(chain),
    config.connections.handshakeTimeoutMs + 1_000,
    () => log.warn({}, "ended a connection of a peer no longer trusted as it arrived"),
  );
  tls.onTrustChange(() => {
    const ended = endUntrustedSessions(server, UNTRUSTED_GRACE_MS);
    if (ended > 0) log.warn({ connections: ended }, "ending the connections of peers no longer trusted");
  });
  // After each full collection, a fresh Map of each connection's streams (rpc stream-maps.ts).
  keepStreamMapsYoung(server, (why) => log.warn({}, why));
  const notReady = () =>
    stopping ? "shutting down" : !ready ? "starting" : (tls.problem() ?? running.notReady?.());
  // A worker's metrics and readiness go to its primary, which serves the ops listener for all.
  if (link) {
    answerMetrics(link, metrics?.registry);
    const report = () => link.post({ mimi: "state", notReady: notReady() ?? null });
    setInterval(report, 1_000).unref();
    void running.ready.then(report);
    link.post({ mimi: "listening", port });
    log
      .child({}, { level: "info" })
      .info({ host: config.host, port, worker: link.worker }, "worker listening");
    host.on("disconnect", () => void stop("primary exited"));
  }
  const ops =
    config.ops && metrics && !link
      ? await startOps(
          config.ops,
          {
            registry: metrics.registry,
            notReady,
          },
          log,
        )
      : undefined;
  if (!link)
    logListening(log, { host: config.host, port, ...(ops && { opsPort: ops.port }), ...running.listening });

  let skipLameDuck: (() => void) | undefined;
  const stop = async (reason: string) => {
    if (stopping) {
      // A second signal, or the launcher going away, ends the lame duck at once.
      skipLameDuck?.();
      return;
    }
    stopping = true;
    clearInterval(readinessTimer);
    log.info({ signal: reason, ...running.shutdownFields?.() }, "shutdown");
    health.setServing(false);
    // Lame duck: readiness and health already say NOT_SERVING, so load balancers and resolvers
    // move away, while calls are still answered; then background work stops and calls drain.
    if (config.lameDuckMs > 0 && reason !== "parent exited" && reason !== "primary exited") {
      log.info({ lameDuckMs: config.lameDuckMs }, "lame duck: not ready, still serving");
      await new Promise<void>((r) => {
        const t = setTimeout(r, config.lameDuckMs);
        skipLameDuck = () => {
          log.info({}, "lame duck ended early by another stop signal");
          clearTimeout(t);
          r();
        };
      });
    }
    stopWatching();
    running.stop();
    await shutdown(server, SHUTDOWN_GRACE_MS);
    running.close?.();
    host.exit(0);
  };
  reload = () => {
    if (stopping) return;
    let next: C;
    try {
      next = readConfig();
    } catch (err) {
      log.error({ err: (err as Error).message }, "reload refused: the config does not load; nothing changed");
      return;
    }
    const before = config.tls.watchSeconds;
    config = applyReload(config, next, spec.reloadable ?? [], {
      log,
      tls,
      levelOverride: host.env.LOG_LEVEL,
      apply: (c, applied) => running.reload?.(c, applied),
    });
    if (config.tls.watchSeconds !== before) {
      stopWatching();
      stopWatching = watchTls(tls, config.tls, log);
    }
  };
  // A worker stops and reloads when its primary says (systemd and terminals signal the whole
  // group); registered once stop and reload exist, since a held message is given at once.
  link?.onRequest((m) => {
    if (m.mimi === "stop") {
      void stop("primary asked");
      if (m.fast) void stop("primary asked");
    } else if (m.mimi === "reload") reload?.();
  });
  host.on("SIGINT", () => void (link ? undefined : stop("SIGINT")));
  host.on("SIGTERM", () => void (link ? undefined : stop("SIGTERM")));
  if (host.argv.includes("--stop-with-parent")) {
    host.stdin.on("end", () => void stop("parent exited"));
    host.stdin.on("error", () => void stop("parent exited"));
    host.stdin.resume();
  }
}

/**
 * What --check verifies beyond parsing the config: the TLS key matches its certificate and both
 * parse, the CA bundle parses, the development CA is allowed if present, and the server's own
 * keys load (spec.check).
 */
function checkConfig<C extends ServerBasics>(spec: ServerSpec<C>, config: C): void {
  // TlsFiles checks the pair, its dates and its chain to the CA file.
  const tls = new TlsFiles(config.tls).material;
  if (holdsDevelopmentCa(tls.ca) && !config.allowDevelopmentCa) {
    throw new ConfigError(
      `${config.tls.caFile} holds the development CA; set allowDevelopmentCa: true only for a development network`,
    );
  }
  spec.check?.(config);
}

/** Checks the TLS files for a rotation every `paths.watchSeconds` (none at 0); returns the stop. */
function watchTls(tls: TlsFiles, paths: TlsPaths, log: Logger): () => void {
  const seconds = paths.watchSeconds ?? 0;
  if (seconds === 0) return () => {};
  return tls.watch(seconds * 1000, (r) => {
    if (r instanceof Error) {
      log.error({ err: r.message }, "changed TLS files refused; the material in use stays in use");
      return;
    }
    logTlsReload(log, r, tls.paths.caFile);
    if (r.caPending) {
      log.warn(
        { caFile: tls.paths.caFile },
        "the CA file changed; it is trusted only after a reload (SIGHUP, systemctl reload)",
      );
    }
  });
}

/** The test clock over `file`, refused when others could move it. */
function testClock(file: string) {
  const st = statSync(file, { throwIfNoEntry: false });
  if (!st) throw new ConfigError(`--test-clock ${file} does not exist`);
  if ((st.mode & 0o022) !== 0) {
    throw new ConfigError(`--test-clock ${file} is writable by group or others; it must not be`);
  }
  return fileOffsetClock(file);
}

function argValue(argv: readonly string[], flag: string): string | undefined {
  const i = argv.indexOf(flag);
  return i >= 0 ? argv[i + 1] : undefined;
}
