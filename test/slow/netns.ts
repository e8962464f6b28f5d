// Hosts for the multi-host test: one Linux network namespace per host, their links (veth pairs)
// on bridges inside a namespace of their own (the switch), so nothing touches the machine's own
// network; processes started inside a host by `ip netns exec` (which execs in place, so a
// child's PID is the program's own), stopped by PID; and a check that namespaces can be made
// here at all. Every namespace is named mimi-mh-<pid>-<random>-<host>, so a run never touches
// another's, and a run that died is cleaned up by the next one (its PID is gone).
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { createInterface } from "node:readline";

const PREFIX = "mimi-mh";
/** How long a server or the relay may take to come up. */
const START_TIMEOUT_MS = 60_000;

/** Runs `ip` with these arguments; throws with its stderr. */
function ip(...args: string[]): string {
  try {
    return execFileSync("ip", args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`ip ${args.join(" ")}: ${(e.stderr ?? "").trim() || e.message}`);
  }
}

/**
 * Why this machine cannot run the multi-host test (no `ip`, not root, no veth or bridge
 * support), or undefined when it can: tries once to make a namespace with a bridge and a veth
 * pair inside it, and removes it.
 */
export function netnsUnavailable(): string | undefined {
  const probe = `${PREFIX}-${process.pid}-${randomBytes(3).toString("hex")}-probe`;
  try {
    ip("netns", "add", probe);
  } catch (err) {
    return (err as Error).message;
  }
  try {
    ip("-n", probe, "link", "add", "probe-br", "type", "bridge");
    ip("-n", probe, "link", "add", "probe-a", "type", "veth", "peer", "name", "probe-b");
    return undefined;
  } catch (err) {
    return (err as Error).message;
  } finally {
    ip("netns", "del", probe);
  }
}

/** Says on stderr, where no reporter hides it, that the multi-host test did not run and why. */
export function warnSkipped(reason: string): void {
  const bar = "!".repeat(78);
  process.stderr.write(
    `\n${bar}\n!! MULTI-HOST TEST SKIPPED: this machine cannot create network namespaces.\n` +
      `!! ${reason}\n` +
      "!! It needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN), iproute2 and veth/bridge support.\n" +
      "!! Nothing about resolution across hosts, partitions or failover was tested here.\n" +
      `${bar}\n\n`,
  );
}

/** A host: its name and, per LAN it is on ("a", "b"), the last octet of its address. */
export interface HostSpec {
  readonly name: string;
  readonly lans: Readonly<Partial<Record<Lan, number>>>;
}

/** The two LANs: a is 10.231.X.0/25, b is 10.231.X.128/25 (octets 129 and up). */
export type Lan = "a" | "b";

/** Hosts on up to two switched LANs, all in namespaces this run made. */
export class Lab {
  /** The third octet of every address: random, so two runs' addresses differ too. */
  readonly subnet = 1 + Math.floor(Math.random() * 254);
  private readonly id = `${PREFIX}-${process.pid}-${randomBytes(3).toString("hex")}`;
  private readonly made: string[] = [];
  private readonly hosts = new Map<string, HostSpec>();

  /** Namespace of a host ("sw" is the switch). */
  ns(host: string): string {
    return `${this.id}-${host}`;
  }

  /** A host's address on a LAN. */
  ip(host: string, lan: Lan = "a"): string {
    const octet = this.hosts.get(host)?.lans[lan];
    if (octet === undefined) throw new Error(`host ${host} is not on LAN ${lan}`);
    return `10.231.${this.subnet}.${octet}`;
  }

  /**
   * Makes the switch with a bridge per LAN and each host with its loopback up and one link per
   * LAN: a veth pair whose switch end ("<host>-<lan>") is a bridge port and whose host end is
   * eth0 (LAN a) or eth1 (LAN b).
   */
  build(specs: readonly HostSpec[]): void {
    removeLeftovers();
    const sw = this.ns("sw");
    this.addNs(sw);
    for (const lan of ["a", "b"] as const) {
      ip("-n", sw, "link", "add", `br-${lan}`, "type", "bridge");
      ip("-n", sw, "link", "set", `br-${lan}`, "up");
    }
    for (const spec of specs) {
      this.hosts.set(spec.name, spec);
      const ns = this.ns(spec.name);
      this.addNs(ns);
      ip("-n", ns, "link", "set", "lo", "up");
      for (const [lan, octet] of Object.entries(spec.lans) as [Lan, number][]) {
        const port = `${spec.name}-${lan}`;
        const dev = lan === "a" ? "eth0" : "eth1";
        ip("-n", sw, "link", "add", port, "type", "veth", "peer", "name", dev, "netns", ns);
        ip("-n", sw, "link", "set", port, "master", `br-${lan}`, "up");
        const prefix = lan === "a" ? 0 : 128;
        if (octet <= prefix || octet >= prefix + 127) throw new Error(`${octet} is not on LAN ${lan}`);
        ip("-n", ns, "addr", "add", `10.231.${this.subnet}.${octet}/25`, "dev", dev);
        ip("-n", ns, "link", "set", dev, "up");
      }
    }
  }

  /**
   * Cuts a host's link on a LAN the way a pulled cable does: its switch port goes down, the
   * host's end loses carrier, and packets either way are dropped without a reset.
   */
  cut(host: string, lan: Lan = "a"): void {
    ip("-n", this.ns("sw"), "link", "set", `${host}-${lan}`, "down");
  }

  /** Puts a cut link back. */
  restore(host: string, lan: Lan = "a"): void {
    ip("-n", this.ns("sw"), "link", "set", `${host}-${lan}`, "up");
  }

