import assert from "node:assert/strict";
import { test } from "node:test";
import { fromBinary } from "@bufbuild/protobuf";
import { bitsSet, changeHashHex, type LookupKey, type LookupOutcome, pb } from "@mimi/core";
import { answerIndex, CachedAnswer, indexSlot } from "./cached-answer.js";

const key: LookupKey = { kind: "e164", digits: "447700900123" };
const bytes = (n: number, fill: number) => new Uint8Array(n).fill(fill);
const seal = { statement: bytes(90, 7), signature: bytes(64, 8) };
const mapping = (mspId: string, isDefault: boolean) => ({
  mspId,
  ssi: `@x:${mspId}`,
  isDefault,
  tags: ["Personal"],
  createdAtMs: 1_700_000_000_000,
  proofMethod: "sms-code",
  expiresAtMs: 1_731_536_000_000,
  signed: {
    record: bytes(150, 1),
    userSignature: bytes(64, 2),
    mspSignature: bytes(64, 3),
    dpSignature: bytes(64, 4),
  },
});

test("a cached answer gives back the outcome it was made from, whatever its kind", () => {
  const indexes = { serial: 1n, indexOf: () => 0 };
  const outcomes: LookupOutcome[] = [
    {
      kind: "answer",
      dpId: "eu",
      ttlSeconds: 300,
      seal,
      mappings: [mapping("a.example", true), mapping("b.example", false)],
    },
    // No mappings: written NOT_FOUND on the wire, still an answer here.
    { kind: "answer", dpId: "eu", ttlSeconds: 60, mappings: [] },
    { kind: "not_found", dpId: "us", ttlSeconds: 60, seal },
    { kind: "not_found", dpId: "", ttlSeconds: 60 },
    {
      kind: "opted_out",
      dpId: "eu",
      ttlSeconds: 120,
      seal,
      optOut: { statement: bytes(40, 5), userSignature: bytes(64, 6), mspSignature: bytes(64, 7) },
    },
  ];
  for (const o of outcomes) {
    const c: CachedAnswer = new CachedAnswer(o, key, false, indexes);
    assert.deepEqual(c.outcome, o);
    assert.equal(c.dpId, o.dpId);
    assert.equal(c.kind, o.kind);
    assert.deepEqual(c.mspIds, o.kind === "answer" ? o.mappings.map((m) => m.mspId) : []);
    assert.ok(Object.isFrozen(c) && Object.isFrozen(c.outcome));
  }
});

test("its encoding follows the registry's MSP indexes: redone when the serial moves, kept otherwise", () => {
  const index = new Map([
    ["a.example", 0],
    ["b.example", 3],
  ]);
  const indexOf = (id: string) => index.get(id);
  const o: LookupOutcome = {
    kind: "answer",
    dpId: "eu",
    ttlSeconds: 300,
    seal,
    mappings: [mapping("a.example", true), mapping("b.example", false)],
  };
  const c: CachedAnswer = new CachedAnswer(o, key, false, { serial: 5n, indexOf });
  const first = c.encoded(5n, indexOf);
  assert.deepEqual(bitsSet(fromBinary(pb.AnswerSchema, first).compactMspBits), [0, 3]);
  assert.equal(c.encoded(5n, indexOf), first, "the same bytes while the serial stays");
  index.set("b.example", 9);
  const second = c.encoded(6n, indexOf);
  assert.deepEqual(bitsSet(fromBinary(pb.AnswerSchema, second).compactMspBits), [0, 9]);
  assert.deepEqual(fromBinary(pb.AnswerSchema, second).mappings, fromBinary(pb.AnswerSchema, first).mappings);
});

test("an entry keeps little besides its bytes: the delegation key of a phone number comes from its URI, MSP lists are shared", () => {
  const indexes = { serial: 1n, indexOf: () => 0 };
  const outcome: LookupOutcome = {
    kind: "answer",
    dpId: "eu",
    ttlSeconds: 300,
    seal,
    mappings: [mapping("a.example", true), mapping("b.example", false)],
  };
  const phone = new CachedAnswer(outcome, key, false, indexes);
  assert.deepEqual(phone.keyOf("tel:+447700900123"), key);
  const emailKey: LookupKey = { kind: "email", domainHash: 0x1234n };
  const email = new CachedAnswer(outcome, emailKey, false, indexes);
  assert.equal(email.keyOf("mailto:someone@example.org"), emailKey);
  assert.equal(phone.mspIds, email.mspIds, "one array for answers of the same MSPs");
  const other = new CachedAnswer(
    { ...outcome, mappings: [mapping("b.example", false)] },
    key,
    false,
    indexes,
  );
  assert.deepEqual(other.mspIds, ["b.example"]);
  assert.notEqual(other.mspIds, phone.mspIds);
});

test("the cache index of an answer is 30 bits of its change hash, so a DP's event finds it", () => {
  const hashKey = new Uint8Array(32).fill(9);
  const index = answerIndex(new Map([["eu", hashKey]]));
  const c = new CachedAnswer({ kind: "not_found", dpId: "eu", ttlSeconds: 60 }, key, false, {
    serial: 1n,
    indexOf: () => 0,
  });
  const slot = index("tel:+447700900123", c);
  assert.equal(slot, indexSlot(changeHashHex(hashKey, "tel:+447700900123")));
  assert.ok(slot !== undefined && Number.isInteger(slot) && slot >= 0 && slot < 2 ** 30);
  assert.notEqual(index("tel:+447700900124", c), slot);
  assert.equal(
    answerIndex(new Map())("tel:+447700900123", c),
    undefined,
    "no key from the DP yet: not indexed",
  );
});
