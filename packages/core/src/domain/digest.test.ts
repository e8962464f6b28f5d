import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { test } from "node:test";
import { sha256, sha256Latin1, sha256OfParts, sha256Text } from "./digest.js";

test("one-shot SHA-256 gives FIPS 180-2's digest of 'abc', and createHash's of any bytes, in both forms", () => {
  const abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
  assert.equal(Buffer.from(sha256(Buffer.from("abc"))).toString("hex"), abc);
  assert.equal(Buffer.from(sha256Latin1(Buffer.from("abc")), "latin1").toString("hex"), abc);
  for (const n of [0, 1, 31, 32, 33, 65, 1_000, 70_000]) {
    const data = randomBytes(n);
    const want = createHash("sha256").update(data).digest();
    const bytes = sha256(data);
    assert.ok(!Buffer.isBuffer(bytes), "a plain Uint8Array");
    assert.deepEqual(Buffer.from(bytes), want);
    const text = sha256Latin1(data);
    assert.equal(text.length, 32);
    assert.deepEqual(Buffer.from(text, "latin1"), want);
    assert.equal(sha256Text(data, "base64"), want.toString("base64"));
    // Parts hashed one after the other, as createHash's updates would.
    const cut = Math.floor(n / 3);
    const parts = [data.subarray(0, cut), new Uint8Array(0), data.subarray(cut)];
    assert.equal(sha256OfParts(parts, "hex"), want.toString("hex"));
  }
});
