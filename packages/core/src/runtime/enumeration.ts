// Enumeration detection (R22; the abuse issue): a crawler that walks a number range to build a
// spam list asks many distinct numbers, most of which nobody registered and nobody asked before.
// PowerDNS's random-subdomain detector looks for the same shape in DNS (many distinct names
// under one zone, mostly NXDOMAIN, mostly cache misses) with 60 s windows, at least 50 distinct
// names and a failure ratio of 0.8, and so do we, with one change: only lookups that had to
// reach a DP are counted. A cache hit is free, so counting hits (PowerDNS's hit-ratio guard)
// would let a crawler dilute its windows with cached numbers at no cost; judging the misses
// alone, a window is by construction all cache misses, and diluting its NOT_FOUND share takes
// paid lookups of numbers that exist. Each subject (a caller identity at a resolver; a calling
// resolver and rate-limit context at a DP) is watched per number block (the number without its
// last four digits; an email address's domain) and as a whole. In `enforce` mode a block-scope
// detection refuses the subject's lookups in that block for `blockMs`; a whole-subject
// detection is only logged and counted in either mode, since a third party can make an MSP's
// users ask for a few dozen unknown numbers (a shared contact list) and must not be able to
// switch the MSP off. State is in memory and bounded: windows in an LRU of `maxTracked` keys
// (by last use, to within a sixteenth of `maxTracked`: bounded-map.ts RecencyMap), blocks in
// their own bounded map, so new windows cannot push a block out.
import { RecencyMap, setNewest } from "./bounded-map.js";
import { ConfigError, type ConfigReader } from "./config.js";

/** What the detector does when it sees the pattern. */
export type EnumerationMode = "off" | "log" | "enforce";

/** The detector's configuration (an `enumeration` config section). */
export interface EnumerationPolicy {
  readonly mode: EnumerationMode;
  readonly windowSeconds: number;
  /** Distinct CSIs a window needs before it is judged. */
  readonly minDistinct: number;
  /** NOT_FOUND answers, in percent of the window's answers, at or above which it is a crawl. */
  readonly minNotFoundPercent: number;
  /** How long an enforced detection refuses the subject's lookups. */
  readonly blockSeconds: number;
  /** Windows held at once (subjects and number blocks); the least recently opened go first. */
  readonly maxTracked: number;
}

export const DEFAULT_ENUMERATION_POLICY: EnumerationPolicy = {
  mode: "log",
  windowSeconds: 60,
  minDistinct: 50,
  minNotFoundPercent: 80,
  blockSeconds: 300,
  maxTracked: 10_000,
};

/** Reads an `enumeration` config section (absent: the defaults). */
export function readEnumerationPolicy(r: ConfigReader, d = DEFAULT_ENUMERATION_POLICY): EnumerationPolicy {
  const mode = r.string("mode", d.mode);
  if (mode !== "off" && mode !== "log" && mode !== "enforce")
    throw new ConfigError(`enumeration.mode must be "off", "log" or "enforce", not "${mode}"`);
  const policy: EnumerationPolicy = {
    mode,
    windowSeconds: r.integer("windowSeconds", d.windowSeconds, 1, 3_600),
    minDistinct: r.integer("minDistinct", d.minDistinct, 2, 100_000),
    minNotFoundPercent: r.integer("minNotFoundPercent", d.minNotFoundPercent, 0, 100),
    blockSeconds: r.integer("blockSeconds", d.blockSeconds, 1, 86_400),
    maxTracked: r.integer("maxTracked", d.maxTracked, 1, 10_000_000),
  };
  r.done();
  return policy;
}

/** One detection: what was seen in the window that tripped it. */
export interface Detection {
  readonly subject: string;
  /** "all" for the subject as a whole (logged, never refused), otherwise the number block ("tel:+4477009", "mailto:@example.org"). */
  readonly scope: string;
  readonly distinct: number;
  readonly answers: number;
  readonly notFound: number;
  readonly atMs: number;
  /** When its block ends (enforce mode, block scope); 0 when nothing is refused. */
  readonly blockedUntilMs: number;
}

/** The detector. */
export interface EnumerationDetector {
  readonly policy: EnumerationPolicy;
  /**
   * Changes the policy (a reload): windows and blocks already open keep their counts; a block
   * is enforced only while the mode is "enforce".
   */
  setPolicy(policy: EnumerationPolicy): void;
  /**
   * Records one answer a DP gave `subject` for the canonical `csi` (never a cached one); returns
   * the detections it tripped (at most one per window and scope), already counted and, in
   * enforce mode, blocking.
   */
  observe(subject: string, csi: string, notFound: boolean, nowMs: number): readonly Detection[];
  /**
   * observe() for a CSI given as its number block and csiHash32 (what another process sends:
   * the detector needs no more of the CSI).
   */
  observeParts(
    subject: string,
    block: string,
    hash: number,
    notFound: boolean,
    nowMs: number,
  ): readonly Detection[];
  /** The enforced blocks in force now (to hand to a process that starts). */
  activeBlocks(nowMs: number): readonly Detection[];
  /**
   * The enforced detection that refuses `subject`'s lookup of `csi` now, if any, counted as a
   * refusal unless `count` is false (a look ahead of the check that refuses).
   */
  blocked(subject: string, csi: string, nowMs: number, count?: boolean): Detection | undefined;
  /** Detections so far, and lookups refused by blocks. */
  readonly counts: { readonly detections: number; readonly refused: number };
  /** The latest detections, newest first (at most 32), for the operator. */
  recent(): readonly Detection[];
}

