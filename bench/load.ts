// One load-generating process: connects as an MSP would (mutual TLS, the generated client),
// waits for the agreed start time, then drives lookups closed-loop at a concurrency (unary
// calls, or one ResolveStream with that many outstanding) or open-loop at a fixed rate.
// Open-loop latency counts from the scheduled send time, so a slow server cannot hide
// queueing (no coordinated omission). Latencies (microseconds) go to a binary file.
import { writeFileSync } from "node:fs";
import { AsyncQueue, pb } from "@mimi/core";
import { devTlsPaths } from "@mimi/devnet/paths";
import {
  type Channel,
  channelCredentials,
  loadTls,
  openChannel,
  silenceIpServernameWarning,
} from "@mimi/rpc";
import { absentCsi, existingCsi, type KeySpec } from "./keys.js";

export type { KeySpec } from "./keys.js";

/** What the parent asks of one worker. */
export interface LoadSpec {
  target: string;
  /** The CPUs the load process runs on (a taskset list), when the bench pins (--pin). */
  pin?: string;
  service: "resolver" | "authoritative";
  api: "unary" | "stream";
  pkiDir: string;
  identity: string;
  startAtMs: number;
  durationMs: number;
  concurrency: number;
  /** Requests per second for open loop; 0 for closed loop. */
  ratePerSec: number;
  /** Each call's deadline (ms), as an MSP would set it. */
  deadlineMs: number;
  /** Connections the calls are spread over, round robin (default 1). */
  connections?: number;
  keys: KeySpec;
  latFile: string;
  /** More fields of every Resolve request: federation parameters (FederationOptions), privacy (PrivacyMode). */
  request?: { federation?: { mode: number; dps?: number; ignoreFilters?: boolean }; privacy?: number };
}

/** What a worker reports on stdout as one JSON line. */
export interface LoadResult {
  count: number;
  errors: number;
  firstError?: string;
  /** When the first error came, from the start (ms). */
  firstErrorAfterMs?: number;
  elapsedMs: number;
  /** The worker's own CPU (user and system) over the run, in seconds. */
  cpuSeconds: number;
  exhausted: boolean;
  /** Failures by status and reason, e.g. "RESOURCE_EXHAUSTED/RESOLVER_OVERLOADED". */
  errorsByKind: Record<string, number>;
  /** The first failure's message of each kind. */
  errorSamples: Record<string, string>;
  /** Percentiles of the failures' latency (ms), from send (or due time, open loop) to failure. */
  failureMs?: { p50: number; p99: number };
  /**
   * Open loop: the same from when each call was sent. A load process behind its schedule sends
   * late, and every failure then looks slow from its due time however fast it was refused.
   */
  failureFromSendMs?: { p50: number; p99: number };
}

/** gRPC status names by code. */
const STATUS_NAMES = [
  "OK",
  "CANCELLED",
  "UNKNOWN",
  "INVALID_ARGUMENT",
  "DEADLINE_EXCEEDED",
  "NOT_FOUND",
  "ALREADY_EXISTS",
  "PERMISSION_DENIED",
  "RESOURCE_EXHAUSTED",
  "FAILED_PRECONDITION",
  "ABORTED",
  "OUT_OF_RANGE",
  "UNIMPLEMENTED",
  "INTERNAL",
  "UNAVAILABLE",
  "DATA_LOSS",
  "UNAUTHENTICATED",
];

function keySource(k: KeySpec, seed: number): () => string | undefined {
  let cold = k.cold[0];
  let absent = k.absent[0];
  let x = seed * 2654435761 + 1;
  const rand = () => {
    // xorshift: cheap, deterministic per worker, no allocation.
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 4294967296;
  };
  const warm = () => existingCsi(Math.floor(rand() * k.warmCount));
  const nextCold = () => (cold < k.cold[1] ? existingCsi(cold++) : undefined);
  const stride = k.absentStride ?? 1;
  // Modulo what absentCsi can write (8 digits after +4478, 2 x 10^7 per +1 area code run).
  const nextAbsent = () => (absent < k.absent[1] ? absentCsi((stride * absent++) % 100_000_000) : undefined);
  switch (k.mode) {
    case "warm":
      return warm;
    case "cold":
      return nextCold;
    case "absent":
      return nextAbsent;
    case "eu-random":
      return () => existingCsi(2 * Math.floor((rand() * k.universe) / 2));
    case "eu-cold":
      // Existing CSIs at eu (even indexes) never asked before: cold[0] to cold[1] count them.
      return () => (cold < k.cold[1] ? existingCsi(2 * cold++) : undefined);
    case "misses":
      // New contacts, half of them known somewhere: every lookup needs a DP.
      return () => (rand() < 0.5 ? (nextCold() ?? nextAbsent()) : nextAbsent());
    case "mixed":
      return () => {
        const r = rand();
        return r < 0.9 ? warm() : r < 0.98 ? nextCold() : nextAbsent();
      };
  }
}

