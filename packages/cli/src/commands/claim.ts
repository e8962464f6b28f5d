// `mimi claim ...`: what an MSP does at a DP's ClaimService (GLADOS 8.2, 8.3): claims with a
// proof of possession, invalidations and opt-outs, contesting conflicts, watching notices,
// and bulk registration (claim-bulk.ts). The protocol steps are core's MSP client; this file
// is flags and output.
import { contestConflict, type OpenChallenge, startAction, startClaim } from "@mimi/client";
import { pb, ssiProblem, tagsProblem } from "@mimi/core";
import type { Command } from "commander";
import { collect, count, csiArg, localOutboxes, UsageError } from "../args.js";
import { addMspOptions, asTls, timeoutOf } from "../connect.js";
import { about } from "../help.js";
import { signingKeyArg } from "../keys.js";
import { addressOf, newestFor } from "../outbox.js";
import { isoTime, json, jsonText, mappingJson, note, out } from "../output.js";
import { formatDuration } from "../progress.js";
import {
  addProofOptions,
  channelOf,
  conflictView,
  type DpFlags,
  dpAddr,
  type ProofFlags,
  printConflict,
  proofSetup,
  prove,
} from "../proof.js";
import { addBulkCommand } from "./claim-bulk.js";

/** `claim notices` without --follow ends after this long without a notice. */
const NOTICES_QUIET_MS = 1_000;

