// Domain types of the root registry and the in-memory view of it that DPs and
// resolvers keep: delegations with longest-prefix (E.164) and range (email hash) match.
import type { LookupKey } from "./csi.js";
import { invalidArgument } from "./errors.js";

/** The part of the identifier space a delegation covers. */
export type DelegationKey =
  | { readonly kind: "e164"; readonly prefix: string }
  | { readonly kind: "email"; readonly first: bigint; readonly last: bigint };

/** The root's record: this key is served by this DP. */
export interface Delegation {
  readonly id: string;
  readonly key: DelegationKey;
  readonly dpId: string;
  readonly ttlSeconds: number;
  /**
   * Federation (D4): other DPs that may also hold mappings for the range, in the order a
   * federated query asks them; absent or empty when there are none. Never `dpId`.
   */
  readonly federatedDpIds?: readonly string[];
}

/** Whether a query federates (R10): only the authoritative DP, or its federated DPs too. */
export type FederationMode = "local" | "federate";

/** A DP's disclosed default behaviour (R11), in its signed registry entry. */
export interface FederationPolicy {
  readonly defaultMode: FederationMode;
  /** The federated DPs it prefers asked, in order; empty: every federated DP of the range. */
  readonly preferredDpIds: readonly string[];
}

/** The policy of a DP that publishes none: answers locally. */
export const LOCAL_POLICY: FederationPolicy = Object.freeze({
  defaultMode: "local",
  preferredDpIds: Object.freeze([]),
});

/** Most federated DPs one delegation may name, and a DP's policy may prefer. */
export const MAX_FEDERATED_DPS = 32;

/** An authoritative DP as published by the root. */
export interface DpInfo {
  readonly id: string;
  readonly endpoints: readonly string[];
  readonly tlsIdentity: string;
  readonly jurisdiction: string;
  /** Ed25519 key verifying the DP's countersignatures; empty when the DP publishes none. */
  readonly signingPublicKey: Uint8Array;
  /** Its default federation behaviour; absent: LOCAL_POLICY. */
  readonly federation?: FederationPolicy;
  /** The OPRF public keys of its private-lookup tables by epoch (at most MAX_PRIVATE_LOOKUP_KEYS); absent: none. */
  readonly privateLookupKeys?: readonly PrivateLookupKey[];
  /**
   * Endpoints elsewhere than `jurisdiction` (H2), sorted by endpoint, each at most once; absent:
   * every endpoint is in `jurisdiction`.
   */
  readonly endpointJurisdictions?: readonly EndpointJurisdiction[];
}

/** Where one endpoint of a DP is (DpRecord.endpoint_jurisdictions). */
export interface EndpointJurisdiction {
  readonly endpoint: string;
  readonly jurisdiction: string;
}

/** Whether `code` is a jurisdiction code: 2 to 16 letters, digits or dashes ("EU", "US"). */
export function isJurisdictionCode(code: string): boolean {
  return /^[A-Za-z0-9-]{2,16}$/.test(code);
}

/**
 * A jurisdiction code as it is compared: upper case. Codes are stored and sent as written (a
 * server of an earlier build compares them as they are), and compared so wherever one is held
 * against another (a secondary's placement with the registry's): "eu" and "EU" are one place.
 */
export function jurisdictionCode(code: string): string {
  return code.toUpperCase();
}

/** The order of endpoint placements in the registry (and its digest): by endpoint. */
export const byEndpoint = (a: EndpointJurisdiction, b: EndpointJurisdiction): number =>
  a.endpoint < b.endpoint ? -1 : a.endpoint > b.endpoint ? 1 : 0;

/** The jurisdiction the registry places `endpoint` of `dp` in (H2); undefined when `dp` does not list it. */
export function jurisdictionOfEndpoint(dp: DpInfo, endpoint: string): string | undefined {
  if (!dp.endpoints.includes(endpoint)) return undefined;
  return dp.endpointJurisdictions?.find((e) => e.endpoint === endpoint)?.jurisdiction ?? dp.jurisdiction;
}

/** One private-lookup key epoch of a DP (DpRecord.private_lookup_keys). */
export interface PrivateLookupKey {
  readonly epoch: number;
  readonly publicKey: Uint8Array;
}

/** Private-lookup keys a DP publishes at most: the table served and the next. */
export const MAX_PRIVATE_LOOKUP_KEYS = 2;

/** A messaging service provider with its stable compact-format index. */
export interface MspInfo {
  readonly id: string;
  readonly name: string;
  readonly index: number;
  /** Ed25519 key verifying the MSP's signatures; empty when the MSP publishes none. */
  readonly signingPublicKey: Uint8Array;
}

