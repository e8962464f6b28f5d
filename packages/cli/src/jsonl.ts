// The JSON Lines files the CLI imports: MSP bulk registrations (`mimi claim bulk`) and
// provider feeds (`mimi auth feed`). Every line is checked before anything is sent, and
// errors name the file and line, so a bad line never leaves an import half done.
import { parseCsi, ssiProblem, tagsProblem } from "@mimi/core";
import { UsageError } from "./args.js";

/** One line of a bulk file. */
export interface BulkLine {
  /** Canonical URI. */
  readonly csi: string;
  readonly ssi: string;
  readonly tags: readonly string[];
  readonly isDefault: boolean;
  /** When the line gives one; the import uses its start time otherwise. */
  readonly createdAtMs: number | undefined;
}

/** One line of a provider feed. */
export interface FeedLine {
  readonly csi: string;
  readonly event: "disconnected" | "reassigned" | "ported";
  readonly effectiveAtMs: number;
  /** Empty unless the event is "ported" and the donor operator is an MSP. */
  readonly donorMspId: string;
}

const NEWLINE = 0x0a;

/**
 * A bulk file held as its bytes and the offsets of its non-blank lines, not as parsed
 * objects: a few million lines take the file's size plus 24 bytes a line. Records are
 * numbered from 0 in file order, which is what makes a session resumable.
 */
export class BulkFile {
  private constructor(
    private readonly name: string,
    private readonly bytes: Buffer,
    private readonly starts: Float64Array,
    private readonly ends: Float64Array,
    private readonly lineNumbers: Float64Array,
    /** Number of records (non-blank lines). */
    readonly count: number,
  ) {}

  /** Indexes `bytes` and checks every line; throws UsageError naming the first bad line. */
  static parse(name: string, bytes: Buffer): BulkFile {
    let lines = 1;
    for (let at = bytes.indexOf(NEWLINE); at >= 0; at = bytes.indexOf(NEWLINE, at + 1)) lines++;
    const starts = new Float64Array(lines);
    const ends = new Float64Array(lines);
    const lineNumbers = new Float64Array(lines);
    let n = 0;
    // A UTF-8 byte order mark, as some editors write, is not part of the first line.
    let start = bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf ? 3 : 0;
    for (let lineNo = 1; start <= bytes.length; lineNo++) {
      const nl = bytes.indexOf(NEWLINE, start);
      const end = nl < 0 ? bytes.length : nl;
      const text = bytes.toString("utf8", start, end);
      if (text.trim() !== "") {
        parseBulkLine(text, `${name} line ${lineNo}`);
        starts[n] = start;
        ends[n] = end;
        lineNumbers[n] = lineNo;
        n++;
      }
      start = end + 1;
    }
    return new BulkFile(name, bytes, starts, ends, lineNumbers, n);
  }

  /** Record `i` (0-based). */
  record(i: number): BulkLine {
    if (!Number.isInteger(i) || i < 0 || i >= this.count) throw new RangeError(`no record ${i}`);
    const text = this.bytes.toString("utf8", this.starts[i], this.ends[i]);
    return parseBulkLine(text, `${this.name} line ${this.lineNumbers[i]}`);
  }

  /** The 1-based file line of record `i`. */
  lineOf(i: number): number | undefined {
    return i >= 0 && i < this.count ? this.lineNumbers[i] : undefined;
  }
}

const BULK_FIELDS = ["csi", "ssi", "tags", "default", "createdAtMs"];

/** Parses one bulk line: {"csi","ssi","tags"?,"default"?,"createdAtMs"?}. `where` prefixes errors. */
export function parseBulkLine(text: string, where: string): BulkLine {
  const o = jsonObject(text, where, BULK_FIELDS);
  const bad = (why: string) => new UsageError(`${where}: ${why}`);
  const csi = csiField(o, where);
  if (typeof o.ssi !== "string") throw bad('"ssi" must be a string');
  const ssiWhy = ssiProblem(o.ssi);
  if (ssiWhy) throw bad(ssiWhy);
  let tags: string[] = [];
  if (o.tags !== undefined) {
    if (!Array.isArray(o.tags) || o.tags.some((t) => typeof t !== "string")) {
      throw bad('"tags" must be a list of strings');
    }
    tags = o.tags as string[];
    const tagsWhy = tagsProblem(tags);
    if (tagsWhy) throw bad(tagsWhy);
  }
  if (o.default !== undefined && typeof o.default !== "boolean") throw bad('"default" must be true or false');
  let createdAtMs: number | undefined;
  if (o.createdAtMs !== undefined) {
    if (typeof o.createdAtMs !== "number" || !Number.isSafeInteger(o.createdAtMs) || o.createdAtMs < 0) {
      throw bad('"createdAtMs" must be a time in ms since 1970');
    }
    createdAtMs = o.createdAtMs;
  }
  return { csi, ssi: o.ssi, tags, isDefault: o.default === true, createdAtMs };
}

