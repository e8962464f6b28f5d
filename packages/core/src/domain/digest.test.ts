import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { test } from "node:test";
import * as digest from "./digest.js";

/** What digest.ts gives for `data`, in every form, as hex (the child process below reports the same). */
function digests(d: typeof digest, data: Uint8Array) {
  const bytes = d.sha256(data);
  const cut = Math.floor(data.length / 3);
  return {
    plain: !Buffer.isBuffer(bytes),
    bytes: Buffer.from(bytes).toString("hex"),
    latin1: Buffer.from(d.sha256Latin1(data), "latin1").toString("hex"),
    latin1Length: d.sha256Latin1(data).length,
    base64: d.sha256Text(data, "base64"),
    // Parts hashed one after the other, as createHash's updates would.
    parts: d.sha256OfParts([data.subarray(0, cut), new Uint8Array(0), data.subarray(cut)], "hex"),
  };
}

function wanted(data: Uint8Array) {
  const want = createHash("sha256").update(data).digest();
  return {
    plain: true,
    bytes: want.toString("hex"),
    latin1: want.toString("hex"),
    latin1Length: 32,
    base64: want.toString("base64"),
    parts: want.toString("hex"),
  };
}

const SIZES = [0, 1, 31, 32, 33, 65, 1_000, 70_000];

test("one-shot SHA-256 gives FIPS 180-2's digest of 'abc', and createHash's of any bytes, in both forms", () => {
  const abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
  assert.equal(Buffer.from(digest.sha256(Buffer.from("abc"))).toString("hex"), abc);
  assert.equal(Buffer.from(digest.sha256Latin1(Buffer.from("abc")), "latin1").toString("hex"), abc);
  for (const n of SIZES) {
    const data = randomBytes(n);
    assert.deepEqual(digests(digest, data), wanted(data), `${n} bytes`);
  }
});

test("on a Node without crypto.hash (before 20.12, which package.json's engines allows) the same digests come from createHash", () => {
  const samples = SIZES.map((n) => randomBytes(n));
  // A process where node:crypto has no hash() before digest.ts loads, counting createHash calls.
  const child = `
    import { createRequire, syncBuiltinESMExports } from "node:module";
    const crypto = createRequire(import.meta.url)("node:crypto");
    delete crypto.hash;
    const createHash = crypto.createHash;
    let made = 0;
    crypto.createHash = (...args) => (made++, createHash(...args));
    syncBuiltinESMExports();
    const d = await import(${JSON.stringify(new URL("./digest.js", import.meta.url).href)});
    const digests = (${digests.toString()});
    let input = "";
    for await (const chunk of process.stdin) input += chunk;
    const out = JSON.parse(input).map((hex) => digests(d, Buffer.from(hex, "hex")));
    console.log(JSON.stringify({ made, out }));
  `;
  const stdout = execFileSync(process.execPath, ["--import", "tsx", "--input-type=module", "-e", child], {
    encoding: "utf8",
    input: JSON.stringify(samples.map((s) => s.toString("hex"))),
  });
  const { made, out } = JSON.parse(stdout) as { made: number; out: unknown[] };
  assert.ok(made >= 5 * SIZES.length, `createHash made the digests (${made} calls)`);
  assert.deepEqual(
    out,
    samples.map((s) => wanted(s)),
  );
});
