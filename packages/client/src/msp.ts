// The MSP's side of ClaimService (GLADOS 8.2, 8.3): checking what the DP asks it and its user
// to sign, signing, and streaming bulk registrations with resume. The CLI, the local network's
// demo data, tests and the benchmark all drive DPs through these functions.
import type { MessageShape } from "@bufbuild/protobuf";
import {
  DiscoveryError,
  decodeActionStatement,
  decodeMappingRecord,
  encodeContestStatement,
  invalidArgument,
  MAX_MAPPING_LIFETIME_DAYS,
  MAX_MAPPING_LIFETIME_MS,
  type MappingRecord,
  parseCsi,
  proofMethodFor,
  RECORD_CLOCK_SKEW_MS,
  SIGNING_CONTEXT,
  type SigningKey,
  signWith,
  sleepUnlessAborted,
} from "@mimi/core";
import type { ClaimService, CompleteChallengeResponseSchema } from "@mimi/core/pb";
import type { ServiceClient } from "@mimi/rpc";

export type ClaimClient = ServiceClient<typeof ClaimService.method>;

/**
 * Who an MSP client acts as and where: the MSP's id in the registry and the DP it asks (the
 * CSI's delegated DP). Every statement the MSP and its user sign must name both, so a DP cannot
 * obtain their signatures over a record for another MSP or another DP.
 */
export interface ClaimParty {
  readonly mspId: string;
  readonly dpId: string;
}

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

/** Options of the statement checks: the clock they judge times by (tests move it). */
export interface StatementCheckOptions {
  readonly timeoutMs?: number;
  readonly now?: () => number;
}

/** Refuses to sign: names the field that differs from what was asked. */
function refuse(what: string, field: string, got: unknown, wanted: unknown): never {
  const show = (v: unknown) => (typeof v === "string" ? `"${v}"` : String(v));
  throw invalidArgument(
    `the DP returned a ${what} whose ${field} is ${show(got)}, not ${show(wanted)} as asked; not signing it`,
  );
}

/** A signed time must be the present (within the clock skew), as the DP made the statement just now. */
function checkPresent(what: string, field: string, atMs: number, nowMs: number): void {
  if (Math.abs(atMs - nowMs) > RECORD_CLOCK_SKEW_MS) {
    throw invalidArgument(
      `the DP returned a ${what} whose ${field} (${atMs}) is not the present time; not signing it`,
    );
  }
}

/**
 * Starts a claim. Before anyone signs, every field of the record the DP returns is checked
 * against what was asked: the CSI (canonical form), MSP, DP, SSI, tags, default flag, holder
 * key, proof method (the one for the CSI's type, as the challenge says) and proof id (the
 * challenge), a creation time of now and a lifetime within the published maximum.
 */
