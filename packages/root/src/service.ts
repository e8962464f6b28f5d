// Registry logic, protocol-free: validated edits that each bump the serial, the
// in-memory view used for referrals and snapshots, and change notification for watchers.
import {
  type Clock,
  checkPublicKey,
  type Delegation,
  type DelegationKey,
  DiscoveryError,
  type DpInfo,
  delegationId,
  encodeSnapshotResponses,
  invalidArgument,
  MAX_FEDERATED_DPS,
  type MspInfo,
  parseRequestCsi,
  type RegistryChange,
  type RegistryData,
  type RegistrySeal,
  RegistryView,
  registrySignatureValid,
  type SigningKey,
  signRegistry,
} from "@mimi/core";
import {
  checkEndpoint,
  checkId,
  checkJurisdiction,
  checkPolicy,
  checkPrivateLookupKeys,
  endpointJurisdictions,
} from "./checks.js";
import type { AuditEntry, RegistryStore } from "./store.js";

/** A referral for one CSI: the delegation covering it and the DP it names. */
export interface Referral {
  readonly delegation: Delegation;
  readonly dp: DpInfo | undefined;
  readonly serial: bigint;
}

/** Limits on registry records; ids appear in certificates, logs and answers. */
const MAX_ENDPOINTS = 16;
const MAX_TTL_SECONDS = 7 * 86_400;

/** The root's operations. */
export interface RootService {
  /**
   * The whole registry with its seal: one frozen object until the registry or its seal changes
   * (a new serial), so that what is made of it can be kept per snapshot (server.ts).
   */
  snapshot(): RegistryData;
  serial(): bigint;
  /** Changes after `since`, oldest first, at most `limit`. */
  changesSince(since: bigint, limit: number): RegistryChange[];
  /** Every change after this serial is held; a watcher behind it needs a snapshot. */
  backlogStart(): bigint;
  /** Throws FAILED_PRECONDITION when this server does not take registry edits (a secondary). */
  checkWritable(): void;
  /** Registers a callback run after every committed change; returns the unsubscribe function. */
  subscribe(listener: () => void): () => void;
  refer(csi: string): Referral | undefined;
  /** `federated`: the range's federated DPs (Delegation.federatedDpIds), each registered. */
  createDelegation(
    actor: string,
    key: DelegationKey,
    dpId: string,
    ttlSeconds: number,
    federated?: readonly string[],
  ): RegistryChange;
  /** An empty dpId or a 0 TTL keeps the current one; an undefined `federated` keeps the current list. */
  updateDelegation(
    actor: string,
    key: DelegationKey,
    dpId: string,
    ttlSeconds: number,
    federated?: readonly string[],
  ): RegistryChange;
  deleteDelegation(actor: string, key: DelegationKey): RegistryChange;
  listDelegations(): { delegations: readonly Delegation[]; serial: bigint };
  /**
   * Puts a DP; an empty signing key, or no private-lookup keys, keeps the registry's unless
   * `clearPrivateLookupKeys`. `ifSerial`: refuse (REGISTRY_CHANGED) unless the registry is still
   * at that serial.
   */
  putDp(
    actor: string,
    dp: DpInfo,
    opts?: { clearPrivateLookupKeys?: boolean; ifSerial?: bigint },
  ): RegistryChange;
  deleteDp(actor: string, id: string): RegistryChange;
  /** An empty signing key keeps the MSP's current one. */
  putMsp(
    actor: string,
    id: string,
    name: string,
    signingPublicKey: Uint8Array,
  ): { msp: MspInfo; change: RegistryChange };
  audit(limit: number): AuditEntry[];
  /**
   * Re-signs the registry under a new serial (a refresh change) when less than the refresh
   * time remains of the current signature's validity; returns the change, if one was made.
   */
  refreshIfDue(): RegistryChange | undefined;
}

/** The actor the root's own re-signing is audited under. */
export const REFRESH_ACTOR = "(root re-sign)";

/** Options of the root service. */
export interface RootServiceOptions {
  store: RegistryStore;
  clock: Clock;
  defaultDelegationTtlSeconds: number;
  /** The root's key; it signs the registry after every change. */
  signingKey: SigningKey;
  /** How long each signature is valid. */
  signatureValidityMs: number;
  /** Re-sign once less than this remains of the validity. */
  signatureRefreshMs: number;
  /** The largest encoded registry an edit may leave (MAX_REGISTRY_BYTES; tests lower it). */
  maxRegistryBytes?: number;
}

/**
 * The largest registry, encoded as GetSnapshot and WatchRegistry send it, that an edit may
 * leave: every follower takes it in one message, and gRPC clients receive at most 4 MiB unless
 * told otherwise (grpc-js's and C-core's default), so a registry past it would reach none.
 */
