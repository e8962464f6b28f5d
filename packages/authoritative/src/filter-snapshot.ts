// The CSI filter kept across a clean restart: written when the DP stops, read (and removed) when
// it starts, so resolvers resume their filter streams from where they were instead of taking a
// new version whole, and a large DP serves its filter at once instead of after a build of
// minutes. The file holds the filter's key, so with it anyone could test numbers against the
// filter: it lives in the data folder with the store, mode 0600.
//
// Only a clean stop writes it, and a start removes it before using it: positions are a promise
// to the resolvers that followed that version, and a process that dies after its start could
// have handed out positions a later replay would number differently. A crash therefore costs a
// new version, never a gap.
import { createHash } from "node:crypto";
import { readFileSync, rmSync } from "node:fs";
import {
  FILTER_KEY_BYTES,
  FILTER_VERSION_BYTES,
  type FilterShape,
  MAX_FILTER_BITS,
  MAX_FILTER_HASHES,
  replacePrivateFile,
} from "@mimi/core";

/** One version of the filter as it stood when the DP stopped. */
export interface FilterSnapshot {
  /** The store's change log (a restored backup has another) and the last event applied. */
  readonly logId: string;
  readonly seq: number;
  readonly version: Uint8Array;
  readonly key: Uint8Array;
  readonly shape: FilterShape;
  readonly sizedFor: number;
  readonly csis: number;
  readonly targetFpr: number;
  /** Additions handed out: resolvers hold positions up to this one. */
  readonly position: number;
  readonly ones: number;
  readonly removed: number;
  readonly bytes: Uint8Array;
}

const MAGIC = Buffer.from("MIMIFLT1");
const DIGEST_BYTES = 32;
/** The header is a few hundred bytes of JSON; anything longer is not ours. */
const MAX_HEADER_BYTES = 4_096;

interface Header {
  logId: string;
  seq: number;
  version: string;
  key: string;
  bits: number;
  hashes: number;
  sizedFor: number;
  csis: number;
  targetFpr: number;
  position: number;
  ones: number;
  removed: number;
}

/** Writes `s` to `path` (through a temporary file, synced, then renamed; mode 0600). */
export function saveFilterSnapshot(path: string, s: FilterSnapshot): void {
  const header: Header = {
    logId: s.logId,
    seq: s.seq,
    version: Buffer.from(s.version).toString("hex"),
    key: Buffer.from(s.key).toString("hex"),
    bits: s.shape.bits,
    hashes: s.shape.hashes,
    sizedFor: s.sizedFor,
    csis: s.csis,
    targetFpr: s.targetFpr,
    position: s.position,
    ones: s.ones,
    removed: s.removed,
  };
  const json = Buffer.from(JSON.stringify(header));
  const length = Buffer.alloc(4);
  length.writeUInt32BE(json.length);
  const parts = [MAGIC, length, json, s.bytes];
  const digest = createHash("sha256");
  for (const p of parts) digest.update(p);
  parts.push(digest.digest());
  replacePrivateFile(path, parts);
}

/**
 * Reads the snapshot at `path` and removes the file (see above): undefined when there is none,
 * a problem when it cannot be used (damaged, or not a snapshot of this format).
 */
export function takeFilterSnapshot(path: string): FilterSnapshot | { problem: string } | undefined {
  let file: Buffer;
  try {
    file = readFileSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    return { problem: `cannot read ${path}: ${(err as Error).message}` };
  } finally {
    rmSync(path, { force: true });
  }
  const damaged = (why: string) => ({ problem: `${path} is not a usable filter snapshot: ${why}` });
  if (file.length < MAGIC.length + 4 + DIGEST_BYTES || !file.subarray(0, MAGIC.length).equals(MAGIC))
    return damaged("unknown format");
  const body = file.subarray(0, file.length - DIGEST_BYTES);
  if (!createHash("sha256").update(body).digest().equals(file.subarray(body.length)))
    return damaged("its checksum does not match");
  const jsonLength = body.readUInt32BE(MAGIC.length);
  const start = MAGIC.length + 4;
  if (jsonLength > MAX_HEADER_BYTES || start + jsonLength > body.length)
    return damaged("header out of bounds");
  let h: Header;
  try {
    h = JSON.parse(body.subarray(start, start + jsonLength).toString("utf8")) as Header;
  } catch {
    return damaged("header is not JSON");
  }
  const counts = [h.seq, h.sizedFor, h.csis, h.position, h.ones, h.removed];
  if (
    typeof h.logId !== "string" ||
    !counts.every((n) => Number.isSafeInteger(n) && n >= 0) ||
    !(Number.isSafeInteger(h.bits) && h.bits > 0 && h.bits <= MAX_FILTER_BITS && h.bits % 64 === 0) ||
    !(Number.isInteger(h.hashes) && h.hashes >= 1 && h.hashes <= MAX_FILTER_HASHES) ||
    typeof h.targetFpr !== "number" ||
    typeof h.version !== "string" ||
    typeof h.key !== "string" ||
    h.version.length !== FILTER_VERSION_BYTES * 2 ||
    h.key.length !== FILTER_KEY_BYTES * 2
  )
    return damaged("header fields out of bounds");
  const bytes = body.subarray(start + jsonLength);
  if (bytes.length * 8 !== h.bits) return damaged("its bits do not match its size");
  return {
    logId: h.logId,
    seq: h.seq,
    version: new Uint8Array(Buffer.from(h.version, "hex")),
    key: new Uint8Array(Buffer.from(h.key, "hex")),
    shape: { bits: h.bits, hashes: h.hashes },
    sizedFor: h.sizedFor,
    csis: h.csis,
    targetFpr: h.targetFpr,
    position: h.position,
    ones: h.ones,
    removed: h.removed,
    bytes: new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.length),
  };
}