  /** Removes every namespace this lab made (and so every link), stopping what still runs in them. */
  destroy(): void {
    for (const ns of this.made.splice(0).reverse()) removeNs(ns);
  }

  private addNs(ns: string): void {
    ip("netns", "add", ns);
    this.made.push(ns);
  }
}

/** Stops what runs in a namespace of ours, by PID, and removes it. */
function removeNs(ns: string): void {
  try {
    for (const pid of ip("netns", "pids", ns).split(/\s+/).filter(Boolean)) {
      try {
        process.kill(Number(pid), "SIGKILL");
      } catch {
        // Already gone.
      }
    }
    ip("netns", "del", ns);
  } catch (err) {
    process.stderr.write(`multihost: could not remove namespace ${ns}: ${(err as Error).message}\n`);
  }
}

/** Removes namespaces an earlier run of this test left behind (its process is gone). */
function removeLeftovers(): void {
  for (const line of ip("netns", "list").split("\n")) {
    const m = new RegExp(`^(${PREFIX}-(\\d+)-[0-9a-f]+-\\S+)`).exec(line);
    if (!m?.[1] || !m[2] || alive(Number(m[2]))) continue;
    removeNs(m[1]);
  }
}

/** Whether a process with this PID exists. */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

// Every process started in a host, so `stopAll` (the test's `after`) and, as a last resort, this
// process's exit stop them by PID.
const live = new Set<ChildProcess>();
process.once("exit", () => {
  for (const child of live) signal(child, "SIGKILL");
});

/** Sends `sig` to the child's PID unless it is gone. */
function signal(child: ChildProcess, sig: NodeJS.Signals): void {
  if (!child.pid || child.exitCode !== null || child.signalCode !== null) return;
  try {
    process.kill(child.pid, sig);
  } catch {
    // Exited meanwhile.
  }
}

/** Spawns `node <args>` inside namespace `ns`, with a pipe on stdin that its end closes. */
function spawnIn(ns: string, args: readonly string[], env: NodeJS.ProcessEnv = process.env): ChildProcess {
  const child = spawn("ip", ["netns", "exec", ns, process.execPath, ...args], {
    stdio: ["pipe", "pipe", "pipe"],
    env,
  });
  live.add(child);
  child.once("exit", () => live.delete(child));
  return child;
}

/** Stops (SIGTERM, then SIGKILL after `graceMs`) every process still running in a host. */
export async function stopAll(graceMs = 5_000): Promise<void> {
  await Promise.all([...live].map((c) => stopChild(c, graceMs)));
}

async function stopChild(child: ChildProcess, graceMs: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || !child.pid) return;
  const gone = new Promise((r) => child.once("exit", r));
  signal(child, "SIGTERM");
  const t = setTimeout(() => signal(child, "SIGKILL"), graceMs);
  await gone;
  clearTimeout(t);
}

/** Resolves once `child` prints a line passing `ready`; rejects if it exits or takes too long. */
function waitForLine(
  child: ChildProcess,
  what: string,
  ready: (line: string) => boolean,
  keep: (line: string) => void,
): Promise<void> {
  return new Promise((resolveReady, reject) => {
    const recent: string[] = [];
    const onLine = (line: string) => {
      keep(line);
      recent.push(line);
      if (recent.length > 20) recent.shift();
      if (ready(line)) {
        clearTimeout(timer);
        resolveReady();
      }
    };
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).on("line", onLine);
    createInterface({ input: child.stderr as NodeJS.ReadableStream }).on("line", onLine);
    child.once("exit", (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`${what} exited (${signal ?? code}) before it was ready:\n${recent.join("\n")}`));
    });
    const timer = setTimeout(() => {
      signal(child, "SIGKILL");
      reject(new Error(`${what} was not ready within ${START_TIMEOUT_MS} ms:\n${recent.join("\n")}`));
    }, START_TIMEOUT_MS);
  });
}

/** A relay into a host (relay.ts): the test process's way onto the test's network. */
export interface Relay {
  /** The unix-socket address (for grpc-js) that reaches `target` ("ip:port") from the host. */
  via(target: string): string;
}

/** Starts relay.ts in `ns`, listening in `dir` for each target. */
export async function startRelay(
  ns: string,
  relayScript: string,
  dir: string,
  targets: readonly string[],
  onLine: (name: string, line: string) => void,
): Promise<Relay> {
  const child = spawnIn(ns, ["--import", "tsx", relayScript, dir, ...targets]);
  await waitForLine(
    child,
    "relay",
    (line) => line === "relay ready",
    (line) => onLine("relay", line),
  );
  return {
    via(target) {
      if (!targets.includes(target)) throw new Error(`the relay does not reach ${target}`);
      return `unix:${join(dir, `${target.replace(":", "-")}.sock`)}`;
    },
  };
}

/** What a command run on a host printed, and its exit code. */
export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `node <args>` on a host to its end (killed by PID after `timeoutMs`). */
export function runOnHost(ns: string, args: readonly string[], timeoutMs = 60_000): Promise<RunResult> {
  const child = spawnIn(ns, args);
  child.stdin?.end();
  let stdout = "";
  let stderr = "";
  child.stdout?.on("data", (d: Buffer) => {
    stdout += d.toString();
  });
  child.stderr?.on("data", (d: Buffer) => {
    stderr += d.toString();
  });
  const timer = setTimeout(() => signal(child, "SIGKILL"), timeoutMs);
  return new Promise((done) =>
    child.once("close", (code, signal) => {
      clearTimeout(timer);
      done({ code: code ?? (signal ? 128 : 1), stdout, stderr });
    }),
  );
}
