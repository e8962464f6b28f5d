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
