import assert from "node:assert/strict";
import { test } from "node:test";
import {
  bitsSet,
  checkParams,
  compactBits,
  compactBitsLength,
  filterMappings,
  type Mapping,
  setCompactBits,
} from "./answer.js";
import { DiscoveryError } from "./errors.js";

const m = (mspId: string, createdAtMs: number, isDefault = false, tags: string[] = []): Mapping => ({
  mspId,
  ssi: `${mspId}-user`,
  isDefault,
  tags,
  createdAtMs,
  proofMethod: "sms-code",
  expiresAtMs: createdAtMs + 86_400_000,
});

test("compact bits set bit i for the MSP with registry index i, LSB first", () => {
  const index: Record<string, number> = { a: 0, b: 2, c: 9 };
  const bits = compactBits([m("a", 1), m("b", 1), m("c", 1), m("unknown", 1)], (id) => index[id]);
  assert.deepEqual([...bits], [0b101, 0b10]);
  assert.deepEqual(bitsSet(bits), [0, 2, 9]);
  assert.equal(compactBits([], () => 0).length, 0);
  // An index no root gives (negative, fractional, past 2^31) is left out like an unknown MSP,
  // and never sets a bit outside the bytes counted: the DP writes these bits in place.
  const odd: Record<string, number> = { a: 0, neg: -1, half: 1.5, huge: 2 ** 31, c: 9 };
  const few = compactBits(
    ["neg", "a", "half", "huge", "c"].map((id) => m(id, 1)),
    (id) => odd[id],
  );
  assert.deepEqual([...few], [0b1, 0b10]);
  const out = new Uint8Array(4);
  setCompactBits(out, 1, [m("neg", 1), m("huge", 1)], (id) => odd[id]);
  assert.deepEqual([...out], [0, 0, 0, 0]);
  assert.equal(
    compactBitsLength([m("neg", 1), m("huge", 1)], (id) => odd[id]),
    0,
  );
});

test("the MSP filter keeps only the named MSPs; bad filters are refused", () => {
  const params = checkParams("verbose", ["b"]);
  assert.deepEqual(
    filterMappings([m("a", 1), m("b", 1)], params).map((x) => x.mspId),
    ["b"],
  );
  assert.throws(() => checkParams("verbose", [""]), DiscoveryError);
  assert.throws(
    () =>
      checkParams(
        "verbose",
        Array.from({ length: 65 }, (_, i) => `m${i}`),
      ),
    DiscoveryError,
  );
});

test("the tag keeps mappings carrying it, case-insensitively; Default selects the default", () => {
  const all = [m("a", 1, true, ["Personal"]), m("b", 2, false, ["Business"]), m("c", 3, false, ["business"])];
  const cases: [tag: string, expected: string[]][] = [
    ["Business", ["b", "c"]],
    ["BUSINESS", ["b", "c"]],
    ["personal", ["a"]],
    ["Default", ["a"]],
    ["default", ["a"]],
    ["Holiday", []],
    ["", ["a", "b", "c"]],
  ];
  for (const [tag, expected] of cases) {
    const got = filterMappings(all, checkParams("verbose", [], tag)).map((x) => x.mspId);
    assert.deepEqual(got, expected, `tag "${tag}"`);
  }
  // The tag and the MSP filter both apply.
  assert.deepEqual(
    filterMappings(all, checkParams("verbose", ["c"], "business")).map((x) => x.mspId),
    ["c"],
  );
  assert.throws(
    () => checkParams("verbose", [], "x".repeat(33)),
    (e: unknown) => e instanceof DiscoveryError && e.code === "invalid_argument",
  );
});
