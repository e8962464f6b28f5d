// The canonical encodings that get signed: mapping records (R3-R6) and holder action
// statements. Byte layouts are fixed and versioned (documented in common.proto and
// claims.proto) so that any implementation can rebuild and check them; nothing here
// depends on how protobuf happens to serialize a message.
import { ByteReader, ByteWriter } from "./canonical-bytes.js";
import { clipped, invalidArgument } from "./errors.js";
import { SIGNING_CONTEXT, type SigningKey, signWith } from "./signing.js";

/** How possession was proven; the ranking (weakest first) decides conflicts (R17). */
export const PROOF_METHODS = ["bulk", "email-code", "sms-code"] as const;
export type ProofMethod = (typeof PROOF_METHODS)[number];

/**
 * The longest a mapping record may live, from creation to expiry: published so that every
 * verifier refuses a record a DP (or anyone) made to outlive it, and DPs cannot configure more.
 */
export const MAX_MAPPING_LIFETIME_DAYS = 1_095;
export const MAX_MAPPING_LIFETIME_MS = MAX_MAPPING_LIFETIME_DAYS * 86_400_000;
/** How far a record's creation time may lie in a verifier's future: clocks of hosts differ. */
export const RECORD_CLOCK_SKEW_MS = 5 * 60_000;

/** The proof method a DP uses for a CSI type: a code by SMS to a number, by email to an address. */
export function proofMethodFor(csiType: "tel" | "mailto"): ProofMethod {
  return csiType === "tel" ? "sms-code" : "email-code";
}

/** The signed content of a mapping. */
export interface MappingRecord {
  readonly csi: string;
  readonly mspId: string;
  readonly ssi: string;
  /** What the holder asked for; the DP decides the effective default and signs it separately. */
  readonly defaultRequested: boolean;
  readonly tags: readonly string[];
  readonly createdAtMs: number;
  readonly proofMethod: string;
  /** The challenge (or bulk session) the proof came from. */
  readonly proofId: string;
  /** The holder's Ed25519 key; empty for "bulk" records. */
  readonly userPublicKey: Uint8Array;
  /** The DP that verified the proof and countersigns. */
  readonly dpId: string;
  readonly expiresAtMs: number;
}

/** A statement a holder and an MSP sign to invalidate mappings or opt out. */
export interface ActionStatement {
  readonly action: "invalidate" | "opt_out";
  readonly csi: string;
  readonly challengeId: string;
  readonly dpId: string;
  /** The MSP the holder acts through. */
  readonly mspId: string;
  /** Invalidate only: "" for every MSP / every SSI. */
  readonly targetMspId: string;
  readonly targetSsi: string;
  readonly userPublicKey: Uint8Array;
  readonly issuedAtMs: number;
}

const RECORD_MAGIC = "MIMI-MAPPING-v1";
const ACTION_MAGIC = "MIMI-ACTION-v1";
/** The canonical bytes of a mapping record. */
export function encodeMappingRecord(r: MappingRecord): Uint8Array {
  if (r.tags.length > 255) throw invalidArgument("a record holds at most 255 tags");
  const w = new ByteWriter()
    .ascii(RECORD_MAGIC)
    .string(r.csi)
    .string(r.mspId)
    .string(r.ssi)
    .u8(r.defaultRequested ? 1 : 0)
    .u8(r.tags.length);
  for (const t of r.tags) w.string(t);
  return w
    .u64(r.createdAtMs)
    .string(r.proofMethod)
    .string(r.proofId)
    .bytes(r.userPublicKey)
    .string(r.dpId)
    .u64(r.expiresAtMs)
    .done();
}

/** Decodes a mapping record; throws INVALID_ARGUMENT naming what is wrong. */
export function decodeMappingRecord(bytes: Uint8Array): MappingRecord {
  const r = new ByteReader(bytes, "mapping record");
  r.magic(RECORD_MAGIC);
  const csi = r.string();
  const mspId = r.string();
  const ssi = r.string();
  const defaultRequested = r.bool();
  const tags: string[] = [];
  for (let n = r.u8(); n > 0; n--) tags.push(r.string());
  const record: MappingRecord = {
    csi,
    mspId,
    ssi,
    defaultRequested,
    tags,
    createdAtMs: r.u64(),
    proofMethod: r.string(),
    proofId: r.string(),
    userPublicKey: r.bytes(),
    dpId: r.string(),
    expiresAtMs: r.u64(),
  };
  r.end();
  return record;
}

