// The canonical encodings that get signed: round trips, determinism, strict decoding, and
// known answers pinned to the layout common.proto documents (MappingRecordSignatures).
import assert from "node:assert/strict";
import { test } from "node:test";
import { DiscoveryError } from "./errors.js";
import {
  type ActionStatement,
  decodeActionStatement,
  decodeMappingRecord,
  dpSignedParts,
  encodeActionStatement,
  encodeMappingRecord,
  type MappingRecord,
  PROOF_METHODS,
  ssiProblem,
  tagsProblem,
} from "./record.js";

const USER_KEY = Uint8Array.from({ length: 32 }, (_, i) => i + 1);

const RECORD: MappingRecord = {
  csi: "tel:+447700900123",
  mspId: "a.example",
  ssi: "@alice:a.example",
  defaultRequested: true,
  tags: ["Personal", "Business"],
  createdAtMs: 1_700_000_000_000,
  proofMethod: "sms-code",
  proofId: "ch-1",
  userPublicKey: USER_KEY,
  dpId: "eu",
  expiresAtMs: 1_731_536_000_000,
};

const ACTION: ActionStatement = {
  action: "invalidate",
  csi: "tel:+447700900123",
  challengeId: "ch-2",
  dpId: "eu",
  mspId: "a.example",
  targetMspId: "b.example",
  targetSsi: "b-1",
  userPublicKey: USER_KEY,
  issuedAtMs: 1_700_000_000_123,
};

const isInvalid = (e: unknown) => e instanceof DiscoveryError && e.code === "invalid_argument";

/** Builds bytes by hand as common.proto describes them: u16 lengths, big-endian integers. */
class Bytes {
  private readonly parts: Buffer[] = [];
  ascii(s: string): this {
    this.parts.push(Buffer.from(s, "ascii"));
    return this;
  }
  str(s: string): this {
    return this.bin(Buffer.from(s, "utf8"));
  }
  bin(b: Uint8Array): this {
    const len = Buffer.alloc(2);
    len.writeUInt16BE(b.length);
    this.parts.push(len, Buffer.from(b));
    return this;
  }
  u8(n: number): this {
    this.parts.push(Buffer.of(n));
    return this;
  }
  u64(n: bigint): this {
    const b = Buffer.alloc(8);
    b.writeBigUInt64BE(n);
    this.parts.push(b);
    return this;
  }
  raw(b: Uint8Array): this {
    this.parts.push(Buffer.from(b));
    return this;
  }
  done(): Uint8Array {
    return new Uint8Array(Buffer.concat(this.parts));
  }
}

/** The record built field by field from the common.proto comment; `tamper` swaps in raw field bytes. */
function recordByHand(
  r: MappingRecord,
  tamper: { ssi?: Uint8Array; flag?: number; createdAt?: bigint } = {},
): Uint8Array {
  const b = new Bytes()
    .ascii("MIMI-MAPPING-v1")
    .str(r.csi)
    .str(r.mspId)
    .bin(tamper.ssi ?? Buffer.from(r.ssi, "utf8"))
    .u8(tamper.flag ?? (r.defaultRequested ? 1 : 0))
    .u8(r.tags.length);
  for (const t of r.tags) b.str(t);
  return b
    .u64(tamper.createdAt ?? BigInt(r.createdAtMs))
    .str(r.proofMethod)
    .str(r.proofId)
    .bin(r.userPublicKey)
    .str(r.dpId)
    .u64(BigInt(r.expiresAtMs))
    .done();
}

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

