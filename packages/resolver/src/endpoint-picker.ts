// Which of a DP's endpoints a lookup goes to (issue 17): lookups are spread per call, not per
// connection, across the endpoints that are up: the less busy of two picked at random (the
// "power of two choices" of Envoy's least-request balancer), so a replicated DP's secondaries
// share its load, one large party's lookups included, and a slow endpoint, whose lookups pile
// up, gets fewer. (Each endpoint keeps its own budgets per party, so a DP sets them per
// endpoint: a party's lookups reach each of N endpoints at about 1/N of its rate.) An endpoint
// that could not be reached, or timed out while another answered, is held down (1 s, doubling
// to a minute while it keeps failing; any answer ends it) and tried only after those that are
// up, so failover costs one attempt, not one per call (upstream.ts decides what failed).
// A caller may name the endpoint to try first: the resolver does so for a CSI whose change
// event came lately, sending it to the endpoint that delivered the event, which holds the change
// (a secondary that lags might answer from before it, and the answer would be cached).

/** Shortest and longest hold-down of an endpoint that did not answer. */
export const HOLD_DOWN_MS = { min: 1_000, max: 60_000 };

interface EndpointState {
  /** Consecutive failures; 0 while it answers. */
  failures: number;
  /** Held down until then (ms; 0 when up). */
  downUntilMs: number;
  /** The lookups per second it takes from us (EndpointLimits); undefined until it said. */
  rate: number | undefined;
}

/** The endpoint choice of one DP. */
export class EndpointPicker {
  private readonly states = new Map<string, EndpointState>();

  constructor(
    private readonly now: () => number,
    private readonly random: () => number = Math.random,
  ) {}

  /**
   * The endpoints in the order to try them: `prefer` (when listed and up) or the less busy of two
   * random ones that are up, then the rest that are up, then those held down, soonest back first.
   */
  order(endpoints: readonly string[], busy: (endpoint: string) => number, prefer?: string): string[] {
    if (endpoints.length <= 1) return [...endpoints];
    this.forgetUnlisted(endpoints);
    const now = this.now();
    const up: string[] = [];
    const down: string[] = [];
    for (const e of endpoints) (this.upAt(e, now) ? up : down).push(e);
    down.sort((a, b) => this.downUntil(a) - this.downUntil(b));
    let first: string | undefined;
    if (prefer !== undefined && up.includes(prefer)) first = prefer;
    else if (up.length === 1) first = up[0];
    else if (up.length > 1) {
      const i = Math.floor(this.random() * up.length);
      let j = Math.floor(this.random() * (up.length - 1));
      if (j >= i) j++;
      const a = up[i] as string;
      const b = up[j] as string;
      first = busy(b) < busy(a) ? b : a;
    }
    if (first === undefined) return down;
    return [first, ...up.filter((e) => e !== first), ...down];
  }

  /** `endpoint` answered (whatever the answer): it is up. Returns true when it was held down. */
  answered(endpoint: string): boolean {
    const s = this.states.get(endpoint);
    if (!s || s.failures === 0) return false;
    s.failures = 0;
    s.downUntilMs = 0;
    return true;
  }

  /** `endpoint` did not answer: held down for longer the more often it failed in a row. */
  failed(endpoint: string): void {
    const s = this.state(endpoint);
    s.failures = Math.min(s.failures + 1, 32);
    s.downUntilMs = this.now() + Math.min(HOLD_DOWN_MS.max, HOLD_DOWN_MS.min * 2 ** (s.failures - 1));
  }

  /** `endpoint` refused for want of capacity: held down for `ms` (at most the longest hold-down). */
  holdFor(endpoint: string, ms: number): void {
    const s = this.state(endpoint);
    s.downUntilMs = Math.max(s.downUntilMs, this.now() + Math.min(Math.max(ms, 0), HOLD_DOWN_MS.max));
  }

  /** Whether `endpoint` is up (not held down). */
  isUp(endpoint: string): boolean {
    return this.upAt(endpoint, this.now());
  }

  /** The rate `endpoint` publishes (lookups per second; 0: none). */
  setRate(endpoint: string, perSecond: number): void {
    this.state(endpoint).rate = perSecond;
  }

  /**
   * The rate the DP takes from us, for its window: the lowest rate an endpoint published times
   * the endpoints that are up (lookups spread evenly, so none gets more than it takes); 0 (no
   * pacing) when none published one.
   */
  rate(endpoints: readonly string[]): number {
    const now = this.now();
    let lowest = 0;
    let up = 0;
    for (const e of endpoints) {
      const s = this.states.get(e);
      if (this.upAt(e, now)) up++;
      if (s?.rate && (lowest === 0 || s.rate < lowest)) lowest = s.rate;
    }
    return lowest * Math.max(1, up);
  }

  private upAt(endpoint: string, now: number): boolean {
    return this.downUntil(endpoint) <= now;
  }

  private downUntil(endpoint: string): number {
    return this.states.get(endpoint)?.downUntilMs ?? 0;
  }

  private state(endpoint: string): EndpointState {
    let s = this.states.get(endpoint);
    if (!s) {
      s = { failures: 0, downUntilMs: 0, rate: undefined };
      this.states.set(endpoint, s);
    }
    return s;
  }

  /** Endpoints the registry no longer lists are forgotten (the map stays as small as the list). */
  private forgetUnlisted(endpoints: readonly string[]): void {
    for (const e of this.states.keys()) if (!endpoints.includes(e)) this.states.delete(e);
  }
}
