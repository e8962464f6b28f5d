// How mappings enter and leave a DP, protocol-free (GLADOS 8.2, 8.3, 10; R1-R7, R16-R19,
// R21, D2): proof-of-possession challenges, countersigning, precedence and default
// decisions, conflicts with a contest window, removal, opt-out, provider feeds, bulk
// registration, and notices to the MSPs whose users' mappings change.
import { createHmac, randomBytes, randomInt, timingSafeEqual } from "node:crypto";
import {
  type ActionStatement,
  type Clock,
  type Csi,
  checkPublicKey,
  csiHash,
  DiscoveryError,
  decodeActionStatement,
  decodeMappingRecord,
  dpSignedParts,
  encodeActionStatement,
  encodeMappingRecord,
  invalidArgument,
  Latch,
  type Logger,
  MAX_SSI_LENGTH,
  type Mapping,
  type MappingRecord,
  type MspInfo,
  mappingProblem,
  parseCsi,
  type RegistryView,
  registryKeys,
  SIGNING_CONTEXT,
  type SigningKey,
  signWith,
  ssiProblem,
  tagsProblem,
  verifyWith,
} from "@mimi/core";
import type { CodeSender } from "./senders.js";
import type {
  ChallengeRow,
  ConflictRow,
  EnrolledMsp,
  MappingRow,
  MappingStore,
  NoticeBody,
  NoticeRow,
} from "./store.js";

/** Created times may lie at most this far ahead of the DP's clock. */
const MAX_CLOCK_SKEW_MS = 5 * 60_000;
/** Largest batch one bulk message may carry. */
export const MAX_BULK_BATCH = 10_000;

/** Policy of the claim flow; every value comes from the DP's configuration. */
export interface ClaimPolicy {
  readonly codeLength: number;
  readonly codeTtlMs: number;
  readonly maxAttempts: number;
  readonly contestWindowMs: number;
  /** How long a mapping stays valid before it must be re-verified. */
  readonly mappingLifetimeMs: number;
  /** Proof methods from weakest to strongest (R17's "stricter proof"). */
  readonly proofRanking: readonly string[];
  readonly noticeRetentionMs: number;
}

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
  /** The root registry's MSP record, for names shown to claimants. */
  registryMsp(id: string): MspInfo | undefined;
  /** The DP's registry copy: peers for first-mapping requests, and keys to check theirs (R18). */
  registry: RegistryView;
  /** Called after a commit that queued first-mapping requests to peer DPs. */
  onPeerRequests?: () => void;
  log: Logger;
}

/** What a peer's first-mapping request did here (R18). */
export interface InvalidateOlderResult {
  removed: number;
  contested: number;
}

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

export interface StartResult {
  challengeId: string;
  expiresAtMs: number;
  proofMethod: string;
  statement: Uint8Array;
}

export interface CompleteResult {
  mapping?: Mapping;
  hasPrecedence: boolean;
  existingMsps: MspInfo[];
  conflictId: string;
  contestDeadlineMs: number;
  removed: number;
}

export type FeedEvent = "disconnected" | "reassigned" | "ported";
export interface FeedEntry {
  csi: string;
  event: FeedEvent;
  effectiveAtMs: number;
  donorMspId: string;
}

export interface BulkAck {
  committed: number;
  stored: number;
  unchanged: number;
  optedOut: number;
}

