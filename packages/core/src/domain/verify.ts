// End-to-end verification, like a DNSSEC chain: a pinned root key verifies the registry, the
// registry publishes each DP's and MSP's key, and those keys (with the holder's key inside
// the record) verify each mapping. The resolver, MSPs and tests all use these functions.
import { createHash } from "node:crypto";
import type { LookupOutcome, Mapping } from "./answer.js";
import { DiscoveryError } from "./errors.js";
import {
  decodeMappingRecord,
  dpSignedParts,
  MAX_MAPPING_LIFETIME_DAYS,
  MAX_MAPPING_LIFETIME_MS,
  PROOF_METHODS,
  RECORD_CLOCK_SKEW_MS,
} from "./record.js";
import { delegationId, type RegistryData, type RegistrySeal } from "./registry.js";
import { PUBLIC_KEY_BYTES, SIGNING_CONTEXT, type SigningKey, signWith, verifyWith } from "./signing.js";

/** Where verification finds the DPs' and MSPs' keys (the root-signed registry). */
export interface KeyDirectory {
  dpKey(dpId: string): Uint8Array | undefined;
  mspKey(mspId: string): Uint8Array | undefined;
}

/** A key directory over a registry copy. */
export function registryKeys(registry: {
  dp(id: string): { signingPublicKey: Uint8Array } | undefined;
  msp(id: string): { signingPublicKey: Uint8Array } | undefined;
}): KeyDirectory {
  return {
    dpKey: (id) => registry.dp(id)?.signingPublicKey,
    mspKey: (id) => registry.msp(id)?.signingPublicKey,
  };
}

function sameTags(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((t, i) => t === b[i]);
}

/**
 * Why `m` fails to verify as a mapping of `csi` (canonical URI) at time `nowMs`, or
 * undefined when it verifies: the record decodes and matches the mapping's fields, has not
 * expired, carries the MSP's and the named DP's valid signatures, and a holder's valid
 * signature unless it discloses the "bulk" method (R4-R6).
 */
export function mappingProblem(
  csi: string,
  m: Mapping,
  keys: KeyDirectory,
  nowMs: number,
): string | undefined {
  const s = m.signed;
  if (!s || s.record.length === 0) return "it carries no signed record";
  let r: ReturnType<typeof decodeMappingRecord>;
  try {
    r = decodeMappingRecord(s.record);
  } catch (err) {
    return (err as Error).message;
  }
  if (r.csi !== csi) return "its record is for another CSI";
  if (r.mspId !== m.mspId || r.ssi !== m.ssi) return "its record names another MSP or SSI";
  if (!sameTags(r.tags, m.tags) || r.createdAtMs !== m.createdAtMs) {
    return "its tags or created time differ from the record";
  }
  if (r.proofMethod !== m.proofMethod || r.expiresAtMs !== m.expiresAtMs) {
    return "its proof method or expiry differ from the record";
  }
  if (r.expiresAtMs <= nowMs) return "its record has expired";
  if (r.expiresAtMs - r.createdAtMs > MAX_MAPPING_LIFETIME_MS) {
    return `its record would live longer than the published maximum of ${MAX_MAPPING_LIFETIME_DAYS} days`;
  }
  if (r.createdAtMs > nowMs + RECORD_CLOCK_SKEW_MS) return "its record was created in the future";
  if (!(PROOF_METHODS as readonly string[]).includes(r.proofMethod)) {
    return `its proof method "${r.proofMethod}" is unknown`;
  }
  const mspKey = keys.mspKey(r.mspId);
  if (!mspKey || mspKey.length !== PUBLIC_KEY_BYTES) {
    return `the registry publishes no signing key for MSP "${r.mspId}"`;
  }
  if (!verifyWith(mspKey, SIGNING_CONTEXT.mappingMsp, s.mspSignature, [s.record], { registryKey: true })) {
    return "the MSP's signature does not verify";
  }
  const dpKey = keys.dpKey(r.dpId);
  if (!dpKey || dpKey.length !== PUBLIC_KEY_BYTES) {
    return `the registry publishes no signing key for DP "${r.dpId}"`;
  }
  const dpParts = dpSignedParts(m.isDefault, s.record);
  if (!verifyWith(dpKey, SIGNING_CONTEXT.mappingDp, s.dpSignature, dpParts, { registryKey: true })) {
    return "the DP's countersignature does not verify";
  }
  if (r.proofMethod === "bulk") {
    if (r.userPublicKey.length !== 0 || s.userSignature.length !== 0) {
      return "a bulk record carries a holder key or signature";
    }
    return undefined;
  }
  // A DP cannot claim a proof of possession on its own (R5): the holder signs the record.
  if (s.userSignature.length === 0) return `it claims "${r.proofMethod}" without the holder's signature`;
  if (!verifyWith(r.userPublicKey, SIGNING_CONTEXT.mappingUser, s.userSignature, [s.record])) {
    return "the holder's signature does not verify";
  }
  return undefined;
}

/** The DP a mapping's record names (it verified; mappingProblem has decoded it already). */
function recordDp(m: Mapping): string {
  return m.signed ? decodeMappingRecord(m.signed.record).dpId : "";
}