test("mapping records round-trip, including non-ASCII text, no tags and eight tags", () => {
  const cases: [string, MappingRecord][] = [
    ["the base record", RECORD],
    [
      "non-ASCII strings",
      {
        ...RECORD,
        csi: "mailto:zoë@exämple.org",
        ssi: "ユーザー-😀",
        tags: ["Privé", "Geschäft", "仕事"],
        proofMethod: "email-code",
      },
    ],
    ["no tags, not default", { ...RECORD, tags: [], defaultRequested: false }],
    ["eight tags", { ...RECORD, tags: Array.from({ length: 8 }, (_, i) => `tag-${i}`) }],
    ["an empty tag string", { ...RECORD, tags: [""] }],
    [
      "a bulk record without a holder key",
      { ...RECORD, proofMethod: "bulk", proofId: "", userPublicKey: new Uint8Array(0) },
    ],
    ["extreme times", { ...RECORD, createdAtMs: 0, expiresAtMs: Number.MAX_SAFE_INTEGER }],
  ];
  for (const [name, r] of cases) {
    const bytes = encodeMappingRecord(r);
    assert.deepEqual(decodeMappingRecord(bytes), r, name);
    assert.equal(hex(bytes), hex(recordByHand(r)), `${name}: layout as common.proto documents it`);
  }
});

test("action statements round-trip for both actions, with empty targets and non-ASCII text", () => {
  const cases: ActionStatement[] = [
    ACTION,
    { ...ACTION, targetMspId: "", targetSsi: "" },
    { ...ACTION, action: "opt_out", targetMspId: "", targetSsi: "", csi: "mailto:zoë@exämple.org" },
    { ...ACTION, targetSsi: "ユーザー-😀", issuedAtMs: Number.MAX_SAFE_INTEGER },
  ];
  for (const s of cases) assert.deepEqual(decodeActionStatement(encodeActionStatement(s)), s);
});

test("encoding is deterministic: equal content gives equal bytes whatever the object's key order", () => {
  const a = encodeMappingRecord(RECORD);
  const reordered: MappingRecord = {
    expiresAtMs: RECORD.expiresAtMs,
    dpId: RECORD.dpId,
    userPublicKey: Uint8Array.from(USER_KEY),
    proofId: RECORD.proofId,
    proofMethod: RECORD.proofMethod,
    createdAtMs: RECORD.createdAtMs,
    tags: [...RECORD.tags],
    defaultRequested: RECORD.defaultRequested,
    ssi: RECORD.ssi,
    mspId: RECORD.mspId,
    csi: RECORD.csi,
  };
  assert.equal(hex(encodeMappingRecord(reordered)), hex(a));
  assert.equal(hex(encodeMappingRecord(decodeMappingRecord(a))), hex(a));
  assert.equal(hex(encodeActionStatement(ACTION)), hex(encodeActionStatement({ ...ACTION })));
  // Tag order is part of the content, not normalized away.
  assert.notEqual(hex(encodeMappingRecord({ ...RECORD, tags: ["Business", "Personal"] })), hex(a));
});

test("known answer: a fixed mapping record has fixed bytes", () => {
  // Any change to the layout breaks every signature already issued; this must never change
  // without a new magic ("MIMI-MAPPING-v2").
  const expected =
    "4d494d492d4d415050494e472d7631" + // "MIMI-MAPPING-v1"
    "0011" +
    Buffer.from("tel:+447700900123").toString("hex") +
    "0009" +
    Buffer.from("a.example").toString("hex") +
    "0010" +
    Buffer.from("@alice:a.example").toString("hex") +
    "01" + // default_requested
    "02" + // tag count
    "0008" +
    Buffer.from("Personal").toString("hex") +
    "0008" +
    Buffer.from("Business").toString("hex") +
    "0000018bcfe56800" + // created_at_ms 1_700_000_000_000
    "0008" +
    Buffer.from("sms-code").toString("hex") +
    "0004" +
    Buffer.from("ch-1").toString("hex") +
    "0020" +
    "0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20" +
    "0002" +
    Buffer.from("eu").toString("hex") +
    "0000019327969400"; // expires_at_ms 1_731_536_000_000
  assert.equal(hex(encodeMappingRecord(RECORD)), expected);
});

