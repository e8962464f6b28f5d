// The open connections of a server, so that those of a peer it no longer trusts can be ended. A
// handshake checks a peer's certificate once, and a connection can stay open for days: without
// this, removing a CA from the CA file or revoking a certificate (host crl.ts) reached only new
// connections, and a revoked resolver kept calling on the one it had.
import { X509Certificate } from "node:crypto";
import type { ServerHttp2Session } from "node:http2";
import type { DetailedPeerCertificate, TLSSocket } from "node:tls";
import type * as grpc from "@grpc/grpc-js";
import { listenersOf } from "./server-limits.js";

/** How many certificates of a peer's chain are read (a chain is rarely more than three). */
const MAX_CHAIN = 8;

interface Tracked {
  readonly sessions: Set<ServerHttp2Session>;
  readonly trusted: (chain: readonly X509Certificate[]) => boolean;
  /** How long after a change of trust new sessions are checked too (their handshakes may predate it). */
  readonly recheckMs: number;
  recheckUntil: number;
}

const tracked = new WeakMap<grpc.Server, Tracked>();

/**
 * Keeps the open HTTP/2 sessions of `server` (call after listen), judged by `trusted` when
 * endUntrustedSessions runs. A handshake under way when trust changes was checked against what
 * was trusted before, and its session arrives after the sweep: for `recheckMs` after each
 * sweep (the handshake timeout and a little more), each new session is judged as it arrives.
 * grpc-js keeps its listening servers in a private map (1.14): a version without it fails
 * here, at start.
 */
export function trackSessions(
  server: grpc.Server,
  trusted: (chain: readonly X509Certificate[]) => boolean,
  recheckMs: number,
  /** Told of each session ended as it arrived. */
  onRefused?: () => void,
): void {
  if (tracked.has(server)) throw new Error("the sessions of this server are tracked already");
  const listeners = listenersOf(server);
  if (listeners.length === 0) {
    throw new Error("cannot reach grpc-js's listening sockets to follow connections (grpc-js changed?)");
  }
  const t: Tracked = { sessions: new Set(), trusted, recheckMs, recheckUntil: 0 };
  tracked.set(server, t);
  for (const l of listeners) {
    l.on("session", (s: ServerHttp2Session) => {
      t.sessions.add(s);
      s.once("close", () => t.sessions.delete(s));
      if (performance.now() < t.recheckUntil && !trustedSession(t, s)) {
        s.destroy();
        onRefused?.();
      }
    });
  }
}

/** The certificates a session's peer presented (at most MAX_CHAIN), leaf first, with the issuers Node found. */
function peerChain(session: ServerHttp2Session): X509Certificate[] {
  const socket = session.socket as TLSSocket;
  const chain: X509Certificate[] = [];
  const seen = new Set<string>();
  let c: DetailedPeerCertificate | undefined = socket.getPeerCertificate?.(true) as DetailedPeerCertificate;
  // The chain ends at a certificate that names itself as its issuer.
  while (c?.raw && !seen.has(c.fingerprint256) && chain.length < MAX_CHAIN) {
    seen.add(c.fingerprint256);
    chain.push(new X509Certificate(c.raw));
    c = c.issuerCertificate;
  }
  return chain;
}

/** Whether a session's peer is trusted; a certificate that no longer parses is not. */
function trustedSession(t: Tracked, s: ServerHttp2Session): boolean {
  try {
    return t.trusted(peerChain(s));
  } catch {
    return false;
  }
}

/**
 * Ends each open session of `server` whose peer is no longer trusted (trackSessions): it is
 * told to go away (GOAWAY: it may start no new call; those running go on), and closed after
 * `graceMs` whatever is still running. Sessions that arrive in the next while are judged as
 * they come. Returns how many sessions it ends.
 */
export function endUntrustedSessions(server: grpc.Server, graceMs: number): number {
  const t = tracked.get(server);
  if (!t) return 0;
  t.recheckUntil = performance.now() + t.recheckMs;
  let ended = 0;
  for (const s of t.sessions) {
    if (s.closed || s.destroyed || trustedSession(t, s)) continue;
    ended++;
    s.close();
    const timer = setTimeout(() => s.destroy(), graceMs);
    timer.unref();
    s.once("close", () => clearTimeout(timer));
  }
  return ended;
}
