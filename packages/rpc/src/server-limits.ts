// What one server lets its peers hold open (the abuse issue's connection hygiene): connections,
// streams per connection, watch streams per identity, handshake time, idle time and connection
// age, and request size. Every limit is a key of the server's `connections` config section.
import type { Server, Socket } from "node:net";
import type * as grpc from "@grpc/grpc-js";
import type { ConfigReader } from "@mimi/core";
import { DiscoveryError } from "@mimi/core";
import type { CallObservers } from "./metrics.js";

/** The connection limits of a server. */
export interface ConnectionLimits {
  /** Open connections at once; more are closed as they arrive. */
  readonly maxConnections: number;
  /**
   * Open connections from one source address (an IPv6 address's /64, addressKey): counted before
   * TLS, so without it anyone who can reach the port could hold every connection (reconnecting
   * at each handshake timeout).
   */
  readonly maxConnectionsPerAddress: number;
  /** How much of an IPv6 source address counts as one source (its prefix, in bits; addressKey). */
  readonly ipv6PrefixLength: number;
  /**
   * Concurrent streams (calls) on one connection (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS). Calls
   * past it wait at the client, where one whose deadline passes ends without a word to us; past
   * the server, an overloaded one holds every call it was sent, and each of them that the
   * client cancels at its deadline spends the connection's reset budget (see answerInTime in the
   * resolver's server.ts).
   */
  readonly maxStreamsPerConnection: number;
  /** Open watch streams (server-streaming calls) per caller identity, across its connections. */
  readonly maxWatchersPerIdentity: number;
  /**
   * Open client-streaming and bidirectional calls (ResolveStream, LookupStream, BulkRegister,
   * provider feeds) per caller identity, across its connections: each may hold up to a window of
   * items in flight, so without a cap one identity's connections could hold millions.
   */
  readonly maxStreamingCallsPerIdentity: number;
  /** A connection that has not finished its TLS handshake by then is closed. */
  readonly handshakeTimeoutMs: number;
  /** A connection without calls for this long is closed (clients reconnect when they need to). */
  readonly idleTimeoutMs: number;
  /** A connection is asked to go away at this age, and closed a grace period later. */
  readonly maxConnectionAgeMs: number;
  /** The largest request message of a method that names no larger limit of its own. */
  readonly maxRequestBytes: number;
}

export const DEFAULT_CONNECTION_LIMITS: ConnectionLimits = {
  maxConnections: 1_000,
  maxConnectionsPerAddress: 100,
  ipv6PrefixLength: 64,
  maxStreamsPerConnection: 100,
  maxWatchersPerIdentity: 64,
  maxStreamingCallsPerIdentity: 256,
  handshakeTimeoutMs: 10_000,
  idleTimeoutMs: 300_000,
  maxConnectionAgeMs: 3_600_000,
  maxRequestBytes: 64 * 1024,
};

/** The largest request any method may name (a bulk batch of 10,000 signed records). */
export const MAX_METHOD_REQUEST_BYTES = 16 * 1024 * 1024;
/** How long a connection past its age may finish its calls. */
const CONNECTION_AGE_GRACE_MS = 60_000;

/** Reads the optional `connections` section. */
export function readConnectionLimits(root: ConfigReader): ConnectionLimits {
  const r = root.object("connections", { optional: true });
  const d = DEFAULT_CONNECTION_LIMITS;
  const s = (key: string, fallbackMs: number, min: number, max: number) =>
    r.integer(key, fallbackMs / 1000, min, max) * 1000;
  const limits: ConnectionLimits = {
    maxConnections: r.integer("maxConnections", d.maxConnections, 1, 1_000_000),
    maxConnectionsPerAddress: r.integer("maxConnectionsPerAddress", d.maxConnectionsPerAddress, 1, 1_000_000),
    ipv6PrefixLength: r.integer("ipv6PrefixLength", d.ipv6PrefixLength, 16, 128),
    maxStreamsPerConnection: r.integer("maxStreamsPerConnection", d.maxStreamsPerConnection, 1, 100_000),
    maxWatchersPerIdentity: r.integer("maxWatchersPerIdentity", d.maxWatchersPerIdentity, 1, 100_000),
    maxStreamingCallsPerIdentity: r.integer(
      "maxStreamingCallsPerIdentity",
      d.maxStreamingCallsPerIdentity,
      1,
      100_000,
    ),
    handshakeTimeoutMs: s("handshakeTimeoutSeconds", d.handshakeTimeoutMs, 1, 600),
    idleTimeoutMs: s("idleTimeoutSeconds", d.idleTimeoutMs, 1, 86_400),
    maxConnectionAgeMs: s("maxConnectionAgeSeconds", d.maxConnectionAgeMs, 60, 30 * 86_400),
    maxRequestBytes: r.integer("maxRequestBytes", d.maxRequestBytes, 1_024, MAX_METHOD_REQUEST_BYTES),
  };
  r.done();
  return limits;
}

