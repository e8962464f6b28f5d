// Answer seals: a DP's signature over its whole answer for one CSI, valid for a bounded time,
// so that a denial (NOT_FOUND, OPTED_OUT) is as verifiable as a mapping and a path cannot drop
// mappings from an answer, reorder it, or replay an old default flag as current (RRSIG-like
// inception and expiration). A seal names the exact CSI: there are no ranges, so nothing in a
// denial helps anyone walk the identifier space (the trap of DNSSEC's NSEC).
import type { AnswerSeal, Mapping, OutcomeKind } from "./answer.js";
import { ByteReader, ByteWriter, shortLivedBytes, writeU64 } from "./canonical-bytes.js";
import { sha256 } from "./digest.js";
import { invalidArgument } from "./errors.js";
import { SIGNING_CONTEXT, type SigningKey, signWith } from "./signing.js";

/**
 * The longest a seal may be valid, from signing to expiry: published so that every verifier
 * refuses a seal a DP made to outlive it (a replayed answer is current for at most this long).
 */
export const MAX_ANSWER_SEAL_SECONDS = 7 * 86_400;
export const MAX_ANSWER_SEAL_MS = MAX_ANSWER_SEAL_SECONDS * 1000;

/** One mapping as the seal lists it: enough to match it, to filter by MSP, and to check compact bits. */
export interface SealedEntry {
  readonly mspId: string;
  readonly isDefault: boolean;
  /** SHA-256 of the mapping's canonical record. */
  readonly recordDigest: Uint8Array;
}

/** The signed content of a seal. */
export interface SealStatement {
  readonly csi: string;
  readonly dpId: string;
  readonly status: OutcomeKind;
  readonly signedAtMs: number;
  readonly expiresAtMs: number;
  /** FOUND only, in the order the DP answers (default first, then precedence). */
  readonly entries: readonly SealedEntry[];
  /** OPTED_OUT only: SHA-256 of the holder's opt-out statement; empty otherwise. */
  readonly optOutDigest: Uint8Array;
}

const SEAL_MAGIC = "MIMI-ANSWER-v1";
const DIGEST_BYTES = 32;
// The numbers of LookupStatus in common.proto, so the statement reads like the wire answer.
const STATUS_CODE: Record<OutcomeKind, number> = { answer: 1, not_found: 2, opted_out: 3 };
const STATUS_OF_CODE = new Map(Object.entries(STATUS_CODE).map(([k, v]) => [v, k as OutcomeKind]));

/** SHA-256 of a record or statement, as seals name them. */
export function sealDigest(bytes: Uint8Array): Uint8Array {
  return sha256(bytes);
}

/**
 * A seal statement without its two times: its bytes before them and after. A DP that seals the
 * same answer again and again (its answer cache) keeps these and writes only the times
 * (statementAt); encoding every field cost about a twentieth of a lookup.
 */
export interface StatementParts {
  readonly head: Uint8Array;
  readonly tail: Uint8Array;
}

function partsOf(
  s: Pick<SealStatement, "csi" | "dpId" | "status" | "entries" | "optOutDigest">,
): StatementParts {
  const head = new ByteWriter()
    .ascii(SEAL_MAGIC)
    .string(s.csi)
    .string(s.dpId)
    .u8(STATUS_CODE[s.status])
    .done();
  const tail = new ByteWriter().u16(s.entries.length);
  for (const e of s.entries)
    tail
      .string(e.mspId)
      .u8(e.isDefault ? 1 : 0)
      .bytes(e.recordDigest);
  return { head, tail: tail.bytes(s.optOutDigest).done() };
}

/**
 * The statement of `p` with its times, in a buffer of its own, or when `shortLived` (a lookup's,
 * written into its answer and dropped) in a slice of Node's buffer pool, which costs the
 * collector nothing of its own; every byte is written.
 */
function joined(p: StatementParts, signedAtMs: number, expiresAtMs: number, shortLived = false): Uint8Array {
  const size = p.head.length + 16 + p.tail.length;
  const out = shortLived ? shortLivedBytes(size) : new Uint8Array(size);
  out.set(p.head, 0);
  writeU64(out, p.head.length, signedAtMs);
  writeU64(out, p.head.length + 8, expiresAtMs);
  out.set(p.tail, p.head.length + 16);
  return out;
}

