// `mimi claim ...`: what an MSP does at a DP's ClaimService (GLADOS 8.2, 8.3): claims with a
// proof of possession, invalidations and opt-outs, contesting conflicts, watching notices,
// and bulk registration. The protocol steps are core's msp.ts; this file is flags and output.

import { readFileSync } from "node:fs";
import { basename, join } from "node:path";
import { createInterface } from "node:readline";
import type { Command } from "commander";
import { devSigningKeyPaths } from "../dev-pki.js";
import * as pb from "../gen/index.js";
import {
  type BulkProgress,
  bulkRecord,
  bulkRegister,
  type ClaimClient,
  completeChallenge,
  type OpenChallenge,
  startAction,
  startClaim,
} from "../msp.js";
import { ssiProblem, tagsProblem } from "../record.js";
import type { SigningKey } from "../signing.js";
import { collect, count, csiArg, Interrupted, localDp, localOutboxes, mspIdOf, UsageError } from "./args.js";
import { addMspOptions, asTls, connect, LOCAL_PORTS, local, type MspFlags, timeoutOf } from "./connect.js";
import { BulkFile } from "./jsonl.js";
import { ensureSigningKey, signingKeyArg } from "./keys.js";
import { addressOf, codeFor, newestFor } from "./outbox.js";
import { isoTime, json, jsonText, mappingJson, note, out } from "./output.js";
import { createProgressReporter, formatDuration } from "./progress.js";

/** How long `claim run` waits for a code to appear in an outbox, and how often it looks. */
const OUTBOX_WAIT_MS = 30_000;
const OUTBOX_POLL_MS = 200;
/** `claim notices` without --follow ends after this long without a notice. */
const NOTICES_QUIET_MS = 1_000;
const DAY_MS = 86_400_000;
const DEMO_USER_KEY = "demo-user-signing.pem";

type DpFlags = MspFlags & { dp: string };
type ProofFlags = DpFlags & {
  code?: string;
  outbox?: string;
  prompt?: boolean;
  userKey?: string;
  mspKey?: string;
  json?: boolean;
};

const dpAddr = (c: Command) =>
  c.option("--dp <host:port>", "the DP's address (ClaimService)", local(LOCAL_PORTS.eu));

const channelOf = (o: DpFlags) => {
  const ch = connect(o.dp, asTls(o));
  return { ch, api: ch.client(pb.ClaimService) as ClaimClient };
};

const PROOF_HELP = `
How the code reaches the command (one of):
  --code <code>    the user read it and it is given here
  --prompt         ask for it on stdin (the question goes to stderr)
  (default)        wait up to ${OUTBOX_WAIT_MS / 1000} s for the DP to write it to its outbox: --outbox <dir>,
                   or for a local DP (--dp on port ${LOCAL_PORTS.eu} or ${LOCAL_PORTS.us}) <pki>/../dp-eu/outbox or dp-us/outbox

Keys: the user signs with --user-key (default <pki>/${DEMO_USER_KEY}, created with mode
0600 when absent); the MSP signs with --msp-key (default <pki>/<--as>-signing.pem).`;

/** Flags of every command that proves possession of a CSI. */
function addProofOptions(cmd: Command): Command {
  return addMspOptions(
    dpAddr(cmd)
      .option("--code <code>", "the code the user received")
      .option("--outbox <dir>", "wait for the code in this DP outbox folder")
      .option("--prompt", "ask for the code on stdin")
      .option(
        "--user-key <pem>",
        `the user's Ed25519 key (default <pki>/${DEMO_USER_KEY}, created when absent)`,
      )
      .option("--msp-key <pem>", "the MSP's Ed25519 signing key (default <pki>/<--as>-signing.pem)")
      .option("--json", "print the result as JSON"),
  ).addHelpText("after", PROOF_HELP);
}

type CodeSource = { kind: "code"; code: string } | { kind: "prompt" } | { kind: "outbox"; dir: string };

interface ProofSetup {
  source: CodeSource;
  userKey: SigningKey;
  mspKey: SigningKey;
  timeoutMs: number;
}

