// How commands print: results on stdout (plain text, or JSON with --json), progress and
// notes on stderr, so that `--json` output can be piped whole into another program.
import { hex64, type pb } from "@mimi/core";

/** Prints a line of results. */
export const out = (s: string): void => {
  process.stdout.write(`${s}\n`);
};

/** Prints a line that is not a result (progress, hints) to stderr. */
export const note = (s: string): void => {
  process.stderr.write(`${s}\n`);
};

/** JSON text with 64-bit integers as numbers where exact, else as strings. */
export function jsonText(v: unknown, indent?: number): string {
  return JSON.stringify(
    v,
    (_k, x) =>
      typeof x === "bigint" ? (x <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(x) : x.toString()) : x,
    indent,
  );
}

/** Prints a result as indented JSON. */
export const json = (v: unknown): void => out(jsonText(v, 2));

/** ISO 8601 text of a time in ms (bigint or number) since 1970; "-" for 0. */
export function isoTime(ms: bigint | number): string {
  const n = Number(ms);
  if (n === 0) return "-";
  // Beyond what Date can hold (±8.64e15 ms), show the number rather than throw.
  return Math.abs(n) <= 8.64e15 ? new Date(n).toISOString() : String(ms);
}

/** The JSON shape every command prints a mapping in. */
export function mappingJson(m: {
  mspId: string;
  ssi: string;
  isDefault: boolean;
  tags: readonly string[];
  proofMethod: string;
  createdAtMs: bigint;
  expiresAtMs: bigint;
}) {
  return {
    msp: m.mspId,
    ssi: m.ssi,
    default: m.isDefault,
    tags: m.tags,
    proofMethod: m.proofMethod,
    createdAt: isoTime(m.createdAtMs),
    expiresAt: isoTime(m.expiresAtMs),
  };
}

/** A delegation key as an admin types it: "+44", or "email:<first hex>-<last hex>". */
export function keyText(k: pb.DelegationKey | undefined): string {
  return k?.key.case === "e164Prefix"
    ? `+${k.key.value}`
    : k?.key.case === "emailHashRange"
      ? `email:${hex64(k.key.value.first)}-${hex64(k.key.value.last)}`
      : "?";
}
