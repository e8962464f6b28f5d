// The root's checks of what an edit names (ids, endpoints, jurisdictions, policies, keys):
// each refuses INVALID_ARGUMENT naming what is wrong (rpc's sendable cuts what it echoes).
import {
  byEndpoint,
  clipped,
  type DpInfo,
  type EndpointJurisdiction,
  type FederationPolicy,
  invalidArgument,
  isJurisdictionCode,
  MAX_FEDERATED_DPS,
  MAX_PRIVATE_LOOKUP_KEYS,
  oprfPublicKeyValid,
  type PrivateLookupKey,
} from "@mimi/core";

const ID_PATTERN = /^[a-z0-9](?:[a-z0-9.-]{0,62}[a-z0-9])?$/;

/** A DP's private-lookup keys: at most two, each a valid ristretto255 key of a distinct epoch. */
export function checkPrivateLookupKeys(keys: readonly PrivateLookupKey[]): void {
  if (keys.length > MAX_PRIVATE_LOOKUP_KEYS)
    throw invalidArgument(
      `a DP publishes at most ${MAX_PRIVATE_LOOKUP_KEYS} private-lookup keys (the served and the next)`,
    );
  if (new Set(keys.map((k) => k.epoch)).size !== keys.length)
    throw invalidArgument("two private-lookup keys of the same epoch");
  for (const k of keys) {
    if (!Number.isInteger(k.epoch) || k.epoch < 0 || k.epoch >= 2 ** 32)
      throw invalidArgument("a private-lookup key's epoch is a 32-bit unsigned integer");
    if (!oprfPublicKeyValid(k.publicKey))
      throw invalidArgument(
        `the private-lookup key of epoch ${k.epoch} is not a ristretto255 public key (32 bytes)`,
      );
  }
}

/** A DP's published federation default: known ids, each once, at most MAX_FEDERATED_DPS. */
export function checkPolicy(dpId: string, p: FederationPolicy): void {
  if (p.preferredDpIds.length > MAX_FEDERATED_DPS) {
    throw invalidArgument(`a DP's policy prefers at most ${MAX_FEDERATED_DPS} federated DPs`);
  }
  if (new Set(p.preferredDpIds).size !== p.preferredDpIds.length) {
    throw invalidArgument("the policy names a preferred DP twice");
  }
  for (const id of p.preferredDpIds) {
    checkId("preferred DP id", id);
    if (id === dpId) throw invalidArgument("a DP's policy cannot prefer the DP itself");
  }
}

export function checkId(what: string, id: string): void {
  if (!ID_PATTERN.test(id)) {
    throw invalidArgument(`${what} "${id}" must be 1 to 64 lowercase letters, digits, dots or dashes`);
  }
}

export function checkJurisdiction(what: string, code: string): void {
  if (!isJurisdictionCode(code)) {
    throw invalidArgument(`${what} "${code}" must be a short code such as "EU" or "US"`);
  }
}

/**
 * A DP's endpoint jurisdictions as published: each names a listed endpoint once and a valid
 * code; those equal to the DP's own jurisdiction are left out (an endpoint not named is there),
 * and the rest are sorted by endpoint, so one placement has one encoding.
 */
export function endpointJurisdictions(dp: DpInfo): EndpointJurisdiction[] {
  const seen = new Set<string>();
  for (const p of dp.endpointJurisdictions ?? []) {
    if (!dp.endpoints.includes(p.endpoint)) {
      throw invalidArgument(
        `endpoint_jurisdictions names "${p.endpoint}", which is not one of the DP's endpoints`,
      );
    }
    if (seen.has(p.endpoint)) {
      throw invalidArgument(`endpoint_jurisdictions names "${p.endpoint}" twice`);
    }
    seen.add(p.endpoint);
    checkJurisdiction(`the jurisdiction of ${p.endpoint}`, p.jurisdiction);
  }
  return (dp.endpointJurisdictions ?? [])
    .filter((p) => p.jurisdiction !== dp.jurisdiction)
    .map((p) => ({ endpoint: p.endpoint, jurisdiction: p.jurisdiction }))
    .sort(byEndpoint);
}

export function checkEndpoint(e: string): void {
  const m = /^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):([0-9]{1,5})$/.exec(e);
  const port = Number(m?.[2]);
  if (!m || port < 1 || port > 65535 || (m[1] as string).length > 253)
    throw invalidArgument(`endpoint "${clipped(e, 80)}" must be host:port, the host at most 253 characters`);
}
