// Wire integers (uint64 as bigint) as the numbers the DP's store uses: a value past 2^53 is
// taken as the largest safe integer (a position or time no store will reach), never wrapped.

/** `v` as a number, clamped to [0, Number.MAX_SAFE_INTEGER]. */
export function clampToNumber(v: bigint): number {
  if (v < 0n) return 0;
  return v > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(v);
}
