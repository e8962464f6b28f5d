// The claim flow's inputs and results as the server binding sees them (protocol-free).

import type { Mapping, MspInfo } from "@mimi/core";
import type { ProofRanking, ProviderEvent } from "./rules.js";
import type { ClaimLimits } from "./throttle.js";

/** Policy of the claim flow; every value comes from the DP's configuration. */
export interface ClaimPolicy {
  readonly codeLength: number;
  readonly codeTtlMs: number;
  readonly maxAttempts: number;
  readonly contestWindowMs: number;
  /** How long a mapping stays valid before it must be re-verified. */
  readonly mappingLifetimeMs: number;
  /** Proof methods from weakest to strongest (R17's "stricter proof"). */
  readonly proofRanking: ProofRanking;
  readonly noticeRetentionMs: number;
  /**
   * The most mappings one CSI may hold here, withheld claims included, and of one MSP: an
   * answer stays small enough for a private-lookup entry and a gRPC message, and no MSP can
   * stuff a number (claims/claim.ts, bulk.ts).
   */
  readonly maxMappingsPerCsi: number;
  readonly maxMappingsPerCsiPerMsp: number;
  /** Code budgets and the failure lock (claims/throttle.ts); DEFAULT_CLAIM_LIMITS when absent. */
  readonly limits?: ClaimLimits;
}

/** What an MSP asks to prove possession for. */
export type StartRequest =
  | {
      action: "claim";
      csi: string;
      ssi: string;
      tags: readonly string[];
      makeDefault: boolean;
      userPublicKey: Uint8Array;
      replaceExisting: boolean;
    }
  | { action: "invalidate"; csi: string; mspId: string; ssi: string; userPublicKey: Uint8Array }
  | { action: "opt_out"; csi: string; userPublicKey: Uint8Array };

/** An open challenge: its id, and the statement the holder and the MSP sign. */
export interface StartResult {
  challengeId: string;
  expiresAtMs: number;
  proofMethod: string;
  statement: Uint8Array;
}

/** What a completed challenge did. */
export interface CompleteResult {
  mapping?: Mapping;
  hasPrecedence: boolean;
  existingMsps: MspInfo[];
  conflictId: string;
  contestDeadlineMs: number;
  removed: number;
}

/** One entry of a provider feed (R16, D2). */
export interface FeedEntry extends ProviderEvent {
  readonly csi: string;
}

/** The acknowledgement of one bulk batch (G4). */
export interface BulkAck {
  committed: number;
  stored: number;
  unchanged: number;
  optedOut: number;
  /** Records left out because their CSI, or their MSP at that CSI, holds the most mappings allowed. */
  overLimit: number;
}

/** What a peer's first-mapping request did here (R18). */
export interface InvalidateOlderResult {
  removed: number;
  contested: number;
}