/** Throws verification_failed, naming the mapping and the reason, unless every mapping of the outcome verifies. */
export function verifyOutcome(csi: string, outcome: LookupOutcome, keys: KeyDirectory, nowMs: number): void {
  if (outcome.kind !== "answer") return;
  // A DP answers NOT_FOUND when it holds nothing; a FOUND with nothing in it is not an answer.
  if (outcome.mappings.length === 0) {
    throw new DiscoveryError(
      "verification_failed",
      `answer from DP "${outcome.dpId}" failed verification: it says FOUND but carries no mapping`,
    );
  }
  for (const m of outcome.mappings) {
    // A DP answers with what it countersigned; another DP's records (perhaps de-listed there)
    // are not its to serve.
    const problem =
      mappingProblem(csi, m, keys, nowMs) ??
      (recordDp(m) !== outcome.dpId
        ? `its record was countersigned by DP "${recordDp(m)}", not the answering DP`
        : undefined);
    if (problem) {
      throw new DiscoveryError(
        "verification_failed",
        `answer from DP "${outcome.dpId}" failed verification: the mapping at MSP "${m.mspId}": ${problem}`,
      );
    }
  }
}

class Canonical {
  private readonly h = createHash("sha256");
  string(s: string): this {
    const b = Buffer.from(s, "utf8");
    return this.u32(b.length).raw(b);
  }
  bytes(b: Uint8Array): this {
    return this.u32(b.length).raw(b);
  }
  u32(n: number): this {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(n);
    return this.raw(b);
  }
  u64(n: bigint): this {
    const b = Buffer.alloc(8);
    b.writeBigUInt64BE(n);
    return this.raw(b);
  }
  raw(b: Uint8Array): this {
    this.h.update(b);
    return this;
  }
  digest(): Uint8Array {
    return new Uint8Array(this.h.digest());
  }
}

const byId = <T extends { id: string }>(xs: readonly T[]) =>
  [...xs].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));

/** The validity period a seal covers; the signature is over it too. */
export type SealPeriod = Pick<RegistrySeal, "signedAtMs" | "expiresAtMs">;

/** SHA-256 over the canonical encoding of the registry (layout in common.proto, RegistrySignature). */
export function registryDigest(data: RegistryData, period: SealPeriod): Uint8Array {
  const c = new Canonical()
    .raw(Buffer.from("MIMI-REGISTRY-v2", "ascii"))
    .u64(data.serial)
    .u64(BigInt(period.signedAtMs))
    .u64(BigInt(period.expiresAtMs));
  c.u32(data.delegations.length);
  for (const d of byId(data.delegations)) c.string(d.id).string(d.dpId).u32(d.ttlSeconds);
  c.u32(data.dps.length);
  for (const dp of byId(data.dps)) {
    c.string(dp.id).u32(dp.endpoints.length);
    for (const e of dp.endpoints) c.string(e);
    c.string(dp.tlsIdentity).string(dp.jurisdiction).bytes(dp.signingPublicKey);
  }
  c.u32(data.msps.length);
  for (const m of byId(data.msps)) c.string(m.id).string(m.name).u32(m.index).bytes(m.signingPublicKey);
  return c.digest();
}

/** The root's seal over the registry: its signature, valid over `period`. */
export function signRegistry(data: RegistryData, rootKey: SigningKey, period: SealPeriod): RegistrySeal {
  checkPeriod(period);
  return { ...period, signature: signWith(rootKey, SIGNING_CONTEXT.registry, registryDigest(data, period)) };
}

function checkPeriod(p: SealPeriod): void {
  if (!Number.isSafeInteger(p.signedAtMs) || !Number.isSafeInteger(p.expiresAtMs) || p.signedAtMs < 0) {
    throw new RangeError("a registry seal's times must be non-negative integers of milliseconds");
  }
  if (p.expiresAtMs <= p.signedAtMs) throw new RangeError("a registry seal must expire after it was made");
}

/** Whether `seal` is the root's valid signature over `data` (its period is checked by the follower). */
export function registrySignatureValid(
  data: RegistryData,
  seal: RegistrySeal,
  rootPublicKey: Uint8Array,
): boolean {
  // The digest covers each delegation's id, which is the canonical text of its key; a key
  // that disagrees with its id would route by something the root never signed.
  if (data.delegations.some((d) => d.id !== delegationId(d.key))) return false;
  try {
    checkPeriod(seal);
  } catch {
    return false;
  }
  return verifyWith(rootPublicKey, SIGNING_CONTEXT.registry, seal.signature, [registryDigest(data, seal)], {
    registryKey: true,
  });
}

/** Longest a follower tolerates a seal made in its future: clocks of different hosts differ. */
export const REGISTRY_CLOCK_SKEW_MS = 5 * 60_000;

/**
 * Why a verified registry copy may not be used at `nowMs`, or undefined when it may: its seal
 * has expired, or was made in the future beyond the allowed clock skew.
 */
export function sealProblem(serial: bigint, seal: SealPeriod, nowMs: number): string | undefined {
  if (seal.expiresAtMs <= nowMs) {
    return (
      `the registry at serial ${serial} expired at ${new Date(seal.expiresAtMs).toISOString()}; ` +
      "no root has re-signed it since (is the primary root down for longer than the signature validity?)"
    );
  }
  if (seal.signedAtMs > nowMs + REGISTRY_CLOCK_SKEW_MS) {
    return (
      `the registry at serial ${serial} was signed at ${new Date(seal.signedAtMs).toISOString()}, ` +
      "in this host's future; check the clocks of this host and the root"
    );
  }
  return undefined;
}
