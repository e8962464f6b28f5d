// Reading the codes a DP writes to its outbox folder instead of sending an SMS or an email
// (local network and tests). The authoritative package writes the files; core cannot import
// it, so this reads the same layout: one `<sentAtMs>-<challengeId>.json` file per code,
// written to a dot-prefixed temporary name and renamed, so a file is whole or absent.
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { csiAddress } from "@mimi/core";

/** One code message as the DP wrote it. */
export interface OutboxMessage {
  readonly csiType: string;
  /** The bare address: "+447700900123" or "alice@example.org". */
  readonly to: string;
  readonly code: string;
  readonly expiresAtMs: number;
  readonly dpId: string;
  readonly purpose: string;
  readonly challengeId: string;
  readonly sentAtMs: number;
  readonly file: string;
}

const OUTBOX_NAME = /^\d+-[A-Za-z0-9_-]+\.json$/;

/**
 * Messages in `dir` (for address `to` when given), newest first. A missing folder holds
 * none; temporary files and files that are not whole code messages are skipped.
 */
export function readOutbox(dir: string, to?: string): OutboxMessage[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (err) {
    if ((err as { code?: unknown }).code === "ENOENT") return [];
    throw err;
  }
  const found: OutboxMessage[] = [];
  for (const name of names) {
    if (!OUTBOX_NAME.test(name)) continue;
    const file = join(dir, name);
    const m = parseMessage(file);
    if (m && (to === undefined || m.to === to)) found.push(m);
  }
  return found.sort((a, b) => b.sentAtMs - a.sentAtMs || b.file.localeCompare(a.file));
}

/** The code sent for `challengeId`, if it is in `dir` yet. */
export function codeFor(dir: string, challengeId: string): OutboxMessage | undefined {
  return readOutbox(dir).find((m) => m.challengeId === challengeId);
}

/** The newest message for address `to` across several outboxes. */
export function newestFor(dirs: readonly string[], to: string): OutboxMessage | undefined {
  return dirs
    .flatMap((d) => readOutbox(d, to).slice(0, 1))
    .sort((a, b) => b.sentAtMs - a.sentAtMs)
    .at(0);
}

/** The bare address a DP sends a CSI's code to (core's csiAddress of the canonical URI). */
export function addressOf(csiUri: string): string {
  return csiAddress(csiUri);
}

function parseMessage(file: string): OutboxMessage | undefined {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, "utf8"));
  } catch {
    // Removed between listing and reading, or not JSON: not a message to show.
    return undefined;
  }
  if (typeof raw !== "object" || raw === null) return undefined;
  const m = raw as Record<string, unknown>;
  const strings = ["csiType", "to", "code", "dpId", "purpose", "challengeId"] as const;
  if (strings.some((k) => typeof m[k] !== "string")) return undefined;
  if (typeof m.expiresAtMs !== "number" || typeof m.sentAtMs !== "number") return undefined;
  return {
    csiType: m.csiType as string,
    to: m.to as string,
    code: m.code as string,
    expiresAtMs: m.expiresAtMs,
    dpId: m.dpId as string,
    purpose: m.purpose as string,
    challengeId: m.challengeId as string,
    sentAtMs: m.sentAtMs,
    file,
  };
}
