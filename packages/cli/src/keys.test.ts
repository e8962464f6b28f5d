import assert from "node:assert/strict";
import { generateKeyPairSync } from "node:crypto";
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { generateSigningKey, loadPublicKey, publicKeyPem, signingKeyPem } from "@mimi/core";
import { UsageError } from "./args.js";
import { ensureSigningKey, publicKeyArg, signingKeyArg } from "./keys.js";

const dir = mkdtempSync(join(tmpdir(), "mimi-keys-"));
after(() => rmSync(dir, { recursive: true, force: true }));

test("--signing-key takes a public key file or a private key PEM", () => {
  const key = generateSigningKey();
  const files = {
    "private.pem": signingKeyPem(key),
    "public.pub": publicKeyPem(key.publicKey),
    "public.hex": `${Buffer.from(key.publicKey).toString("hex")}\n`,
    "public.b64": Buffer.from(key.publicKey).toString("base64"),
  };
  for (const [name, text] of Object.entries(files)) {
    writeFileSync(join(dir, name), text);
    assert.deepEqual(publicKeyArg("--signing-key", join(dir, name)), key.publicKey, name);
  }
});

test("--signing-key refuses other key types and missing files as usage errors", () => {
  const ec = generateKeyPairSync("ec", { namedCurve: "P-256" });
  writeFileSync(join(dir, "ec-key.pem"), ec.privateKey.export({ format: "pem", type: "pkcs8" }));
  writeFileSync(join(dir, "ec.pub"), ec.publicKey.export({ format: "pem", type: "spki" }));
  writeFileSync(join(dir, "junk"), "not a key");
  for (const name of ["ec-key.pem", "ec.pub", "junk", "missing.pem"]) {
    assert.throws(() => publicKeyArg("--signing-key", join(dir, name)), UsageError, name);
  }
  assert.throws(() => signingKeyArg("--msp-key", join(dir, "ec-key.pem")), /not an Ed25519 private key/);
  assert.throws(() => signingKeyArg("--msp-key", join(dir, "nope.pem"), "run npm start"), /run npm start/);
});

test("the demo user's key is made once, private, with its public key beside it", () => {
  const file = join(dir, "pki", "demo-user-signing.pem");
  const first = ensureSigningKey(file);
  assert.equal(first.created, true);
  assert.equal(statSync(file).mode & 0o777, 0o600);
  assert.ok(existsSync(join(dir, "pki", "demo-user-signing.pub")));
  assert.deepEqual(loadPublicKey(join(dir, "pki", "demo-user-signing.pub")), first.key.publicKey);
  const again = ensureSigningKey(file);
  assert.equal(again.created, false);
  assert.deepEqual(again.key.publicKey, first.key.publicKey);
});
