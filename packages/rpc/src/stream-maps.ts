// Node's HTTP/2 sessions keep their open streams in a Map (the session's internal state,
// `streams`): a set and a delete for every call. V8 rebuilds a Map's table as deletes fill it
// with holes, and links the table it replaces to the new one (for iterators). While the table
// is young that costs nothing. Once a full collection has moved it to old space, each replaced
// old table holds its successor, and the streams listed in it, through every young collection
// until the next full one: the objects of every call get promoted, scavenges take several
// times as long, and full collections come every few seconds, each of which moves the current
// table to old space again. A server under steady load stays in that state after its first full
// collection (bench/README.md, "Calls promoted after a full collection"). So after each full
// collection every session of our servers gets a fresh Map holding the same streams: the chain
// of old tables is cut, and the new table is young.
//
// This reaches into Node's internals (the `state` symbol of an Http2Session). Should a Node
// version lay them out otherwise, nothing is changed and the first session says so (through
// keepStreamMapsYoung's `onUnsupported`); the test of this file fails then too.

import type { Http2Session } from "node:http2";
import { constants, PerformanceObserver } from "node:perf_hooks";
import { isMap } from "node:util/types";
import type * as grpc from "@grpc/grpc-js";
import { listenersOf } from "./server-limits.js";

/** Sessions of the servers hooked, while open (at most their connection caps). */
const sessions = new Set<Http2Session>();
let stateKey: symbol | undefined;
let observer: PerformanceObserver | undefined;
let refreshes = 0;

type SessionState = { streams: Map<unknown, unknown> };

/** The session's internal state holding its streams, or undefined when Node keeps them otherwise. */
export function streamStateOf(session: Http2Session): SessionState | undefined {
  stateKey ??= Object.getOwnPropertySymbols(session).find((s) => s.description === "state");
  const state = stateKey && (session as unknown as Record<symbol, unknown>)[stateKey];
  // Node's Map is its own subclass (primordials' SafeMap), not one of this realm's Map.prototype.
  return state && isMap((state as SessionState).streams) ? (state as SessionState) : undefined;
}

/** Gives each open session of the hooked servers a fresh Map of its streams; returns how many. */
export function refreshStreamMaps(): number {
  let n = 0;
  for (const session of sessions) {
    const state = streamStateOf(session);
    if (!state) continue;
    // Node's own Map subclass, with the same entries in the same order.
    const Same = state.streams.constructor as MapConstructor;
    state.streams = new Same(state.streams);
    n++;
  }
  refreshes++;
  return n;
}

/** How many times the sessions' maps were refreshed (after full collections, or by hand). */
export function streamMapRefreshes(): number {
  return refreshes;
}

/**
 * Refreshes the stream maps of `server`'s sessions after every full collection (call after
 * listen). Returns false, changing nothing, where grpc-js keeps its listeners otherwise; calls
 * `onUnsupported` once, at the first session, where Node keeps a session's streams otherwise.
 */
export function keepStreamMapsYoung(server: grpc.Server, onUnsupported?: (why: string) => void): boolean {
  const listeners = listenersOf(server);
  if (listeners.length === 0) return false;
  let checked = false;
  for (const l of listeners) {
    l.on("session", (session: Http2Session) => {
      if (!checked) {
        checked = true;
        if (!streamStateOf(session)) {
          onUnsupported?.(
            "this Node keeps an HTTP/2 session's streams where rpc/stream-maps.ts does not look: " +
              "calls may be promoted out of the young generation after full collections",
          );
        }
      }
      sessions.add(session);
      session.once("close", () => sessions.delete(session));
    });
  }
  if (!observer) {
    observer = new PerformanceObserver((list) => {
      const full = list.getEntries().some((e) => {
        const detail = (e as unknown as { detail?: { kind?: number } }).detail;
        return detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR;
      });
      if (full && sessions.size > 0) refreshStreamMaps();
    });
    observer.observe({ entryTypes: ["gc"] });
  }
  return true;
}
