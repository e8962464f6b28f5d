import assert from "node:assert/strict";
import { test } from "node:test";
import { create, toBinary } from "@bufbuild/protobuf";
import {
  DEFAULT_PARAMS,
  type LookupOutcome,
  type Mapping,
  type MappingSignatures,
} from "../domain/answer.js";
import { AnswerSchema } from "../gen/generated/mimi/discovery/v1/common_pb.js";
import { dirtyBufferPool } from "../testing.js";
import { handEncodable, keepEncodedMappings, writeAnswerWithoutTtl } from "./answer-encoding.js";
import { answerToProto } from "./convert.js";

const index: Record<string, number> = { "a.example": 0, "b.example": 9, "ü.example": 3 };
const indexOf = (id: string) => index[id];
const bytes = (n: number, fill: number) => new Uint8Array(n).fill(fill);
const mapping = (over: Partial<Mapping>): Mapping => ({
  mspId: "a.example",
  ssi: "@x:a",
  isDefault: true,
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
  ...over,
});
const seal = { statement: bytes(90, 7), signature: bytes(64, 8) };
// Sealed in a batch (SealBatch): the first leaf (index 0 is not written), and a later one.
const firstOfBatch = { ...seal, batch: { salt: bytes(16, 9), index: 0, size: 2, path: bytes(32, 10) } };
const inBatch = { ...seal, batch: { salt: bytes(16, 9), index: 200, size: 256, path: bytes(256, 11) } };

test("the hand-written Answer is byte for byte what protobuf-es writes", () => {
  const outcomes: LookupOutcome[] = [
    {
      kind: "answer",
      dpId: "eu",
      ttlSeconds: 300,
      seal,
      mappings: [mapping({}), mapping({ mspId: "b.example", isDefault: false, tags: [] })],
    },
    // Empty strings and tags, no signatures, zero times, an unknown MSP, non-ASCII text.
    {
      kind: "answer",
      dpId: "",
      ttlSeconds: 1,
      mappings: [
        mapping({
          mspId: "",
          ssi: "",
          tags: ["", "Ärger", "😀"],
          createdAtMs: 0,
          expiresAtMs: 0,
          proofMethod: "",
        }),
        mapping({
          mspId: "ü.example",
          ssi: "x".repeat(300),
          signed: {
            record: new Uint8Array(0),
            userSignature: new Uint8Array(0),
            mspSignature: bytes(64, 1),
            dpSignature: bytes(64, 2),
          },
        }),
        mapping({ mspId: "unknown.example", signed: undefined }),
      ],
    },
    { kind: "answer", dpId: "us", ttlSeconds: 0, mappings: [] },
    { kind: "not_found", dpId: "us", ttlSeconds: 60, seal },
    { kind: "not_found", dpId: "", ttlSeconds: 60 },
    {
      kind: "opted_out",
      dpId: "eu",
      ttlSeconds: 120,
      seal,
      optOut: { statement: bytes(40, 5), userSignature: bytes(64, 6), mspSignature: bytes(64, 7) },
    },
    { kind: "opted_out", dpId: "eu", ttlSeconds: 120 },
    // Found by private lookups (Answer.private_lookup, field 8).
    { kind: "not_found", dpId: "eu", ttlSeconds: 60, private: true },
    { kind: "opted_out", dpId: "eu", ttlSeconds: 120, seal, private: true },
    { kind: "not_found", dpId: "us", ttlSeconds: 60, seal: firstOfBatch },
    { kind: "answer", dpId: "eu", ttlSeconds: 300, seal: inBatch, mappings: [mapping({})] },
    {
      kind: "answer",
      dpId: "eu",
      ttlSeconds: 3,
      mappings: Array.from({ length: 40 }, (_, i) => mapping({ ssi: `s${i}`, createdAtMs: 2 ** 53 - 1 - i })),
    },
  ];
  for (const [i, o] of outcomes.entries()) {
    assert.ok(handEncodable(o));
    const want = toBinary(AnswerSchema, create(AnswerSchema, answerToProto(o, DEFAULT_PARAMS, indexOf, 0)));
    assert.deepEqual(Buffer.from(writeAnswerWithoutTtl(o, indexOf)), Buffer.from(want), `outcome ${i}`);
    // Short-lived (a DP's, copied into its response at once): a slice of Node's buffer pool,
    // whose bytes are not zeroed; written into a pool full of 0xff, every byte must be set.
    // (Node takes a buffer of half a pool or more from outside it.)
    const pool = dirtyBufferPool();
    const short = writeAnswerWithoutTtl(o, indexOf, true);
    assert.deepEqual(Buffer.from(short), Buffer.from(want), `short-lived ${i}`);
    assert.equal(short.buffer === pool.buffer, want.length < Buffer.poolSize >>> 1, `outcome ${i}: pooled`);
    // The same with its mappings encoded once, as a DP's answer cache keeps them.
    if (o.kind !== "answer") continue;
    const kept: LookupOutcome = { ...o, mappings: [...o.mappings] };
    keepEncodedMappings(kept.mappings);
    assert.deepEqual(Buffer.from(writeAnswerWithoutTtl(kept, indexOf)), Buffer.from(want), `kept ${i}`);
  }
});

test("mappings kept encoded are frozen, and written as they were when kept; others as they are", () => {
  const m = mapping({ signed: { ...(mapping({}).signed as MappingSignatures), record: bytes(150, 1) } });
  const mappings = [m];
  keepEncodedMappings(mappings);
  assert.ok(Object.isFrozen(mappings) && Object.isFrozen(m));
  assert.throws(() => Object.assign(m, { ssi: "@changed:a" }), TypeError);
  const o: LookupOutcome = { kind: "answer", dpId: "eu", ttlSeconds: 1, mappings };
  const before = Buffer.from(writeAnswerWithoutTtl(o, indexOf));
  // Bytes cannot be frozen: changed against the contract, to show the answer's come from the keeping.
  (m.signed as MappingSignatures).record[0] = 99;
  assert.deepEqual(Buffer.from(writeAnswerWithoutTtl(o, indexOf)), before);
  const fresh: LookupOutcome = { ...o, mappings: [m] };
  assert.notDeepEqual(Buffer.from(writeAnswerWithoutTtl(fresh, indexOf)), before);
  // An array with a time the varint writer does not take is not kept: protobuf-es writes it.
  const odd = [mapping({ expiresAtMs: -1 })];
  keepEncodedMappings(odd);
  assert.equal(handEncodable({ ...o, mappings: odd }), false);
});

test("a batch place that is not a uint32 is left to protobuf-es", () => {
  for (const index of [-1, 2 ** 32, 0.5]) {
    const o: LookupOutcome = {
      kind: "not_found",
      dpId: "eu",
      ttlSeconds: 60,
      seal: { ...inBatch, batch: { ...inBatch.batch, index } },
    };
    assert.equal(handEncodable(o), false, String(index));
  }
  assert.equal(handEncodable({ kind: "not_found", dpId: "eu", ttlSeconds: 60, seal: inBatch }), true);
});

test("times the varint writer does not take are left to protobuf-es", () => {
  for (const t of [-1, 2 ** 53, Number.NaN]) {
    assert.equal(
      handEncodable({ kind: "answer", dpId: "eu", ttlSeconds: 1, mappings: [mapping({ expiresAtMs: t })] }),
      false,
    );
  }
});
