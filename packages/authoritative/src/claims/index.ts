// How mappings enter and leave a DP, protocol-free (GLADOS 8.2, 8.3, 10; R1-R7, R16-R19,
// R21, D2): the claim side of a DP assembled from its flows. The rules themselves are plain
// functions in rules.ts; each flow applies them inside one transaction.
import {
  type Clock,
  type Csi,
  DiscoveryError,
  type Logger,
  type Mapping,
  type RegistryView,
  type SigningKey,
} from "@mimi/core";
import { type BulkVerifier, createBulkVerifier } from "../bulk-verifier.js";
import type { CodeSender } from "../senders.js";
import type { EnrolledMsp, NoticeRow } from "../store/rows.js";
import type { MappingStore } from "../store/store.js";
import { bulkBatch, bulkBatchAsync, bulkResume } from "./bulk.js";
import { completeChallenge, startChallenge } from "./challenges.js";
import { type Contest, contestConflict, sweep } from "./conflicts.js";
import { createContext } from "./context.js";
import { createNotices } from "./notices.js";
import { invalidateOlder } from "./peer-invalidation.js";
import { ingestFeed } from "./provider-feed.js";
import { createClaimThrottle, DEFAULT_CLAIM_LIMITS } from "./throttle.js";
import type {
  BulkAck,
  ClaimPolicy,
  CompleteResult,
  FeedEntry,
  InvalidateOlderResult,
  StartRequest,
  StartResult,
} from "./types.js";

export { checkTags } from "./input.js";
export { type ClaimLimits, DEFAULT_CLAIM_LIMITS } from "./throttle.js";
export type * from "./types.js";

/** Options of the claim side. */
export interface ClaimsOptions {
  dpId: string;
  store: MappingStore;
  clock: Clock;
  signingKey: SigningKey;
  sender: CodeSender;
  /** Keys the code hashes, so a copy of the database does not reveal open codes. */
  codeSecret: Uint8Array;
  policy: ClaimPolicy;
  /** Parses a CSI and checks this DP serves it (throws not_authoritative otherwise). */
  requireDelegated(csi: string): Csi;
  /** The DP's registry copy: MSP names for claimants, peers and their keys (R18). */
  registry: RegistryView;
  /** Called after a commit that queued first-mapping requests to peer DPs. */
  onPeerRequests?: () => void;
  /** Checks bulk records' signatures for bulkBatchAsync; default: inline, on the event loop. */
  bulkVerifier?: BulkVerifier;
  log: Logger;
}

/** The claim side of a DP. */
export interface Claims {
  /** Claim steps the code and proof throttles refused, by reason (metrics). */
  readonly refusals: Readonly<Record<string, number>>;
  /** The enrolled MSP a certificate identity acts as (R21). */
  callerOf(tlsIdentity: string): EnrolledMsp;
  start(caller: EnrolledMsp, req: StartRequest): Promise<StartResult>;
  complete(
    caller: EnrolledMsp,
    challengeId: string,
    code: string,
    userSig: Uint8Array,
    mspSig: Uint8Array,
  ): CompleteResult;
  contest(caller: EnrolledMsp, contest: Contest): void;
  /** Notices for `mspId` after `seq`, at most `limit`. */
  notices(mspId: string, seq: number, limit: number): NoticeRow[];
  /** Runs `listener` after every transaction that added a notice for `mspId`; returns the unsubscribe. */
  subscribeNotices(mspId: string, listener: () => void): () => void;
  bulkResume(caller: EnrolledMsp, sessionId: string): number;
  bulkBatch(
    caller: EnrolledMsp,
    sessionId: string,
    firstIndex: number,
    records: readonly { record: Uint8Array; mspSignature: Uint8Array }[],
  ): BulkAck;
  /** bulkBatch with the signatures checked by the bulk verifier, off the event loop: what the server calls. */
  bulkBatchAsync(
    caller: EnrolledMsp,
    sessionId: string,
    firstIndex: number,
    records: readonly { record: Uint8Array; mspSignature: Uint8Array }[],
  ): Promise<BulkAck>;
  /** Applies one transaction's worth of feed entries; returns mappings removed. */
  ingestFeed(entries: readonly FeedEntry[]): number;
  /**
   * A peer DP, now delegated the CSI, stored its first mapping (R18): de-list older mappings of
   * other holders here, at once when the new proof is stricter, else through a conflict.
   */
  invalidateOlder(callerIdentity: string, csi: string, mapping: Mapping): InvalidateOlderResult;
  /** Settles conflicts past their deadline and removes expired state; returns conflicts settled. */
  sweep(): number;
}

/** Creates the claim side over the DP's store. */
export function createClaims(o: ClaimsOptions): Claims {
  const notices = createNotices(o.store);
  const ctx = createContext({ ...o, notices, log: o.log });
  const throttle = createClaimThrottle(o.policy.limits ?? DEFAULT_CLAIM_LIMITS);
  const deps = { sender: o.sender, codeSecret: o.codeSecret, throttle };
  const bulkVerifier = o.bulkVerifier ?? createBulkVerifier({ threads: 0 });
  return {
    refusals: throttle.refused,
    callerOf(tlsIdentity) {
      const found = o.store.enrolledByIdentity(tlsIdentity);
      if (found.length !== 1) {
        throw new DiscoveryError(
          "permission_denied",
          found.length === 0
            ? `identity "${tlsIdentity}" is not enrolled as an MSP at this DP`
            : `identity "${tlsIdentity}" is enrolled for several MSPs; ask the DP operator to fix the enrolment`,
        );
      }
      return found[0] as EnrolledMsp;
    },
    start: (caller, req) => startChallenge(ctx, deps, caller, req),
    complete: (caller, id, code, userSig, mspSig) =>
      completeChallenge(ctx, deps, caller, id, code, userSig, mspSig),
    contest: (caller, c) => contestConflict(ctx, caller, c),
    notices: (mspId, seq, limit) => notices.since(mspId, seq, limit),
    subscribeNotices: (mspId, listener) => notices.subscribe(mspId, listener),
    bulkResume: (caller, sessionId) => bulkResume(ctx, caller, sessionId),
    bulkBatch: (caller, sessionId, firstIndex, records) =>
      bulkBatch(ctx, caller, sessionId, firstIndex, records),
    bulkBatchAsync: (caller, sessionId, firstIndex, records) =>
      bulkBatchAsync(ctx, bulkVerifier, caller, sessionId, firstIndex, records),
    ingestFeed: (entries) => ingestFeed(ctx, entries),
    invalidateOlder: (identity, csi, mapping) => invalidateOlder(ctx, identity, csi, mapping),
    sweep: () => sweep(ctx),
  };
}