/** Adds `mimi claim` and its subcommands to `program`. */
export function addClaimCommands(program: Command): void {
  const claim = program.command("claim").description(about("claim"));

  // ---- run: a whole claim ---------------------------------------------------------------
  addProofOptions(
    claim
      .command("run")
      .description(
        "claim a CSI for a user: the DP sends a code to the CSI, the user gives it back, the user and the MSP sign the mapping",
      )
      .argument("<csi>", 'e.g. "tel:+447700900123" or "mailto:alice@example.org"')
      .requiredOption("--ssi <ssi>", "the user's identifier at the MSP")
      .option("--tag <tag>", 'a preference tag such as "Business" (repeatable, at most 8)', collect)
      .option("--default", "ask for this mapping to be the CSI's default")
      .option("--replace", "replace other holders' mappings of the CSI instead of standing beside them"),
  ).action(
    async (
      csiText: string,
      o: ProofFlags & { ssi: string; tag?: string[]; default?: boolean; replace?: boolean },
    ) => {
      const csi = csiArg(csiText);
      const tags = o.tag ?? [];
      const why = ssiProblem(o.ssi) ?? tagsProblem(tags);
      if (why) throw new UsageError(why);
      const s = proofSetup(o);
      const { ch, api } = channelOf(o);
      try {
        const { ch: challenge, res } = await prove(
          api,
          csi,
          s,
          () =>
            startClaim(
              api,
              s.party,
              { csi, ssi: o.ssi, tags, makeDefault: o.default, replaceExisting: o.replace },
              s.userKey,
              { timeoutMs: s.timeoutMs },
            ),
          o.json === true,
        );
        const m = res.mapping;
        const mapping = m && mappingJson(m);
        const existing = res.existingMsps.map((x) => ({ id: x.id, name: x.name }));
        if (o.json) {
          json({
            csi,
            challengeId: challenge.challengeId,
            mapping: mapping ?? null,
            hasPrecedence: res.hasPrecedence,
            existingMsps: existing,
            conflict: conflictView(res),
            removed: res.removed,
          });
          return;
        }
        if (mapping) {
          const tags = [...(mapping.default ? ["Default"] : []), ...mapping.tags];
          out(
            `stored ${csi} -> ${mapping.msp}  ${mapping.ssi}${tags.length ? `  [${tags.join(", ")}]` : ""}`,
          );
          out(`  proof ${mapping.proofMethod}, created ${mapping.createdAt}, expires ${mapping.expiresAt}`);
        } else {
          out(`${csi}: the claim was accepted; the mapping is stored once the conflict below is settled`);
        }
        out(
          `  precedence: ${res.hasPrecedence ? "yes, no other holder's mapping outranks it" : "no, an older mapping of another holder keeps precedence"}`,
        );
        if (existing.length > 0)
          out(`  other holders' mappings stand at: ${existing.map((x) => `${x.id} (${x.name})`).join(", ")}`);
        if (res.removed > 0) out(`  removed ${res.removed} mapping(s) of other holders`);
        printConflict(res, "other holders' mappings are replaced");
      } finally {
        ch.close();
      }
    },
  );

  // ---- code: read the local "SMS" ---------------------------------------------------------
  claim
    .command("code")
    .description(
      "print the newest code a local DP wrote to its outbox for a CSI (the user's SMS or email in the local network)",
    )
    .argument("<csi>", 'e.g. "tel:+447700900123"')
    .option(
      "--outbox <dir>",
      "outbox folder (default: every local DP's, <pki>/../dp-eu/outbox and dp-us/outbox)",
    )
    .option("--pki <dir>", "the local network's PKI folder; the DP outboxes are next to it", "data/pki")
    .addHelpText("after", "\nThe code alone goes to stdout, so `code=$(mimi claim code tel:+44...)` works.")
    .action((csiText: string, o: { outbox?: string; pki: string }) => {
      const csi = csiArg(csiText);
      const dirs = o.outbox !== undefined ? [o.outbox] : localOutboxes(o.pki);
      const m = newestFor(dirs, addressOf(csi));
      if (!m) throw new Error(`no code for ${addressOf(csi)} in ${dirs.join(" or ")}`);
      const left = m.expiresAtMs - Date.now();
      out(m.code);
      note(
        `(${m.purpose}, challenge ${m.challengeId}, sent ${isoTime(m.sentAtMs)} by DP ${m.dpId}, ` +
          `${left > 0 ? `expires in ${formatDuration(left / 1000)}` : "EXPIRED"})`,
      );
    });

  // ---- invalidate / opt-out ----------------------------------------------------------------
  /** Proves possession and completes an invalidation or opt-out, printing the outcome. */
  const runAction = async (
    o: ProofFlags,
    csi: string,
    label: "invalidate" | "opt-out",
    action: Parameters<typeof startAction>[3],
  ) => {
    const s = proofSetup(o);
    const { ch, api } = channelOf(o);
    try {
      const { ch: challenge, res } = await prove(
        api,
        csi,
        s,
        () => startAction(api, s.party, csi, action, s.userKey, { timeoutMs: s.timeoutMs }),
        o.json === true,
      );
      printAction(csi, label, challenge, res, o.json === true);
    } finally {
      ch.close();
    }
  };
  addProofOptions(
    claim
      .command("invalidate")
      .description(
        "remove mappings of a CSI, with a proof of possession: at once for the caller's and this user key's, through a conflict for others",
      )
      .argument("<csi>", 'e.g. "tel:+447700900123"')
      .option("--msp <msp-id>", "only mappings at this MSP (default: every MSP)")
      .option("--ssi <ssi>", "only this user at --msp"),
  ).action(async (csiText: string, o: ProofFlags & { msp?: string; ssi?: string }) => {
    const csi = csiArg(csiText);
    if (o.ssi !== undefined && o.msp === undefined) throw new UsageError("--ssi needs --msp");
    if (o.msp !== undefined && (o.msp === "" || o.msp.length > 128))
      throw new UsageError("--msp must be an MSP id of 1 to 128 characters");
    await runAction(o, csi, "invalidate", { invalidate: { mspId: o.msp ?? "", ssi: o.ssi ?? "" } });
  });
  addProofOptions(
    claim
      .command("opt-out")
      .description(
        "make a CSI undiscoverable, with a proof of possession: its mappings go and lookups answer OPTED_OUT until the holder claims it again",
      )
      .argument("<csi>", 'e.g. "tel:+447700900123"'),
  ).action(async (csiText: string, o: ProofFlags) => {
    await runAction(o, csiArg(csiText), "opt-out", { optOut: true });
  });

  // ---- contest ----------------------------------------------------------------------------
  addMspOptions(
    dpAddr(
      claim
        .command("contest")
        .description(
          "contest a conflict about a mapping of one of your users before its deadline, with the holder's fresh consent: the older mapping keeps its precedence",
        )
        .argument("<conflict-id>", "from a CONFLICT_OPENED notice (mimi claim notices)")
        .requiredOption("--csi <csi>", "the CSI of the notice")
        .requiredOption("--ssi <ssi>", "your user whose mapping the notice is about")
        .option(
          "--msp-id <id>",
          "your MSP's registry id (default for the demo MSPs: msp-NAME is NAME.example)",
        )
        .requiredOption(
          "--signer-key <pem>",
          "the holder's Ed25519 key (the one in the mapping's record), or your MSP's signing key for a bulk mapping",
        ),
    ),
  ).action(
    async (
      conflictId: string,
      o: DpFlags & { csi: string; ssi: string; mspId?: string; signerKey: string },
    ) => {
      if (conflictId === "" || conflictId.length > 128)
        throw new UsageError("<conflict-id> must be 1 to 128 characters");
      const csi = csiArg(o.csi);
      const mspId = o.mspId ?? (o.as.startsWith("msp-") ? `${o.as.slice(4)}.example` : undefined);
      if (!mspId)
        throw new UsageError(`give --msp-id, the registry id of the MSP that --as ${o.as} acts for`);
      const signer = signingKeyArg("--signer-key", o.signerKey);
      const timeoutMs = timeoutOf(asTls(o));
      const { ch, api } = channelOf(o);
      try {
        await contestConflict(api, { conflictId, csi, mspId, ssi: o.ssi }, signer, timeoutMs);
        out(
          `conflict ${conflictId} contested: the older mapping keeps its precedence and the claim is not kept`,
        );
      } finally {
        ch.close();
      }
    },
  );

  // ---- notices ----------------------------------------------------------------------------
  addMspOptions(
    dpAddr(
      claim
        .command("notices")
        .description(
          `print notices about your users' mappings at a DP (conflicts, precedence, removals); without --follow, stop after ${NOTICES_QUIET_MS / 1000} s without a new one`,
        )
        .option("--since <seq>", "only notices after this sequence number", "0")
        .option(
          "--log-id <id>",
          "the log the --since number belongs to (printed with it); a DP whose store was restored has another log and then sends everything",
        )
        .option("--follow", "keep watching until Ctrl-C")
        .option("--json", "one JSON object per line"),
    ),
  ).action(async (o: DpFlags & { since: string; logId?: string; follow?: boolean; json?: boolean }) => {
    let last = count("--since", o.since, 0, Number.MAX_SAFE_INTEGER);
    let logId = o.logId ?? "";
    const timeoutMs = timeoutOf(asTls(o));
    const { ch, api } = channelOf(o);
    const stop = new AbortController();
    let quiet: NodeJS.Timeout | undefined;
    const rearm = () => {
      if (o.follow) return;
      clearTimeout(quiet);
      quiet = setTimeout(() => stop.abort(), NOTICES_QUIET_MS);
    };
    const onInterrupt = () => stop.abort();
    process.once("SIGINT", onInterrupt);
    let printed = 0;
    try {
      // A health check first, so an unreachable DP is an error within --timeout and never
      // looks like a quiet second without notices.
      await ch.client(pb.Health).check({ service: "" }, { timeoutMs });
      rearm();
      for await (const r of api.watchNotices({ sinceSeq: BigInt(last), logId }, { signal: stop.signal })) {
        const n = r.notice;
        if (!n) continue;
        printNotice(n, o.json === true);
        printed++;
        last = Number(n.seq);
        logId = n.logId;
        rearm();
      }
      if (o.follow) throw new Error(`the DP ended the stream; resume with --since ${last} --log-id ${logId}`);
    } catch (err) {
      if (!stop.signal.aborted) throw err;
    } finally {
      clearTimeout(quiet);
      process.off("SIGINT", onInterrupt);
      ch.close();
    }
    note(
      printed === 0
        ? `no notices after seq ${last}`
        : `${printed} notice(s); next time use --since ${last} --log-id ${logId} to see only newer ones`,
    );
  });

  addBulkCommand(claim);
}