/**
 * The root's signature over a registry at one serial and the period it is valid for, like a
 * DNSSEC RRSIG's inception and expiration: a copy is usable only until `expiresAtMs`.
 */
export interface RegistrySeal {
  readonly signature: Uint8Array;
  readonly signedAtMs: number;
  readonly expiresAtMs: number;
}

/** The whole registry at one serial. */
export interface RegistryData {
  readonly serial: bigint;
  readonly delegations: readonly Delegation[];
  readonly dps: readonly DpInfo[];
  readonly msps: readonly MspInfo[];
  /** The root's signature over this content (see verify.ts), when known. */
  readonly seal?: RegistrySeal;
}

/** One change; applying changes in serial order to serial N-1 yields serial N. */
export type RegistryChange = {
  readonly serial: bigint;
  /** The root's signature over the registry as it is after this change. */
  readonly seal?: RegistrySeal;
} & (
  | { readonly kind: "put_delegation"; readonly delegation: Delegation }
  | { readonly kind: "delete_delegation"; readonly id: string }
  | { readonly kind: "put_dp"; readonly dp: DpInfo }
  | { readonly kind: "delete_dp"; readonly id: string }
  | { readonly kind: "put_msp"; readonly msp: MspInfo }
  | { readonly kind: "delete_msp"; readonly id: string }
  /** The root re-signed an unchanged registry (a new validity period under a new serial). */
  | { readonly kind: "refresh" }
);

const U64_MAX = (1n << 64n) - 1n;

/** Canonical text of a key, used as the delegation id: "e164:44" or "email:<16 hex>-<16 hex>". */
export function delegationId(key: DelegationKey): string {
  if (key.kind === "e164") return `e164:${key.prefix}`;
  return `email:${hex64(key.first)}-${hex64(key.last)}`;
}

/** Fixed-width lowercase hex of a 64-bit value; sorts like the number. */
export function hex64(v: bigint): string {
  return v.toString(16).padStart(16, "0");
}

/** Checks a key's bounds; throws INVALID_ARGUMENT naming the problem. */
export function validateDelegationKey(key: DelegationKey): DelegationKey {
  if (key.kind === "e164") {
    if (!/^[1-9][0-9]{0,14}$/.test(key.prefix)) {
      throw invalidArgument(`E.164 prefix "${key.prefix}" must be 1 to 15 digits not starting with 0`);
    }
    return key;
  }
  if (key.first < 0n || key.last > U64_MAX || key.first > key.last) {
    throw invalidArgument("email hash range must satisfy 0 <= first <= last <= 2^64-1");
  }
  return key;
}

/**
 * Parses a key as an admin types it: "+44", "44", "e164:44", "email:0-7fffffffffffffff"
 * (hex, inclusive), or "email:*" for the whole hash space.
 */
export function parseDelegationKeyText(text: string): DelegationKey {
  const t = text.trim();
  if (t.startsWith("email:")) {
    const spec = t.slice(6);
    if (spec === "*") return { kind: "email", first: 0n, last: U64_MAX };
    const m = /^([0-9a-fA-F]{1,16})-([0-9a-fA-F]{1,16})$/.exec(spec);
    if (!m)
      throw invalidArgument(`email range "${spec}" must be <first hex>-<last hex>, e.g. 0-7fffffffffffffff`);
    return validateDelegationKey({ kind: "email", first: BigInt(`0x${m[1]}`), last: BigInt(`0x${m[2]}`) });
  }
  const prefix = t.replace(/^e164:/, "").replace(/^\+/, "");
  return validateDelegationKey({ kind: "e164", prefix });
}

/** Does `key` cover the lookup key? */
export function covers(key: DelegationKey, lookup: LookupKey): boolean {
  if (key.kind === "e164") return lookup.kind === "e164" && lookup.digits.startsWith(key.prefix);
  return lookup.kind === "email" && lookup.domainHash >= key.first && lookup.domainHash <= key.last;
}

/**
 * A mutable in-memory copy of the registry with fast matching. E.164 matching probes a map
 * once per length that some delegated prefix has (longest first; at most 15, usually 1-3);
 * email matching is a binary search over sorted, non-overlapping ranges.
 */
export class RegistryView {
  private serialValue = 0n;
  private readonly delegations = new Map<string, Delegation>();
  private readonly e164 = new Map<string, Delegation>();
  private emailRanges: Delegation[] = [];
  /** The lengths of the delegated E.164 prefixes, longest first, each once. */
  private e164Lengths: number[] = [];
  private readonly dps = new Map<string, DpInfo>();
  private readonly msps = new Map<string, MspInfo>();

