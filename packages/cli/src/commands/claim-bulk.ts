// `mimi claim bulk`: a trusted MSP registers its users' mappings in bulk (GLADOS 8.3): the
// JSON Lines file is checked whole, records are signed a batch at a time as they are sent, a
// progress bar goes to stderr, and re-running the same command resumes the DP's session.
import { readFileSync } from "node:fs";
import { basename } from "node:path";
import { type BulkProgress, bulkRegister } from "@mimi/client";
import { bulkRecord } from "@mimi/core";
import { devSigningKeyPaths } from "@mimi/devnet/paths";
import type { Command } from "commander";
import { count, Interrupted, localDp, mspIdOf, UsageError } from "../args.js";
import { addMspOptions, asTls, timeoutOf } from "../connect.js";
import { BulkFile } from "../jsonl.js";
import { signingKeyArg } from "../keys.js";
import { json, note, out } from "../output.js";
import { createProgressReporter, formatDuration } from "../progress.js";
import { channelOf, type DpFlags, dpAddr } from "../proof.js";

const DAY_MS = 86_400_000;

/** Adds `claim bulk` to the `claim` command. */
export function addBulkCommand(claim: Command): void {
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
            `stored ${result.stored}, unchanged ${result.unchanged}, opted out ${result.optedOut}, ` +
            `over the DP's mapping caps ${result.overLimit}; ` +
            `${sent} in ${formatDuration(elapsedMs / 1000)} (${rate}/s)`,
        );
      },
    );
}
