// Proof of possession (R1, R2, G2): a challenge sends a short-lived random code to the CSI
// itself, keeps only a keyed hash of it, and hands the MSP the statement its user and it will
// sign. Completing checks the code (attempts counted, constant-time compare), then both
// signatures, and applies the action in one transaction.
import { createHmac, randomBytes, randomInt, timingSafeEqual } from "node:crypto";
import {
  checkPublicKey,
  clipped,
  csiAddress,
  csiHash,
  DiscoveryError,
  decodeActionStatement,
  decodeMappingRecord,
  encodeActionStatement,
  encodeMappingRecord,
  invalidArgument,
  MAX_SSI_LENGTH,
  type MappingRecord,
  parseRequestCsi,
  revenueShareType,
  SIGNING_CONTEXT,
  verifyWith,
} from "@mimi/core";
import { type CodeSender, DELIVERY_UNKNOWN } from "../senders.js";
import type { EnrolledMsp } from "../store/rows.js";
import { applyClaim, requireRoomFor } from "./claim.js";
import type { ClaimsContext } from "./context.js";
import { checkSsi, checkTags } from "./input.js";
import { applyInvalidate, applyOptOut } from "./removal.js";
import { decideClaim } from "./rules.js";
import type { ClaimThrottle } from "./throttle.js";
import type { CompleteResult, StartRequest, StartResult } from "./types.js";

/** How codes are made, sent and checked. */
export interface ChallengeDeps {
  sender: CodeSender;
  /** Keys the code hashes, so a copy of the database does not reveal open codes. */
  codeSecret: Uint8Array;
  throttle: ClaimThrottle;
}

const hashCode = (secret: Uint8Array, challengeId: string, code: string) =>
  new Uint8Array(createHmac("sha256", secret).update(`${challengeId}\0${code}`).digest());

/** Opens a challenge for `req` and sends its code; returns the statement to sign. */
export async function startChallenge(
  ctx: ClaimsContext,
  deps: ChallengeDeps,
  caller: EnrolledMsp,
  req: StartRequest,
): Promise<StartResult> {
  const { store, policy } = ctx;
  const csi = ctx.requireDelegated(parseRequestCsi(req.csi));
  const premium = revenueShareType(csi.uri);
  if (premium) {
    throw invalidArgument(
      `no codes are sent to ${premium === "PREMIUM_RATE" ? "premium-rate" : "shared-cost"} numbers (their messages earn their holder money: SMS pumping); such a number cannot be claimed by code`,
      "csi",
      "CODE_NUMBER_TYPE",
      { type: premium },
    );
  }
  checkPublicKey(req.userPublicKey, "user_public_key", `${req.action}.user_public_key`);
  const now = ctx.clock();
  const id = `ch_${randomBytes(16).toString("base64url")}`;
  const proofMethod = csi.type === "tel" ? "sms-code" : "email-code";
  let statement: Uint8Array;
  let params = {};
  let requireRoom = () => {};
  if (req.action === "claim") {
    checkSsi(req.ssi, "claim.ssi");
    const tags = checkTags(req.tags, "claim.tags");
    const record: MappingRecord = {
      csi: csi.uri,
      mspId: caller.mspId,
      ssi: req.ssi,
      defaultRequested: req.makeDefault,
      tags,
      createdAtMs: now,
      proofMethod,
      proofId: id,
      userPublicKey: req.userPublicKey,
      dpId: ctx.dpId,
      expiresAtMs: now + policy.mappingLifetimeMs,
    };
    statement = encodeMappingRecord(record);
    // A claim the caps would refuse when completed is refused before a code is sent for it
    // (completing checks again, in its transaction: the CSI may fill up meanwhile).
    requireRoom = () => {
      const rows = store.mappings(csi.uri);
      requireRoomFor(
        ctx,
        rows,
        decideClaim(rows, record, policy.proofRanking, now),
        record,
        req.replaceExisting,
      );
    };
    params = { replaceExisting: req.replaceExisting, makeDefault: req.makeDefault };
  } else {
    const target = req.action === "invalidate" ? { mspId: req.mspId, ssi: req.ssi } : { mspId: "", ssi: "" };
    if (target.ssi !== "" && target.mspId === "")
      throw invalidArgument("an ssi to invalidate needs its msp_id", "invalidate.msp_id");
    if (target.mspId.length > 128) throw invalidArgument("msp_id is too long", "invalidate.msp_id");
    if (target.ssi.length > MAX_SSI_LENGTH) throw invalidArgument("ssi is too long", "invalidate.ssi");
    statement = encodeActionStatement({
      action: req.action,
      csi: csi.uri,
      challengeId: id,
      dpId: ctx.dpId,
      mspId: caller.mspId,
      targetMspId: target.mspId,
      targetSsi: target.ssi,
      userPublicKey: req.userPublicKey,
      issuedAtMs: now,
    });
  }
  // Last, once the request is known to be well formed: a refused code spends no budget.
  deps.throttle.beforeCode(csi, caller, now);
  // The caps are checked after the budgets, and a claim they refuse spends an attempt like a
  // failed send: "this CSI is full" says the number is registered, so it is no free probe.
  try {
    requireRoom();
  } catch (err) {
    deps.throttle.notSent(csi, caller, now);
    throw err;
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
    codeHash: hashCode(deps.codeSecret, id, code),
    attempts: 0,
    expiresAtMs,
    state: "open",
  });
  try {
    await deps.sender.send({
      csiType: csi.type,
      to: csiAddress(csi.uri),
      code,
      expiresAtMs,
      dpId: ctx.dpId,
      purpose: req.action,
      challengeId: id,
    });
  } catch (err) {
    // A send that went out and then got no answer may have delivered the code (and been
    // billed): it counts as sent, so its budgets stay spent and the challenge stays open for
    // the code, should it arrive (the sender logged the failure). Otherwise nobody got a code:
    // the budgets are not spent (an SMS gateway outage must not use up a day).
    if (!(err instanceof DiscoveryError && err.details?.reason === DELIVERY_UNKNOWN)) {
      store.updateChallenge(id, 0, "exhausted");
      deps.throttle.notSent(csi, caller, ctx.clock());
      throw err;
    }
  }
  ctx.log.info(
    { csi: csiHash(csi.uri), msp: caller.mspId, action: req.action, challenge: id },
    "challenge sent",
  );
  return { challengeId: id, expiresAtMs, proofMethod, statement };
}