/** Checks the proof flags and loads the keys, before anything is sent. */
function proofSetup(o: ProofFlags): ProofSetup {
  const given = [o.code !== undefined, o.outbox !== undefined, o.prompt === true].filter(Boolean).length;
  if (given > 1) throw new UsageError("give at most one of --code, --outbox and --prompt");
  let source: CodeSource;
  if (o.code !== undefined) {
    if (!/^[A-Za-z0-9]{1,32}$/.test(o.code)) throw new UsageError("--code must be 1 to 32 letters or digits");
    source = { kind: "code", code: o.code };
  } else if (o.prompt) {
    source = { kind: "prompt" };
  } else {
    const dir = o.outbox ?? localDp(o.dp, o.pki)?.outboxDir;
    if (!dir) {
      throw new UsageError(
        `${o.dp} is not a local DP, so its outbox is unknown: give --code, --prompt or --outbox`,
      );
    }
    source = { kind: "outbox", dir };
  }
  const timeoutMs = timeoutOf(asTls(o));
  let userKey: SigningKey;
  if (o.userKey !== undefined) {
    userKey = signingKeyArg("--user-key", o.userKey);
  } else {
    const file = join(o.pki, DEMO_USER_KEY);
    const made = ensureSigningKey(file);
    if (made.created) note(`created the demo user's signing key ${file}`);
    userKey = made.key;
  }
  const mspKey = signingKeyArg(
    "--msp-key",
    o.mspKey ?? devSigningKeyPaths(o.pki, o.as).keyFile,
    "the local network creates it on start (npm start); or pass --msp-key",
  );
  return { source, userKey, mspKey, timeoutMs };
}

/** Opens the challenge, gets the code, and completes with the user's and the MSP's signatures. */
async function prove(
  api: ClaimClient,
  csi: string,
  s: ProofSetup,
  open: () => Promise<OpenChallenge>,
  quietOutput: boolean,
) {
  const ch = await open();
  const say = quietOutput ? note : out;
  say(
    `challenge ${ch.challengeId}: ${ch.proofMethod} code sent to ${addressOf(csi)}, ` +
      `expires ${isoTime(ch.expiresAtMs)} (in ${formatDuration((ch.expiresAtMs - Date.now()) / 1000)})`,
  );
  const code = await obtainCode(s.source, ch, csi);
  const res = await completeChallenge(api, ch, code, s.userKey, s.mspKey, s.timeoutMs);
  return { ch, res };
}

async function obtainCode(source: CodeSource, ch: OpenChallenge, csi: string): Promise<string> {
  switch (source.kind) {
    case "code":
      return source.code;
    case "prompt": {
      // The question only makes sense to a person; a piped code is read without one.
      if (process.stdin.isTTY) process.stderr.write(`code sent to ${addressOf(csi)}: `);
      const lines = createInterface({ input: process.stdin, terminal: false });
      try {
        for await (const line of lines) if (line.trim() !== "") return line.trim();
      } finally {
        lines.close();
      }
      throw new Error("no code was given on stdin; the challenge is left to expire");
    }
    case "outbox": {
      const deadline = Math.min(Date.now() + OUTBOX_WAIT_MS, ch.expiresAtMs);
      note(`waiting for the code in ${source.dir} ...`);
      for (;;) {
        const m = codeFor(source.dir, ch.challengeId);
        if (m) return m.code;
        if (Date.now() >= deadline) {
          throw new Error(
            `no code for challenge ${ch.challengeId} appeared in ${source.dir} within ${OUTBOX_WAIT_MS / 1000} s; ` +
              "if the DP sends codes by SMS or email, give --code or --prompt",
          );
        }
        await new Promise((r) => setTimeout(r, OUTBOX_POLL_MS));
      }
    }
  }
}

function conflictView(res: pb.CompleteChallengeResponse) {
  return res.conflictId
    ? { id: res.conflictId, contestDeadline: isoTime(res.contestDeadlineMs) }
    : (null as null | { id: string; contestDeadline: string });
}

function printConflict(res: pb.CompleteChallengeResponse, what: string): void {
  if (!res.conflictId) return;
  out(
    `  conflict ${res.conflictId}: ${what} at ${isoTime(res.contestDeadlineMs)} unless their MSPs contest it before then`,
  );
}

