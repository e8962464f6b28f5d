import assert from "node:assert/strict";
import { test } from "node:test";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { DEFAULT_PARAMS, type LookupOutcome } from "../domain/answer.js";
import {
  LookupResponseSchema,
  LookupStreamResponseSchema,
} from "../gen/generated/mimi/discovery/v1/authoritative_pb.js";
import { AnswerFormat, AnswerSchema, LookupStatus } from "../gen/generated/mimi/discovery/v1/common_pb.js";
import {
  ResolveRequestSchema,
  ResolveResponseSchema,
  ResolveStreamRequestSchema,
  ResolveStreamResponseSchema,
} from "../gen/generated/mimi/discovery/v1/resolver_pb.js";
import { answerToProto } from "./convert.js";
import {
  encodeAnswerWithoutTtl,
  encodeLookupResponse,
  encodeLookupStreamItem,
  encodeResolveResponse,
  encodeResolveStreamHit,
  encodeResolveStreamItem,
  readSimpleRequest,
  readVarintField,
  streamItemSlab,
} from "./encoded.js";

const index: Record<string, number> = { "a.example": 0, "b.example": 9 };
const indexOf = (id: string) => index[id];
const outcomes: LookupOutcome[] = [
  {
    kind: "answer",
    dpId: "eu",
    ttlSeconds: 300,
    mappings: [
      {
        mspId: "a.example",
        ssi: "@x:a",
        isDefault: true,
        tags: ["Personal"],
        createdAtMs: 1_700_000_000_000,
        proofMethod: "sms-code",
        expiresAtMs: 1_731_536_000_000,
        signed: {
          record: Uint8Array.of(1, 2, 3),
          userSignature: new Uint8Array(64).fill(4),
          mspSignature: new Uint8Array(64).fill(5),
          dpSignature: new Uint8Array(64).fill(6),
        },
      },
      {
        mspId: "b.example",
        ssi: "b-1",
        isDefault: false,
        tags: [],
        createdAtMs: 1_700_000_000_001,
        proofMethod: "bulk",
        expiresAtMs: 1_731_536_000_001,
      },
    ],
  },
  { kind: "not_found", dpId: "us", ttlSeconds: 60 },
  { kind: "opted_out", dpId: "eu", ttlSeconds: 120 },
  { kind: "not_found", dpId: "", ttlSeconds: 60 },
];

test("pre-encoded responses decode exactly like the messages built field by field", () => {
  for (const outcome of outcomes) {
    for (const [ttl, stale] of [
      [0, false],
      [1, false],
      [299, true],
      [86_400, false],
    ] as const) {
      const fast = encodeResolveResponse(encodeAnswerWithoutTtl(outcome, indexOf), ttl, stale);
      const slow = create(ResolveResponseSchema, {
        answer: answerToProto(outcome, DEFAULT_PARAMS, indexOf, ttl),
        stale,
      });
      assert.deepEqual(
        fromBinary(ResolveResponseSchema, fast),
        fromBinary(ResolveResponseSchema, toBinary(ResolveResponseSchema, slow)),
      );
    }
  }
});

test("pre-encoded stream items carry the request id and the response", () => {
  const response = encodeResolveResponse(
    encodeAnswerWithoutTtl(outcomes[0] as LookupOutcome, indexOf),
    42,
    false,
  );
  for (const id of [0n, 1n, 2n ** 40n]) {
    const item = fromBinary(ResolveStreamResponseSchema, encodeResolveStreamItem(id, response));
    assert.equal(item.requestId, id);
    assert.equal(item.result.case, "response");
    assert.equal(item.result.case === "response" && item.result.value.answer?.ttlSeconds, 42);
  }
});

test("pre-encoded answers keep the signed record and say OPTED_OUT for an opted-out holder", () => {
  const decode = (outcome: LookupOutcome) =>
    fromBinary(
      ResolveResponseSchema,
      encodeResolveResponse(encodeAnswerWithoutTtl(outcome, indexOf), 7, false),
    ).answer;
  const found = decode(outcomes[0] as LookupOutcome);
  assert.equal(found?.status, LookupStatus.FOUND);
  const first = found?.mappings[0];
  assert.equal(first?.proofMethod, "sms-code");
  assert.equal(first?.expiresAtMs, 1_731_536_000_000n);
  assert.deepEqual([...(first?.signed?.record ?? [])], [1, 2, 3]);
  assert.deepEqual(first?.signed?.dpSignature, new Uint8Array(64).fill(6));
  assert.equal(found?.mappings[1]?.signed, undefined, "a mapping without a record sends none");
  const optedOut = decode({ kind: "opted_out", dpId: "eu", ttlSeconds: 120 });
  assert.equal(optedOut?.status, LookupStatus.OPTED_OUT);
  assert.equal(optedOut?.mappings.length, 0);
  assert.deepEqual(optedOut?.dpIds, ["eu"]);
});

