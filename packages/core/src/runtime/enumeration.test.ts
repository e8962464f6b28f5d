// The enumeration detector: a sweep trips it within its window, an address book does not,
// windows roll over, blocks refuse only in enforce mode and only their subject's number block,
// a clock stepped back lifts nothing, and state stays within its bounds.
import assert from "node:assert/strict";
import { test } from "node:test";
import { ConfigReader } from "./config.js";
import {
  createEnumerationDetector,
  csiBlockOf,
  DEFAULT_ENUMERATION_POLICY,
  type EnumerationPolicy,
  readEnumerationPolicy,
} from "./enumeration.js";

const policy = (p: Partial<EnumerationPolicy> = {}): EnumerationPolicy => ({
  ...DEFAULT_ENUMERATION_POLICY,
  mode: "enforce",
  ...p,
});
const NOT_FOUND = true;
const FOUND = false;
const num = (block: string, i: number) => `tel:+${block}${String(i).padStart(4, "0")}`;

test("number blocks: the digits but the last four; an email address's domain", () => {
  assert.equal(csiBlockOf("tel:+447700900123"), "tel:+44770090");
  assert.equal(csiBlockOf("tel:+12345"), "tel:+1");
  assert.equal(csiBlockOf("mailto:alice@example.org"), "mailto:@example.org");
});

test("a sweep of one block trips at its 50th distinct number and blocks that block only", () => {
  const d = createEnumerationDetector(policy());
  let tripped: readonly { scope: string; blockedUntilMs: number }[] = [];
  let at = -1;
  for (let i = 0; i < 60 && at < 0; i++) {
    tripped = d.observe("crawler", num("4477009", i), NOT_FOUND, 1_000 + i);
    if (tripped.length > 0) at = i;
  }
  assert.equal(at, 49, "judged once 50 distinct numbers were seen");
  // Both scopes trip; only the block's refuses (a whole MSP is never switched off).
  assert.deepEqual(
    tripped.map((t) => [t.scope, t.blockedUntilMs]),
    [
      ["all", 0],
      ["tel:+4477009", 1_049 + 300_000],
    ],
  );
  assert.ok(d.blocked("crawler", num("4477009", 9999), 2_000));
  assert.equal(d.blocked("crawler", "tel:+15550001234", 2_000), undefined, "other blocks go on");
  assert.equal(d.blocked("someone-else", num("4477009", 1), 2_000), undefined);
  assert.equal(d.counts.detections, 2);
  assert.equal(d.counts.refused, 1);
  // A look without refusing (the resolver's fast path, before the check that refuses) counts nothing.
  assert.ok(d.blocked("crawler", num("4477009", 9999), 2_000, false));
  assert.equal(d.counts.refused, 1);
  // The block ends after blockSeconds; a clock stepped back before it started lifts nothing.
  assert.ok(d.blocked("crawler", num("4477009", 1), 0), "a step back keeps the block");
  assert.equal(d.blocked("crawler", num("4477009", 1), 1_049 + 300_000), undefined);
});

test("an address book is not a crawl: mostly found, or spread over blocks, or repeats", () => {
  const d = createEnumerationDetector(policy());
  // 300 new contacts in one block, 40% found.
  for (let i = 0; i < 300; i++) d.observe("msp-a", num("4477009", i), i % 5 < 2 ? FOUND : NOT_FOUND, 5);
  // The same 10 unknown numbers asked again and again.
  for (let i = 0; i < 500; i++) d.observe("msp-c", num("4477011", i % 10), NOT_FOUND, 5);
  // 40 unknown numbers in each of 20 blocks: the whole trips (logged), no block does.
  for (let b = 0; b < 20; b++)
    for (let i = 0; i < 40; i++) d.observe("msp-d", num(String(4477100 + b), i), NOT_FOUND, 5);
  assert.deepEqual(
    d.recent().map((x) => [x.subject, x.scope]),
    [["msp-d", "all"]],
  );
  assert.equal(d.blocked("msp-a", num("4477009", 1), 6), undefined);
  assert.equal(d.blocked("msp-d", num("4477100", 1), 6), undefined);
});

test("windows roll over: 49 distinct numbers a minute never trip", () => {
  const d = createEnumerationDetector(policy());
  for (let minute = 0; minute < 10; minute++)
    for (let i = 0; i < 49; i++)
      d.observe("slow", num("4477009", minute * 49 + i), NOT_FOUND, minute * 60_000 + i);
  assert.equal(d.counts.detections, 0);
});

test("log mode counts and reports but never refuses; off mode does nothing", () => {
  const log = createEnumerationDetector(policy({ mode: "log" }));
  const off = createEnumerationDetector(policy({ mode: "off" }));
  for (let i = 0; i < 100; i++) {
    log.observe("crawler", num("4477009", i), NOT_FOUND, 1);
    off.observe("crawler", num("4477009", i), NOT_FOUND, 1);
  }
  assert.equal(log.counts.detections, 2);
  assert.ok(log.recent().every((x) => x.blockedUntilMs === 0));
  assert.equal(log.blocked("crawler", num("4477009", 1), 2), undefined);
  assert.equal(off.counts.detections, 0);
});

test("state is bounded: old windows are dropped; blocks survive floods of windows and of other blocks", () => {
  const d = createEnumerationDetector(policy({ maxTracked: 100 }));
  for (let i = 0; i < 50; i++) d.observe("crawler", num("4477009", i), NOT_FOUND, 1);
  assert.ok(d.blocked("crawler", num("4477009", 1), 2));
  // 10,000 numbers in distinct blocks open 10,000 windows; the LRU keeps 100.
  for (let i = 0; i < 10_000; i++) d.observe("other", `tel:+1${String(i).padStart(6, "0")}0000`, FOUND, 3);
  // Another subject earns 200 blocks of its own (more than maxTracked).
  for (let b = 0; b < 200; b++)
    for (let i = 0; i < 50; i++) d.observe("flooder", num(String(4478000 + b), i), NOT_FOUND, 4);
  assert.ok(d.blocked("flooder", num("4478000", 1), 5));
  assert.ok(d.blocked("crawler", num("4477009", 1), 5), "the first block is still there");
});

test("the config section: defaults, bounds and modes", () => {
  assert.deepEqual(readEnumerationPolicy(ConfigReader.of({})), DEFAULT_ENUMERATION_POLICY);
  assert.equal(readEnumerationPolicy(ConfigReader.of({ mode: "enforce" })).mode, "enforce");
  assert.throws(() => readEnumerationPolicy(ConfigReader.of({ mode: "block" })), /enumeration.mode/);
  assert.throws(() => readEnumerationPolicy(ConfigReader.of({ minDistinct: 1 })), /minDistinct/);
  assert.throws(
    () => readEnumerationPolicy(ConfigReader.of({ maxCacheHitPercent: 20 })),
    /maxCacheHitPercent/,
  );
});
