// Answer seals (AnswerSeal in common.proto): the byte layout other implementations rebuild, the
// contents no DP may seal, and the validity a DP may give.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { test } from "node:test";
import { dirtyBufferPool } from "../testing.js";
import {
  decodeSealStatement,
  encodeSealStatement,
  MAX_ANSWER_SEAL_MS,
  type SealStatement,
  sealAnswer,
  sealDigest,
  sealStatement,
  statementAt,
  statementParts,
} from "./answer-seal.js";
import { generateSigningKey, SIGNING_CONTEXT, verifyWith } from "./signing.js";

const DIGEST = new Uint8Array(32).fill(7);
const FOUND: SealStatement = {
  csi: "tel:+447700900123",
  dpId: "eu",
  status: "answer",
  signedAtMs: 1_700_000_000_000,
  expiresAtMs: 1_700_086_400_000,
  entries: [
    { mspId: "a.example", isDefault: true, recordDigest: DIGEST },
    { mspId: "b.example", isDefault: false, recordDigest: new Uint8Array(32) },
  ],
  optOutDigest: new Uint8Array(0),
};

const u16 = (n: number) => Buffer.from([n >> 8, n & 0xff]);
const str = (s: string) => Buffer.concat([u16(Buffer.byteLength(s)), Buffer.from(s, "utf8")]);
const bytes = (b: Uint8Array) => Buffer.concat([u16(b.length), b]);
const u64 = (n: number) => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt(n));
  return b;
};

test("known answer: the statement follows the layout in common.proto (AnswerSeal)", () => {
  // The times as the bytes of a BigInt, also near 2^53, where both 32-bit halves are full.
  const big = { ...FOUND, signedAtMs: 2 ** 53 - 2, expiresAtMs: 2 ** 53 - 1 };
  assert.deepEqual(
    Buffer.from(encodeSealStatement(big)).subarray(38, 54),
    Buffer.from("001ffffffffffffe001fffffffffffff", "hex"),
  );
  assert.deepEqual(decodeSealStatement(encodeSealStatement(big)), big);
  const expected = Buffer.concat([
    Buffer.from("MIMI-ANSWER-v1", "ascii"),
    str("tel:+447700900123"),
    str("eu"),
    Buffer.from([1]),
    u64(1_700_000_000_000),
    u64(1_700_086_400_000),
    u16(2),
    str("a.example"),
    Buffer.from([1]),
    bytes(DIGEST),
    str("b.example"),
    Buffer.from([0]),
    bytes(new Uint8Array(32)),
    bytes(new Uint8Array(0)),
  ]);
  assert.deepEqual(Buffer.from(encodeSealStatement(FOUND)), expected);
  assert.deepEqual(decodeSealStatement(expected), FOUND);
});

test("a statement's parts, sealed at any time, are the statement encoded whole at that time", () => {
  const sealable = {
    csi: FOUND.csi,
    dpId: "eu",
    status: "answer" as const,
    mappings: FOUND.entries.map((e, i) => ({
      mspId: e.mspId,
      ssi: `@${i}`,
      isDefault: e.isDefault,
      tags: [],
      createdAtMs: 0,
      proofMethod: "sms-code",
      expiresAtMs: 0,
      signed: {
        record: new Uint8Array([i]),
        userSignature: new Uint8Array(0),
        mspSignature: new Uint8Array(0),
        dpSignature: new Uint8Array(0),
      },
    })),
  };
  const parts = statementParts(sealable);
  for (const [at, valid] of [
    [0, 1],
    [1_700_000_000_000, 86_400_000],
    [Number.MAX_SAFE_INTEGER - MAX_ANSWER_SEAL_MS, MAX_ANSWER_SEAL_MS],
  ] as const) {
    const whole = encodeSealStatement({
      csi: FOUND.csi,
      dpId: "eu",
      status: "answer",
      signedAtMs: at,
      expiresAtMs: at + valid,
      entries: sealable.mappings.map((m) => ({
        mspId: m.mspId,
        isDefault: m.isDefault,
        recordDigest: createHash("sha256").update(m.signed.record).digest(),
      })),
      optOutDigest: new Uint8Array(0),
    });
    assert.deepEqual(Buffer.from(statementAt(parts, at, valid)), Buffer.from(whole));
    // A lookup's, in a slice of Node's buffer pool, whose bytes are not zeroed: the same bytes.
    const pool = dirtyBufferPool();
    const pooled = statementAt(parts, at, valid, true);
    assert.deepEqual(Buffer.from(pooled), Buffer.from(whole));
    assert.equal(pooled.buffer, pool.buffer, "a slice of the dirtied pool");
    assert.deepEqual(Buffer.from(sealStatement(sealable, at, valid)), Buffer.from(whole));
    assert.equal(decodeSealStatement(whole).expiresAtMs, at + valid, "every byte of a large time");
  }
  assert.throws(() => statementAt(parts, 0, 0), RangeError);
  assert.throws(() => statementAt(parts, 0, MAX_ANSWER_SEAL_MS + 1), RangeError);
});