test("the hand-written framing decodes as the message at every varint length, stale or not", () => {
  const answer = encodeAnswerWithoutTtl(outcomes[0] as LookupOutcome, indexOf);
  for (const ttl of [0, 1, 127, 128, 16_383, 16_384, 2_097_152, 2 ** 31 - 1]) {
    for (const stale of [false, true]) {
      const bytes = encodeResolveResponse<unknown>(answer, ttl, stale);
      const m = fromBinary(ResolveResponseSchema, bytes);
      assert.equal(m.answer?.ttlSeconds, ttl);
      assert.equal(m.stale, stale);
      // The same message as one built field by field (proto3 readers take fields in any order).
      const built = create(ResolveResponseSchema, {
        answer: { ...fromBinary(AnswerSchema, answer), ttlSeconds: ttl },
        stale,
      });
      assert.deepEqual(m, built);
    }
  }
  const response = encodeResolveResponse<unknown>(answer, 300, false);
  for (const id of [0n, 1n, 127n, 128n, 2n ** 53n - 1n, 2n ** 53n, 2n ** 64n - 1n]) {
    const item = fromBinary(ResolveStreamResponseSchema, encodeResolveStreamItem<unknown>(id, response));
    assert.equal(item.requestId, id);
    assert.equal(item.result.case, "response");
    assert.deepEqual(item.result.value, fromBinary(ResolveResponseSchema, response));
  }
});

test("a streamed hit written in one buffer is the item of the response, byte for byte", () => {
  for (const outcome of outcomes) {
    const answer = encodeAnswerWithoutTtl(outcome, indexOf);
    for (const ttl of [0, 1, 127, 128, 16_384, 2 ** 31 - 1]) {
      for (const stale of [false, true]) {
        for (const id of [0, 1, 127, 128, 2 ** 53 - 1]) {
          const hit = encodeResolveStreamHit<unknown>(id, answer, ttl, stale);
          const parts = encodeResolveStreamItem<unknown>(
            BigInt(id),
            encodeResolveResponse(answer, ttl, stale),
          );
          assert.deepEqual([...hit], [...parts], `id ${id}, ttl ${ttl}, stale ${stale}`);
          const item = fromBinary(ResolveStreamResponseSchema, hit);
          assert.equal(item.requestId, BigInt(id));
          assert.equal(item.result.case === "response" && item.result.value.answer?.ttlSeconds, ttl);
        }
      }
    }
  }
  const answer = encodeAnswerWithoutTtl(outcomes[0] as LookupOutcome, indexOf);
  for (const id of [-1, 2 ** 53, 0.5, Number.NaN]) {
    assert.throws(() => encodeResolveStreamHit<unknown>(id, answer, 1, false), RangeError, `id ${id}`);
  }
});

test("a stream's items cut from its slab are its own bytes, each the same as a buffer of its own", () => {
  const itemBytes = streamItemSlab();
  const made: { item: Uint8Array; expected: number[] }[] = [];
  for (const outcome of outcomes) {
    const answer = encodeAnswerWithoutTtl(outcome, indexOf);
    for (const ttl of [0, 1, 16_384]) {
      for (const id of [0, 1, 128, 2 ** 53 - 1]) {
        const hit = encodeResolveStreamHit<unknown>(id, answer, ttl, false, itemBytes);
        assert.deepEqual([...hit], [...encodeResolveStreamHit<unknown>(id, answer, ttl, false)]);
        const response = encodeResolveResponse(answer, ttl, true);
        const item = encodeResolveStreamItem<unknown>(BigInt(id), response, itemBytes);
        assert.deepEqual([...item], [...encodeResolveStreamItem<unknown>(BigInt(id), response)]);
        made.push({ item: hit, expected: [...hit] }, { item, expected: [...item] });
      }
      // An id past 2^53 takes protobuf-es's writer, whatever the slab.
      const response = encodeResolveResponse(answer, ttl, false);
      const big = encodeResolveStreamItem<unknown>(2n ** 60n, response, itemBytes);
      assert.deepEqual([...big], [...encodeResolveStreamItem<unknown>(2n ** 60n, response)]);
    }
  }
  // No item written later landed on an earlier one's bytes.
  for (const { item, expected } of made) assert.deepEqual([...item], expected);
  // Small items share backing stores, several to one.
  const stores = new Set(made.map(({ item }) => item.buffer));
  assert.ok(stores.size * 4 <= made.length, `${made.length} items in ${stores.size} backing stores`);
  // Half a chunk is cut from one; more gets a buffer of its own.
  const half = itemBytes(4_096);
  assert.ok(half.buffer.byteLength > half.byteLength, "4,096 bytes: cut from a chunk");
  const more = itemBytes(4_097);
  assert.equal(more.buffer.byteLength, more.byteLength, "4,097 bytes: its own");
});

