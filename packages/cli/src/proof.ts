// What every claim command that proves possession shares: the flags, checking them and
// loading the keys before anything is sent, and getting the code (given, typed, or read from a
// local DP's outbox). The protocol steps are core's MSP client; this file is flags and I/O.
import { join } from "node:path";
import { createInterface } from "node:readline";
import { type ClaimClient, type ClaimParty, completeChallenge, type OpenChallenge } from "@mimi/client";
import { pb, type SigningKey } from "@mimi/core";
import { devSigningKeyPaths } from "@mimi/devnet/paths";
import type { Command } from "commander";
import { localDp, UsageError } from "./args.js";
import { addMspOptions, asTls, connect, LOCAL_PORTS, local, type MspFlags, timeoutOf } from "./connect.js";
import { ensureSigningKey, signingKeyArg } from "./keys.js";
import { addressOf, codeFor } from "./outbox.js";
import { isoTime, note, out } from "./output.js";
import { formatDuration } from "./progress.js";

/** How long `claim run` waits for a code to appear in an outbox, and how often it looks. */
const OUTBOX_WAIT_MS = 30_000;
const OUTBOX_POLL_MS = 200;
const DEMO_USER_KEY = "demo-user-signing.pem";

export type DpFlags = MspFlags & { dp: string };
export type ProofFlags = DpFlags & {
  mspId?: string;
  dpId?: string;
  code?: string;
  outbox?: string;
  prompt?: boolean;
  userKey?: string;
  mspKey?: string;
  json?: boolean;
};

export const dpAddr = (c: Command) =>
  c.option("--dp <host:port>", "the DP's address (ClaimService)", local(LOCAL_PORTS.eu));

export const channelOf = (o: DpFlags) => {
  const ch = connect(o.dp, asTls(o), "dp");
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
export function addProofOptions(cmd: Command): Command {
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
      .option(
        "--msp-id <id>",
        "the MSP's id in the registry, which every record it signs must name (default for the demo MSPs: msp-NAME is NAME.example)",
      )
      .option(
        "--dp-id <id>",
        "the DP's id in the registry, which every record it signs must name (default for a local DP: its id)",
      )
      .option("--json", "print the result as JSON"),
  ).addHelpText("after", PROOF_HELP);
}

type CodeSource = { kind: "code"; code: string } | { kind: "prompt" } | { kind: "outbox"; dir: string };

interface ProofSetup {
  /** Whom every statement must name; the MSP refuses to sign anything else. */
  party: ClaimParty;
  source: CodeSource;
  userKey: SigningKey;
  mspKey: SigningKey;
  timeoutMs: number;
}

/** Checks the proof flags and loads the keys, before anything is sent. */
export function proofSetup(o: ProofFlags): ProofSetup {
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
  const dpId = o.dpId ?? localDp(o.dp, o.pki)?.dpId;
  if (!dpId) throw new UsageError(`${o.dp} is not a local DP: give --dp-id, its id in the registry`);
  const mspId = o.mspId ?? (o.as.startsWith("msp-") ? `${o.as.slice(4)}.example` : undefined);
  if (!mspId) throw new UsageError(`give --msp-id, the registry id of the MSP that --as ${o.as} acts for`);
  return { party: { mspId, dpId }, source, userKey, mspKey, timeoutMs };
}

/** Opens the challenge, gets the code, and completes with the user's and the MSP's signatures. */
export async function prove(
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

export function conflictView(res: pb.CompleteChallengeResponse) {
  return res.conflictId
    ? { id: res.conflictId, contestDeadline: isoTime(res.contestDeadlineMs) }
    : (null as null | { id: string; contestDeadline: string });
}

export function printConflict(res: pb.CompleteChallengeResponse, what: string): void {
  if (!res.conflictId) return;
  out(
    `  conflict ${res.conflictId}: ${what} at ${isoTime(res.contestDeadlineMs)} unless their MSPs contest it before then`,
  );
}
