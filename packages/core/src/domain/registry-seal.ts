// The root's seal over the registry (a DNSSEC trust anchor's signature): the canonical digest
// of the whole registry at a serial, its signature under the root key, and the validity period
// a follower checks before it uses a copy.
import { createHash } from "node:crypto";
import { byEndpoint, delegationId, LOCAL_POLICY, type RegistryData, type RegistrySeal } from "./registry.js";
import { SIGNING_CONTEXT, type SigningKey, signWith, verifyWith } from "./signing.js";

class Canonical {
  private readonly h = createHash("sha256");
  string(s: string): this {
    const b = Buffer.from(s, "utf8");
    return this.u32(b.length).raw(b);
  }
  strings(list: readonly string[]): this {
    this.u32(list.length);
    for (const x of list) this.string(x);
    return this;
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
  // v5 only when some DP places an endpoint elsewhere: a registry without placements keeps the
  // v4 digest, so followers of an older build verify it during an upgrade.
  const placed = data.dps.some((d) => (d.endpointJurisdictions ?? []).length > 0);
  const c = new Canonical()
    .raw(Buffer.from(placed ? "MIMI-REGISTRY-v5" : "MIMI-REGISTRY-v4", "ascii"))
    .u64(data.serial)
    .u64(BigInt(period.signedAtMs))
    .u64(BigInt(period.expiresAtMs));
  c.u32(data.delegations.length);
  for (const d of byId(data.delegations)) {
    c.string(d.id)
      .string(d.dpId)
      .u32(d.ttlSeconds)
      .strings(d.federatedDpIds ?? []);
  }
  c.u32(data.dps.length);
  for (const dp of byId(data.dps)) {
    c.string(dp.id).u32(dp.endpoints.length);
    for (const e of dp.endpoints) c.string(e);
    c.string(dp.tlsIdentity).string(dp.jurisdiction).bytes(dp.signingPublicKey);
    const policy = dp.federation ?? LOCAL_POLICY;
    c.u32(policy.defaultMode === "federate" ? 2 : 1).strings(policy.preferredDpIds);
    const keys = [...(dp.privateLookupKeys ?? [])].sort((a, b) => a.epoch - b.epoch);
    c.u32(keys.length);
    for (const k of keys) c.u32(k.epoch).bytes(k.publicKey);
    if (placed) {
      const places = [...(dp.endpointJurisdictions ?? [])].sort(byEndpoint);
      c.u32(places.length);
      for (const p of places) c.string(p.endpoint).string(p.jurisdiction);
    }
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