test("known answer: a fixed action statement has fixed bytes", () => {
  // claims.proto does not spell this layout out; record.ts's order is the reference.
  const byHand = new Bytes()
    .ascii("MIMI-ACTION-v1")
    .str("invalidate")
    .str(ACTION.csi)
    .str(ACTION.challengeId)
    .str(ACTION.dpId)
    .str(ACTION.mspId)
    .str(ACTION.targetMspId)
    .str(ACTION.targetSsi)
    .bin(ACTION.userPublicKey)
    .u64(BigInt(ACTION.issuedAtMs))
    .done();
  assert.equal(hex(encodeActionStatement(ACTION)), hex(byHand));
  assert.equal(hex(byHand).slice(0, 28), Buffer.from("MIMI-ACTION-v1").toString("hex"));
  assert.equal(hex(byHand).slice(-16), "0000018bcfe5687b");
});

test("decoding refuses a wrong magic or version, and the other kind of statement", () => {
  const good = encodeMappingRecord(RECORD);
  const v2 = Uint8Array.from(good);
  v2[14] = "2".charCodeAt(0); // "MIMI-MAPPING-v2"
  const lower = Uint8Array.from(good);
  lower[0] = "m".charCodeAt(0);
  for (const bad of [v2, lower, encodeActionStatement(ACTION), new Uint8Array(0)]) {
    assert.throws(() => decodeMappingRecord(bad), isInvalid);
  }
  const action = encodeActionStatement(ACTION);
  const actionV2 = Uint8Array.from(action);
  actionV2[13] = "2".charCodeAt(0);
  for (const bad of [actionV2, good]) assert.throws(() => decodeActionStatement(bad), isInvalid);
});

test("decoding refuses every truncation of a record and of a statement", () => {
  const record = encodeMappingRecord(RECORD);
  for (let n = 0; n < record.length; n++) {
    assert.throws(() => decodeMappingRecord(record.subarray(0, n)), isInvalid, `record cut at ${n}`);
  }
  const action = encodeActionStatement(ACTION);
  for (let n = 0; n < action.length; n++) {
    assert.throws(() => decodeActionStatement(action.subarray(0, n)), isInvalid, `statement cut at ${n}`);
  }
});

test("decoding refuses trailing bytes", () => {
  for (const extra of [[0], [1, 2, 3]]) {
    const record = Buffer.concat([encodeMappingRecord(RECORD), Buffer.from(extra)]);
    assert.throws(() => decodeMappingRecord(record), /trailing/);
    const action = Buffer.concat([encodeActionStatement(ACTION), Buffer.from(extra)]);
    assert.throws(() => decodeActionStatement(action), /trailing/);
  }
});

test("decoding refuses a flag byte other than 0 or 1", () => {
  assert.deepEqual(decodeMappingRecord(recordByHand(RECORD, { flag: 0 })).defaultRequested, false);
  for (const flag of [2, 0xff]) {
    assert.throws(() => decodeMappingRecord(recordByHand(RECORD, { flag })), /neither 0 nor 1/);
  }
});

test("decoding refuses strings that are not valid UTF-8", () => {
  const cases = [
    Uint8Array.of(0xff),
    Uint8Array.of(0x61, 0xc3), // a cut two-byte sequence
    Uint8Array.of(0xc0, 0x80), // overlong NUL
    Uint8Array.of(0xed, 0xa0, 0x80), // a UTF-16 surrogate
  ];
  assert.equal(decodeMappingRecord(recordByHand(RECORD, { ssi: Buffer.from("é") })).ssi, "é");
  for (const ssi of cases) {
    assert.throws(() => decodeMappingRecord(recordByHand(RECORD, { ssi })), /not valid UTF-8/, hex(ssi));
  }
});