/** Adds `mimi claim` and its subcommands to `program`. */
export function addClaimCommands(program: Command): void {
  const claim = program
    .command("claim")
    .description(
      "act as an MSP at a DP: claim a CSI for a user with a proof of possession, invalidate, opt out, contest, watch notices, register in bulk",
    );

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
              { csi, ssi: o.ssi, tags, makeDefault: o.default, replaceExisting: o.replace },
              s.userKey,
              s.timeoutMs,
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
    action: Parameters<typeof startAction>[2],
  ) => {
    const s = proofSetup(o);
    const { ch, api } = channelOf(o);
    try {
      const { ch: challenge, res } = await prove(
        api,
        csi,
        s,
        () => startAction(api, csi, action, s.userKey, s.timeoutMs),
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
          "contest a conflict about a mapping of one of your users before its deadline: the older mapping keeps its precedence",
        )
        .argument("<conflict-id>", "from a CONFLICT_OPENED notice (mimi claim notices)"),
    ),
  ).action(async (conflictId: string, o: DpFlags) => {
    if (conflictId === "" || conflictId.length > 128)
      throw new UsageError("<conflict-id> must be 1 to 128 characters");
    const timeoutMs = timeoutOf(asTls(o));
    const { ch, api } = channelOf(o);
    try {
      await api.contestConflict({ conflictId }, { timeoutMs });
      out(`conflict ${conflictId} contested: the older mapping keeps its precedence and is not replaced`);
    } finally {
      ch.close();
    }
  });

  // ---- notices ----------------------------------------------------------------------------
  addMspOptions(
    dpAddr(
      claim
        .command("notices")
        .description(
          `print notices about your users' mappings at a DP (conflicts, precedence, removals); without --follow, stop after ${NOTICES_QUIET_MS / 1000} s without a new one`,
        )
        .option("--since <seq>", "only notices after this sequence number", "0")
        .option("--follow", "keep watching until Ctrl-C")
        .option("--json", "one JSON object per line"),
    ),
  ).action(async (o: DpFlags & { since: string; follow?: boolean; json?: boolean }) => {
    let last = count("--since", o.since, 0, Number.MAX_SAFE_INTEGER);
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
      for await (const r of api.watchNotices({ sinceSeq: BigInt(last) }, { signal: stop.signal })) {
        const n = r.notice;
        if (!n) continue;
        printNotice(n, o.json === true);
        printed++;
        last = Number(n.seq);
        rearm();
      }
      if (o.follow) throw new Error(`the DP ended the stream; resume with --since ${last}`);
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
        : `${printed} notice(s); next time use --since ${last} to see only newer ones`,
    );
  });

  // ---- bulk -------------------------------------------------------------------------------
  addMspOptions(
    dpAddr(
      claim
        .command("bulk")
        .description(
          "register the MSP's users' mappings in bulk, without a proof by each holder (the DP must enrol the MSP with --bulk); resumable",
        )
        .argument("<file>", 'JSON Lines, one mapping a line: {"csi","ssi","tags"?,"default"?,"createdAtMs"?}')
        .option(
          "--msp <msp-id>",
          "the MSP the records are for (default: msp-<name> in --as is <name>.example)",
        )
        .option("--dp-id <id>", "the DP named in the records (default: eu or us for a local DP's port)")
        .option(
          "--session <id>",
          "bulk session id; re-running a session resumes it (default: <file name>-<size>)",
        )
        .option("--batch <n>", "records per batch (one DP transaction)", "2000")
        .option("--expires-days <n>", "records expire this many days from now", "300")
        .option("--msp-key <pem>", "the MSP's Ed25519 signing key (default <pki>/<--as>-signing.pem)")
        .option("--json", "print the final counts as JSON"),
    ),
  )
    .addHelpText(
      "after",
      `
The file is read into memory once (its size plus about 24 bytes a line: fine for a few
million lines) and every line is checked before anything is sent; records are signed a
batch at a time as they are sent. "createdAtMs" defaults to when the run starts.
Progress goes to stderr. Ctrl-C stops at once (a batch the DP already has may still
commit, as one transaction); run the same command again to resume where the DP's committed
count stands.`,
    )
    .action(
      async (
        file: string,
        o: DpFlags & {
          msp?: string;
          dpId?: string;
          session?: string;
          batch: string;
          expiresDays: string;
          mspKey?: string;
          json?: boolean;
        },
      ) => {
        const batchSize = count("--batch", o.batch, 1, 10_000);
        const days = count("--expires-days", o.expiresDays, 1, 3_650);
        const mspId = o.msp ?? mspIdOf(o.as);
        if (!mspId) throw new UsageError(`cannot tell the MSP id from --as ${o.as}; give --msp`);
        const dpId = o.dpId ?? localDp(o.dp, o.pki)?.dpId;
        if (!dpId) throw new UsageError(`${o.dp} is not a local DP, so its id is unknown; give --dp-id`);
        if (o.session !== undefined && (o.session === "" || o.session.length > 128))
          throw new UsageError("--session must be 1 to 128 characters");
        timeoutOf(asTls(o));
        const mspKey = signingKeyArg(
          "--msp-key",
          o.mspKey ?? devSigningKeyPaths(o.pki, o.as).keyFile,
          "the local network creates it on start (npm start); or pass --msp-key",
        );
        let bytes: Buffer;
        try {
          bytes = readFileSync(file);
        } catch (err) {
          throw new UsageError(`cannot read ${file}: ${(err as Error).message}`);
        }
        const records = BulkFile.parse(file, bytes);
        if (records.count === 0) throw new UsageError(`${file} holds no records`);
        const session = o.session ?? `${basename(file).slice(0, 100)}-${bytes.length}`;
        note(`${records.count} records in ${file}; session "${session}" for ${mspId} at DP ${dpId}`);

        const startedMs = Date.now();
        const expiresAtMs = startedMs + days * DAY_MS;
        const recordsFrom = (first: number, n: number) => {
          const batch = [];
          for (let i = first; i < first + n; i++) {
            const r = records.record(i);
            batch.push(
              bulkRecord(
                {
                  csi: r.csi,
                  mspId,
                  ssi: r.ssi,
                  defaultRequested: r.isDefault,
                  tags: r.tags,
                  createdAtMs: r.createdAtMs ?? startedMs,
                  dpId,
                  expiresAtMs,
                  proofId: session,
                },
                mspKey,
              ),
            );
          }
          return batch;
        };

        const progress = createProgressReporter({
          total: records.count,
          tty: process.stderr.isTTY === true,
          write: (s) => process.stderr.write(s),
          now: Date.now,
        });
        let latest: BulkProgress | undefined;
        const stop = new AbortController();
        const onInterrupt = () => stop.abort();
        process.once("SIGINT", onInterrupt);
        const { ch, api } = channelOf(o);
        let result: BulkProgress;
        try {
          result = await bulkRegister(api, {
            sessionId: session,
            total: records.count,
            recordsFrom,
            batchSize,
            signal: stop.signal,
            onProgress: (p) => {
              latest = p;
              progress.update(p.committed, p.resumedAt);
            },
          });
        } catch (err) {
          progress.finish();
          const where = latest ? `at least ${latest.committed}/${records.count} records are committed` : "";
          if (stop.signal.aborted) {
            note(`stopped${where ? `: ${where}` : ""}; run the same command again to resume`);
            throw new Interrupted("interrupted");
          }
          const line = /record (\d+):/.exec((err as Error).message);
          const lineNo = line ? records.lineOf(Number(line[1])) : undefined;
          const at = lineNo !== undefined ? ` (record ${line?.[1]} is ${file} line ${lineNo})` : "";
          const resume = where ? `; ${where}, run the same command again to resume` : "";
          throw new Error(`${(err as Error).message}${at}${resume}`);
        } finally {
          process.off("SIGINT", onInterrupt);
          ch.close();
        }
        progress.finish();
        const elapsedMs = Date.now() - startedMs;
        const sent = result.committed - result.resumedAt;
        const rate = elapsedMs > 0 ? Math.round((sent * 1000) / elapsedMs) : 0;
        if (o.json) {
          json({ session, total: records.count, ...result, elapsedMs, recordsPerSecond: rate });
          return;
        }
        out(
          `committed ${result.committed}/${records.count} records of session "${session}"` +
            `${result.resumedAt > 0 ? ` (resumed at ${result.resumedAt})` : ""}: ` +
            `stored ${result.stored}, unchanged ${result.unchanged}, opted out ${result.optedOut}; ` +
            `${sent} in ${formatDuration(elapsedMs / 1000)} (${rate}/s)`,
        );
      },
    );
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
