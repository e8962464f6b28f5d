// Injected time, so TTL logic is tested by moving a clock instead of sleeping.

/** Milliseconds since the Unix epoch. Production passes Date.now. */
export type Clock = () => number;

/** The wall clock. */
export const systemClock: Clock = () => Date.now();
