// The MSP's side of ClaimService (GLADOS 8.2, 8.3): checking what the DP asks it and its user
// to sign, signing, and streaming bulk registrations with resume. The CLI, the local network's
// demo data, tests and the benchmark all drive DPs through these functions.
import type { MessageShape } from "@bufbuild/protobuf";
import { invalidArgument } from "../domain/errors.js";
import {
  decodeActionStatement,
  decodeMappingRecord,
  encodeMappingRecord,
  type MappingRecord,
} from "../domain/record.js";
import { SIGNING_CONTEXT, type SigningKey, signWith } from "../domain/signing.js";
import type {
  ClaimService,
  CompleteChallengeResponseSchema,
} from "../gen/generated/mimi/discovery/v1/claims_pb.js";
import type { ServiceClient } from "../wire/channel.js";

export type ClaimClient = ServiceClient<typeof ClaimService.method>;

/** What an MSP asks the DP to map for its user. */
export interface ClaimRequest {
  readonly csi: string;
  readonly ssi: string;
  readonly tags?: readonly string[];
  readonly makeDefault?: boolean;
  readonly replaceExisting?: boolean;
}

/** An open challenge and the statement to sign once the user typed the code. */
export interface OpenChallenge {
  readonly challengeId: string;
  readonly expiresAtMs: number;
  readonly proofMethod: string;
  readonly statement: Uint8Array;
  readonly kind: "claim" | "action";
}

/** Starts a claim; checks that the record the DP returns says what was asked before anyone signs it. */
export async function startClaim(
  api: ClaimClient,
  req: ClaimRequest,
  userKey: SigningKey,
  timeoutMs = 10_000,
): Promise<OpenChallenge & { record: MappingRecord }> {
  const r = await api.startChallenge(
    {
      csi: req.csi,
      action: {
        case: "claim",
        value: {
          ssi: req.ssi,
          tags: [...(req.tags ?? [])],
          makeDefault: req.makeDefault ?? false,
          userPublicKey: userKey.publicKey,
          replaceExisting: req.replaceExisting ?? false,
        },
      },
    },
    { timeoutMs },
  );
  const record = decodeMappingRecord(r.statement);
  const asked = (req.tags ?? []).join("\n");
  if (
    record.ssi !== req.ssi ||
    record.tags.join("\n") !== asked ||
    record.defaultRequested !== (req.makeDefault ?? false) ||
    !Buffer.from(record.userPublicKey).equals(userKey.publicKey)
  ) {
    throw invalidArgument("the DP returned a record that differs from the claim; not signing it");
  }
  return {
    challengeId: r.challengeId,
    expiresAtMs: Number(r.expiresAtMs),
    proofMethod: r.proofMethod,
    statement: r.statement,
    kind: "claim",
    record,
  };
}

/** Starts an invalidation (empty mspId: every mapping of the CSI) or an opt-out. */
export async function startAction(
  api: ClaimClient,
  csi: string,
  action: { invalidate: { mspId: string; ssi: string } } | { optOut: true },
  userKey: SigningKey,
  timeoutMs = 10_000,
): Promise<OpenChallenge> {
  const r = await api.startChallenge(
    {
      csi,
      action:
        "invalidate" in action
          ? { case: "invalidate", value: { ...action.invalidate, userPublicKey: userKey.publicKey } }
          : { case: "optOut", value: { userPublicKey: userKey.publicKey } },
    },
    { timeoutMs },
  );
  const s = decodeActionStatement(r.statement);
  if (
    s.action !== ("invalidate" in action ? "invalidate" : "opt_out") ||
    !Buffer.from(s.userPublicKey).equals(userKey.publicKey)
  ) {
    throw invalidArgument("the DP returned a statement that differs from the request; not signing it");
  }
  return {
    challengeId: r.challengeId,
    expiresAtMs: Number(r.expiresAtMs),
    proofMethod: r.proofMethod,
    statement: r.statement,
    kind: "action",
  };
}

