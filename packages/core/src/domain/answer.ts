// Mappings and answers as domain values, and the query parameters applied to them
// (R14, R15): the MSP and tag filter, and the compact bit string. Mappings arrive ordered by
// preference from the DP's store.
import { invalidArgument } from "./errors.js";

/** Where a CSI is reachable: one MSP and the user's identifier there. */
export interface Mapping {
  readonly mspId: string;
  readonly ssi: string;
  readonly isDefault: boolean;
  readonly tags: readonly string[];
  readonly createdAtMs: number;
  /** How possession was proven ("sms-code", "email-code", "bulk"). */
  readonly proofMethod: string;
  readonly expiresAtMs: number;
  /** The signed record; every verifiable mapping has one. */
  readonly signed?: MappingSignatures;
}

/** A mapping record and the holder's, the MSP's and the DP's signatures over it (R3). */
export interface MappingSignatures {
  readonly record: Uint8Array;
  /** Empty for bulk records, which no holder signed. */
  readonly userSignature: Uint8Array;
  readonly mspSignature: Uint8Array;
  readonly dpSignature: Uint8Array;
}

/**
 * The answering DP's signature over a whole answer for one CSI, valid for a bounded time (like a
 * DNSSEC RRSIG): which mappings, in which order, with which default, or that there are none, or
 * that the holder opted out. The statement layout is in answer-seal.ts and common.proto.
 */
export interface AnswerSeal {
  readonly statement: Uint8Array;
  /** Over the statement; or, with `batch`, over the root of the batch it was sealed in. */
  readonly signature: Uint8Array;
  readonly batch?: SealBatch;
}

/** A seal's place in a batch signed together (seal-batch.ts; SealBatch in common.proto). */
export interface SealBatch {
  /** Random, so the path's sibling hashes tell nothing of the batch's other answers. */
  readonly salt: Uint8Array;
  readonly index: number;
  readonly size: number;
  /** The sibling hashes from the leaf to the root, 32 bytes each, concatenated. */
  readonly path: Uint8Array;
}

/** The holder's opt-out as they signed it: an action statement with the holder's and the MSP's signatures. */
export interface OptOutProof {
  readonly statement: Uint8Array;
  readonly userSignature: Uint8Array;
  readonly mspSignature: Uint8Array;
}

/**
 * What a lookup yields. NOT_FOUND is an outcome, not an error. Every outcome a DP gives carries
 * its seal; the only unsealed one is the resolver's own NOT_FOUND for a CSI no delegation covers
 * (dpId ""), which the root-signed registry proves.
 */
export type LookupOutcome =
  | {
      readonly kind: "answer";
      readonly mappings: readonly Mapping[];
      readonly dpId: string;
      readonly ttlSeconds: number;
      readonly seal?: AnswerSeal;
      readonly private?: boolean;
    }
  | {
      readonly kind: "not_found";
      readonly dpId: string;
      readonly ttlSeconds: number;
      readonly seal?: AnswerSeal;
      /** Found by a private lookup (Answer.private_lookup): unsealed, proven by the DP's signed bucket to the resolver. */
      readonly private?: boolean;
      /** For a private NOT_FOUND, when the DP's signed bucket that proved it expires (ms since the epoch). */
      readonly privateUntilMs?: number;
    }
  /** The holder chose to be undiscoverable (R14): distinct from having no mapping. */
  | {
      readonly kind: "opted_out";
      readonly dpId: string;
      readonly ttlSeconds: number;
      readonly seal?: AnswerSeal;
      readonly optOut?: OptOutProof;
      readonly private?: boolean;
    };

/** The kind of a lookup outcome. */
export type OutcomeKind = LookupOutcome["kind"];

/** Answer format (R15). */
export type AnswerFormat = "verbose" | "compact";

/** Query parameters (R10 subset handled today). */
export interface LookupParams {
  readonly format: AnswerFormat;
  /** When non-empty, only these MSPs. */
  readonly mspFilter: readonly string[];
  /** When set, only mappings with this preference tag; "Default" selects the default mapping. */
  readonly tag: string;
}