test("decoding refuses times beyond 2^53 and encoding refuses times it could not decode", () => {
  const max = BigInt(Number.MAX_SAFE_INTEGER);
  assert.equal(
    decodeMappingRecord(recordByHand(RECORD, { createdAt: max })).createdAtMs,
    Number.MAX_SAFE_INTEGER,
  );
  for (const createdAt of [max + 1n, (1n << 64n) - 1n]) {
    assert.throws(() => decodeMappingRecord(recordByHand(RECORD, { createdAt })), /beyond 2\^53/);
  }
  for (const createdAtMs of [-1, 1.5, Number.MAX_SAFE_INTEGER + 1, Number.NaN]) {
    assert.throws(() => encodeMappingRecord({ ...RECORD, createdAtMs }), isInvalid, String(createdAtMs));
  }
  assert.throws(() => encodeActionStatement({ ...ACTION, issuedAtMs: -5 }), isInvalid);
});

test("encoding refuses what the layout cannot hold: over 255 tags, fields over 65535 bytes", () => {
  assert.doesNotThrow(() => encodeMappingRecord({ ...RECORD, tags: Array(255).fill("t") }));
  assert.throws(() => encodeMappingRecord({ ...RECORD, tags: Array(256).fill("t") }), isInvalid);
  assert.doesNotThrow(() => encodeMappingRecord({ ...RECORD, ssi: "x".repeat(0xffff) }));
  assert.throws(() => encodeMappingRecord({ ...RECORD, ssi: "x".repeat(0x10000) }), isInvalid);
  // Length counts bytes, not characters: 32768 two-byte characters overflow.
  assert.throws(() => encodeMappingRecord({ ...RECORD, ssi: "é".repeat(0x8000) }), isInvalid);
});

test("encoding refuses strings the decoder would refuse: a lone surrogate, U+FFFD", () => {
  const emoji = "\u{1F426}"; // a surrogate pair: four UTF-8 bytes
  assert.equal(decodeMappingRecord(encodeMappingRecord({ ...RECORD, ssi: emoji })).ssi, emoji);
  for (const ssi of ["\uD83D", "a\uDC26", "\uDC26\uD83D", "\uFFFD"]) {
    assert.throws(() => encodeMappingRecord({ ...RECORD, ssi }), isInvalid, JSON.stringify(ssi));
  }
  // A record longer than the writer's first buffer (256 bytes) comes out whole.
  const long = { ...RECORD, ssi: "s".repeat(1000), tags: Array(40).fill("tag") };
  assert.deepEqual(decodeMappingRecord(encodeMappingRecord(long)), long);
});

test("decoding refuses an unknown action", () => {
  const bytes = new Bytes()
    .ascii("MIMI-ACTION-v1")
    .str("delete_everything")
    .str(ACTION.csi)
    .str(ACTION.challengeId)
    .str(ACTION.dpId)
    .str(ACTION.mspId)
    .str("")
    .str("")
    .bin(ACTION.userPublicKey)
    .u64(1n)
    .done();
  assert.throws(() => decodeActionStatement(bytes), /unknown action/);
});

test("the DP signs the effective default flag ahead of the record", () => {
  const record = encodeMappingRecord(RECORD);
  assert.deepEqual(
    dpSignedParts(true, record).map((p) => hex(p)),
    ["01", hex(record)],
  );
  assert.deepEqual(dpSignedParts(false, record)[0], Uint8Array.of(0));
});

test("proof methods are listed weakest first", () => {
  assert.deepEqual([...PROOF_METHODS], ["bulk", "email-code", "sms-code"]);
});

test("tag and ssi checks are the DP's limits (R7), shared with clients", () => {
  assert.equal(tagsProblem(["Business", "Personal"]), undefined);
  assert.match(tagsProblem(["Default"]) ?? "", /not a tag/);
  assert.match(tagsProblem(["a", "A"]) ?? "", /twice/);
  assert.match(tagsProblem(["-x"]) ?? "", /letters, digits/);
  assert.match(tagsProblem(["x".repeat(33)]) ?? "", /1 to 32/);
  assert.match(tagsProblem(Array.from({ length: 9 }, (_, i) => `t${i}`)) ?? "", /at most 8/);
  assert.equal(ssiProblem("@amira:bluebird.example"), undefined);
  assert.match(ssiProblem("  ") ?? "", /not all blank/);
  assert.match(ssiProblem("a\u0007b") ?? "", /control/);
});