/** Submits the code the user typed, with the user's and the MSP's signatures over the statement. */
export function completeChallenge(
  api: ClaimClient,
  ch: OpenChallenge,
  code: string,
  userKey: SigningKey,
  mspKey: SigningKey,
  timeoutMs = 10_000,
): Promise<MessageShape<typeof CompleteChallengeResponseSchema>> {
  const claim = ch.kind === "claim";
  return api.completeChallenge(
    {
      challengeId: ch.challengeId,
      code,
      userSignature: signWith(
        userKey,
        claim ? SIGNING_CONTEXT.mappingUser : SIGNING_CONTEXT.actionUser,
        ch.statement,
      ),
      mspSignature: signWith(
        mspKey,
        claim ? SIGNING_CONTEXT.mappingMsp : SIGNING_CONTEXT.actionMsp,
        ch.statement,
      ),
    },
    { timeoutMs },
  );
}

/** A bulk record ("bulk" proof, no holder key) signed by the MSP. */
export function bulkRecord(
  fields: Omit<MappingRecord, "proofMethod" | "userPublicKey" | "proofId"> & { proofId?: string },
  mspKey: SigningKey,
): { record: Uint8Array; mspSignature: Uint8Array } {
  const record = encodeMappingRecord({
    ...fields,
    proofId: fields.proofId ?? "",
    proofMethod: "bulk",
    userPublicKey: new Uint8Array(0),
  });
  return { record, mspSignature: signWith(mspKey, SIGNING_CONTEXT.mappingMsp, record) };
}

/** Progress of a bulk registration. */
export interface BulkProgress {
  /** Records of the session committed at the DP. */
  committed: number;
  /** Where this run started (records committed by earlier runs). */
  resumedAt: number;
  stored: number;
  unchanged: number;
  optedOut: number;
}

/**
 * Streams `total` records to the DP under `sessionId`, resuming where the session's committed
 * count stands. `recordsFrom(i, n)` returns records i..i+n-1 (signed). At most `window` batches
 * are unacknowledged at once; `onProgress` runs after each acknowledgement.
 */
export async function bulkRegister(
  api: ClaimClient,
  opts: {
    sessionId: string;
    total: number;
    recordsFrom: (first: number, count: number) => { record: Uint8Array; mspSignature: Uint8Array }[];
    batchSize?: number;
    window?: number;
    onProgress?: (p: BulkProgress) => void;
    signal?: AbortSignal;
  },
): Promise<BulkProgress> {
  const batchSize = opts.batchSize ?? 2_000;
  const window = opts.window ?? 4;
  const progress: BulkProgress = { committed: 0, resumedAt: 0, stored: 0, unchanged: 0, optedOut: 0 };
  let resumeAt: ((n: number) => void) | undefined;
  const resumed = new Promise<number>((resolve) => {
    resumeAt = resolve;
  });
  let acked = 0;
  let wakeSender: (() => void) | undefined;
  async function* requests() {
    yield { message: { case: "start" as const, value: { sessionId: opts.sessionId } } };
    const from = await resumed;
    let sent = 0;
    for (let i = from; i < opts.total; i += batchSize) {
      while (sent - acked >= window) await new Promise<void>((r) => (wakeSender = r));
      const records = opts.recordsFrom(i, Math.min(batchSize, opts.total - i));
      sent++;
      yield { message: { case: "batch" as const, value: { firstIndex: BigInt(i), records } } };
    }
  }
  for await (const res of api.bulkRegister(requests(), { ...(opts.signal ? { signal: opts.signal } : {}) })) {
    const m = res.message;
    if (m.case === "resume") {
      progress.committed = progress.resumedAt = Number(m.value.committed);
      resumeAt?.(progress.committed);
    } else if (m.case === "ack") {
      acked++;
      progress.committed = Number(m.value.committed);
      progress.stored += m.value.stored;
      progress.unchanged += m.value.unchanged;
      progress.optedOut += m.value.optedOut;
      opts.onProgress?.({ ...progress });
      wakeSender?.();
      wakeSender = undefined;
    }
    if (progress.committed >= opts.total && acked > 0) break;
  }
  return progress;
}