const FEED_FIELDS = ["csi", "event", "effective", "donorMsp"];
const FEED_EVENTS = ["disconnected", "reassigned", "ported"] as const;

/** Parses a provider feed file; throws UsageError naming the first bad line. */
export function parseFeed(name: string, text: string): FeedLine[] {
  const entries: FeedLine[] = [];
  text.split("\n").forEach((line, i) => {
    if (line.trim() !== "") entries.push(parseFeedLine(line, `${name} line ${i + 1}`));
  });
  return entries;
}

/** Parses one feed line: {"csi","event","effective","donorMsp"?}. */
function parseFeedLine(text: string, where: string): FeedLine {
  const o = jsonObject(text, where, FEED_FIELDS);
  const bad = (why: string) => new UsageError(`${where}: ${why}`);
  const csi = csiField(o, where);
  const event = FEED_EVENTS.find((e) => e === o.event);
  if (!event) throw bad(`"event" must be one of ${FEED_EVENTS.map((e) => `"${e}"`).join(", ")}`);
  const effectiveAtMs = effectiveTime(o.effective);
  if (effectiveAtMs === undefined) {
    throw bad(
      '"effective" must be a date ("2026-11-01", midnight UTC), a time with a zone ("2026-11-01T10:00:00Z") or ms since 1970',
    );
  }
  let donorMspId = "";
  if (o.donorMsp !== undefined) {
    if (event !== "ported") throw bad('"donorMsp" belongs only to "ported" events');
    if (typeof o.donorMsp !== "string" || o.donorMsp === "" || o.donorMsp.length > 128) {
      throw bad('"donorMsp" must be an MSP id of 1 to 128 characters');
    }
    donorMspId = o.donorMsp;
  }
  return { csi, event, effectiveAtMs, donorMspId };
}

const DATE = /^(\d{4})-(\d{2})-(\d{2})$/;
const DATE_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,3})?)?(Z|[+-]\d{2}:\d{2})$/;

/** Ms since 1970 of a feed's "effective" value, or undefined when it is not a valid time. */
export function effectiveTime(v: unknown): number | undefined {
  let ms: number;
  if (typeof v === "number") ms = v;
  else if (typeof v === "string" && DATE.test(v)) {
    ms = Date.parse(`${v}T00:00:00Z`);
    // Date.parse rolls "2026-02-30" over into March; a feed with such a date is wrong.
    if (Number.isNaN(ms) || new Date(ms).toISOString().slice(0, 10) !== v) return undefined;
  } else if (typeof v === "string" && DATE_TIME.test(v)) ms = Date.parse(v);
  else return undefined;
  return Number.isSafeInteger(ms) && ms > 0 ? ms : undefined;
}

function jsonObject(text: string, where: string, fields: readonly string[]): Record<string, unknown> {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new UsageError(`${where}: not JSON (${(err as Error).message})`);
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    throw new UsageError(`${where}: must be a JSON object`);
  }
  const unknown = Object.keys(raw).filter((k) => !fields.includes(k));
  if (unknown.length > 0) {
    throw new UsageError(
      `${where}: unknown field(s) ${unknown.join(", ")}; the fields are ${fields.join(", ")}`,
    );
  }
  return raw as Record<string, unknown>;
}

function csiField(o: Record<string, unknown>, where: string): string {
  if (typeof o.csi !== "string") throw new UsageError(`${where}: "csi" must be a string`);
  try {
    return parseCsi(o.csi).uri;
  } catch (err) {
    throw new UsageError(`${where}: invalid csi: ${(err as Error).message}`);
  }
}
