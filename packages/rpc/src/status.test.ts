// What a peer is told: status messages cut to a length every peer's header limit takes.
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  createLogger,
  DiscoveryError,
  decodeStatusDetails,
  invalidArgument,
  STATUS_DETAILS_KEY,
} from "@mimi/core";
import { MAX_STATUS_MESSAGE, MAX_STATUS_WIRE, MAX_TRAILER_VALUES, sendable, toWireStatus } from "./status.js";

test("a message echoing a large field is cut short, never inside a surrogate pair", () => {
  const log = createLogger({ name: "test", level: "silent" });
  const huge = new DiscoveryError("invalid_argument", `DP id "${"x".repeat(65_536)}" is not valid`);
  const s = toWireStatus(huge, log, "PutDp");
  assert.equal(s.details.length, MAX_STATUS_MESSAGE + 3);
  assert.ok(s.details.startsWith('DP id "xxx') && s.details.endsWith("..."));
  // Cut where a pair would be split: the pair goes whole, and nothing lone is left.
  const emoji = `${"a".repeat(MAX_STATUS_MESSAGE - 1)}😀tail`;
  assert.equal(sendable(emoji), `${"a".repeat(MAX_STATUS_MESSAGE - 1)}...`);
  assert.equal(sendable("short"), "short");
});

test("the rich details are cut too: a field's description repeats the message", () => {
  const log = createLogger({ name: "test", level: "silent" });
  const err = invalidArgument(`csi "${"9".repeat(65_536)}" is not a number`, "csi");
  const s = toWireStatus(err, log, "Resolve");
  const raw = s.metadata.get(STATUS_DETAILS_KEY)[0] as Buffer;
  assert.ok(raw.length < 4_000, `${raw.length} bytes of details`);
  const d = decodeStatusDetails(raw);
  assert.equal(d?.fields?.[0]?.field, "csi");
  assert.equal(d?.fields?.[0]?.description.length, 1_003);
});

test("a message of non-ASCII text is cut by its size on the wire: the trailers stay under 8 KiB", () => {
  const log = createLogger({ name: "test", level: "silent" });
  // A CSI of CJK characters echoed back: 3 UTF-8 bytes each, 9 characters percent-encoded.
  const err = invalidArgument(`csi "${"界".repeat(65_536)}" is not a number`, "csi");
  const s = toWireStatus(err, log, "Resolve");
  const encoded = encodeURI(s.details).length;
  assert.ok(
    encoded <= MAX_STATUS_WIRE && encoded > MAX_STATUS_WIRE - 12,
    `${encoded} characters on the wire`,
  );
  assert.ok(s.details.startsWith('csi "界界') && s.details.endsWith("..."));
  const raw = s.metadata.get(STATUS_DETAILS_KEY)[0] as Buffer;
  const d = decodeStatusDetails(raw);
  assert.ok(Buffer.byteLength(d?.fields?.[0]?.description ?? "") <= 1_003);
  assert.ok(encoded + raw.toString("base64").length < 8_000, `${encoded} + ${raw.length} bytes of details`);
  // Emoji (4 bytes, 12 characters) are cut whole.
  const emoji = sendable("😀".repeat(MAX_STATUS_MESSAGE));
  assert.ok(encodeURI(emoji).length <= MAX_STATUS_WIRE);
  assert.ok(emoji.endsWith("😀..."));
  // Plain ASCII keeps its 2,000 characters.
  assert.equal(sendable("a".repeat(5_000)).length, MAX_STATUS_MESSAGE + 3);
});

/** What a status's message and details take in the trailers: percent-encoded and base64. */
function trailerValues(s: ReturnType<typeof toWireStatus>): number {
  const raw = s.metadata.get(STATUS_DETAILS_KEY)[0] as Buffer | undefined;
  return encodeURI(s.details).length + (raw ? raw.toString("base64").length : 0);
}

test("the trailers stay within their budget for the worst mixes: encoded ASCII, many details", () => {
  const log = createLogger({ name: "test", level: "silent" });
  // Mostly plain ASCII with a space in ten: the message is cut by its encoded size.
  const spaced = invalidArgument(`csi "${"aaaaaaaaa ".repeat(6_000)}" is not a number`, "csi");
  const a = toWireStatus(spaced, log, "Resolve");
  assert.ok(encodeURI(a.details).length <= MAX_STATUS_WIRE);
  assert.ok(a.details.length < MAX_STATUS_MESSAGE, "cut below 2,000 characters");
  assert.ok(trailerValues(a) <= MAX_TRAILER_VALUES, `${trailerValues(a)}`);
  // Many long details: the reason, the retry time and the first field are what is kept.
  const many = new DiscoveryError("invalid_argument", "界".repeat(5_000), {
    details: {
      reason: "MANY",
      retryAfterMs: 1_500,
      fields: Array.from({ length: 10 }, (_, i) => ({ field: `f${i}`, description: "界".repeat(2_000) })),
      metadata: { note: "界".repeat(2_000) },
    },
  });
  const b = toWireStatus(many, log, "Resolve");
  assert.ok(trailerValues(b) <= MAX_TRAILER_VALUES, `${trailerValues(b)}`);
  const d = decodeStatusDetails(b.metadata.get(STATUS_DETAILS_KEY)[0] as Buffer);
  assert.equal(d?.reason, "MANY");
  assert.equal(d?.retryAfterMs, 1_500);
  assert.deepEqual(
    d?.fields?.map((f) => f.field),
    ["f0"],
  );
  // Lone surrogates are sent as U+FFFD, never thrown on.
  const lone = sendable("\uD800".repeat(3_000));
  assert.ok(encodeURI(lone).length <= MAX_STATUS_WIRE);
  assert.ok(lone.startsWith("\uFFFD") && lone.endsWith("..."));
});
