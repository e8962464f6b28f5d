// The enumeration detector: a sweep trips it within its window, an address book does not,
// windows roll over, blocks refuse only in enforce mode and only for their subject and scope,
// and state stays within its bounds.
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
const miss = { cacheHit: false, notFound: true };
const found = { cacheHit: false, notFound: false };
const hit = { cacheHit: true, notFound: false };
const num = (block: string, i: number) => `tel:+${block}${String(i).padStart(4, "0")}`;

test("number blocks: the digits but the last four; an email address's domain", () => {
  assert.equal(csiBlockOf("tel:+447700900123"), "tel:+44770090");
  assert.equal(csiBlockOf("tel:+12345"), "tel:+1");
  assert.equal(csiBlockOf("mailto:alice@example.org"), "mailto:@example.org");
});

test("a sweep of one block trips at the 50th distinct number, and blocks that block and nothing else", () => {
  const d = createEnumerationDetector(policy());
  let tripped: readonly { scope: string }[] = [];
  let at = -1;
  for (let i = 0; i < 60 && at < 0; i++) {
    tripped = d.observe("crawler", num("4477009", i), miss, 1_000 + i);
    if (tripped.length > 0) at = i;
  }
  assert.equal(at, 49, "judged once 50 distinct numbers were seen");
  assert.deepEqual(
    tripped.map((t) => t.scope),
    ["all", "tel:+4477009"],
  );
  assert.ok(d.blocked("crawler", num("4477009", 9999), 2_000));
  assert.ok(d.blocked("crawler", "tel:+15550001234", 2_000), "the subject as a whole is blocked too");
  assert.equal(d.blocked("someone-else", num("4477009", 1), 2_000), undefined);
  assert.equal(d.counts.detections, 2);
  assert.equal(d.counts.refused, 2);
  // The block ends after blockSeconds.
  assert.equal(d.blocked("crawler", num("4477009", 1), 1_049 + 300_000), undefined);
});

test("a block-only detection refuses that block but not the subject's other lookups", () => {
  const d = createEnumerationDetector(policy());
  // Normal traffic elsewhere keeps the subject as a whole under the NOT_FOUND ratio.
  for (let i = 0; i < 200; i++) d.observe("msp", `tel:+1555${String(i).padStart(7, "0")}`, found, 10);
  for (let i = 0; i < 50; i++) d.observe("msp", num("4477009", i), miss, 20);
  assert.deepEqual(
    d.recent().map((x) => x.scope),
    ["tel:+4477009"],
  );
  assert.ok(d.blocked("msp", num("4477009", 77), 30));
  assert.equal(d.blocked("msp", "tel:+15559999999", 30), undefined);
});

test("an address book is not a crawl: mostly found, or mostly cached, or repeats", () => {
  const d = createEnumerationDetector(policy());
  // 300 contacts, 40% found, first time today (no cache hits).
  for (let i = 0; i < 300; i++) d.observe("msp-a", num("4477009", i), i % 5 < 2 ? found : miss, 5);
  // 300 unknown numbers, but asked before by others (cache hits).
  for (let i = 0; i < 300; i++) d.observe("msp-b", num("4477010", i), i % 2 === 0 ? hit : miss, 5);
  // The same 10 unknown numbers asked again and again.
  for (let i = 0; i < 500; i++) d.observe("msp-c", num("4477011", i % 10), miss, 5);
  assert.equal(d.counts.detections, 0);
  assert.equal(d.blocked("msp-a", num("4477009", 1), 6), undefined);
});

test("windows roll over: 49 distinct numbers a minute never trip", () => {
  const d = createEnumerationDetector(policy());
  for (let minute = 0; minute < 10; minute++)
    for (let i = 0; i < 49; i++)
      d.observe("slow", num("4477009", minute * 49 + i), miss, minute * 60_000 + i);
  assert.equal(d.counts.detections, 0);
});

test("log mode counts and reports but never refuses; off mode does nothing", () => {
  const log = createEnumerationDetector(policy({ mode: "log" }));
  const off = createEnumerationDetector(policy({ mode: "off" }));
  for (let i = 0; i < 100; i++) {
    log.observe("crawler", num("4477009", i), miss, 1);
    off.observe("crawler", num("4477009", i), miss, 1);
  }
  assert.equal(log.counts.detections, 2);
  assert.equal(log.recent()[0]?.blockedUntilMs, 0);
  assert.equal(log.blocked("crawler", num("4477009", 1), 2), undefined);
  assert.equal(off.counts.detections, 0);
});

test("state is bounded: old windows are dropped, blocks survive a flood of new windows", () => {
  const d = createEnumerationDetector(policy({ maxTracked: 100 }));
  for (let i = 0; i < 50; i++) d.observe("crawler", num("4477009", i), miss, 1);
  assert.ok(d.blocked("crawler", num("4477009", 1), 2));
  // 10,000 numbers in distinct blocks open 10,000 windows; the LRU keeps 100.
  for (let i = 0; i < 10_000; i++) d.observe("other", `tel:+1${String(i).padStart(6, "0")}0000`, found, 3);
  assert.ok(d.blocked("crawler", num("4477009", 1), 4), "the block is kept apart from the windows");
});

test("the config section: defaults, bounds and modes", () => {
  assert.deepEqual(readEnumerationPolicy(ConfigReader.of({})), DEFAULT_ENUMERATION_POLICY);
  assert.equal(readEnumerationPolicy(ConfigReader.of({ mode: "enforce" })).mode, "enforce");
  assert.throws(() => readEnumerationPolicy(ConfigReader.of({ mode: "block" })), /enumeration.mode/);
  assert.throws(() => readEnumerationPolicy(ConfigReader.of({ minDistinct: 1 })), /minDistinct/);
  assert.throws(() => readEnumerationPolicy(ConfigReader.of({ windowSecs: 5 })), /windowSecs/);
});
