// One server of the local network as a child process: started with port 0 (or a fixed port),
// ready once it logs "listening", its log lines kept for diagnosis. A server never outlives
// whoever started it: it gets --stop-with-parent and a pipe on stdin, which closes when the
// launcher dies however it dies, and the launcher kills what is left when it exits.
import { type ChildProcess, spawn } from "node:child_process";
import { renameSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

const PACKAGES = resolve(dirname(fileURLToPath(import.meta.url)), "../..");

/** The server kinds, by package. */
export type Role = "root" | "authoritative" | "resolver";

/** How long a server may take to bind before start() gives up. */
const START_TIMEOUT_MS = 30_000;

/** Lines of log kept per process. */
const KEPT_LINES = 2_000;

// Children still running, killed when this process exits without having stopped them (an
// exception, process.exit): the stdin pipe covers the cases where no exit handler runs.
const live = new Set<ChildProcess>();
process.once("exit", () => {
  for (const child of live) child.kill("SIGKILL");
});

/** Options of a server process. */
export interface ServerProcessOptions {
  /** Extra node arguments, e.g. ["--cpu-prof"]. */
  nodeArgs?: readonly string[];
  /** Receives every line the process prints. */
  onLine?: (name: string, line: string) => void;
  /** A test clock file, passed as --test-clock, that setClockOffset writes. */
  clockFile?: string;
  /**
   * A command that runs node for it, e.g. ["ip", "netns", "exec", ns] for a server on a host of
   * its own (the multi-host test); it must exec node in place, so the PID stays the server's.
   */
  launcher?: readonly string[];
  /** Where clients reach it (host:port) when not on loopback at the port it logged. */
  address?: string;
}

/** One server process, with the port it bound and its recent log lines. */
export class ServerProcess {
  port = 0;
  /** The ops listener's port (metrics, probes); 0 when the server has none. */
  opsPort = 0;
  readonly lines: string[] = [];
  private child: ChildProcess | undefined;
  private exited: Promise<number | null> = Promise.resolve(null);
  private stopping = false;
  /** Called when the process exits without stop() or kill() having been asked for. */
  onUnexpectedExit: ((name: string, code: number | null, signal: string | null) => void) | undefined;

  constructor(
    readonly name: string,
    private readonly role: Role,
    readonly configPath: string,
    private readonly logLevel: string,
    private readonly options: ServerProcessOptions = {},
  ) {}

  get address(): string {
    return this.options.address ?? `127.0.0.1:${this.port}`;
  }

  /** Process id while running, for CPU and memory accounting. */
  get pid(): number | undefined {
    return this.running ? this.child?.pid : undefined;
  }

  get running(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  /**
   * Starts the process and resolves once it logged "listening" (its port), rejects if it exits
   * first. A restart binds a new port unless `samePort` asks for the one it had.
   */
  start(opts: { samePort?: boolean } = {}): Promise<void> {
    const script = join(PACKAGES, this.role, "dist", "main.js");
    const portEnv = `${this.role.toUpperCase()}_PORT`;
    const [command = process.execPath, ...prefix] = [...(this.options.launcher ?? []), process.execPath];
    const child = spawn(
      command,
      [
        ...prefix,
        ...(this.options.nodeArgs ?? []),
        script,
        "--config",
        this.configPath,
        "--stop-with-parent",
        ...(this.options.clockFile ? ["--test-clock", this.options.clockFile] : []),
      ],
      {
        stdio: ["pipe", "pipe", "pipe"],
        env: {
          ...process.env,
          LOG_LEVEL: this.logLevel,
          ...(opts.samePort && this.port !== 0 ? { [portEnv]: String(this.port) } : {}),
        },
      },
    );
    this.child = child;
    live.add(child);
    this.stopping = false;
    this.exited = new Promise((r) =>
      child.once("exit", (code, signal) => {
        live.delete(child);
        if (!this.stopping && this.port !== 0) this.onUnexpectedExit?.(this.name, code, signal);
        r(code);
      }),
    );
    return new Promise((resolveStart, reject) => {
      const keep = (line: string) => {
        this.lines.push(line);
        if (this.lines.length > KEPT_LINES) this.lines.splice(0, KEPT_LINES / 2);
        this.options.onLine?.(this.name, line);
      };
      createInterface({ input: child.stdout as NodeJS.ReadableStream }).on("line", (line) => {
        keep(line);
        if (line.includes('"listening"')) {
          try {
            const rec = JSON.parse(line) as { msg?: string; port?: number; opsPort?: number };
            if (rec.msg === "listening" && typeof rec.port === "number") {
              this.port = rec.port;
              this.opsPort = typeof rec.opsPort === "number" ? rec.opsPort : 0;
              clearTimeout(timer);
              resolveStart();
            }
          } catch {
            // Not a log record; kept above for diagnosis.
          }
        }
      });
      createInterface({ input: child.stderr as NodeJS.ReadableStream }).on("line", keep);
      child.once("exit", (code, signal) => {
        clearTimeout(timer);
        reject(
          new Error(
            `${this.name} exited (${signal ?? code}) before listening:\n${this.lines.slice(-20).join("\n")}`,
          ),
        );
      });
      const timer = setTimeout(() => {
        child.kill("SIGKILL");
        reject(new Error(`${this.name} did not log "listening" within ${START_TIMEOUT_MS} ms`));
      }, START_TIMEOUT_MS);
    });
  }

  /** Kills the process at once (SIGKILL), as a crash would, and waits for it to be gone. */
  async kill(): Promise<void> {
    const child = this.child;
    if (!child || !this.running) return;
    this.stopping = true;
    child.kill("SIGKILL");
    await this.exited;
  }

  /** Sends SIGTERM and waits for exit; SIGKILL after `graceMs`. Resolves with the exit code (null: killed). */
  async stop(graceMs = 5_000): Promise<number | null> {
    const child = this.child;
    if (!child || !this.running) return null;
    this.stopping = true;
    child.kill("SIGTERM");
    const t = setTimeout(() => child.kill("SIGKILL"), graceMs);
    const code = await this.exited;
    clearTimeout(t);
    return code;
  }

  /**
   * Moves the server's clock `offsetMs` away from the wall clock (0 puts it back); it reads the
   * offset at every reading. Only for a server started with a test clock file.
   */
  setClockOffset(offsetMs: number): void {
    const file = this.options.clockFile;
    if (!file) throw new Error(`${this.name} was started without a test clock`);
    // Written aside and renamed, so a reading never sees a half-written file.
    writeFileSync(`${file}.tmp`, String(Math.round(offsetMs)), { mode: 0o600 });
    renameSync(`${file}.tmp`, file);
  }
}
