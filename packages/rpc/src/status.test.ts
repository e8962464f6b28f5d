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
import { MAX_STATUS_MESSAGE, sendable, toWireStatus } from "./status.js";

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
