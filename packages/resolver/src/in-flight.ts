// Misses in flight, one lookup per key shared by the callers that ask meanwhile: the resolver's
// own walks (service.ts) and federated DPs' parts (federation.ts) join the same way.
import { refusedUnsent } from "./adaptive-gate.js";
import { isCallerGone } from "./call-bounds.js";
import { isCallerRefusal } from "./refusals.js";

/** One lookup in flight: whom it is made for, and whether another ask joined it. */
export interface Flight {
  /** The first caller's key (MissCaller.key): the DP is asked under its context. */
  readonly caller: string;
  /** A refresh the resolver made for itself (its failures are not served stale). */
  readonly background: boolean;
  /**
   * Until when (performance.now()) the first caller lets the lookup wait for its DP's window
   * (MissCaller.waitUntilMs; unset: the gate's default).
   */
  readonly waitUntilMs?: number;
  /** Set once another ask joined: the first caller leaving then no longer abandons the lookup. */
  joined: boolean;
}

/** The lookups in flight, by key. */
export class InFlight<T> {
  readonly #flights = new Map<string, { readonly p: Promise<T>; readonly flight: Flight }>();

  /**
   * The key of an ask for `key` (a CSI, or a federated part) made privately or plainly. A
   * plain ask never joins a private lookup: its failures ("the DP does not offer private
   * lookups") and its denials (no DP seal) are not a plain lookup's. A private ask joins a
   * plain lookup already in flight, as it would take its cached answer: the DP learns nothing
   * more from it, and the answer says it was not found privately.
   */
  keyOf(key: string, privately: boolean): string {
    if (!privately || this.#flights.has(key)) return key;
    return `private\0${key}`;
  }

  /** Whether a lookup of `key` is in flight. */
  has(key: string): boolean {
    return this.#flights.has(key);
  }

  /**
   * The lookup of `key` for `ask.caller`: the one in flight, or `start`'s. An ask that joined is
   * asked for again (`again`) when the lookup was dropped because its first caller had left
   * (and was the only one then), and, under another caller, when a DP refused that caller's
   * rate-limit context, which says nothing about this one; and when the gate refused the lookup
   * unsent (adaptive-gate.ts: no time left to wait, or too little for the DP's answer time)
   * while the joiner allows it longer than its first caller did: a caller with a short deadline
   * must not fail the lookups of callers with long ones that happen to join it, and the DP saw
   * nothing of it. Any other failure such a joiner gets through `failed` when given, with the
   * flight it joined (service.ts serves it stale when the resolver's own refresh failed, as its
   * own lookup would have).
   */
  run(
    key: string,
    ask: Omit<Flight, "joined">,
    start: (flight: Flight) => Promise<T>,
    again: () => Promise<T>,
    failed?: (err: unknown, flight: Flight) => Promise<T>,
  ): Promise<T> {
    const running = this.#flights.get(key);
    if (running) {
      running.flight.joined = true;
      const same = running.flight.caller === ask.caller;
      return running.p.catch((err: unknown) => {
        // Dropped as this ask joined (its first caller had left): asked again, whoever asks.
        if (isCallerGone(err) || (!same && isCallerRefusal(err))) return again();
        if (refusedUnsent(err) && waitsLonger(ask.waitUntilMs, running.flight.waitUntilMs)) return again();
        if (failed && !same) return failed(err, running.flight);
        throw err;
      });
    }
    const flight: Flight = { ...ask, joined: false };
    const entry = { p: start(flight), flight };
    this.#flights.set(key, entry);
    // Only this lookup's own entry goes: by the time it settles, another may hold the key.
    const leave = () => {
      if (this.#flights.get(key) === entry) this.#flights.delete(key);
    };
    entry.p.then(leave, leave);
    return entry.p;
  }
}

/**
 * Whether a joiner's wait bound is later than the first caller's. Unset is the gate's default,
 * counted from when a lookup starts: a joiner without a bound (a caller that set no deadline)
 * gets that default of its own, and one with a bound never outwaits a first caller without one
 * (the resolver's refresh, or a caller that set no deadline).
 */
function waitsLonger(joiner: number | undefined, first: number | undefined): boolean {
  return first !== undefined && (joiner === undefined || joiner > first);
}