/** The canonical bytes of a seal statement (layout in common.proto, AnswerSeal). */
export function encodeSealStatement(s: SealStatement): Uint8Array {
  return joined(partsOf(s), s.signedAtMs, s.expiresAtMs);
}

/**
 * Decodes a seal statement; throws INVALID_ARGUMENT naming what is wrong, including contents
 * no DP may seal: mappings in a denial, a FOUND without mappings, digests of the wrong length.
 */
export function decodeSealStatement(bytes: Uint8Array): SealStatement {
  const r = new ByteReader(bytes, "answer seal");
  r.magic(SEAL_MAGIC);
  const csi = r.string();
  const dpId = r.string();
  const code = r.u8();
  const status = STATUS_OF_CODE.get(code);
  if (!status) throw invalidArgument(`answer seal holds unknown status ${code}`);
  const signedAtMs = r.u64();
  const expiresAtMs = r.u64();
  const entries: SealedEntry[] = [];
  for (let n = r.u16(); n > 0; n--) {
    const mspId = r.string();
    const isDefault = r.bool();
    const recordDigest = r.bytes();
    if (recordDigest.length !== DIGEST_BYTES) throw invalidArgument("answer seal holds a malformed digest");
    entries.push({ mspId, isDefault, recordDigest });
  }
  const optOutDigest = r.bytes();
  r.end();
  if ((status === "answer") !== entries.length > 0) {
    throw invalidArgument(
      status === "answer"
        ? "answer seal says FOUND but lists no mapping"
        : "answer seal lists mappings in a denial",
    );
  }
  if (optOutDigest.length !== (status === "opted_out" ? DIGEST_BYTES : 0)) {
    throw invalidArgument("answer seal's opt-out digest does not fit its status");
  }
  return { csi, dpId, status, signedAtMs, expiresAtMs, entries, optOutDigest };
}

/** What a DP seals: the outcome it is about to give for `csi`. */
export interface Sealable {
  readonly csi: string;
  readonly dpId: string;
  readonly status: OutcomeKind;
  readonly mappings: readonly Mapping[];
  /** OPTED_OUT only: the holder's opt-out statement. */
  readonly optOutStatement?: Uint8Array;
}

/** The parts of the statement of a seal over `a` (statementAt adds the times). */
export function statementParts(a: Sealable): StatementParts {
  return partsOf({
    csi: a.csi,
    dpId: a.dpId,
    status: a.status,
    entries: a.mappings.map((m) => {
      if (!m.signed) throw new RangeError("only signed mappings can be sealed");
      return { mspId: m.mspId, isDefault: m.isDefault, recordDigest: sealDigest(m.signed.record) };
    }),
    optOutDigest: a.optOutStatement ? sealDigest(a.optOutStatement) : new Uint8Array(0),
  });
}

/**
 * The statement of `p` (statementParts'), valid from `signedAtMs` for `validMs`; `shortLived`
 * when it is not kept past its answer's encoding (joined).
 */
export function statementAt(
  p: StatementParts,
  signedAtMs: number,
  validMs: number,
  shortLived = false,
): Uint8Array {
  if (!(validMs > 0 && validMs <= MAX_ANSWER_SEAL_MS)) {
    throw new RangeError(`a seal must be valid for 1 ms to ${MAX_ANSWER_SEAL_SECONDS} s`);
  }
  return joined(p, signedAtMs, signedAtMs + validMs, shortLived);
}

/**
 * The statement of a seal over `a`, valid from `signedAtMs` for `validMs`, to be signed alone
 * (sealAnswer) or in a batch (seal-batch.ts); `shortLived` as statementAt.
 */
export function sealStatement(
  a: Sealable,
  signedAtMs: number,
  validMs: number,
  shortLived = false,
): Uint8Array {
  return statementAt(statementParts(a), signedAtMs, validMs, shortLived);
}

/** The DP's seal over `a`, valid from `signedAtMs` for `validMs`, signed alone. */
export function sealAnswer(a: Sealable, key: SigningKey, signedAtMs: number, validMs: number): AnswerSeal {
  const statement = sealStatement(a, signedAtMs, validMs);
  return { statement, signature: signWith(key, SIGNING_CONTEXT.answerDp, statement) };
}
