// Misses in flight, one lookup per key shared by the callers that ask meanwhile: the resolver's
// own walks (service.ts) and federated DPs' parts (federation.ts) join the same way.
import { performance } from "node:perf_hooks";
import { DEFAULT_GATE } from "./adaptive-gate.js";
import { chargedAnyway, isCallerGone } from "./call-bounds.js";
import { refusedForBound } from "./gate-refusals.js";
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

/** A lookup in flight and who joined it. */
interface Entry<T> {
  readonly p: Promise<T>;
  readonly flight: Flight;
  /** Until when the first caller lets the lookup wait (performance.now(); its default when unset). */
  readonly boundMs: number;
  /** Of the joiners allowing a longer wait than the first caller, the one allowing the longest. */
  longest?: { readonly boundMs: number; readonly again: () => Promise<T> };
  /** `longest` asked for again, once the gate failed the lookup for its first caller's bound. */
  retry?: Promise<T>;
}

/** The lookups in flight, by key. */
export class InFlight<T> {
  readonly #flights = new Map<string, Entry<T>>();

  /** `defaultWaitMs`: how long a lookup whose caller named no deadline waits (the gate's maxWaitMs). */
  constructor(private readonly defaultWaitMs = DEFAULT_GATE.maxWaitMs) {}

  /** Until when an ask may wait (performance.now()): its bound, or the default from now. */
  #boundOf(ask: Omit<Flight, "joined">): number {
    return ask.waitUntilMs ?? performance.now() + this.defaultWaitMs;
  }

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
   * rate-limit context, which says nothing about this one; and when the gate failed the lookup
   * unsent for its first caller's wait bound (gate-refusals.ts) while the joiner
   * allows a longer wait: a caller with a short deadline must not fail the lookups that callers
   * with long ones make of the same key. The joiner allowing the longest wait asks first, and
   * the others join its lookup, so one failure starts one lookup, not one per joiner (two when
   * the longest asks privately and others plainly: keyOf). A caller without a deadline waits
   * the gate's default from when it asks. A joiner whose own ask is failed for its bound in turn
   * is not charged for it when the failure it joined was refunded. Any other failure
   * such a joiner gets through `failed` when given, with the flight it joined (service.ts serves
   * it stale when the resolver's own refresh failed, as its own lookup would have).
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
      const boundMs = this.#boundOf(ask);
      // Without deadlines both wait the default, the later one by the moments between them.
      const outwaits =
        boundMs > running.boundMs &&
        !(ask.waitUntilMs === undefined && running.flight.waitUntilMs === undefined);
      if (outwaits && (!running.longest || boundMs > running.longest.boundMs)) {
        running.longest = { boundMs, again };
      }
      return running.p.catch((err: unknown) => {
        // Dropped as this ask joined (its first caller had left): asked again, whoever asks.
        if (isCallerGone(err) || (!same && isCallerRefusal(err))) return again();
        const longest = running.longest;
        if (outwaits && longest && refusedForBound(err)) {
          // The longest's ask starts the lookup; the others join it (under its context and bound,
          // each served as itself).
          if (!running.retry) {
            running.retry = longest.again();
            running.retry.catch(() => {}); // heard by the longest's own handler, which may run later
          }
          const asked = longest.again === again ? running.retry : again();
          // Failed for its own bound in turn: the joiner hears whichever failure does not
          // charge it when one does not (a retry must not turn a refund into a charge).
          return asked.catch((e: unknown) => {
            throw refusedForBound(e) && chargedAnyway(e) && !chargedAnyway(err) ? err : e;
          });
        }
        if (failed && !same) return failed(err, running.flight);
        throw err;
      });
    }
    const flight: Flight = { ...ask, joined: false };
    const entry: Entry<T> = { p: start(flight), flight, boundMs: this.#boundOf(ask) };
    this.#flights.set(key, entry);
    // Only this lookup's own entry goes: by the time it settles, another may hold the key.
    const leave = () => {
      if (this.#flights.get(key) === entry) this.#flights.delete(key);
    };
    entry.p.then(leave, leave);
    return entry.p;
  }
}
