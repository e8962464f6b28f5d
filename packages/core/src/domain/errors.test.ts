import assert from "node:assert/strict";
import { test } from "node:test";
import { clipped, DiscoveryError } from "./errors.js";

test("refusals made by the thousand carry no stack; other errors do, and the stack limit is left as it was", () => {
  const limit = Error.stackTraceLimit;
  for (const code of ["resource_exhausted", "upstream_unavailable", "invalid_argument"] as const) {
    const e = new DiscoveryError(code, "refused", { details: { reason: "UPSTREAM_SATURATED" } });
    assert.doesNotMatch(e.stack ?? "", /\n\s+at /, code);
    assert.equal(e.message, "refused");
    assert.equal(e.details?.reason, "UPSTREAM_SATURATED");
  }
  assert.equal(Error.stackTraceLimit, limit);
  const bad = new DiscoveryError("failed_precondition", "not now");
  assert.match(bad.stack ?? "", /\n\s+at /);
  assert.equal(Error.stackTraceLimit, limit);
  assert.match(new Error("plain").stack ?? "", /\n\s+at /);
});

test("a message's echo of input is clipped on a character boundary, never inside a surrogate pair", () => {
  assert.equal(clipped("abc", 3), "abc");
  assert.equal(clipped("abcd", 3), "abc...");
  // "😀" is two UTF-16 units: cutting after its first would leave a lone surrogate.
  const cut = clipped(`ab${"😀".repeat(3)}`, 3);
  assert.equal(cut, "ab...");
  assert.ok(cut.isWellFormed());
  assert.equal(clipped(`ab${"😀".repeat(3)}`, 4), "ab😀...");
});