/** The claim side of a DP. */
export interface Claims {
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
  contest(caller: EnrolledMsp, conflictId: string): void;
  /** Notices for `mspId` after `seq`. */
  notices(mspId: string, seq: number, limit: number): NoticeRow[];
  /** Waits until a notice for `mspId` may have arrived. */
  waitForNotice(mspId: string, signal: AbortSignal): Promise<void>;
  bulkResume(caller: EnrolledMsp, sessionId: string): number;
  bulkBatch(
    caller: EnrolledMsp,
    sessionId: string,
    firstIndex: number,
    records: readonly { record: Uint8Array; mspSignature: Uint8Array }[],
  ): BulkAck;
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

/** Validates preference tags (R7); throws INVALID_ARGUMENT with the reason. */
export function checkTags(tags: readonly string[]): string[] {
  const why = tagsProblem(tags);
  if (why) throw invalidArgument(why);
  return [...tags];
}

/** Validates a service-specific identifier; throws INVALID_ARGUMENT with the reason. */
export function checkSsi(ssi: string): void {
  const why = ssiProblem(ssi);
  if (why) throw invalidArgument(why);
}

/** The domain form of a stored mapping. */
export function mappingOfRow(row: MappingRow): Mapping {
  const r = decodeMappingRecord(row.record);
  return {
    mspId: row.mspId,
    ssi: row.ssi,
    isDefault: row.isDefault,
    tags: r.tags,
    createdAtMs: r.createdAtMs,
    proofMethod: r.proofMethod,
    expiresAtMs: row.expiresAtMs,
    signed: {
      record: row.record,
      userSignature: row.userSig,
      mspSignature: row.mspSig,
      dpSignature: row.dpSig,
    },
  };
}

const sameKey = (a: Uint8Array, b: Uint8Array) =>
  a.length > 0 && a.length === b.length && Buffer.from(a).equals(b);

export function createClaims(o: ClaimsOptions): Claims {
  const { store, policy, log } = o;
  const rank = (method: string) => policy.proofRanking.indexOf(method);
  const latches = new Map<string, Latch>();
  // Notices are written inside transactions; watchers are woken once the transaction commits.
  const woken = new Set<string>();
  const notify = (mspId: string, body: NoticeBody) => {
    store.addNotice(mspId, o.clock(), body);
    woken.add(mspId);
  };
  let peerRequestsQueued = false;
  const wake = () => {
    for (const id of woken) latches.get(id)?.fire();
    woken.clear();
    if (peerRequestsQueued) {
      peerRequestsQueued = false;
      o.onPeerRequests?.();
    }
  };
  const keys = registryKeys(o.registry);
  /**
   * Other DPs whose delegations also cover the CSI: a shorter E.164 prefix carved around this
   * DP's range. They may hold mappings from before the range moved here (R18).
   */
  const peersOf = (csi: string) => {
    const key = parseCsi(csi).key;
    const ids = o.registry.covering(key).map((d) => d.dpId);
    return [...new Set(ids)].filter((id) => id !== o.dpId);
  };
  const tx = <T>(f: () => T): T => {
    try {
      return store.transaction(f);
    } finally {
      wake();
    }
  };
  const hashCode = (challengeId: string, code: string) =>
    new Uint8Array(createHmac("sha256", o.codeSecret).update(`${challengeId}\0${code}`).digest());
  const dpSign = (isDefault: boolean, record: Uint8Array) =>
    signWith(o.signingKey, SIGNING_CONTEXT.mappingDp, ...dpSignedParts(isDefault, record));
  const userKeyOf = (row: MappingRow) => decodeMappingRecord(row.record).userPublicKey;

  const removeRows = (rows: readonly MappingRow[], reason: string, except?: string) => {
    for (const r of rows) {
      if (store.deleteMapping(r.csi, r.mspId, r.ssi) && r.mspId !== except) {
        notify(r.mspId, { kind: "mapping_removed", csi: r.csi, ssi: r.ssi, reason });
      }
    }
  };

  /**
   * Keeps exactly one default per CSI (R7). `preferred` is a holder's explicit choice. Without
   * one, a single default stays unless it never asked to be default and another mapping did;
   * otherwise the choice is made once, deterministically: among the mappings that asked for it
   * (or all, when none did) the best precedence, then MSP, then SSI.
   */
  const settleDefault = (csi: string, preferred?: { mspId: string; ssi: string }) => {
    const rows = store.mappings(csi);
    if (rows.length === 0) return;
    const defaults = rows.filter((r) => r.isDefault);
    const asked = rows.filter((r) => decodeMappingRecord(r.record).defaultRequested);
    let target: MappingRow | undefined;
    if (preferred) target = rows.find((r) => r.mspId === preferred.mspId && r.ssi === preferred.ssi);
    const only = defaults.length === 1 ? (defaults[0] as MappingRow) : undefined;
    if (!target && only && (asked.length === 0 || asked.includes(only))) return;
    if (!target) {
      const pool = asked.length > 0 ? asked : defaults.length > 1 ? defaults : rows;
      target = [...pool].sort(
        (a, b) => a.precedence - b.precedence || cmp(a.mspId, b.mspId) || cmp(a.ssi, b.ssi),
      )[0] as MappingRow;
    }
    for (const r of rows) {
      const want = r === target;
      if (r.isDefault === want) continue;
      store.updateMapping(r.csi, r.mspId, r.ssi, {
        isDefault: want,
        precedence: r.precedence,
        dpSig: dpSign(want, r.record),
      });
      notify(r.mspId, {
        kind: "default_changed",
        csi,
        ssi: r.ssi,
        reason: want ? "this mapping is now the default" : "this mapping is no longer the default",
      });
    }
  };

  const promote = (row: MappingRow) => {
    const rows = store.mappings(row.csi);
    const top = Math.min(...rows.map((r) => r.precedence));
    if (row.precedence > top || rows.some((r) => r !== row && r.precedence === top)) {
      store.updateMapping(row.csi, row.mspId, row.ssi, {
        isDefault: row.isDefault,
        precedence: top - 1,
        dpSig: row.dpSig,
      });
    }
  };

  const openConflict = (
    c: Omit<ConflictRow, "id" | "state" | "openedAtMs" | "deadlineMs">,
    targets: readonly MappingRow[],
  ): ConflictRow => {
    const now = o.clock();
    const conflict: ConflictRow = {
      ...c,
      id: `cf_${randomBytes(12).toString("base64url")}`,
      openedAtMs: now,
      deadlineMs: now + policy.contestWindowMs,
      state: "open",
    };
    store.insertConflict(conflict, targets);
    for (const t of targets) {
      // The notice names the recipient's own user and nothing about the claimant (R17).
      notify(t.mspId, {
        kind: "conflict_opened",
        csi: c.csi,
        ssi: t.ssi,
        conflictId: conflict.id,
        deadlineMs: conflict.deadlineMs,
        reason: c.replace
          ? "someone who proved possession of this CSI asks to replace this mapping; contest before the deadline to keep it"
          : "someone who proved possession of this CSI claimed it at another service; contest before the deadline to keep precedence",
      });
    }
    return conflict;
  };

  const existingMsps = (rows: readonly MappingRow[]) => {
    const ids = [...new Set(rows.map((r) => r.mspId))].sort();
    return ids.map(
      (id) => o.registryMsp(id) ?? { id, name: id, index: -1, signingPublicKey: new Uint8Array(0) },
    );
  };

  const applyClaim = (
    caller: EnrolledMsp,
    ch: ChallengeRow,
    userSig: Uint8Array,
    mspSig: Uint8Array,
  ): CompleteResult => {
    const r = decodeMappingRecord(ch.statement);
    const params = JSON.parse(ch.params) as { replaceExisting: boolean; makeDefault: boolean };
    const now = o.clock();
    store.clearOptOut(r.csi);
    const all = store.mappings(r.csi);
    const same = all.find((x) => x.mspId === r.mspId && x.ssi === r.ssi);
    const others = all.filter((x) => x !== same && !sameKey(userKeyOf(x), r.userPublicKey));
    const stricter =
      others.length > 0 &&
      Math.max(...others.map((x) => rank(decodeMappingRecord(x.record).proofMethod))) < rank(r.proofMethod);
    const row: MappingRow = {
      csi: r.csi,
      mspId: r.mspId,
      ssi: r.ssi,
      isDefault: same?.isDefault ?? all.length === 0,
      precedence: same?.precedence ?? now,
      expiresAtMs: r.expiresAtMs,
      record: ch.statement,
      userSig,
      mspSig,
      dpSig: dpSign(same?.isDefault ?? all.length === 0, ch.statement),
    };
    store.putMapping(row);
    if (all.length === 0) {
      // The first mapping for this CSI here: peers that may hold older ones are told (R18).
      for (const peerDp of peersOf(r.csi)) {
        store.addPeerRequest({
          peerDp,
          csi: r.csi,
          mspId: r.mspId,
          ssi: r.ssi,
          createdAtMs: now,
          nextAtMs: now,
        });
        peerRequestsQueued = true;
      }
    }
    const result: CompleteResult = {
      hasPrecedence: true,
      existingMsps: existingMsps(others),
      conflictId: "",
      contestDeadlineMs: 0,
      removed: 0,
    };
    const mine = { mspId: r.mspId, ssi: r.ssi };
    if (others.length === 0) {
      settleDefault(r.csi, params.makeDefault ? mine : undefined);
    } else if (stricter) {
      // A stricter proof supersedes the older mappings at once (R17).
      promote(row);
      if (params.replaceExisting) {
        removeRows(others, "replaced by a claim with a stricter proof of possession");
        result.removed = others.length;
      } else {
        for (const x of others) {
          notify(x.mspId, {
            kind: "precedence_lost",
            csi: r.csi,
            ssi: x.ssi,
            reason: "a claim with a stricter proof of possession now takes precedence",
          });
        }
      }
      settleDefault(r.csi, params.makeDefault ? mine : undefined);
    } else {
      const c = openConflict(
        {
          csi: r.csi,
          claimantMsp: caller.mspId,
          newMsp: r.mspId,
          newSsi: r.ssi,
          replace: params.replaceExisting,
          makeDefault: params.makeDefault,
        },
        others,
      );
      settleDefault(r.csi);
      result.hasPrecedence = false;
      result.conflictId = c.id;
      result.contestDeadlineMs = c.deadlineMs;
    }
    const stored = store.mapping(r.csi, r.mspId, r.ssi) as MappingRow;
    result.mapping = mappingOfRow(stored);
    log.info(
      {
        csi: csiHash(r.csi),
        msp: caller.mspId,
        conflict: result.conflictId || undefined,
        others: others.length,
      },
      "mapping claimed",
    );
    return result;
  };

  const applyInvalidate = (caller: EnrolledMsp, s: ActionStatement): CompleteResult => {
    const targets = store
      .mappings(s.csi)
      .filter(
        (x) =>
          (s.targetMspId === "" || x.mspId === s.targetMspId) &&
          (s.targetSsi === "" || x.ssi === s.targetSsi),
      );
    if (targets.length === 0)
      throw new DiscoveryError("not_found", "no mapping of this CSI matches the target");
    // The holder's own mappings go at once; other holders' mappings are replaced through a
    // conflict they may contest, like a claim that asks to replace them (R17, R19).
    const own = targets.filter((x) => x.mspId === caller.mspId || sameKey(userKeyOf(x), s.userPublicKey));
    const foreign = targets.filter((x) => !own.includes(x));
    removeRows(own, "invalidated by the holder", caller.mspId);
    const result: CompleteResult = {
      hasPrecedence: false,
      existingMsps: existingMsps(foreign),
      conflictId: "",
      contestDeadlineMs: 0,
      removed: own.length,
    };
    if (foreign.length > 0) {
      const c = openConflict(
        { csi: s.csi, claimantMsp: caller.mspId, newMsp: "", newSsi: "", replace: true, makeDefault: false },
        foreign,
      );
      result.conflictId = c.id;
      result.contestDeadlineMs = c.deadlineMs;
    }
    settleDefault(s.csi);
    log.info(
      { csi: csiHash(s.csi), msp: caller.mspId, removed: own.length, pending: foreign.length },
      "mappings invalidated",
    );
    return result;
  };

  const applyOptOut = (caller: EnrolledMsp, s: ActionStatement): CompleteResult => {
    const rows = store.mappings(s.csi);
    removeRows(rows, "the holder opted out of discovery", caller.mspId);
    for (const c of store.openConflicts(s.csi)) store.setConflictState(c.id, "void");
    store.setOptOut(s.csi, o.clock());
    log.info({ csi: csiHash(s.csi), msp: caller.mspId, removed: rows.length }, "holder opted out");
    return {
      hasPrecedence: false,
      existingMsps: [],
      conflictId: "",
      contestDeadlineMs: 0,
      removed: rows.length,
    };
  };

  const settleConflict = (c: ConflictRow) => {
    const rows = store.mappings(c.csi);
    const targets = store
      .conflictTargets(c.id)
      .map((t) => rows.find((r) => r.mspId === t.mspId && r.ssi === t.ssi))
      .filter((r): r is MappingRow => r !== undefined);
    const claimed = c.newMsp ? rows.find((r) => r.mspId === c.newMsp && r.ssi === c.newSsi) : undefined;
    if (c.newMsp && !claimed) {
      store.setConflictState(c.id, "void");
      return;
    }
    if (claimed) promote(claimed);
    if (c.replace) {
      removeRows(targets, "replaced: the CSI's holder claimed it elsewhere and the contest window passed");
    } else {
      for (const t of targets) {
        notify(t.mspId, {
          kind: "precedence_lost",
          csi: c.csi,
          ssi: t.ssi,
          conflictId: c.id,
          reason: "the conflict was not contested; another mapping now takes precedence",
        });
      }
    }
    settleDefault(c.csi, claimed && c.makeDefault ? claimed : undefined);
    store.setConflictState(c.id, "lapsed");
    notify(c.claimantMsp, {
      kind: "conflict_closed",
      csi: c.csi,
      ssi: c.newSsi,
      conflictId: c.id,
      reason: "not contested; the change took effect",
    });
  };

  const checkRecordTimes = (r: MappingRecord, now: number) => {
    if (r.createdAtMs > now + MAX_CLOCK_SKEW_MS) throw invalidArgument("created_at_ms lies in the future");
    if (r.expiresAtMs <= now) throw invalidArgument("the record has already expired");
    if (r.expiresAtMs > now + policy.mappingLifetimeMs + MAX_CLOCK_SKEW_MS) {
      throw invalidArgument(
        `the record expires later than this DP's mapping lifetime allows (${Math.round(policy.mappingLifetimeMs / 86_400_000)} days)`,
      );
    }
  };

  return {
    callerOf(tlsIdentity) {
      const found = store.enrolledByIdentity(tlsIdentity);
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

    async start(caller, req) {
      const csi = o.requireDelegated(req.csi);
      checkPublicKey(req.userPublicKey, "user_public_key");
      const now = o.clock();
      const id = `ch_${randomBytes(16).toString("base64url")}`;
      const proofMethod = csi.type === "tel" ? "sms-code" : "email-code";
      let statement: Uint8Array;
      let params = {};
      if (req.action === "claim") {
        checkSsi(req.ssi);
        const tags = checkTags(req.tags);
        statement = encodeMappingRecord({
          csi: csi.uri,
          mspId: caller.mspId,
          ssi: req.ssi,
          defaultRequested: req.makeDefault,
          tags,
          createdAtMs: now,
          proofMethod,
          proofId: id,
          userPublicKey: req.userPublicKey,
          dpId: o.dpId,
          expiresAtMs: now + policy.mappingLifetimeMs,
        });
        params = { replaceExisting: req.replaceExisting, makeDefault: req.makeDefault };
      } else {
        const target =
          req.action === "invalidate" ? { mspId: req.mspId, ssi: req.ssi } : { mspId: "", ssi: "" };
        if (target.ssi !== "" && target.mspId === "")
          throw invalidArgument("an ssi to invalidate needs its msp_id");
        if (target.mspId.length > 128 || target.ssi.length > MAX_SSI_LENGTH)
          throw invalidArgument("target is too long");
        statement = encodeActionStatement({
          action: req.action,
          csi: csi.uri,
          challengeId: id,
          dpId: o.dpId,
          mspId: caller.mspId,
          targetMspId: target.mspId,
          targetSsi: target.ssi,
          userPublicKey: req.userPublicKey,
          issuedAtMs: now,
        });
      }
      const code = String(randomInt(0, 10 ** policy.codeLength)).padStart(policy.codeLength, "0");
      const expiresAtMs = now + policy.codeTtlMs;
      store.insertChallenge({
        id,
        mspId: caller.mspId,
        csi: csi.uri,
        action: req.action,
        params: JSON.stringify(params),
        statement,
        codeHash: hashCode(id, code),
        attempts: 0,
        expiresAtMs,
        state: "open",
      });
      try {
        await o.sender.send({
          csiType: csi.type,
          to: csi.uri.slice(csi.uri.indexOf(":") + 1),
          code,
          expiresAtMs,
          dpId: o.dpId,
          purpose: req.action,
          challengeId: id,
        });
      } catch (err) {
        store.updateChallenge(id, 0, "exhausted");
        throw err;
      }
      log.info(
        { csi: csiHash(csi.uri), msp: caller.mspId, action: req.action, challenge: id },
        "challenge sent",
      );
      return { challengeId: id, expiresAtMs, proofMethod, statement };
    },

    complete(caller, challengeId, code, userSig, mspSig) {
      const ch = store.challenge(challengeId);
      // Another MSP's challenge is reported like a missing one, so ids reveal nothing.
      if (!ch || ch.mspId !== caller.mspId) {
        throw new DiscoveryError(
          "not_found",
          `no challenge "${challengeId.slice(0, 64)}" is open for this MSP`,
        );
      }
      if (ch.state === "used")
        throw new DiscoveryError("failed_precondition", "this challenge was already completed");
      if (ch.state === "exhausted") {
        throw new DiscoveryError(
          "failed_precondition",
          "this challenge is closed after too many wrong codes; start a new one",
        );
      }
      if (o.clock() > ch.expiresAtMs) {
        throw new DiscoveryError("failed_precondition", "the code has expired; start a new challenge");
      }
      const given = hashCode(ch.id, code);
      if (!timingSafeEqual(given, ch.codeHash)) {
        const attempts = ch.attempts + 1;
        const left = policy.maxAttempts - attempts;
        store.updateChallenge(ch.id, attempts, left <= 0 ? "exhausted" : "open");
        log.info({ challenge: ch.id, msp: caller.mspId, attempts }, "wrong code");
        throw invalidArgument(
          left <= 0
            ? "wrong code; no attempts left, start a new challenge"
            : `wrong code; ${left} attempt(s) left`,
        );
      }
      const claim = ch.action === "claim";
      const ctxUser = claim ? SIGNING_CONTEXT.mappingUser : SIGNING_CONTEXT.actionUser;
      const ctxMsp = claim ? SIGNING_CONTEXT.mappingMsp : SIGNING_CONTEXT.actionMsp;
      const userKey = claim
        ? decodeMappingRecord(ch.statement).userPublicKey
        : decodeActionStatement(ch.statement).userPublicKey;
      // Signatures are checked after the code so that a wrong signature cannot probe codes;
      // the challenge stays open for a corrected submission.
      if (!verifyWith(userKey, ctxUser, userSig, [ch.statement])) {
        throw invalidArgument("user_signature does not verify with the user's key over the statement");
      }
      if (!verifyWith(caller.signingPublicKey, ctxMsp, mspSig, [ch.statement], { registryKey: true })) {
        throw invalidArgument("msp_signature does not verify with the MSP's enrolled signing key");
      }
      return tx(() => {
        store.updateChallenge(ch.id, ch.attempts, "used");
        if (claim) return applyClaim(caller, ch, userSig, mspSig);
        const s = decodeActionStatement(ch.statement);
        return s.action === "invalidate" ? applyInvalidate(caller, s) : applyOptOut(caller, s);
      });
    },

    contest(caller, conflictId) {
      const c = store.conflict(conflictId);
      const concerned = c && store.conflictTargets(c.id).some((t) => t.mspId === caller.mspId);
      if (!c || !concerned) {
        throw new DiscoveryError(
          "not_found",
          `no conflict "${conflictId.slice(0, 64)}" concerns this MSP's users`,
        );
      }
      if (c.state !== "open" || o.clock() > c.deadlineMs) {
        throw new DiscoveryError(
          "failed_precondition",
          `the conflict is ${c.state === "open" ? "past its deadline" : c.state}`,
        );
      }
      tx(() => {
        store.setConflictState(c.id, "contested");
        notify(c.claimantMsp, {
          kind: "conflict_closed",
          csi: c.csi,
          ssi: c.newSsi,
          conflictId: c.id,
          reason: "contested by the existing holder; the older mapping keeps precedence",
        });
      });
      log.info({ conflict: c.id, msp: caller.mspId }, "conflict contested");
    },

    notices: (mspId, seq, limit) => store.noticesSince(mspId, seq, limit),
    waitForNotice(mspId, signal) {
      let l = latches.get(mspId);
      if (!l) {
        l = new Latch();
        latches.set(mspId, l);
      }
      return l.wait(signal);
    },

    bulkResume(caller, sessionId) {
      if (!caller.mayBulk) {
        throw new DiscoveryError(
          "permission_denied",
          `MSP "${caller.mspId}" is not enrolled for bulk registration`,
        );
      }
      if (sessionId.length < 1 || sessionId.length > 128)
        throw invalidArgument("session_id must be 1 to 128 characters");
      return store.bulkCommitted(caller.mspId, sessionId);
    },

    bulkBatch(caller, sessionId, firstIndex, records) {
      if (records.length > MAX_BULK_BATCH)
        throw invalidArgument(`a batch may hold at most ${MAX_BULK_BATCH} records`);
      const committed = store.bulkCommitted(caller.mspId, sessionId);
      if (firstIndex > committed) {
        throw new DiscoveryError(
          "failed_precondition",
          `batch starts at record ${firstIndex} but the session has ${committed} committed; resend from ${committed}`,
        );
      }
      const skip = committed - firstIndex;
      const now = o.clock();
      // Check every record before writing any, so a batch is stored whole or not at all.
      const fresh = records.slice(Math.min(skip, records.length)).map((x, i) => {
        const at = firstIndex + skip + i;
        try {
          const r = decodeMappingRecord(x.record);
          if (r.mspId !== caller.mspId) {
            throw new DiscoveryError(
              "permission_denied",
              `the record is for MSP "${r.mspId}"; an MSP registers only its own users`,
            );
          }
          if (r.dpId !== o.dpId)
            throw invalidArgument(`the record names DP "${r.dpId}", not this DP ("${o.dpId}")`);
          if (r.proofMethod !== "bulk" || r.userPublicKey.length !== 0) {
            throw invalidArgument('bulk records must use proof method "bulk" and carry no user key');
          }
          const csi = o.requireDelegated(r.csi);
          if (csi.uri !== r.csi)
            throw invalidArgument(`the CSI must be written in canonical form ("${csi.type}:...")`);
          checkSsi(r.ssi);
          checkTags(r.tags);
          checkRecordTimes(r, now);
          if (
            !verifyWith(caller.signingPublicKey, SIGNING_CONTEXT.mappingMsp, x.mspSignature, [x.record], {
              registryKey: true,
            })
          ) {
            throw invalidArgument("msp_signature does not verify with the MSP's enrolled signing key");
          }
          return { r, x };
        } catch (err) {
          if (err instanceof DiscoveryError)
            throw new DiscoveryError(err.code, `record ${at}: ${err.message}`);
          throw err;
        }
      });
      const ack: BulkAck = { committed: 0, stored: 0, unchanged: 0, optedOut: 0 };
      tx(() => {
        for (const { r, x } of fresh) {
          // One read per record: an opted-out CSI has no mappings, so the marker is only
          // looked up for CSIs that have none.
          const rows = store.mappings(r.csi);
          if (rows.length === 0 && store.optedOutAt(r.csi) !== undefined) {
            ack.optedOut++;
            continue;
          }
          const same = rows.find((m) => m.mspId === r.mspId && m.ssi === r.ssi);
          if (same && Buffer.from(same.record).equals(x.record)) {
            ack.unchanged++;
            continue;
          }
          // A holder's own proof outranks the MSP's bulk assertion of the same mapping.
          if (same && rank(decodeMappingRecord(same.record).proofMethod) > rank("bulk")) {
            ack.unchanged++;
            continue;
          }
          const isDefault = same?.isDefault ?? rows.length === 0;
          store.putMapping({
            csi: r.csi,
            mspId: r.mspId,
            ssi: r.ssi,
            isDefault,
            // Precedence follows arrival at this DP, so a bulk record never overtakes a claim.
            precedence: same?.precedence ?? now,
            expiresAtMs: r.expiresAtMs,
            record: x.record,
            userSig: new Uint8Array(0),
            mspSig: x.mspSignature,
            dpSig: dpSign(isDefault, x.record),
          });
          ack.stored++;
          if (!isDefault && r.defaultRequested) settleDefault(r.csi);
        }
        ack.committed = Math.max(committed, firstIndex + records.length);
        store.setBulkCommitted(caller.mspId, sessionId, ack.committed, now);
      });
      return ack;
    },

    ingestFeed(entries) {
      const checked = entries.map((e, i) => {
        try {
          if (!Number.isSafeInteger(e.effectiveAtMs) || e.effectiveAtMs <= 0) {
            throw invalidArgument("effective_at_ms must be a time in ms since 1970");
          }
          // A scheduled event must not remove today's mappings; feed it once it has happened.
          if (e.effectiveAtMs > o.clock() + MAX_CLOCK_SKEW_MS) {
            throw invalidArgument(
              "effective_at_ms lies in the future; send the entry once the event has happened",
            );
          }
          if (e.event === "ported" && e.donorMspId.length > 128)
            throw invalidArgument("donor_msp_id is too long");
          return { e, csi: o.requireDelegated(e.csi) };
        } catch (err) {
          if (err instanceof DiscoveryError) throw new DiscoveryError(err.code, `entry ${i}: ${err.message}`);
          throw err;
        }
      });
      return tx(() => {
        let removed = 0;
        for (const { e, csi } of checked) {
          const rows = store.mappings(csi.uri).filter((r) => {
            if (decodeMappingRecord(r.record).createdAtMs >= e.effectiveAtMs) return false;
            return e.event !== "ported" || (e.donorMspId !== "" && r.mspId === e.donorMspId);
          });
          const date = new Date(e.effectiveAtMs).toISOString().slice(0, 10);
          const reason =
            e.event === "ported"
              ? `the number was ported away from this operator on ${date}`
              : `the identifier's provider reports it ${e.event} on ${date}`;
          removeRows(rows, reason);
          removed += rows.length;
          // A new holder is not bound by the previous holder's opt-out.
          const opted = store.optedOutAt(csi.uri);
          if (e.event !== "ported" && opted !== undefined && opted < e.effectiveAtMs)
            store.clearOptOut(csi.uri);
          settleDefault(csi.uri);
        }
        return removed;
      });
    },

    invalidateOlder(callerIdentity, csiText, m) {
      const csi = parseCsi(csiText);
      const caller = o.registry.allDps().find((d) => d.tlsIdentity === callerIdentity);
      if (!caller || caller.id === o.dpId) {
        throw new DiscoveryError(
          "permission_denied",
          `identity "${callerIdentity}" is not another DP of the root registry`,
        );
      }
      const d = o.registry.find(csi.key);
      if (d?.dpId !== caller.id) {
        throw new DiscoveryError(
          "permission_denied",
          `DP "${caller.id}" is not delegated this CSI (the registry delegates it to ${d ? `"${d.dpId}"` : "no DP"}); only that DP may ask peers to de-list older mappings`,
        );
      }
      const now = o.clock();
      const problem = mappingProblem(csi.uri, m, keys, now);
      if (problem) throw invalidArgument(`the new mapping does not verify: ${problem}`);
      const r = decodeMappingRecord((m.signed as { record: Uint8Array }).record);
      if (r.dpId !== caller.id)
        throw invalidArgument(`the new mapping is countersigned for DP "${r.dpId}", not the caller`);
      if (r.proofMethod === "bulk") {
        throw invalidArgument(
          "a bulk mapping carries no proof by the holder, so it cannot de-list other holders' mappings",
        );
      }
      return tx(() => {
        const older = store
          .mappings(csi.uri)
          .filter(
            (x) =>
              !sameKey(userKeyOf(x), r.userPublicKey) &&
              decodeMappingRecord(x.record).createdAtMs < r.createdAtMs,
          );
        const stricter = older.filter(
          (x) => rank(decodeMappingRecord(x.record).proofMethod) < rank(r.proofMethod),
        );
        removeRows(
          stricter,
          `the identifier's new holder proved possession more strictly at DP "${caller.id}"`,
        );
        // Repeated requests do not open a second conflict over the same mappings.
        const pending = new Set(
          store
            .openConflicts(csi.uri)
            .flatMap((c) => store.conflictTargets(c.id).map((t) => `${t.mspId}\0${t.ssi}`)),
        );
        const contested = older.filter((x) => !stricter.includes(x));
        const fresh = contested.filter((x) => !pending.has(`${x.mspId}\0${x.ssi}`));
        if (fresh.length > 0) {
          openConflict(
            { csi: csi.uri, claimantMsp: r.mspId, newMsp: "", newSsi: "", replace: true, makeDefault: false },
            fresh,
          );
        }
        settleDefault(csi.uri);
        log.info(
          { csi: csiHash(csi.uri), peer: caller.id, removed: stricter.length, contested: contested.length },
          "older mappings de-listed at a peer's request",
        );
        return { removed: stricter.length, contested: contested.length };
      });
    },

    sweep() {
      const now = o.clock();
      const due = store.dueConflicts(now, 100);
      for (const c of due) tx(() => settleConflict(c));
      tx(() => {
        for (const r of store.expired(now, 1000)) {
          removeRows([r], "expired; re-verify to restore it");
          settleDefault(r.csi);
        }
        store.deleteChallengesBefore(now - 86_400_000);
        store.deleteNoticesBefore(now - policy.noticeRetentionMs);
      });
      if (due.length > 0) log.info({ settled: due.length }, "conflicts settled");
      return due.length;
    },
  };
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