/** The number block of a canonical CSI URI: its digits but the last four, or its email domain. */
export function csiBlockOf(uri: string): string {
  if (uri.startsWith("tel:+")) {
    const digits = uri.length - 5;
    return uri.slice(0, 5 + Math.max(1, digits - 4));
  }
  const at = uri.lastIndexOf("@");
  const colon = uri.indexOf(":");
  return at >= 0 ? `${uri.slice(0, colon + 1)}@${uri.slice(at + 1)}` : uri;
}

interface Window {
  startMs: number;
  answers: number;
  notFound: number;
  /** 32-bit hashes of the distinct CSIs seen, up to minDistinct. */
  distinct: Set<number>;
  tripped: boolean;
}

const RECENT = 32;
/**
 * Blocks held at once, the oldest dropped first. A crawler whose whole traffic is a crawl trips a
 * block within one window of one block (50 paid lookups), so filling this bound takes millions.
 */
const MAX_BLOCKS = 100_000;

/** Creates a detector with `policy`. */
export function createEnumerationDetector(initial: EnumerationPolicy): EnumerationDetector {
  let policy = initial;
  let windowMs = policy.windowSeconds * 1000;
  const windows = new RecencyMap<string, Window>(policy.maxTracked);
  const blocks = new Map<string, Detection>();
  const recent: Detection[] = [];
  const counts = { detections: 0, refused: 0 };

  const windowOf = (key: string, nowMs: number): Window => {
    let w = windows.get(key);
    // A clock stepped back keeps the window open rather than starting a fresh one. A window in
    // use goes to the back of the LRU, so a slow crawl's window outlives many one-off ones.
    if (!w || nowMs - w.startMs >= windowMs)
      w = { startMs: nowMs, answers: 0, notFound: 0, distinct: new Set(), tripped: false };
    windows.set(key, w);
    return w;
  };

  const judge = (subject: string, scope: string, w: Window, nowMs: number): Detection | undefined => {
    if (w.tripped || w.distinct.size < policy.minDistinct) return undefined;
    if (w.notFound * 100 < policy.minNotFoundPercent * w.answers) return undefined;
    w.tripped = true;
    const refuses = policy.mode === "enforce" && scope !== "all";
    const d: Detection = {
      subject,
      scope,
      distinct: w.distinct.size,
      answers: w.answers,
      notFound: w.notFound,
      atMs: nowMs,
      blockedUntilMs: refuses ? nowMs + policy.blockSeconds * 1000 : 0,
    };
    counts.detections++;
    recent.unshift(d);
    if (recent.length > RECENT) recent.pop();
    if (refuses) {
      setNewest(blocks, `${subject}\0${scope}`, d, MAX_BLOCKS);
    }
    return d;
  };

  const activeBlock = (key: string, nowMs: number) => {
    const b = blocks.get(key);
    if (!b) return undefined;
    // A clock stepped back lengthens a block by the step; it never lifts one.
    if (nowMs < b.blockedUntilMs) return b;
    blocks.delete(key);
    return undefined;
  };

  const observeParts = (
    subject: string,
    block: string,
    h: number,
    notFound: boolean,
    nowMs: number,
  ): Detection[] => {
    if (policy.mode === "off") return [];
    const found: Detection[] = [];
    for (const scope of ["all", block]) {
      const w = windowOf(`${subject}\0${scope}`, nowMs);
      w.answers++;
      if (notFound) w.notFound++;
      if (w.distinct.size < policy.minDistinct) w.distinct.add(h);
      const d = judge(subject, scope, w, nowMs);
      if (d) found.push(d);
    }
    return found;
  };

  return {
    get policy() {
      return policy;
    },
    setPolicy(next) {
      policy = next;
      windowMs = next.windowSeconds * 1000;
      windows.max = next.maxTracked;
    },
    observe(subject, csi, notFound, nowMs) {
      return observeParts(subject, csiBlockOf(csi), csiHash32(csi), notFound, nowMs);
    },
    observeParts,
    blocked(subject, csi, nowMs, count = true) {
      if (policy.mode !== "enforce" || blocks.size === 0) return undefined;
      const b = activeBlock(`${subject}\0${csiBlockOf(csi)}`, nowMs);
      if (b && count) counts.refused++;
      return b;
    },
    activeBlocks: (nowMs) => [...blocks.values()].filter((b) => nowMs < b.blockedUntilMs),
    counts,
    recent: () => recent.slice(),
  };
}

/** FNV-1a over the UTF-16 code units: distinct CSIs are counted by a 32-bit hash (a rare collision undercounts by one). */
export function csiHash32(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}