  get serial(): bigint {
    return this.serialValue;
  }

  /** Replaces the whole view. */
  replace(data: RegistryData): void {
    this.delegations.clear();
    this.e164.clear();
    this.dps.clear();
    this.msps.clear();
    for (const d of data.delegations) this.putDelegation(d);
    for (const dp of data.dps) this.dps.set(dp.id, dp);
    for (const m of data.msps) this.msps.set(m.id, m);
    this.reindex();
    this.serialValue = data.serial;
  }

  /** Applies one change; the caller checks that serials follow without gaps. */
  apply(change: RegistryChange): void {
    switch (change.kind) {
      case "put_delegation":
        this.removeDelegation(change.delegation.id);
        this.putDelegation(change.delegation);
        this.reindex();
        break;
      case "delete_delegation":
        this.removeDelegation(change.id);
        this.reindex();
        break;
      case "put_dp":
        this.dps.set(change.dp.id, change.dp);
        break;
      case "delete_dp":
        this.dps.delete(change.id);
        break;
      case "put_msp":
        this.msps.set(change.msp.id, change.msp);
        break;
      case "delete_msp":
        this.msps.delete(change.id);
        break;
      case "refresh":
        break;
    }
    this.serialValue = change.serial;
  }

  /** The delegation covering a lookup key, or undefined when none does. */
  find(key: LookupKey): Delegation | undefined {
    if (key.kind === "e164") {
      for (const len of this.e164Lengths) {
        if (len > key.digits.length) continue;
        const d = this.e164.get(key.digits.slice(0, len));
        if (d) return d;
      }
      return undefined;
    }
    const ranges = this.emailRanges;
    let lo = 0;
    let hi = ranges.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const d = ranges[mid] as Delegation;
      const k = d.key as { first: bigint; last: bigint };
      if (key.domainHash < k.first) hi = mid - 1;
      else if (key.domainHash > k.last) lo = mid + 1;
      else return d;
    }
    return undefined;
  }

  /** Every delegation whose key contains the lookup key, longest E.164 prefix first. */
  covering(key: LookupKey): Delegation[] {
    if (key.kind === "e164") {
      const found: Delegation[] = [];
      for (const len of this.e164Lengths) {
        if (len > key.digits.length) continue;
        const d = this.e164.get(key.digits.slice(0, len));
        if (d) found.push(d);
      }
      return found;
    }
    const d = this.find(key);
    return d ? [d] : [];
  }

  dp(id: string): DpInfo | undefined {
    return this.dps.get(id);
  }

  /** Every DP, in no particular order. */
  allDps(): DpInfo[] {
    return [...this.dps.values()];
  }

  msp(id: string): MspInfo | undefined {
    return this.msps.get(id);
  }

  /** Every MSP, in no particular order. */
  allMsps(): MspInfo[] {
    return [...this.msps.values()];
  }

  /** Delegations naming `dpId` as their DP or as one of their federated DPs. */
  delegationsOf(dpId: string): Delegation[] {
    return [...this.delegations.values()].filter(
      (d) => d.dpId === dpId || (d.federatedDpIds ?? []).includes(dpId),
    );
  }

  /** A plain copy of the whole view. */
  snapshot(): RegistryData {
    return {
      serial: this.serialValue,
      delegations: [...this.delegations.values()].sort((a, b) => (a.id < b.id ? -1 : 1)),
      dps: [...this.dps.values()].sort((a, b) => (a.id < b.id ? -1 : 1)),
      msps: [...this.msps.values()].sort((a, b) => a.index - b.index),
    };
  }

  private putDelegation(d: Delegation): void {
    this.delegations.set(d.id, d);
    if (d.key.kind === "e164") this.e164.set(d.key.prefix, d);
  }

  private removeDelegation(id: string): void {
    const old = this.delegations.get(id);
    if (!old) return;
    this.delegations.delete(id);
    if (old.key.kind === "e164") this.e164.delete(old.key.prefix);
  }

  /** Rebuilds what matching reads besides the maps: after every change to the delegations. */
  private reindex(): void {
    this.e164Lengths = [...new Set([...this.e164.keys()].map((p) => p.length))].sort((a, b) => b - a);
    this.emailRanges = [...this.delegations.values()]
      .filter((d) => d.key.kind === "email")
      .sort((a, b) => {
        const x = (a.key as { first: bigint }).first;
        const y = (b.key as { first: bigint }).first;
        return x < y ? -1 : x > y ? 1 : 0;
      });
  }
}
