// What every claim flow works with: the store, the clock, the policy, the DP's key, and the
// transaction that holds a flow's writes together and wakes watchers only once it is over.
import {
  type Clock,
  type Csi,
  createRateLimiter,
  dpSignedParts,
  type KeyedRateLimiter,
  type Logger,
  type RegistryView,
  SIGNING_CONTEXT,
  type SigningKey,
  signWith,
} from "@mimi/core";
import type { NoticeBody, PeerRequestRow } from "../store/rows.js";
import type { MappingStore } from "../store/store.js";
import type { Notices } from "./notices.js";
import type { ClaimPolicy } from "./types.js";

/** The shared state of the claim flows. */
export interface ClaimsContext {
  readonly dpId: string;
  readonly store: MappingStore;
  readonly clock: Clock;
  readonly policy: ClaimPolicy;
  readonly registry: RegistryView;
  readonly log: Logger;
  /** First-mapping requests (R18) taken from each registry DP (peer-invalidation.ts). */
  readonly peerRequests: KeyedRateLimiter;
  /** Parses a CSI (or takes one parsed) and checks this DP serves it (throws not_authoritative otherwise). */
  requireDelegated(csi: string | Csi): Csi;
  /** Runs `f` as one transaction; notices and peer requests are announced once it is over. */
  tx<T>(f: () => T): T;
  /** Adds a notice for `mspId` in the current transaction, dated now. */
  notify(mspId: string, body: NoticeBody): void;
  /** Queues a first-mapping request to a peer DP (R18) in the current transaction. */
  queuePeerRequest(r: Omit<PeerRequestRow, "id" | "attempts" | "lastError">): void;
  /** This DP's countersignature over a record with its effective default flag. */
  dpSign(isDefault: boolean, record: Uint8Array): Uint8Array;
}

/** Options of the context. */
export interface ContextOptions {
  dpId: string;
  store: MappingStore;
  clock: Clock;
  policy: ClaimPolicy;
  registry: RegistryView;
  log: Logger;
  signingKey: SigningKey;
  notices: Notices;
  requireDelegated(csi: string | Csi): Csi;
  /** Called after a transaction that queued first-mapping requests. */
  onPeerRequests?: () => void;
}

/**
 * First-mapping requests a registry DP may send: a minute's worth at once, then one every 100
 * ms. A peer asks once for each first holder-proven mapping stored for a CSI (a claim, which its
 * own code budgets bound), one request at a time (peers.ts), so this is far above what a peer
 * sends; each request costs up to three signature checks and a write transaction here. Callers
 * that are no registry DP are refused first, at the cost of a look through the registry.
 */
export const PEER_REQUESTS = { limit: 600, windowMs: 60_000 } as const;
/** Peer DPs whose spending is remembered (more than a registry holds). */
const MAX_PEER_IDENTITIES = 1_000;

/** Creates the context. */
export function createContext(o: ContextOptions): ClaimsContext {
  let peerRequestsQueued = false;
  const announce = () => {
    o.notices.announce();
    if (peerRequestsQueued) {
      peerRequestsQueued = false;
      o.onPeerRequests?.();
    }
  };
  return {
    dpId: o.dpId,
    store: o.store,
    clock: o.clock,
    policy: o.policy,
    registry: o.registry,
    log: o.log,
    peerRequests: createRateLimiter(PEER_REQUESTS, MAX_PEER_IDENTITIES),
    requireDelegated: o.requireDelegated,
    tx(f) {
      try {
        return o.store.transaction(f);
      } finally {
        announce();
      }
    },
    notify: (mspId, body) => o.notices.add(mspId, o.clock(), body),
    queuePeerRequest(r) {
      o.store.addPeerRequest(r);
      peerRequestsQueued = true;
    },
    dpSign: (isDefault, record) =>
      signWith(o.signingKey, SIGNING_CONTEXT.mappingDp, ...dpSignedParts(isDefault, record)),
  };
}