function printAction(
  csi: string,
  action: "invalidate" | "opt-out",
  challenge: OpenChallenge,
  res: pb.CompleteChallengeResponse,
  asJson: boolean,
): void {
  if (asJson) {
    json({
      csi,
      action,
      challengeId: challenge.challengeId,
      removed: res.removed,
      conflict: conflictView(res),
    });
    return;
  }
  out(
    action === "opt-out"
      ? `${csi} opted out: removed ${res.removed} mapping(s); lookups now answer OPTED_OUT`
      : `${csi}: removed ${res.removed} mapping(s)`,
  );
  printConflict(res, "mappings of other holders go");
}

function printNotice(n: pb.Notice, asJson: boolean): void {
  const kind = pb.NoticeKind[n.kind] ?? `KIND_${n.kind}`;
  if (asJson) {
    out(
      jsonText({
        seq: n.seq,
        at: isoTime(n.atMs),
        kind,
        csi: n.csi,
        ssi: n.ssi,
        conflictId: n.conflictId,
        contestDeadline: n.conflictId ? isoTime(n.contestDeadlineMs) : "",
        reason: n.reason,
      }),
    );
    return;
  }
  const conflict = n.conflictId
    ? `  conflict ${n.conflictId}${n.contestDeadlineMs > 0n ? ` until ${isoTime(n.contestDeadlineMs)}` : ""}`
    : "";
  out(
    `${String(n.seq).padStart(6)}  ${isoTime(n.atMs)}  ${kind.padEnd(15)}  ${n.csi}  ${n.ssi}${conflict}${n.reason ? `  (${n.reason})` : ""}`,
  );
}
