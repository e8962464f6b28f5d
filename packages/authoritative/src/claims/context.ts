// What every claim flow works with: the store, the clock, the policy, the DP's key, and the
// transaction that holds a flow's writes together and wakes watchers only once it is over.
import {
  type Clock,
  type Csi,
  dpSignedParts,
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
