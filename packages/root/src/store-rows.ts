// The root store's rows and their domain values, and the JSON bodies of stored changes: the
// parts of the store that need no database (store.ts holds every statement).
import {
  type Delegation,
  type DelegationKey,
  type DpInfo,
  type EndpointJurisdiction,
  type FederationPolicy,
  hex64,
  type MspInfo,
  type RegistryChange,
} from "@mimi/core";

export interface DelegationRow {
  id: string;
  kind: "e164" | "email";
  e164_prefix: string | null;
  hash_first: string | null;
  hash_last: string | null;
  dp_id: string;
  ttl_seconds: number;
  federated: string;
}

export interface DpRow {
  id: string;
  endpoints: string;
  tls_identity: string;
  jurisdiction: string;
  signing_key: Buffer;
  federation: string;
  private_keys: string;
  endpoint_jurisdictions: string;
}
export interface MspRow {
  id: string;
  name: string;
  idx: number;
  signing_key: Buffer;
}
export interface ChangeRow {
  serial: number;
  at_ms: number;
  actor: string;
  body: string;
  signature: Buffer;
}

export function delegationRow(d: Delegation): DelegationRow {
  return {
    id: d.id,
    kind: d.key.kind,
    e164_prefix: d.key.kind === "e164" ? d.key.prefix : null,
    hash_first: d.key.kind === "email" ? hex64(d.key.first) : null,
    hash_last: d.key.kind === "email" ? hex64(d.key.last) : null,
    dp_id: d.dpId,
    ttl_seconds: d.ttlSeconds,
    federated: JSON.stringify(d.federatedDpIds ?? []),
  };
}

export function delegationOf(r: DelegationRow): Delegation {
  const key: DelegationKey =
    r.kind === "e164"
      ? { kind: "e164", prefix: r.e164_prefix ?? "" }
      : { kind: "email", first: BigInt(`0x${r.hash_first}`), last: BigInt(`0x${r.hash_last}`) };
  const federated = JSON.parse(r.federated) as string[];
  return {
    id: r.id,
    key,
    dpId: r.dp_id,
    ttlSeconds: r.ttl_seconds,
    ...(federated.length > 0 && { federatedDpIds: federated }),
  };
}

export function dpOf(r: DpRow): DpInfo {
  return {
    id: r.id,
    endpoints: JSON.parse(r.endpoints),
    tlsIdentity: r.tls_identity,
    jurisdiction: r.jurisdiction,
    signingPublicKey: new Uint8Array(r.signing_key),
    ...(r.federation !== "" && { federation: JSON.parse(r.federation) as FederationPolicy }),
    ...privateKeysOf(r.private_keys),
    ...endpointJurisdictionsOf(r.endpoint_jurisdictions),
  };
}

/** A DP's private-lookup keys as the dps table keeps them (JSON, keys in hex). */
export function privateKeysColumn(d: DpInfo): string {
  return JSON.stringify(
    (d.privateLookupKeys ?? []).map((k) => ({
      epoch: k.epoch,
      publicKey: Buffer.from(k.publicKey).toString("hex"),
    })),
  );
}

function privateKeysOf(column: string): Pick<DpInfo, "privateLookupKeys"> {
  const keys = JSON.parse(column) as { epoch: number; publicKey: string }[];
  if (keys.length === 0) return {};
  return {
    privateLookupKeys: keys.map((k) => ({
      epoch: k.epoch,
      publicKey: new Uint8Array(Buffer.from(k.publicKey, "hex")),
    })),
  };
}

function endpointJurisdictionsOf(column: string): Pick<DpInfo, "endpointJurisdictions"> {
  const places = JSON.parse(column) as EndpointJurisdiction[];
  return places.length === 0 ? {} : { endpointJurisdictions: places };
}

export function mspOf(r: MspRow): MspInfo {
  return { id: r.id, name: r.name, index: r.idx, signingPublicKey: new Uint8Array(r.signing_key) };
}

// Change bodies are JSON; 64-bit values (serials, hash bounds) and byte strings (keys) are
// tagged strings. Bodies written before keys existed lack them; they read as empty keys.
export function jsonBigint(this: Record<string, unknown>, key: string, v: unknown): unknown {
  if (typeof v === "bigint") return { $u64: v.toString() };
  // Read the holder's own value: a Buffer (as grpc-js hands bytes over) has already been
  // turned into {type, data} by its toJSON when `v` arrives.
  const raw = this[key];
  if (raw instanceof Uint8Array) return { $b64: Buffer.from(raw).toString("base64") };
  return v;
}

export function changeOf(body: string): RegistryChange {
  const c = JSON.parse(body, (_k, v) => {
    if (v && typeof v === "object") {
      const tagged = v as { $u64?: unknown; $b64?: unknown };
      if (typeof tagged.$u64 === "string") return BigInt(tagged.$u64);
      if (typeof tagged.$b64 === "string") return new Uint8Array(Buffer.from(tagged.$b64, "base64"));
    }
    return v;
  }) as RegistryChange;
  if (c.kind === "put_dp" && !c.dp.signingPublicKey) {
    return { ...c, dp: { ...c.dp, signingPublicKey: new Uint8Array(0) } };
  }
  if (c.kind === "put_msp" && !c.msp.signingPublicKey) {
    return { ...c, msp: { ...c.msp, signingPublicKey: new Uint8Array(0) } };
  }
  return c;
}
