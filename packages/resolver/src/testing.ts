// Helpers for the resolver's tests (only tests may import this file: scripts/check.ts).
import { AdaptiveGate, DEFAULT_GATE } from "./adaptive-gate.js";

/**
 * A DP's window of one lookup, held by a lookup the test lets go, on a gate clock that stays at
 * 0: what else comes waits for the window (at most `maxWaitMs` when its caller names no bound,
 * `maxQueue` of them) or is refused, as the gate judges its bound.
 */
export function heldWindow({ maxWaitMs = DEFAULT_GATE.maxWaitMs, maxQueue = DEFAULT_GATE.maxQueue } = {}) {
  const gate = new AdaptiveGate("eu", {
    ...DEFAULT_GATE,
    initialWindow: 1,
    minWindow: 1,
    maxWindow: 1,
    maxWaitMs,
    maxQueue,
    decreaseEveryMs: 1_000,
    now: () => 0,
  });
  let letGo = () => {};
  const held = gate.run(
    () =>
      new Promise<void>((resolve) => {
        letGo = resolve;
      }),
    () => false,
  );
  return { gate, held, letGo: () => letGo() };
}