class Latencies {
  private data = new Float64Array(1 << 20);
  n = 0;
  add(us: number): void {
    if (this.n === this.data.length) {
      const bigger = new Float64Array(this.data.length * 2);
      bigger.set(this.data);
      this.data = bigger;
    }
    this.data[this.n++] = us;
  }
  bytes(): Buffer {
    return Buffer.from(this.data.buffer, 0, this.n * 8);
  }
}

async function run(spec: LoadSpec): Promise<LoadResult> {
  const credentials = channelCredentials(loadTls(devTlsPaths(spec.pkiDir, spec.identity)));
  const connections = Math.max(1, spec.connections ?? 1);
  const channels: Channel[] = Array.from({ length: connections }, () =>
    openChannel(spec.target, credentials, { ownConnection: connections > 1 }),
  );
  // Connect (TLS handshake, HTTP/2 settings) before the clock starts; a health check asks for no CSI.
  await Promise.all(
    channels.map((c) => c.client(pb.Health).check({}, { timeoutMs: 10_000, waitForReady: true })),
  );
  const next = keySource(spec.keys, process.pid);
  const lat = new Latencies();
  let errors = 0;
  let firstError: string | undefined;
  let firstErrorAfterMs: number | undefined;
  let exhausted = false;
  let t0 = 0;
  const errorsByKind: Record<string, number> = {};
  const errorSamples: Record<string, string> = {};
  const failLat = new Latencies();
  const failSentLat = new Latencies();
  /** A failure of a call sent (or due, open loop) at `since`, and sent at `sentAt` (open loop). */
  const fail = (err: unknown, since?: number, sentAt?: number) => {
    errors++;
    if (since !== undefined) failLat.add((performance.now() - since) * 1000);
    if (sentAt !== undefined) failSentLat.add((performance.now() - sentAt) * 1000);
    firstErrorAfterMs ??= performance.now() - t0;
    firstError ??= err instanceof Error ? err.message : String(err);
    // By the gRPC status the server (or the client's deadline) gave, and the reason when named.
    const e = err as { remoteStatus?: unknown; details?: { reason?: unknown } };
    const status =
      typeof e.remoteStatus === "number" ? (STATUS_NAMES[e.remoteStatus] ?? String(e.remoteStatus)) : "OTHER";
    const kind = `${status}${typeof e.details?.reason === "string" && e.details.reason ? `/${e.details.reason}` : ""}`;
    errorsByKind[kind] = (errorsByKind[kind] ?? 0) + 1;
    if (errorsByKind[kind] === 1) errorSamples[kind] = err instanceof Error ? err.message : String(err);
  };
  const resolvers = channels.map((c) => c.client(pb.ResolverService));
  const dps = channels.map((c) => c.client(pb.AuthoritativeService));
  const resolver = resolvers[0] as (typeof resolvers)[number];
  // Unary calls go to the connections in turn; a stream uses the first.
  let turn = 0;
  const inTurn = <T>(of: readonly T[]) => of[turn++ % connections] as T;
  const call =
    spec.service === "resolver"
      ? (csi: string) => inTurn(resolvers).resolve({ csi, ...spec.request }, { timeoutMs: spec.deadlineMs })
      : (csi: string) => inTurn(dps).lookup({ csi }, { timeoutMs: spec.deadlineMs });

  await new Promise((r) => setTimeout(r, Math.max(0, spec.startAtMs - Date.now())));
  t0 = performance.now();
  const cpu0 = process.cpuUsage();
  const end = t0 + spec.durationMs;

  if (spec.ratePerSec > 0) {
    // Open loop: request i is due at t0 + i/rate, whatever happened to earlier ones.
    const intervalMs = 1000 / spec.ratePerSec;
    let i = 0;
    let inflight = 0;
    await new Promise<void>((done) => {
      const tick = () => {
        const now = performance.now();
        while (t0 + i * intervalMs <= now && t0 + i * intervalMs < end) {
          const due = t0 + i * intervalMs;
          i++;
          const csi = next();
          if (csi === undefined) {
            exhausted = true;
            break;
          }
          inflight++;
          const sentAt = performance.now();
          call(csi)
            .then(
              () => lat.add((performance.now() - due) * 1000),
              (err: unknown) => fail(err, due, sentAt),
            )
            .finally(() => {
              inflight--;
              if (inflight === 0 && (performance.now() >= end || exhausted)) done();
            });
        }
        if (performance.now() < end && !exhausted) setTimeout(tick, 1);
        else if (inflight === 0) done();
      };
      tick();
    });
  } else if (spec.api === "stream") {
    const feed = new AsyncQueue<{ requestId: bigint; csi: string }>();
    // A resolver's ResolveStream, or a DP's LookupStream (what resolvers ask DPs with), whose
    // first message is the DP's published rate, not an answer.
    const answers =
      spec.service === "resolver"
        ? resolver.resolveStream(feed, { timeoutMs: spec.durationMs + 30_000 })
        : (dps[0] as (typeof dps)[number]).lookupStream(feed, { timeoutMs: spec.durationMs + 30_000 });
    const started = new Map<bigint, number>();
    let id = 0n;
    const send = () => {
      if (performance.now() >= end) return false;
      const csi = next();
      if (csi === undefined) {
        exhausted = true;
        return false;
      }
      started.set(id, performance.now());
      feed.push({ requestId: id++, csi, ...spec.request });
      return true;
    };
    for (let k = 0; k < spec.concurrency; k++) if (!send()) break;
    if (started.size === 0) feed.close();
    try {
      for await (const res of answers) {
        if (res.result.case === "limits") continue;
        const s = started.get(res.requestId);
        started.delete(res.requestId);
        if (res.result.case === "error") fail(new Error(res.result.value.message));
        else if (s !== undefined) lat.add((performance.now() - s) * 1000);
        if (!send() && started.size === 0) feed.close();
      }
    } catch (err) {
      fail(err);
    }
  } else {
    const loop = async () => {
      for (;;) {
        if (performance.now() >= end) return;
        const csi = next();
        if (csi === undefined) {
          exhausted = true;
          return;
        }
        const s = performance.now();
        try {
          await call(csi);
          lat.add((performance.now() - s) * 1000);
        } catch (err) {
          fail(err, s);
        }
      }
    };
    await Promise.all(Array.from({ length: spec.concurrency }, loop));
  }
  const elapsedMs = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  writeFileSync(spec.latFile, lat.bytes());
  for (const c of channels) c.close();
  const failed = failurePercentiles(failLat);
  const failedFromSend = failurePercentiles(failSentLat);
  return {
    count: lat.n,
    errors,
    ...(firstError ? { firstError, firstErrorAfterMs } : {}),
    elapsedMs,
    cpuSeconds: (cpu.user + cpu.system) / 1e6,
    exhausted,
    errorsByKind,
    errorSamples,
    ...(failed && { failureMs: failed }),
    ...(failedFromSend && { failureFromSendMs: failedFromSend }),
  };
}

/** The median and 99th percentile (ms) of latencies recorded in us, or undefined for none. */
function failurePercentiles(l: Latencies): { p50: number; p99: number } | undefined {
  const sorted = new Float64Array(l.bytes().buffer, 0, l.n).sort();
  const at = (p: number) =>
    (sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? 0) / 1000;
  return sorted.length > 0 ? { p50: at(50), p99: at(99) } : undefined;
}

silenceIpServernameWarning(process);
// The benchmark holds our stdin open; when it goes (finished, killed, timed out), so do we.
process.stdin.on("end", () => process.exit(2));
process.stdin.resume();
const spec = JSON.parse(process.argv[2] ?? "{}") as LoadSpec;
run(spec).then(
  (r) => {
    process.stdout.write(`${JSON.stringify(r)}\n`);
    process.exit(0);
  },
  (err) => {
    process.stderr.write(`load: ${err instanceof Error ? err.stack : String(err)}\n`);
    process.exit(1);
  },
);
