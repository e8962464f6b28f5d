import assert from "node:assert/strict";
import { test } from "node:test";
import { parseCsi } from "./csi.js";
import { DiscoveryError } from "./errors.js";
import {
  type Delegation,
  type DelegationKey,
  delegationId,
  parseDelegationKeyText,
  RegistryView,
} from "./registry.js";

const HALF = (1n << 63n) - 1n;
const MAX = (1n << 64n) - 1n;

function d(key: DelegationKey, dpId: string): Delegation {
  return { id: delegationId(key), key, dpId, ttlSeconds: 3600 };
}

function view(): RegistryView {
  const v = new RegistryView();
  v.replace({
    serial: 7n,
    delegations: [
      d({ kind: "e164", prefix: "1" }, "us"),
      d({ kind: "e164", prefix: "1415" }, "sf"),
      d({ kind: "e164", prefix: "44" }, "eu"),
      d({ kind: "email", first: 0n, last: HALF }, "eu"),
      d({ kind: "email", first: HALF + 1n, last: MAX }, "us"),
    ],
    dps: [],
    msps: [],
  });
  return v;
}

test("longest E.164 prefix wins; email hashes fall in their range", () => {
  const v = view();
  const cases: [csi: string, dp: string | undefined][] = [
    ["tel:+12025550142", "us"],
    ["tel:+14155550100", "sf"],
    ["tel:+447700900123", "eu"],
    ["tel:+4915123456789", undefined],
    ["mailto:alice@example.org", "us"], // SHA-256 leading bit of example.org is 1
  ];
  for (const [csi, dp] of cases) assert.equal(v.find(parseCsi(csi).key)?.dpId, dp, csi);
});

test("changes apply in place: delete falls back to the shorter prefix, put moves a key", () => {
  const v = view();
  v.apply({ serial: 8n, kind: "delete_delegation", id: "e164:1415" });
  assert.equal(v.find(parseCsi("tel:+14155550100").key)?.dpId, "us");
  v.apply({ serial: 9n, kind: "put_delegation", delegation: d({ kind: "e164", prefix: "44" }, "uk") });
  assert.equal(v.find(parseCsi("tel:+447700900123").key)?.dpId, "uk");
  assert.equal(v.serial, 9n);
  // A prefix of a length no other has is matched at once,
  // and covering lists every delegation over the number, longest first.
  v.apply({ serial: 10n, kind: "put_delegation", delegation: d({ kind: "e164", prefix: "44770" }, "ldn") });
  assert.equal(v.find(parseCsi("tel:+447700900123").key)?.dpId, "ldn");
  assert.deepEqual(
    v.covering(parseCsi("tel:+447700900123").key).map((x) => x.dpId),
    ["ldn", "uk"],
  );
  // A prefix longer than the number never matches it.
  v.apply({
    serial: 11n,
    kind: "put_delegation",
    delegation: d({ kind: "e164", prefix: "4477009001234" }, "x"),
  });
  assert.equal(v.find({ kind: "e164", digits: "447700900" })?.dpId, "ldn");
  v.apply({ serial: 12n, kind: "delete_delegation", id: "e164:44770" });
  assert.equal(v.find(parseCsi("tel:+447700900123").key)?.dpId, "uk");
});

test("delegation keys parse from admin text", () => {
  const cases: [text: string, id: string][] = [
    ["+44", "e164:44"],
    ["1415", "e164:1415"],
    ["e164:49", "e164:49"],
    ["email:0-7fffffffffffffff", "email:0000000000000000-7fffffffffffffff"],
    ["email:*", "email:0000000000000000-ffffffffffffffff"],
  ];
  for (const [text, id] of cases) assert.equal(delegationId(parseDelegationKeyText(text)), id, text);
  for (const text of [
    "+0",
    "+1234567890123456",
    "+44a",
    "email:5-1",
    "email:xyz",
    "email:0-1ffffffffffffffff",
  ]) {
    assert.throws(() => parseDelegationKeyText(text), DiscoveryError, text);
  }
});
