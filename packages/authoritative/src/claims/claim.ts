// A completed claim (G2, R17, R18): the mapping is stored with the holder's, the MSP's and
// this DP's signatures; beside other holders' mappings it takes precedence at once only with a
// stricter proof, else it opens a conflict they may contest. A first mapping asks peer DPs
// to de-list older ones.
import { csiHash, DiscoveryError, decodeMappingRecord, type MappingRecord, parseCsi } from "@mimi/core";
import { type ChallengeRow, type EnrolledMsp, type MappingRow, mappingOfRow } from "../store/rows.js";
import type { ClaimsContext } from "./context.js";
import { existingMsps, openConflict, promote, removeRows, settleDefault } from "./effects.js";
import { type ClaimDecision, capBroken, decideClaim } from "./rules.js";
import type { CompleteResult } from "./types.js";

/**
 * Other DPs whose delegations also cover the CSI: a shorter E.164 prefix carved around this
 * DP's range. They may hold mappings from before the range moved here (R18).
 */
function peersOf(ctx: ClaimsContext, csi: string): string[] {
  const key = parseCsi(csi).key;
  // Only the DP the range is delegated to asks (peers accept no one else); a federated DP's
  // first mappings ask nobody, and federated DPs are never asked (they hold mappings of their own).
  if (ctx.registry.find(key)?.dpId !== ctx.dpId) return [];
  const ids = ctx.registry.covering(key).map((d) => d.dpId);
  return [...new Set(ids)].filter((id) => id !== ctx.dpId);
}

/**
 * Refuses a claim of `r` (decided as `d` beside the CSI's `rows`) that would leave its CSI with
 * more mappings than the caps allow, counting what the claim removes at once (a stricter proof
 * that replaces). RESOURCE_EXHAUSTED with the reason CSI_MAPPING_LIMIT or CSI_MSP_MAPPING_LIMIT.
 */
export function requireRoomFor(
  ctx: ClaimsContext,
  rows: readonly MappingRow[],
  d: ClaimDecision,
  r: MappingRecord,
  replaceExisting: boolean,
): void {
  const { maxMappingsPerCsi: perCsi, maxMappingsPerCsiPerMsp: perMsp } = ctx.policy;
  const staying =
    d.outcome === "stricter" && replaceExisting ? rows.filter((x) => !d.others.includes(x)) : rows;
  const broken = capBroken(staying, r, { perCsi, perMsp });
  if (!broken) return;
  const [reason, limit, message] =
    broken === "msp"
      ? [
          "CSI_MSP_MAPPING_LIMIT",
          perMsp,
          `this MSP already has ${perMsp} mappings for this CSI, the most one MSP may hold for one CSI; remove one (invalidate it) before adding another`,
        ]
      : [
          "CSI_MAPPING_LIMIT",
          perCsi,
          `this CSI already has ${perCsi} mappings, the most one CSI may hold; the holder can remove mappings no longer used (invalidate), or claim with replace_existing and a stricter proof than theirs`,
        ];
  throw new DiscoveryError("resource_exhausted", message, {
    details: {
      reason,
      quota: [
        {
          subject: broken === "msp" ? `msp:${r.mspId}` : "csi",
          description: `${limit} mappings per CSI${broken === "msp" ? " per MSP" : ""}`,
        },
      ],
      metadata: { limit: String(limit) },
    },
  });
}

/** Stores the claimed mapping and settles precedence, conflicts and the default; in the caller's transaction. */
export function applyClaim(
  ctx: ClaimsContext,
  caller: EnrolledMsp,
  ch: ChallengeRow,
  userSig: Uint8Array,
  mspSig: Uint8Array,
): CompleteResult {
  const { store } = ctx;
  const r = decodeMappingRecord(ch.statement);
  const params = JSON.parse(ch.params) as { replaceExisting: boolean; makeDefault: boolean };
  const now = ctx.clock();
  const rows = store.mappings(r.csi);
  const d = decideClaim(rows, r, ctx.policy.proofRanking, now);
  // Checked here, in the write's transaction, whatever was true when the code was sent.
  requireRoomFor(ctx, rows, d, r, params.replaceExisting);
  store.clearOptOut(r.csi);
  const row: MappingRow = {
    csi: r.csi,
    mspId: r.mspId,
    ssi: r.ssi,
    isDefault: d.isDefault,
    precedence: d.precedence,
    expiresAtMs: r.expiresAtMs,
    record: ch.statement,
    userSig,
    mspSig,
    dpSig: ctx.dpSign(d.isDefault, ch.statement),
    // A new claim that must wait for a conflict is not served meanwhile (see effects,
    // conflicts); a renewal of a mapping already served stays served.
    ...(d.outcome === "conflict" && (!d.same || d.same.withheld) ? { withheld: true } : {}),
  };
  store.putMapping(row);
  if (d.first) {
    // The first mapping for this CSI here: peers that may hold older ones are told (R18).
    for (const peerDp of peersOf(ctx, r.csi)) {
      ctx.queuePeerRequest({
        peerDp,
        csi: r.csi,
        mspId: r.mspId,
        ssi: r.ssi,
        createdAtMs: now,
        nextAtMs: now,
      });
    }
  }
  const result: CompleteResult = {
    hasPrecedence: true,
    existingMsps: existingMsps(ctx, d.others),
    conflictId: "",
    contestDeadlineMs: 0,
    removed: 0,
  };
  const mine = { mspId: r.mspId, ssi: r.ssi };
  if (d.outcome === "sole") {
    settleDefault(ctx, r.csi, params.makeDefault ? mine : undefined);
  } else if (d.outcome === "stricter") {
    // A stricter proof supersedes the older mappings at once (R17).
    promote(ctx, r.csi, mine);
    if (params.replaceExisting) {
      removeRows(ctx, d.others, "replaced by a claim with a stricter proof of possession");
      result.removed = d.others.length;
    } else {
      for (const x of d.others) {
        ctx.notify(x.mspId, {
          kind: "precedence_lost",
          csi: r.csi,
          ssi: x.ssi,
          reason: "a claim with a stricter proof of possession now takes precedence",
        });
      }
    }
    settleDefault(ctx, r.csi, params.makeDefault ? mine : undefined);
  } else {
    const c = openConflict(
      ctx,
      {
        csi: r.csi,
        claimantMsp: caller.mspId,
        newMsp: r.mspId,
        newSsi: r.ssi,
        replace: params.replaceExisting,
        makeDefault: params.makeDefault,
      },
      d.others,
    );
    settleDefault(ctx, r.csi);
    result.hasPrecedence = false;
    result.conflictId = c.id;
    result.contestDeadlineMs = c.deadlineMs;
  }
  const stored = store.mapping(r.csi, r.mspId, r.ssi) as MappingRow;
  result.mapping = mappingOfRow(stored);
  ctx.log.info(
    {
      csi: csiHash(r.csi),
      msp: caller.mspId,
      conflict: result.conflictId || undefined,
      others: d.others.length,
    },
    "mapping claimed",
  );
  return result;
}