/** Parameters when a request sets none. */
export const DEFAULT_PARAMS: LookupParams = Object.freeze({
  format: "verbose",
  mspFilter: Object.freeze([]),
  tag: "",
});

/** Most MSP ids one filter may name. */
const MAX_MSP_FILTER = 64;

/** Validates query parameters; throws INVALID_ARGUMENT naming the problem and its field (LookupOptions'). */
export function checkParams(format: AnswerFormat, mspFilter: readonly string[], tag = ""): LookupParams {
  if (mspFilter.length === 0 && format === "verbose" && tag === "") return DEFAULT_PARAMS;
  if (tag.length > 32) throw invalidArgument("tag must be at most 32 characters", "options.tag");
  if (mspFilter.length > MAX_MSP_FILTER)
    throw invalidArgument(`msp_filter names more than ${MAX_MSP_FILTER} MSPs`, "options.msp_filter");
  for (const id of mspFilter) {
    if (id === "" || id.length > 128)
      throw invalidArgument("msp_filter entries must be 1 to 128 characters", "options.msp_filter");
  }
  return { format, mspFilter, tag };
}

/** Applies the MSP filter and the tag; tags compare case-insensitively. */
export function filterMappings(mappings: readonly Mapping[], params: LookupParams): readonly Mapping[] {
  if (params.mspFilter.length === 0 && params.tag === "") return mappings;
  const tag = params.tag.toLowerCase();
  return mappings.filter(
    (m) =>
      (params.mspFilter.length === 0 || params.mspFilter.includes(m.mspId)) &&
      (tag === "" || (tag === "default" ? m.isDefault : m.tags.some((t) => t.toLowerCase() === tag))),
  );
}

/**
 * The compact form: bit i (byte i>>3, bit i&7, least significant first) is set when a mapping
 * exists at the MSP with registry index i. MSPs the registry does not know are left out.
 */
export function compactBits(
  mappings: readonly { readonly mspId: string }[],
  indexOf: (mspId: string) => number | undefined,
): Uint8Array {
  const bits = new Uint8Array(compactBitsLength(mappings, indexOf));
  setCompactBits(bits, 0, mappings, indexOf);
  return bits;
}

/** The registry index of an MSP as a bit position, or -1 for an MSP without a usable one. */
function bitOf(indexOf: (mspId: string) => number | undefined, mspId: string): number {
  const i = indexOf(mspId);
  // The root numbers MSPs from 0; anything else (negative, fractional, past 2^31) is left out
  // like an unknown MSP, so no bit can land outside the bytes counted for it.
  return i !== undefined && Number.isInteger(i) && i >= 0 && i <= 0x7fff_ffff ? i : -1;
}

/** Bytes of `mappings`' compact bits (compactBits): 0 when the registry knows none of their MSPs. */
export function compactBitsLength(
  mappings: readonly { readonly mspId: string }[],
  indexOf: (mspId: string) => number | undefined,
): number {
  let max = -1;
  for (const m of mappings) max = Math.max(max, bitOf(indexOf, m.mspId));
  return max < 0 ? 0 : (max >>> 3) + 1;
}

/**
 * Sets `mappings`' compact bits in the compactBitsLength bytes of `out` from `at`, which the
 * caller has zeroed.
 */
export function setCompactBits(
  out: Uint8Array,
  at: number,
  mappings: readonly { readonly mspId: string }[],
  indexOf: (mspId: string) => number | undefined,
): void {
  for (const m of mappings) {
    const i = bitOf(indexOf, m.mspId);
    if (i >= 0) out[at + (i >>> 3)] = (out[at + (i >>> 3)] ?? 0) | (1 << (i & 7));
  }
}

/** Indexes of the bits set in a compact answer. */
export function bitsSet(bits: Uint8Array): number[] {
  const out: number[] = [];
  for (let i = 0; i < bits.length * 8; i++) if (((bits[i >> 3] ?? 0) >> (i & 7)) & 1) out.push(i);
  return out;
}