test("a DP's seal is Ed25519 under its own context over the statement, for the period asked", () => {
  const key = generateSigningKey();
  const record = Uint8Array.of(1, 2, 3);
  const seal = sealAnswer(
    {
      csi: FOUND.csi,
      dpId: "eu",
      status: "answer",
      mappings: [
        {
          mspId: "a.example",
          ssi: "x",
          isDefault: true,
          tags: [],
          createdAtMs: 0,
          proofMethod: "bulk",
          expiresAtMs: 1,
          signed: { record, userSignature: new Uint8Array(0), mspSignature: record, dpSignature: record },
        },
      ],
    },
    key,
    1_000,
    60_000,
  );
  const s = decodeSealStatement(seal.statement);
  assert.equal(s.signedAtMs, 1_000);
  assert.equal(s.expiresAtMs, 61_000);
  assert.deepEqual(s.entries, [
    {
      mspId: "a.example",
      isDefault: true,
      recordDigest: new Uint8Array(createHash("sha256").update(record).digest()),
    },
  ]);
  assert.ok(verifyWith(key.publicKey, SIGNING_CONTEXT.answerDp, seal.signature, [seal.statement]));
  assert.ok(!verifyWith(key.publicKey, SIGNING_CONTEXT.mappingDp, seal.signature, [seal.statement]));
  // A DP cannot make a seal longer than the published maximum, nor one that expires at once.
  const nf = { csi: FOUND.csi, dpId: "eu", status: "not_found" as const, mappings: [] };
  assert.throws(() => sealAnswer(nf, key, 1_000, MAX_ANSWER_SEAL_MS + 1), RangeError);
  assert.throws(() => sealAnswer(nf, key, 1_000, 0), RangeError);
});

test("the decoder refuses contents no DP may seal, each with its reason", () => {
  const bad = (s: Partial<SealStatement>) => encodeSealStatement({ ...FOUND, ...s });
  const cases: [string, Uint8Array, RegExp][] = [
    ["FOUND without mappings", bad({ entries: [] }), /says FOUND but lists no mapping/],
    ["a denial with mappings", bad({ status: "not_found" }), /lists mappings in a denial/],
    ["an opt-out without its digest", bad({ status: "opted_out", entries: [] }), /opt-out digest/],
    ["a digest on a FOUND", bad({ optOutDigest: DIGEST }), /opt-out digest/],
    [
      "a short record digest",
      bad({ entries: [{ mspId: "a", isDefault: true, recordDigest: new Uint8Array(31) }] }),
      /malformed digest/,
    ],
    ["trailing bytes", Buffer.concat([encodeSealStatement(FOUND), Buffer.of(0)]), /trailing bytes/],
    ["truncation", encodeSealStatement(FOUND).subarray(0, 40), /truncated/],
    ["another magic", Buffer.from("MIMI-ANSWER-v2xxxxxxxxxxxxxxxx"), /does not start with/],
  ];
  for (const [name, b, reason] of cases) assert.throws(() => decodeSealStatement(b), reason, name);
  const status = Buffer.from(encodeSealStatement({ ...FOUND, entries: [], status: "not_found" }));
  status[14 + 2 + 17 + 2 + 2] = 9;
  assert.throws(() => decodeSealStatement(status), /unknown status 9/);
  assert.deepEqual(sealDigest(Uint8Array.of()), new Uint8Array(createHash("sha256").digest()));
});
