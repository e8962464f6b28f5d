// The signed statements of private lookups: parameters and buckets verify only as the DP
// signed them, for the bucket and table asked, while fresh.
import assert from "node:assert/strict";
import { test } from "node:test";
import { bucketProblem, signBucket, signPrivateParams, verifyPrivateParams } from "./private-statements.js";
import { generateOprfKeys, keyIdOf, PRIVATE_SUITE } from "./private-table.js";
import { generateSigningKey } from "./signing.js";

const NOW = Date.UTC(2026, 11, 4);
const dp = generateSigningKey();
const params = {
  dpId: "eu",
  suite: PRIVATE_SUITE,
  epoch: 70_000,
  publicKey: generateOprfKeys().publicKey,
  bucketBits: 20,
  bucketBytes: 8192,
  signedAtMs: NOW,
};

test("parameters verify with the DP's key only, and say which DP and suite", () => {
  const s = signPrivateParams(params, dp);
  const p = verifyPrivateParams(s.statement, s.signature, "eu", dp.publicKey);
  assert.deepEqual(p, params);
  assert.match(
    String(
      (verifyPrivateParams(s.statement, s.signature, "us", dp.publicKey) as { problem: string }).problem,
    ),
    /DP "eu"'s, not DP "us"'s/,
  );
  const other = generateSigningKey();
  assert.match(
    (verifyPrivateParams(s.statement, s.signature, "eu", other.publicKey) as { problem: string }).problem,
    /not signed/,
  );
  assert.match(
    (verifyPrivateParams(s.statement, s.signature, "eu", undefined) as { problem: string }).problem,
    /publishes no key/,
  );
  const wrongSuite = signPrivateParams({ ...params, suite: "P256-SHA256" }, dp);
  assert.match(
    (
      verifyPrivateParams(wrongSuite.statement, wrongSuite.signature, "eu", dp.publicKey) as {
        problem: string;
      }
    ).problem,
    /suite/,
  );
});

test("a bucket verifies as the bucket asked, whole, fresh, and for no longer than a seal", () => {
  const data = new Uint8Array(8192).fill(7);
  const ok = signBucket(
    {
      dpId: "eu",
      epoch: 70_000,
      keyId: keyIdOf(params.publicKey),
      bucketBits: 20,
      bucket: 1_000_000,
      signedAtMs: NOW,
      expiresAtMs: NOW + 3_600_000,
    },
    data,
    dp,
  );
  const check = (d: Uint8Array, s: typeof ok, bucket = 1_000_000, now = NOW) =>
    bucketProblem(d, s.statement, s.signature, params, bucket, dp.publicKey, now);
  assert.equal(check(data, ok), undefined);
  assert.match(String(check(data, ok, 999_999)), /another bucket/);
  const changed = data.slice();
  changed[0] = 8;
  assert.match(String(check(changed, ok)), /does not match its signed digest/);
  assert.match(String(check(data.subarray(0, 4096), ok)), /4096 bytes, not the table's 8192/);
  assert.match(String(check(data, ok, 1_000_000, NOW + 3_600_000)), /expired/);
  // A bucket of another key's table (the DP changed its key, not its epoch) is refused.
  const otherKey = signBucket(
    {
      dpId: "eu",
      epoch: 70_000,
      keyId: keyIdOf(generateOprfKeys().publicKey),
      bucketBits: 20,
      bucket: 1_000_000,
      signedAtMs: NOW,
      expiresAtMs: NOW + 3_600_000,
    },
    data,
    dp,
  );
  assert.match(String(check(data, otherKey)), /another bucket or table/);
  const forever = signBucket(
    {
      dpId: "eu",
      epoch: 70_000,
      keyId: keyIdOf(params.publicKey),
      bucketBits: 20,
      bucket: 1_000_000,
      signedAtMs: NOW,
      expiresAtMs: NOW + 30 * 86_400_000,
    },
    data,
    dp,
  );
  assert.match(String(check(data, forever)), /longer than any seal/);
  assert.match(String(check(data, { ...ok, signature: new Uint8Array(64) })), /not signed/);
});