export const MAX_REGISTRY_BYTES = 4_000_000;

/** Creates the root service over an opened store. */
export function createRootService({
  store,
  clock,
  defaultDelegationTtlSeconds,
  signingKey,
  signatureValidityMs,
  signatureRefreshMs,
  maxRegistryBytes = MAX_REGISTRY_BYTES,
}: RootServiceOptions): RootService {
  let view = new RegistryView();
  view.replace(store.load());
  const listeners = new Set<() => void>();
  const sign = (of: RegistryView = view): RegistrySeal => {
    const now = clock();
    return signRegistry(of.snapshot(), signingKey, {
      signedAtMs: now,
      expiresAtMs: now + signatureValidityMs,
    });
  };
  // The seal of the current registry. Each change is signed in its commit's transaction; a
  // root whose last change has no valid seal (written before that, or with a seal from before
  // seals had a validity period, or under another key) signs the current serial at start: no
  // follower can have seen that serial under another seal.
  const stored = store.seal();
  let seal: RegistrySeal;
  if (stored && registrySignatureValid(view.snapshot(), stored, signingKey.publicKey)) seal = stored;
  else {
    seal = sign();
    if (view.serial > 0n) store.setSeal(view.serial, seal);
  }

  const unsealedThrough = store.unsealedThrough();

  const encodedBytes = (v: RegistryView, sealed: RegistrySeal) =>
    encodeSnapshotResponses({ ...v.snapshot(), seal: sealed }).getSnapshot.length;

  // The snapshot of (view, seal), made on first use after each change.
  let snapshot: RegistryData | undefined;

  const commit = (actor: string, make: (serial: bigint) => RegistryChange, check?: () => void) => {
    // A copy of the view takes the change and is signed inside the store's transaction, so the
    // change is stored with its seal or not at all; the copy replaces the view once committed,
    // and a transaction that fails leaves the view and its seal as they were. (An edit copies
    // the registry: admin edits are few, and the copy costs what a snapshot does.)
    let next: { view: RegistryView; seal: RegistrySeal } | undefined;
    const change = store.commit(actor, clock(), make, check, (c) => {
      const copy = new RegistryView();
      copy.replace(view.snapshot());
      copy.apply(c);
      next = { view: copy, seal: sign(copy) };
      // An edit may not leave the registry past what a follower can receive and larger than it
      // was; removals, edits that shrink it and re-signing always go through.
      if (c.kind.startsWith("put_")) {
        const bytes = encodedBytes(copy, next.seal);
        if (bytes > maxRegistryBytes && bytes > encodedBytes(view, seal)) {
          throw new DiscoveryError(
            "resource_exhausted",
            `this edit would make the registry ${bytes} bytes, more than the ${maxRegistryBytes} a follower takes in one message; remove entries no longer used first`,
            {
              details: {
                reason: "REGISTRY_TOO_LARGE",
                quota: [{ subject: "registry", description: `${maxRegistryBytes} bytes encoded` }],
                metadata: { bytes: String(bytes), limit: String(maxRegistryBytes) },
              },
            },
          );
        }
      }
      return next.seal;
    });
    if (!next) throw new Error("the store committed a change without sealing it");
    view = next.view;
    seal = next.seal;
    snapshot = undefined;
    for (const l of listeners) l();
    return { ...change, seal };
  };

  const requireDp = (dpId: string) => {
    if (!store.dp(dpId)) {
      throw new DiscoveryError(
        "failed_precondition",
        `DP "${dpId}" is not registered; add it first (mimi root dp put)`,
      );
    }
  };

  // A range's federated DPs: registered, each once, at most MAX_FEDERATED_DPS, never its own DP.
  const requireFederated = (d: Delegation) => {
    const ids = d.federatedDpIds ?? [];
    if (ids.length > MAX_FEDERATED_DPS) {
      throw invalidArgument(`a delegation names at most ${MAX_FEDERATED_DPS} federated DPs`);
    }
    if (new Set(ids).size !== ids.length) throw invalidArgument("a federated DP is named twice");
    for (const f of ids) {
      if (f === d.dpId) {
        throw invalidArgument(`DP "${f}" is the range's DP; it cannot also be one of its federated DPs`);
      }
      requireDp(f);
    }
  };

  const ttlOf = (ttlSeconds: number, fallback: number) => {
    if (ttlSeconds < 0 || ttlSeconds > MAX_TTL_SECONDS) {
      throw invalidArgument(`ttl_seconds must be at most ${MAX_TTL_SECONDS}`);
    }
    return ttlSeconds === 0 ? fallback : ttlSeconds;
  };

  return {
    snapshot: () => {
      snapshot ??= frozenSnapshot({ ...view.snapshot(), seal });
      return snapshot;
    },
    serial: () => view.serial,
    changesSince: (since, limit) => store.changesSince(since, limit),
    // A change without a seal cannot be replayed (a follower refuses it): a watcher from before
    // it gets a snapshot. Commits store their seal, so only a store written before that has one.
    backlogStart: () => (store.baseSerial() > unsealedThrough ? store.baseSerial() : unsealedThrough),
    checkWritable: () => {},
    subscribe(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    refer: (csi) => referIn(view, csi),
    createDelegation(actor, key, dpId, ttlSeconds, federated = []) {
      const id = delegationId(key);
      const ttl = ttlOf(ttlSeconds, defaultDelegationTtlSeconds);
      const delegation = withFederated({ id, key, dpId, ttlSeconds: ttl }, federated);
      return commit(
        actor,
        (serial) => ({ serial, kind: "put_delegation", delegation }),
        () => {
          requireDp(dpId);
          requireFederated(delegation);
          if (store.delegation(id)) {
            throw new DiscoveryError("already_exists", `${id} is already delegated; change it with update`);
          }
          if (key.kind === "email") {
            const clash = store.emailOverlaps(key.first, key.last)[0];
            if (clash) {
              throw new DiscoveryError(
                "failed_precondition",
                `${id} overlaps the existing delegation ${clash.id}`,
              );
            }
          }
        },
      );
    },
    updateDelegation(actor, key, dpId, ttlSeconds, federated) {
      const id = delegationId(key);
      const current = store.delegation(id);
      if (!current) throw new DiscoveryError("not_found", `${id} is not delegated`);
      const ttl = ttlOf(ttlSeconds, current.ttlSeconds);
      const dp = dpId === "" ? current.dpId : dpId;
      const delegation = withFederated(
        { id, key, dpId: dp, ttlSeconds: ttl },
        federated ?? current.federatedDpIds ?? [],
      );
      return commit(
        actor,
        (serial) => ({ serial, kind: "put_delegation", delegation }),
        () => {
          requireDp(dp);
          requireFederated(delegation);
        },
      );
    },
    deleteDelegation(actor, key) {
      const id = delegationId(key);
      return commit(
        actor,
        (serial) => ({ serial, kind: "delete_delegation", id }),
        () => {
          if (!store.delegation(id)) throw new DiscoveryError("not_found", `${id} is not delegated`);
        },
      );
    },
    listDelegations: () => {
      const s = view.snapshot();
      return { delegations: s.delegations, serial: s.serial };
    },
    putDp(actor, dp, opts = {}) {
      checkId("DP id", dp.id);
      if (dp.endpoints.length === 0 || dp.endpoints.length > MAX_ENDPOINTS) {
        throw invalidArgument(`a DP needs 1 to ${MAX_ENDPOINTS} endpoints`);
      }
      for (const e of dp.endpoints) checkEndpoint(e);
      // Endpoints as a connection reaches them: host names in any case, ports with leading zeros.
      const reached = (e: string) => {
        const at = e.lastIndexOf(":");
        return `${e.slice(0, at).toLowerCase()}:${Number(e.slice(at + 1))}`;
      };
      const mine = dp.endpoints.map(reached);
      if (new Set(mine).size !== mine.length) throw invalidArgument("an endpoint is listed twice");
      if (!dp.tlsIdentity || dp.tlsIdentity.length > 253) throw invalidArgument("tls_identity is required");
      // Resolvers hold each endpoint to its DP's certificate identity, and peers are told apart
      // by it: two DPs may share neither.
      for (const other of view.snapshot().dps) {
        if (other.id === dp.id) continue;
        if (other.tlsIdentity === dp.tlsIdentity) {
          throw new DiscoveryError(
            "already_exists",
            `DP "${other.id}" already presents tls_identity "${dp.tlsIdentity}"; each DP needs a certificate identity of its own`,
            { details: { reason: "TLS_IDENTITY_TAKEN" } },
          );
        }
        const theirs = new Set(other.endpoints.map(reached));
        const shared = dp.endpoints.find((e) => theirs.has(reached(e)));
        if (shared !== undefined) {
          throw new DiscoveryError(
            "already_exists",
            `endpoint ${shared} is DP "${other.id}"'s; an endpoint serves one DP`,
            { details: { reason: "ENDPOINT_TAKEN" } },
          );
        }
      }
      if (dp.signingPublicKey.length > 0) checkPublicKey(dp.signingPublicKey, "the DP's signing key");
      checkJurisdiction("jurisdiction", dp.jurisdiction);
      const places = endpointJurisdictions(dp);
      // An empty key keeps the DP's current one, so moving endpoints cannot unpublish it.
      const key =
        dp.signingPublicKey.length > 0
          ? dp.signingPublicKey
          : (store.dp(dp.id)?.signingPublicKey ?? new Uint8Array(0));
      if (dp.federation) {
        checkPolicy(dp.id, dp.federation);
        for (const id of dp.federation.preferredDpIds) {
          if (!store.dp(id)) {
            throw new DiscoveryError(
              "failed_precondition",
              `the federation policy prefers DP "${id}", which is not registered: add it first, or give the policy anew (mimi root dp put --federation, --prefer)`,
            );
          }
        }
      }
      const given = dp.privateLookupKeys ?? [];
      if (opts.clearPrivateLookupKeys && given.length > 0)
        throw invalidArgument("give private-lookup keys or clear them, not both");
      checkPrivateLookupKeys(given);
      const { privateLookupKeys: _, endpointJurisdictions: __, ...rest } = dp;
      const keys = opts.clearPrivateLookupKeys
        ? []
        : given.length > 0
          ? given
          : (store.dp(dp.id)?.privateLookupKeys ?? []);
      const clean: DpInfo = {
        ...rest,
        endpoints: [...dp.endpoints],
        signingPublicKey: key,
        ...(keys.length > 0 && { privateLookupKeys: keys.map((k) => ({ ...k })) }),
        ...(places.length > 0 && { endpointJurisdictions: places }),
      };
      return commit(
        actor,
        (serial) => ({ serial, kind: "put_dp", dp: clean }),
        () => {
          const at = store.serial();
          if (opts.ifSerial !== undefined && opts.ifSerial !== at) {
            throw new DiscoveryError(
              "failed_precondition",
              `the registry changed since serial ${opts.ifSerial} (it is at ${at}): read DP "${dp.id}" again and redo the edit`,
              { details: { reason: "REGISTRY_CHANGED", metadata: { serial: String(at) } } },
            );
          }
        },
      );
    },
    deleteDp(actor, id) {
      return commit(
        actor,
        (serial) => ({ serial, kind: "delete_dp", id }),
        () => {
          if (!store.dp(id)) throw new DiscoveryError("not_found", `DP "${id}" is not registered`);
          const used = store.delegationsOf(id);
          if (used.length > 0) {
            throw new DiscoveryError(
              "failed_precondition",
              `DP "${id}" is still named by ${used.length} delegation(s) as their DP or a federated DP, e.g. ${used[0]?.id}; move or delete them first`,
            );
          }
          const preferring = view.snapshot().dps.find((d) => d.federation?.preferredDpIds.includes(id));
          if (preferring) {
            throw new DiscoveryError(
              "failed_precondition",
              `DP "${id}" is preferred in the federation policy of DP "${preferring.id}"; change that policy first`,
            );
          }
        },
      );
    },
    putMsp(actor, id, name, signingPublicKey) {
      checkId("MSP id", id);
      if (signingPublicKey.length > 0) checkPublicKey(signingPublicKey, "the MSP's signing key");
      if (name.trim() === "" || name.length > 128)
        throw invalidArgument("MSP name must be 1 to 128 characters");
      let msp: MspInfo | undefined;
      const change = commit(actor, (serial) => {
        // The index is assigned once and never reused, so compact answers stay stable (R15).
        const current = store.msp(id);
        const index = current?.index ?? store.nextMspIndex();
        const key =
          signingPublicKey.length > 0 ? signingPublicKey : (current?.signingPublicKey ?? new Uint8Array(0));
        msp = { id, name, index, signingPublicKey: key };
        return { serial, kind: "put_msp", msp };
      });
      return { msp: msp as MspInfo, change };
    },
    audit: (limit) => store.audit(limit),
    refreshIfDue() {
      if (seal.expiresAtMs - clock() > signatureRefreshMs) return undefined;
      return commit(REFRESH_ACTOR, (serial) => ({ serial, kind: "refresh" }));
    },
  };
}

/** `data` and its lists frozen: a snapshot is handed to every caller until the next change. */
export function frozenSnapshot(data: RegistryData): RegistryData {
  Object.freeze(data.delegations);
  Object.freeze(data.dps);
  Object.freeze(data.msps);
  return Object.freeze(data);
}

/** The referral for `csi` in a registry view; shared by primary and secondary. */
export function referIn(view: RegistryView, csi: string): Referral | undefined {
  const delegation = view.find(parseRequestCsi(csi).key);
  return delegation && { delegation, dp: view.dp(delegation.dpId), serial: view.serial };
}

/** A delegation with its federated DPs (the field left out when there are none). */
function withFederated(d: Delegation, federated: readonly string[]): Delegation {
  return federated.length > 0 ? { ...d, federatedDpIds: [...federated] } : d;
}