/** Checks the code and both signatures, then applies the challenge's action. */
export function completeChallenge(
  ctx: ClaimsContext,
  deps: ChallengeDeps,
  caller: EnrolledMsp,
  challengeId: string,
  code: string,
  userSig: Uint8Array,
  mspSig: Uint8Array,
): CompleteResult {
  const { store, policy } = ctx;
  const ch = store.challenge(challengeId);
  // Another MSP's challenge is reported like a missing one, so ids reveal nothing.
  if (!ch || ch.mspId !== caller.mspId) {
    throw new DiscoveryError("not_found", `no challenge "${clipped(challengeId, 64)}" is open for this MSP`);
  }
  if (ch.state === "used")
    throw new DiscoveryError("failed_precondition", "this challenge was already completed");
  if (ch.state === "exhausted") {
    throw new DiscoveryError(
      "failed_precondition",
      "this challenge is closed after too many wrong codes; start a new one",
    );
  }
  const now = ctx.clock();
  if (now > ch.expiresAtMs) {
    throw new DiscoveryError("failed_precondition", "the code has expired; start a new challenge");
  }
  // The range may have moved to another DP while the code was out (startChallenge checked it
  // then): a DP writes a CSI only while the registry delegates it here, so this refuses as any
  // other write does, before the code is checked and an attempt spent.
  ctx.requireDelegated(ch.csi);
  deps.throttle.beforeProof(ch.csi, caller.mspId, now);
  // A wrong code and a bad signature both spend an attempt of the challenge and count toward
  // the CSI's lock, across challenges.
  // A failed proof names the field at fault and the attempts left (ErrorInfo's metadata).
  const failedProof = (what: string, field: string) => {
    const attempts = ch.attempts + 1;
    const left = policy.maxAttempts - attempts;
    store.updateChallenge(ch.id, attempts, left <= 0 ? "exhausted" : "open");
    deps.throttle.failed(ch.csi, caller.mspId, now);
    ctx.log.info({ challenge: ch.id, msp: caller.mspId, attempts }, "failed proof");
    const message =
      left <= 0 ? `${what}; no attempts left, start a new challenge` : `${what}; ${left} attempt(s) left`;
    return invalidArgument(message, field, "PROOF_FAILED", { attempts_left: String(Math.max(0, left)) });
  };
  if (!timingSafeEqual(hashCode(deps.codeSecret, ch.id, code), ch.codeHash)) {
    throw failedProof("wrong code", "code");
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
    throw failedProof(
      "user_signature does not verify with the user's key over the statement",
      "user_signature",
    );
  }
  if (!verifyWith(caller.signingPublicKey, ctxMsp, mspSig, [ch.statement], { registryKey: true })) {
    throw failedProof("msp_signature does not verify with the MSP's enrolled signing key", "msp_signature");
  }
  return ctx.tx(() => {
    store.updateChallenge(ch.id, ch.attempts, "used");
    if (claim) return applyClaim(ctx, caller, ch, userSig, mspSig);
    const s = decodeActionStatement(ch.statement);
    if (s.action === "invalidate") return applyInvalidate(ctx, caller, s);
    const evidence = {
      statement: ch.statement,
      userSignature: userSig,
      mspSignature: mspSig,
      mspKey: caller.signingPublicKey,
    };
    return applyOptOut(ctx, caller, s, evidence);
  });
}