/** The grpc-js options that carry the limits grpc-js knows itself. */
export function grpcLimitOptions(l: ConnectionLimits): grpc.ServerOptions {
  return {
    "grpc.max_concurrent_streams": l.maxStreamsPerConnection,
    "grpc.max_connection_idle_ms": l.idleTimeoutMs,
    "grpc.max_connection_age_ms": l.maxConnectionAgeMs,
    "grpc.max_connection_age_grace_ms": CONNECTION_AGE_GRACE_MS,
    // Methods check their own, smaller limits (rpc/grpc.ts); this is the ceiling.
    "grpc.max_receive_message_length": MAX_METHOD_REQUEST_BYTES,
  };
}

/** Watch streams held per identity, refused past the limit with RESOURCE_EXHAUSTED. */
export interface WatchSlots {
  /** Takes a slot for `identity`; returns its release (safe to call twice). */
  acquire(identity: string): () => void;
  held(identity: string): number;
}

/** What a kind of slot is called in refusals. */
interface SlotKind {
  readonly noun: string;
  readonly reason: string;
}
const WATCHES: SlotKind = { noun: "open watch streams", reason: "WATCH_STREAMS_PER_IDENTITY" };
const STREAMING_CALLS: SlotKind = {
  noun: "open streaming calls",
  reason: "STREAMING_CALLS_PER_IDENTITY",
};

/** Slots of `max` watch streams (or, with `kind`, other long calls) per identity. */
export function createWatchSlots(max: number, kind: SlotKind = WATCHES): WatchSlots {
  const held = new Map<string, number>();
  return {
    acquire(identity) {
      const n = held.get(identity) ?? 0;
      if (n >= max) {
        throw new DiscoveryError(
          "resource_exhausted",
          `"${identity}" already holds ${max} ${kind.noun} here, the most one identity may; close one first`,
          {
            details: {
              quota: [{ subject: `identity:${identity}`, description: `${max} ${kind.noun}` }],
              reason: kind.reason,
            },
          },
        );
      }
      held.set(identity, n + 1);
      let released = false;
      return () => {
        if (released) return;
        released = true;
        const left = (held.get(identity) ?? 1) - 1;
        if (left <= 0) held.delete(identity);
        else held.set(identity, left);
      };
    },
    held: (identity) => held.get(identity) ?? 0,
  };
}

/** A server's limits and the per-identity slots of its long calls. */
export interface AttachedLimits {
  limits: ConnectionLimits;
  /** Counts calls for the ops listener's metrics, when the server has one. */
  observers?: CallObservers;
  watchers: WatchSlots;
  streamingCalls: WatchSlots;
  /** The largest request message of each method path; addService fills it. */
  requestBytes: Map<string, number>;
}
const attached = new WeakMap<grpc.Server, AttachedLimits>();

/** Gives `server` its limits; addService reads them (createGrpcServer calls this). */
export function attachLimits(
  server: grpc.Server,
  limits: ConnectionLimits,
  observers?: CallObservers,
  requestBytes = new Map<string, number>(),
): void {
  attached.set(server, {
    limits,
    ...(observers && { observers }),
    watchers: createWatchSlots(limits.maxWatchersPerIdentity),
    streamingCalls: createWatchSlots(limits.maxStreamingCallsPerIdentity, STREAMING_CALLS),
    requestBytes,
  });
}

/**
 * Holds each call to its own method's request size from the message's first bytes. grpc-js
 * knows one limit per server, the largest any method takes (16 MiB, for bulk batches), and
 * buffers a message up to it, or inflates a compressed one to it, before the method's own check
 * (rpc/grpc.ts) runs: a 16 KiB gzip body cost 16 MiB. Here a call's reader takes at most twice
 * its method's limit (within the server's): a message between the two is still read and refused
 * with REQUEST_TOO_LARGE and what the method takes; a larger one is refused RESOURCE_EXHAUSTED
 * by its declared length, before its body is read. grpc-js keeps the reader's limits in private
 * fields (1.14); server-limits.test.ts fails should they move.
 */
export function limitRequests(byPath: ReadonlyMap<string, number>): grpc.ServerInterceptor {
  return (method, call) => {
    const limit = byPath.get(method.path);
    const base = call as unknown as {
      decoder?: { maxReadMessageLength?: number };
      maxReceiveMessageSize?: number;
    };
    if (limit !== undefined && base.decoder && typeof base.decoder.maxReadMessageLength === "number") {
      const most = Math.min(2 * limit, MAX_METHOD_REQUEST_BYTES);
      base.decoder.maxReadMessageLength = most;
      base.maxReceiveMessageSize = most;
    }
    return call as grpc.ServerInterceptingCall;
  };
}