test("the simple-request reader takes exactly the requests that hold a CSI and an id, as protobuf-es decodes them", () => {
  const csis = [
    "tel:+447700900123",
    "mailto:alice@example.org",
    "x".repeat(127),
    "x".repeat(128),
    "x".repeat(512),
  ];
  for (const csi of csis) {
    const unary = toBinary(ResolveRequestSchema, create(ResolveRequestSchema, { csi }));
    assert.deepEqual(readSimpleRequest(Buffer.from(unary), 1), { id: 0, csi }, `unary ${csi.length}`);
    for (const id of [0n, 1n, 127n, 128n, 2n ** 49n - 1n]) {
      const item = toBinary(
        ResolveStreamRequestSchema,
        create(ResolveStreamRequestSchema, { requestId: id, csi }),
      );
      assert.deepEqual(readSimpleRequest(Buffer.from(item), 2, 1), { id: Number(id), csi });
    }
  }
  // Everything else is left to the full decoder.
  const declined: [Uint8Array, number, number?][] = [
    [toBinary(ResolveRequestSchema, create(ResolveRequestSchema, { csi: "tel:+1", explain: true })), 1],
    [
      toBinary(
        ResolveRequestSchema,
        create(ResolveRequestSchema, { csi: "tel:+1", options: { format: AnswerFormat.COMPACT } }),
      ),
      1,
    ],
    [toBinary(ResolveRequestSchema, create(ResolveRequestSchema, { csi: "x".repeat(513) })), 1],
    [
      toBinary(
        ResolveStreamRequestSchema,
        create(ResolveStreamRequestSchema, { requestId: 2n ** 49n, csi: "a" }),
      ),
      2,
      1,
    ],
    [
      toBinary(
        ResolveStreamRequestSchema,
        create(ResolveStreamRequestSchema, { requestId: 2n ** 64n - 1n, csi: "a" }),
      ),
      2,
      1,
    ],
    [Uint8Array.of(0x12, 0x01, 0x61, 0x08, 0x01), 2, 1], // the id after the CSI
    [Uint8Array.of(0x0a, 0x05, 0x61), 1], // truncated
    [Uint8Array.of(0x0a, 0x01, 0x61, 0x00), 1], // trailing bytes
    [Uint8Array.of(0x0a, 0x80), 1], // truncated length
    [Uint8Array.of(0x0a, 0xff, 0xff, 0x01), 1], // a length of three bytes
    [Uint8Array.of(0x08, 0xff), 2, 1], // truncated id
    [new Uint8Array(0), 1], // no CSI: the full path says what is wrong
  ];
  for (const [bytes, csiField, idField] of declined) {
    assert.equal(
      readSimpleRequest(Buffer.from(bytes), csiField, idField),
      undefined,
      Buffer.from(bytes).toString("hex").slice(0, 40),
    );
  }
  // Non-ASCII CSIs take the full decoder: UTF-8 read one byte to a character could spell another
  // canonical CSI (U+0861 is E0 A1 A1, which reads "\u00e0\u00a1\u00a1"), and bytes that are
  // not UTF-8 must get the full decoder's INVALID_ARGUMENT.
  for (const csi of ["mailto:\u0861@x.org", "tel:+44\u00e9"]) {
    const bytes = toBinary(ResolveRequestSchema, create(ResolveRequestSchema, { csi }));
    assert.equal(readSimpleRequest(Buffer.from(bytes), 1), undefined, csi);
  }
  assert.equal(readSimpleRequest(Buffer.from([0x0a, 0x03, 0x61, 0xff, 0x62]), 1), undefined);
});

test("a DP's pre-encoded answers decode as the LookupResponse and stream item built field by field", () => {
  for (const o of outcomes) {
    const bytes = encodeLookupResponse<unknown>(encodeAnswerWithoutTtl(o, indexOf), o.ttlSeconds);
    const built = create(LookupResponseSchema, {
      answer: answerToProto(o, DEFAULT_PARAMS, indexOf, o.ttlSeconds),
    });
    assert.deepEqual(fromBinary(LookupResponseSchema, bytes), built);
    const item = fromBinary(LookupStreamResponseSchema, encodeLookupStreamItem<unknown>(42n, bytes));
    assert.equal(item.requestId, 42n);
    assert.deepEqual(item.result, { case: "response", value: built });
  }
});

test("readVarintField reads a varint field of a message that does not decode, and nothing from broken wire format", () => {
  const notUtf8 = [0x12, 0x02, 0xc3, 0x28]; // field 2: a string that is not UTF-8
  assert.equal(readVarintField(Uint8Array.from([0x08, 0x07, ...notUtf8]), 1), 7n);
  assert.equal(
    readVarintField(Uint8Array.from([...notUtf8, 0x08, 0x96, 0x01]), 1),
    150n,
    "after other fields",
  );
  assert.equal(
    readVarintField(Uint8Array.from([0x08, 0x01, 0x08, 0x02]), 1),
    2n,
    "the last one, as decoders take it",
  );
  assert.equal(readVarintField(Uint8Array.from(notUtf8), 1), undefined, "absent");
  assert.equal(
    readVarintField(Uint8Array.from([0x0a, 0x01, 0x41]), 1),
    undefined,
    "field 1, but not a varint",
  );
  assert.equal(readVarintField(Uint8Array.from([0x08, 0xff]), 1), undefined, "a varint cut short");
  assert.equal(
    readVarintField(Uint8Array.from([0x08, 0x07, 0x12, 0x09, 0x41]), 1),
    undefined,
    "a length past the end",
  );
});