/** The canonical bytes of an action statement. */
export function encodeActionStatement(s: ActionStatement): Uint8Array {
  return new ByteWriter()
    .ascii(ACTION_MAGIC)
    .string(s.action)
    .string(s.csi)
    .string(s.challengeId)
    .string(s.dpId)
    .string(s.mspId)
    .string(s.targetMspId)
    .string(s.targetSsi)
    .bytes(s.userPublicKey)
    .u64(s.issuedAtMs)
    .done();
}

/** What a holder signs to contest a conflict about their mapping: fresh consent to keep it. */
export interface ContestStatement {
  readonly conflictId: string;
  readonly csi: string;
  /** The holder's mapping the conflict is about. */
  readonly mspId: string;
  readonly ssi: string;
}

const CONTEST_MAGIC = "MIMI-CONTEST-v1";

/**
 * The bytes of a contest statement (claims.proto, ContestConflictRequest): "MIMI-CONTEST-v1",
 * then conflict id, CSI, MSP id and SSI as u16-length-prefixed UTF-8 strings.
 */
export function encodeContestStatement(s: ContestStatement): Uint8Array {
  return new ByteWriter()
    .ascii(CONTEST_MAGIC)
    .string(s.conflictId)
    .string(s.csi)
    .string(s.mspId)
    .string(s.ssi)
    .done();
}

/** Decodes an action statement; throws INVALID_ARGUMENT naming what is wrong. */
export function decodeActionStatement(bytes: Uint8Array): ActionStatement {
  const r = new ByteReader(bytes, "action statement");
  r.magic(ACTION_MAGIC);
  const action = r.string();
  if (action !== "invalidate" && action !== "opt_out") throw invalidArgument(`unknown action "${action}"`);
  const s: ActionStatement = {
    action,
    csi: r.string(),
    challengeId: r.string(),
    dpId: r.string(),
    mspId: r.string(),
    targetMspId: r.string(),
    targetSsi: r.string(),
    userPublicKey: r.bytes(),
    issuedAtMs: r.u64(),
  };
  r.end();
  return s;
}

/** The DP's countersignature covers the effective default flag as well as the record. */
export function dpSignedParts(isDefault: boolean, record: Uint8Array): Uint8Array[] {
  return [Uint8Array.of(isDefault ? 1 : 0), record];
}

/** Bounds on preference tags (R7) and SSIs; the DP enforces them, clients check early. */
const MAX_TAGS = 8;
const MAX_TAG_LENGTH = 32;
export const MAX_SSI_LENGTH = 256;

/**
 * Why preference tags would be refused, or undefined when they are fine: "Default" is a
 * flag, never a tag (R7); tags are few, short, distinct (case-insensitively) words.
 */
export function tagsProblem(tags: readonly string[]): string | undefined {
  if (tags.length > MAX_TAGS) return `at most ${MAX_TAGS} tags are allowed`;
  const seen = new Set<string>();
  for (const t of tags) {
    if (t.toLowerCase() === "default") return '"Default" is not a tag; ask for the default with make_default';
    if (!/^[\p{L}\p{N}][\p{L}\p{N} _-]*$/u.test(t) || t.length > MAX_TAG_LENGTH) {
      return `tag "${clipped(t, 40)}" must be 1 to ${MAX_TAG_LENGTH} letters, digits, spaces or dashes`;
    }
    if (seen.has(t.toLowerCase())) return `tag "${t}" appears twice`;
    seen.add(t.toLowerCase());
  }
  return undefined;
}

/** Why an SSI would be refused, or undefined when it is fine. */
export function ssiProblem(ssi: string): string | undefined {
  if (ssi.trim() === "" || ssi.length > MAX_SSI_LENGTH) {
    return `ssi must be 1 to ${MAX_SSI_LENGTH} characters, not all blank`;
  }
  // Control characters would reach terminals and logs of whoever reads the answer.
  if (/\p{Cc}/u.test(ssi)) return "ssi must not hold control characters";
  return undefined;
}

/** A bulk record ("bulk" proof, no holder key) signed by the MSP. */
export function bulkRecord(
  fields: Omit<MappingRecord, "proofMethod" | "userPublicKey" | "proofId"> & { proofId?: string },
  mspKey: SigningKey,
): { record: Uint8Array; mspSignature: Uint8Array } {
  const record = encodeMappingRecord({
    ...fields,
    proofId: fields.proofId ?? "",
    proofMethod: "bulk",
    userPublicKey: new Uint8Array(0),
  });
  return { record, mspSignature: signWith(mspKey, SIGNING_CONTEXT.mappingMsp, record) };
}
