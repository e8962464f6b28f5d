import assert from "node:assert/strict";
import { test } from "node:test";
import type { Mapping } from "@mimi/core";
import { createAnswerCache, type PreparedAnswer, preparedSize } from "./answer-cache.js";

const MB = 1 << 20;

function prepared(mappings: number, untilMs = Infinity, recordBytes = 170): PreparedAnswer {
  const m: Mapping = {
    mspId: "bluebird.example",
    ssi: "@a",
    isDefault: true,
    tags: [],
    createdAtMs: 0,
    proofMethod: "sms-code",
    expiresAtMs: untilMs,
    signed: {
      record: new Uint8Array(recordBytes),
      userSignature: new Uint8Array(64),
      mspSignature: new Uint8Array(64),
      dpSignature: new Uint8Array(64),
    },
  };
  const found =
    mappings > 0 ? { head: new Uint8Array(40), tail: new Uint8Array(2 + 45 * mappings) } : undefined;
  return { mappings: Array.from({ length: mappings }, () => m), ...(found && { found }), untilMs };
}

test("an answer is kept until the first of its mappings expires, and dropped on demand", () => {
  const cache = createAnswerCache(MB);
  const a = prepared(1, 5_000);
  cache.set("tel:+441", a);
  assert.equal(cache.get("tel:+441", 4_999), a);
  assert.equal(cache.get("tel:+441", 5_000), undefined, "expired at its untilMs");
  assert.equal(cache.counts.entries, 0, "and forgotten");
  const none = prepared(0);
  cache.set("tel:+442", none);
  assert.equal(cache.get("tel:+442", Number.MAX_SAFE_INTEGER), none, "a denial lasts until a write");
  cache.drop("tel:+442");
  assert.equal(cache.get("tel:+442", 0), undefined);
  assert.deepEqual([cache.counts.hits, cache.counts.misses], [2, 2]);
});

test("past its bound in estimated bytes, the least recently used answers go first", () => {
  const cache = createAnswerCache(MB);
  const size = preparedSize("tel:+440000", prepared(1));
  const fits = Math.floor(MB / size);
  for (let i = 0; i < fits; i++) cache.set(`tel:+44${String(i).padStart(4, "0")}`, prepared(1));
  assert.equal(cache.counts.entries, fits);
  assert.ok(cache.counts.bytes <= MB);
  // Reading the first makes it recent, so the next insert drops the second instead.
  assert.ok(cache.get("tel:+440000", 0));
  cache.set("tel:+449999", prepared(1));
  assert.equal(cache.counts.entries, fits);
  assert.ok(cache.get("tel:+440000", 0));
  assert.equal(cache.get("tel:+440001", 0), undefined);
  // An answer larger than the whole bound is not kept at all.
  cache.set("tel:+1", prepared(24, Infinity, 40_000));
  assert.equal(cache.get("tel:+1", 0), undefined);
  assert.ok(cache.counts.bytes <= MB);
});

test("the size estimate grows with every mapping and byte an answer holds", () => {
  const one = preparedSize("tel:+441", prepared(1));
  assert.ok(preparedSize("tel:+441", prepared(2)) > one);
  assert.ok(preparedSize("tel:+441", prepared(1, Infinity, 300)) > one);
  assert.ok(preparedSize("tel:+4412345", prepared(1)) > one);
  assert.throws(() => createAnswerCache(MB - 1), RangeError);
});

test("an answer is admitted on its CSI's second read in a while; a first read is only remembered", () => {
  const cache = createAnswerCache(MB);
  const csis = Array.from({ length: 200 }, (_, i) => `tel:+44770090${String(i).padStart(4, "0")}`);
  assert.deepEqual(
    csis.map((c) => cache.admits(c)),
    csis.map(() => false),
    "first reads",
  );
  // A 1 MB bound has 1,024 slots: 200 CSIs mostly keep theirs, so most second reads are admitted.
  const second = csis.filter((c) => cache.admits(c)).length;
  assert.ok(second >= 150, `${second} of 200 admitted on their second read`);
  assert.equal(cache.counts.admitted, second);
  assert.equal(cache.counts.firstSights, 200 + (200 - second));
  const fresh = "tel:+447700900777";
  assert.deepEqual(
    [cache.admits(fresh), cache.admits(fresh), cache.admits(fresh)],
    [false, true, false],
    "admitting forgets the sight: the read after it starts again",
  );
  // A flood of other CSIs pushes a first sight out: then it is a first sight again, which costs
  // only speed (an answer not kept), never a wrong answer.
  cache.admits("tel:+447700900999");
  for (let i = 0; i < 20_000; i++) cache.admits(`mailto:crawl${i}@example.com`);
  assert.equal(cache.admits("tel:+447700900999"), false);
});
