// The benchmark's identifier space: index i maps to one CSI, half in the eu DP's ranges
// (+4477...), half in the us DP's (+1 2xx...). Existing CSIs come from generate.ts;
// "absent" CSIs lie in ranges the DPs serve but hold nothing for (+4478..., +1 3xx...).

/** Existing CSI number i (0 <= i < N). */
export function existingCsi(i: number): string {
  const j = Math.floor(i / 2);
  return i % 2 === 0 ? `tel:+4477${pad(j, 8)}` : `tel:+1${200 + Math.floor(j / 1e7)}${pad(j % 1e7, 7)}`;
}

/** A CSI in a delegated range with no mapping. */
export function absentCsi(i: number): string {
  const j = Math.floor(i / 2);
  return i % 2 === 0 ? `tel:+4478${pad(j, 8)}` : `tel:+1${300 + Math.floor(j / 1e7)}${pad(j % 1e7, 7)}`;
}

/** The DP that holds existing CSI number i. */
export function dpOf(i: number): "eu" | "us" {
  return i % 2 === 0 ? "eu" : "us";
}

function pad(n: number, width: number): string {
  return String(n).padStart(width, "0");
}

/** MSPs the generated mappings point at (the demo MSPs, so the demo enrolment covers them). */
export const BENCH_MSPS = ["bluebird.example", "wirechat.example", "parrot.example"] as const;

/** Which CSIs a worker asks for. */
export interface KeySpec {
  mode: "warm" | "cold" | "absent" | "mixed" | "misses" | "eu-random" | "eu-cold";
  /** Existing CSIs [0, warmCount) are cached at the resolver. */
  warmCount: number;
  /** Existing CSI indexes this worker may use once each. */
  cold: [number, number];
  /** Absent CSI indexes this worker may use once each. */
  absent: [number, number];
  /** For eu-random: existing CSIs are [0, universe). */
  universe: number;
  /**
   * Absent CSI index i asks absentCsi(i * absentStride): 1 walks one number block after another
   * (a sweep), a large stride scatters them over many blocks (an address book's unknown numbers).
   */
  absentStride?: number;
}

/**
 * The prewarmed CSIs [0, warmCount), cached at the resolver: the spec the others start from.
 * (Here, not in load.ts, which is the load processes' entry point and runs when imported.)
 */
export function warmKeys(warmCount: number): KeySpec {
  return { mode: "warm", warmCount, cold: [0, 0], absent: [0, 0], universe: 0 };
}
