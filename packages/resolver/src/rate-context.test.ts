// Rate-limit contexts: one per caller per day, unrelated across callers, days and keys.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { test } from "node:test";
import { createRateContexts } from "./rate-context.js";

const DAY = 86_400_000;
const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

test("a caller keeps one 16-byte context all day at one DP; another caller, DP, day or resolver gets another", () => {
  const key = new Uint8Array(32).fill(7);
  const a = createRateContexts(key);
  const morning = a.of("msp-parrot", "eu", 10 * DAY + 1);
  assert.equal(morning.length, 16);
  assert.equal(hex(a.of("msp-parrot", "eu", 11 * DAY - 1)), hex(morning));
  assert.notEqual(hex(a.of("msp-wirechat", "eu", 10 * DAY + 1)), hex(morning));
  assert.notEqual(hex(a.of("msp-parrot", "us", 10 * DAY + 1)), hex(morning), "DPs cannot join notes");
  assert.notEqual(hex(a.of("msp-parrot", "eu", 11 * DAY)), hex(morning), "a new day, a new pseudonym");
  // The same key gives the same contexts (the derivation is deterministic)...
  assert.equal(hex(createRateContexts(key).of("msp-parrot", "eu", 10 * DAY + 5)), hex(morning));
  // ...and another resolver's key unrelated ones; none is a plain hash of the identity.
  assert.notEqual(hex(createRateContexts().of("msp-parrot", "eu", 10 * DAY + 5)), hex(morning));
  const plain = createHash("sha256").update("msp-parrot").digest().subarray(0, 16);
  assert.notEqual(hex(morning), hex(plain));
});