export async function startClaim(
  api: ClaimClient,
  party: ClaimParty,
  req: ClaimRequest,
  userKey: SigningKey,
  opts: StatementCheckOptions = {},
): Promise<OpenChallenge & { record: MappingRecord }> {
  const csi = parseCsi(req.csi);
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
    { timeoutMs: opts.timeoutMs ?? 10_000 },
  );
  const record = decodeMappingRecord(r.statement);
  const nowMs = (opts.now ?? Date.now)();
  const what = "record";
  const method = proofMethodFor(csi.type);
  if (record.csi !== csi.uri) refuse(what, "CSI", record.csi, csi.uri);
  if (record.mspId !== party.mspId) refuse(what, "MSP", record.mspId, party.mspId);
  if (record.dpId !== party.dpId) refuse(what, "DP", record.dpId, party.dpId);
  if (record.ssi !== req.ssi) refuse(what, "SSI", record.ssi, req.ssi);
  const asked = req.tags ?? [];
  if (record.tags.length !== asked.length || record.tags.some((tag, i) => tag !== asked[i])) {
    refuse(what, "tags", JSON.stringify(record.tags), JSON.stringify(asked));
  }
  if (record.defaultRequested !== (req.makeDefault ?? false)) {
    refuse(what, "default flag", record.defaultRequested, req.makeDefault ?? false);
  }
  if (!Buffer.from(record.userPublicKey).equals(userKey.publicKey)) {
    refuse(what, "holder key", "another key", "the user's key");
  }
  if (record.proofMethod !== method) refuse(what, "proof method", record.proofMethod, method);
  if (r.proofMethod !== method) refuse("challenge", "proof method", r.proofMethod, method);
  if (record.proofId !== r.challengeId) refuse(what, "proof id", record.proofId, r.challengeId);
  checkPresent(what, "creation time", record.createdAtMs, nowMs);
  if (record.expiresAtMs <= record.createdAtMs)
    refuse(what, "expiry", record.expiresAtMs, "after its creation");
  if (record.expiresAtMs - record.createdAtMs > MAX_MAPPING_LIFETIME_MS) {
    throw invalidArgument(
      `the DP returned a record that would live longer than the published maximum of ${MAX_MAPPING_LIFETIME_DAYS} days; not signing it`,
    );
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

/**
 * Starts an invalidation (empty mspId: every mapping of the CSI) or an opt-out; the statement
 * the DP returns is checked field by field (action, CSI, MSP, DP, challenge, targets, holder
 * key, a time of now) before anyone signs it.
 */
export async function startAction(
  api: ClaimClient,
  party: ClaimParty,
  csiText: string,
  action: { invalidate: { mspId: string; ssi: string } } | { optOut: true },
  userKey: SigningKey,
  opts: StatementCheckOptions = {},
): Promise<OpenChallenge> {
  const csi = parseCsi(csiText);
  const r = await api.startChallenge(
    {
      csi: csiText,
      action:
        "invalidate" in action
          ? { case: "invalidate", value: { ...action.invalidate, userPublicKey: userKey.publicKey } }
          : { case: "optOut", value: { userPublicKey: userKey.publicKey } },
    },
    { timeoutMs: opts.timeoutMs ?? 10_000 },
  );
  const s = decodeActionStatement(r.statement);
  const what = "statement";
  const kind = "invalidate" in action ? "invalidate" : "opt_out";
  const target = "invalidate" in action ? action.invalidate : { mspId: "", ssi: "" };
  if (s.action !== kind) refuse(what, "action", s.action, kind);
  if (s.csi !== csi.uri) refuse(what, "CSI", s.csi, csi.uri);
  if (s.mspId !== party.mspId) refuse(what, "MSP", s.mspId, party.mspId);
  if (s.dpId !== party.dpId) refuse(what, "DP", s.dpId, party.dpId);
  if (s.challengeId !== r.challengeId) refuse(what, "challenge", s.challengeId, r.challengeId);
  if (s.targetMspId !== target.mspId) refuse(what, "target MSP", s.targetMspId, target.mspId);
  if (s.targetSsi !== target.ssi) refuse(what, "target SSI", s.targetSsi, target.ssi);
  if (!Buffer.from(s.userPublicKey).equals(userKey.publicKey)) {
    refuse(what, "holder key", "another key", "the user's key");
  }
  checkPresent(what, "time", s.issuedAtMs, (opts.now ?? Date.now)());
  return {
    challengeId: r.challengeId,
    expiresAtMs: Number(r.expiresAtMs),
    proofMethod: r.proofMethod,
    statement: r.statement,
    kind: "action",
  };
}

/**
 * Contests a conflict about the mapping of `ssi` at this MSP, with the holder's fresh consent:
 * `signer` is the holder's key (the one in the mapping's record), or the MSP's key for a bulk
 * mapping. A contest is final.
 */
export async function contestConflict(
  api: ClaimClient,
  conflict: { conflictId: string; csi: string; mspId: string; ssi: string },
  signer: SigningKey,
  timeoutMs = 10_000,
): Promise<void> {
  const csi = parseCsi(conflict.csi).uri;
  const statement = encodeContestStatement({ ...conflict, csi });
  await api.contestConflict(
    {
      conflictId: conflict.conflictId,
      ssi: conflict.ssi,
      holderSignature: signWith(signer, SIGNING_CONTEXT.contestHolder, statement),
    },
    { timeoutMs },
  );
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

/** Progress of a bulk registration. */
export interface BulkProgress {
  /** Records of the session committed at the DP. */
  committed: number;
  /** Where this run started (records committed by earlier runs). */
  resumedAt: number;
  stored: number;
  unchanged: number;
  optedOut: number;
  /** Left out because their CSI, or this MSP at it, holds the most mappings the DP allows. */
  overLimit: number;
}

/** How often, and for how long at most, bulkRegister waits out a refusal's retry-after. */
const BULK_RETRIES = 3;
const BULK_MAX_RETRY_WAIT_MS = 30_000;

/** Options of bulkRegister. */
export interface BulkOptions {
  sessionId: string;
  total: number;
  recordsFrom: (first: number, count: number) => { record: Uint8Array; mspSignature: Uint8Array }[];
  batchSize?: number;
  window?: number;
  onProgress?: (p: BulkProgress) => void;
  signal?: AbortSignal;
  /**
   * A refusal that names when to try again (UNAVAILABLE or RESOURCE_EXHAUSTED with RetryInfo:
   * the DP's verification at capacity, a budget that refills) is waited out (up to half as long
   * again, spread at random) and the session resumed,
   * this many times at most (default 3); one that asks for longer than `maxRetryWaitMs`
   * (default 30 s) is not waited for. 0: every failure ends the call.
   */
  retries?: number;
  maxRetryWaitMs?: number;
  /** Waits `ms`, or less if `signal` aborts (tests pass their own). */
  sleep?: (ms: number, signal: AbortSignal) => Promise<void>;
}

/**
 * Streams `total` records to the DP under `sessionId`, resuming where the session's committed
 * count stands. `recordsFrom(i, n)` returns records i..i+n-1 (signed). At most `window` batches
 * are unacknowledged at once; `onProgress` runs after each acknowledgement, with the counts of
 * this call (retries included). A refusal with a retry-after is waited out (`retries`).
 */
export async function bulkRegister(api: ClaimClient, opts: BulkOptions): Promise<BulkProgress> {
  const progress: BulkProgress = {
    committed: 0,
    resumedAt: -1,
    stored: 0,
    unchanged: 0,
    optedOut: 0,
    overLimit: 0,
  };
  const retries = opts.retries ?? BULK_RETRIES;
  const maxWaitMs = opts.maxRetryWaitMs ?? BULK_MAX_RETRY_WAIT_MS;
  const signal = opts.signal ?? new AbortController().signal;
  for (let attempt = 0; ; attempt++) {
    try {
      await registerOnce(api, opts, progress);
      return { ...progress, resumedAt: Math.max(0, progress.resumedAt) };
    } catch (err) {
      const waitMs = err instanceof DiscoveryError ? err.details?.retryAfterMs : undefined;
      // UNAVAILABLE (upstream_unavailable here) is what the DP sends for its verification at
      // capacity; RESOURCE_EXHAUSTED for a budget. Either is retried only when it says when.
      const waits =
        err instanceof DiscoveryError &&
        (err.code === "resource_exhausted" || err.code === "upstream_unavailable") &&
        waitMs !== undefined &&
        waitMs <= maxWaitMs;
      if (!waits || attempt >= retries || signal.aborted) throw err;
      // Up to half as long again, so that sessions refused together do not all come back together.
      await (opts.sleep ?? sleepUnlessAborted)(Math.min(maxWaitMs, waitMs * (1 + Math.random() / 2)), signal);
      if (signal.aborted) throw err;
    }
  }
}

/** One BulkRegister stream of the session, adding to `progress` (whose resumedAt is the first stream's). */
async function registerOnce(api: ClaimClient, opts: BulkOptions, progress: BulkProgress): Promise<void> {
  const batchSize = opts.batchSize ?? 2_000;
  const window = opts.window ?? 4;
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
      progress.committed = Number(m.value.committed);
      if (progress.resumedAt < 0) progress.resumedAt = progress.committed;
      resumeAt?.(progress.committed);
    } else if (m.case === "ack") {
      acked++;
      progress.committed = Number(m.value.committed);
      progress.stored += m.value.stored;
      progress.unchanged += m.value.unchanged;
      progress.optedOut += m.value.optedOut;
      progress.overLimit += m.value.overLimit;
      opts.onProgress?.({ ...progress, resumedAt: Math.max(0, progress.resumedAt) });
      wakeSender?.();
      wakeSender = undefined;
    }
    if (progress.committed >= opts.total && acked > 0) break;
  }
}
