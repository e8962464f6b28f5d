// The open connections of a server, so that those of a peer it no longer trusts can be ended. A
// handshake checks a peer's certificate once, and a connection can stay open for days: without
// this, removing a CA from the CA file or revoking a certificate (host crl.ts) reached only new
// connections, and a revoked resolver kept calling on the one it had.
import { X509Certificate } from "node:crypto";
import type { ServerHttp2Session } from "node:http2";
import type { DetailedPeerCertificate, TLSSocket } from "node:tls";
import type * as grpc from "@grpc/grpc-js";
import { listenersOf } from "./server-limits.js";

const tracked = new WeakMap<grpc.Server, Set<ServerHttp2Session>>();

/**
 * Keeps the open HTTP/2 sessions of `server` (call after listen). grpc-js keeps its listening
 * servers in a private map (1.14): a version without it fails here, at start.
 */
export function trackSessions(server: grpc.Server): void {
  if (tracked.has(server)) return;
  const listeners = listenersOf(server);
  if (listeners.length === 0) {
    throw new Error("cannot reach grpc-js's listening sockets to follow connections (grpc-js changed?)");
  }
  const sessions = new Set<ServerHttp2Session>();
  tracked.set(server, sessions);
  for (const l of listeners) {
    l.on("session", (s: ServerHttp2Session) => {
      sessions.add(s);
      s.once("close", () => sessions.delete(s));
    });
  }
}

/** The certificates a session's peer presented, leaf first, with the issuers Node found for them. */
export function peerChain(session: ServerHttp2Session): X509Certificate[] {
  const socket = session.socket as TLSSocket;
  const chain: X509Certificate[] = [];
  const seen = new Set<string>();
  let c: DetailedPeerCertificate | undefined = socket.getPeerCertificate?.(true) as DetailedPeerCertificate;
  // The chain ends at a certificate that names itself as its issuer.
  while (c?.raw && !seen.has(c.fingerprint256)) {
    seen.add(c.fingerprint256);
    chain.push(new X509Certificate(c.raw));
    c = c.issuerCertificate;
  }
  return chain;
}

/**
 * Ends each open session of `server` whose peer `trusted` refuses (given peerChain): it is told
 * to go away (GOAWAY: it may start no new call; those running go on), and closed after `graceMs`
 * whatever is still running. Returns how many sessions it ends.
 */
export function endUntrustedSessions(
  server: grpc.Server,
  trusted: (chain: readonly X509Certificate[]) => boolean,
  graceMs: number,
): number {
  let ended = 0;
  for (const s of tracked.get(server) ?? []) {
    if (s.closed || s.destroyed) continue;
    let keep = false;
    try {
      keep = trusted(peerChain(s));
    } catch {
      // A certificate that no longer parses is not trusted.
    }
    if (keep) continue;
    ended++;
    s.close();
    const timer = setTimeout(() => s.destroy(), graceMs);
    timer.unref();
    s.once("close", () => clearTimeout(timer));
  }
  return ended;
}