/** The limits of `server`: those attached, or the defaults for a server made elsewhere. */
export function limitsOf(server: grpc.Server): AttachedLimits {
  let l = attached.get(server);
  if (!l) {
    attachLimits(server, DEFAULT_CONNECTION_LIMITS);
    l = attached.get(server) as AttachedLimits;
  }
  return l;
}

/**
 * The HTTP/2 servers listening for `server` (after listen), or none where grpc-js keeps them
 * otherwise: grpc-js holds them in a private map (1.14).
 */
export function listenersOf(server: grpc.Server): Server[] {
  const listeners = (server as unknown as { http2Servers?: Map<Server, unknown> }).http2Servers;
  return listeners instanceof Map ? [...listeners.keys()] : [];
}

/**
 * The source a connection is counted against: an IPv4 address (also when mapped into IPv6, or
 * translated by NAT64's well-known prefix, 64:ff9b::/96, where each IPv4 client is its own), or
 * an IPv6 address's first `v6PrefixBits` bits: 64 by default, the block a single site's subnet
 * gets, which holds more addresses than any cap could count one by one; 128 counts addresses.
 */
export function addressKey(address: string, v6PrefixBits = 64): string {
  const bare = address.replace(/%.*$/, "").toLowerCase();
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(bare);
  if (mapped) return mapped[1] as string;
  if (!bare.includes(":")) return bare;
  const hextets = ipv6Hextets(bare);
  if (!hextets) return bare;
  if (hextets[0] === 0x64 && hextets[1] === 0xff9b && hextets.slice(2, 6).every((h) => h === 0)) {
    const [hi = 0, lo = 0] = hextets.slice(6);
    return [hi >> 8, hi & 0xff, lo >> 8, lo & 0xff].join(".");
  }
  const kept = hextets.map((h, i) => {
    const bits = Math.min(16, Math.max(0, v6PrefixBits - 16 * i));
    return bits === 0 ? 0 : h & (0xffff << (16 - bits)) & 0xffff;
  });
  return `${kept.map((h) => h.toString(16)).join(":")}/${v6PrefixBits}`;
}

/** The eight 16-bit groups of an IPv6 address in text, or undefined when it is not one. */
function ipv6Hextets(text: string): number[] | undefined {
  const [head = "", tail, more] = text.split("::");
  if (more !== undefined) return undefined;
  const groups = (s: string): number[] =>
    s === ""
      ? []
      : s.split(":").flatMap((g) => {
          const v4 = /^(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(g);
          if (!v4) return [Number.parseInt(g, 16)];
          const [a, b, c, d] = v4.slice(1).map(Number) as [number, number, number, number];
          return [(a << 8) | b, (c << 8) | d];
        });
  const front = groups(head);
  const back = tail === undefined ? [] : groups(tail);
  const fill = 8 - front.length - back.length;
  const all = tail === undefined ? front : [...front, ...Array<number>(Math.max(0, fill)).fill(0), ...back];
  return all.length === 8 && all.every((h) => Number.isInteger(h) && h >= 0 && h <= 0xffff) ? all : undefined;
}

/**
 * Sets what grpc-js has no option for on the listening sockets of `server` (call after listen):
 * the connection caps, in all and per source address. grpc-js keeps its HTTP/2 servers in a
 * private map (1.14); a version without it fails here, at start, rather than running without
 * the caps. With several listeners (addresses) each has the caps.
 */
export function capConnections(
  server: grpc.Server,
  caps: Pick<ConnectionLimits, "maxConnections" | "maxConnectionsPerAddress"> &
    Partial<Pick<ConnectionLimits, "ipv6PrefixLength">>,
): void {
  const listeners = listenersOf(server);
  if (listeners.length === 0) {
    throw new Error("cannot reach grpc-js's listening sockets to cap connections (grpc-js changed?)");
  }
  for (const l of listeners) {
    // Counted here rather than with the listener's maxConnections: in a node:cluster worker a
    // connection that refuses goes back to the primary, which hands it to a worker again, round
    // and round while every worker is full (a descriptor passed each time, kept by the primary).
    // Entries are addresses with an open connection: at most maxConnections of them.
    let total = 0;
    const open = new Map<string, number>();
    l.on("connection", (socket: Socket) => {
      const address = addressKey(socket.remoteAddress ?? "", caps.ipv6PrefixLength);
      const n = (open.get(address) ?? 0) + 1;
      if (total >= caps.maxConnections || n > caps.maxConnectionsPerAddress) {
        socket.destroy();
        return;
      }
      total++;
      open.set(address, n);
      socket.once("close", () => {
        total--;
        const left = (open.get(address) ?? 1) - 1;
        if (left <= 0) open.delete(address);
        else open.set(address, left);
      });
    });
  }
}
