// Ed25519 helpers: context separation, failure as `false` rather than exceptions, and the
// key file formats operators hand to loadPublicKey / loadSigningKey.
import assert from "node:assert/strict";
import { generateKeyPairSync, verify } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { DiscoveryError } from "./errors.js";
import {
  checkPublicKey,
  deferVerification,
  derivedSecret,
  generateSigningKey,
  loadPublicKey,
  loadSigningKey,
  MAX_DEFERRED_CHECKS,
  type PendingCheck,
  PUBLIC_KEY_BYTES,
  publicKeyPem,
  SIGNATURE_BYTES,
  SIGNING_CONTEXT,
  settleDeferred,
  signatureValid,
  signingKeyPem,
  signWith,
  verifications,
  verifyDeferred,
  verifyWith,
} from "./signing.js";

const dir = mkdtempSync(join(tmpdir(), "mimi-signing-"));
after(() => rmSync(dir, { recursive: true, force: true }));

let files = 0;
function file(content: string | Uint8Array): string {
  const path = join(dir, `f${files++}`);
  writeFileSync(path, content);
  return path;
}

const isInvalid = (e: unknown) => e instanceof DiscoveryError && e.code === "invalid_argument";
const CONTEXTS = Object.values(SIGNING_CONTEXT);
const MESSAGE = Buffer.from("a mapping record");

test("a signature verifies with the signer's key, for the same context and message only", () => {
  const key = generateSigningKey();
  assert.equal(key.publicKey.length, PUBLIC_KEY_BYTES);
  const sig = signWith(key, SIGNING_CONTEXT.mappingMsp, MESSAGE);
  assert.equal(sig.length, SIGNATURE_BYTES);
  assert.equal(verifyWith(key.publicKey, SIGNING_CONTEXT.mappingMsp, sig, [MESSAGE]), true);
  assert.equal(
    verifyWith(key.publicKey, SIGNING_CONTEXT.mappingMsp, sig, [MESSAGE], { registryKey: true }),
    true,
  );
  assert.equal(verifyWith(key.publicKey, SIGNING_CONTEXT.mappingMsp, sig, [Buffer.from("another")]), false);
  // Ed25519 is deterministic: the root relies on this to re-sign an unchanged registry identically.
  assert.deepEqual(signWith(key, SIGNING_CONTEXT.mappingMsp, MESSAGE), sig);
});

test("the signed message is the context, a zero byte, then the parts concatenated", () => {
  const key = generateSigningKey();
  const sig = signWith(key, SIGNING_CONTEXT.mappingDp, Uint8Array.of(1), MESSAGE);
  const spelled = Buffer.concat([Buffer.from("MIMI-MAPPING-DP-v1\0", "ascii"), Uint8Array.of(1), MESSAGE]);
  assert.equal(verify(null, spelled, key.privateKey, sig), true);
  assert.equal(
    verifyWith(key.publicKey, SIGNING_CONTEXT.mappingDp, sig, [Buffer.concat([Uint8Array.of(1), MESSAGE])]),
    true,
  );
  assert.equal(verifyWith(key.publicKey, SIGNING_CONTEXT.mappingDp, sig, [Uint8Array.of(0), MESSAGE]), false);
});

test("a signature made under one context verifies under no other", () => {
  const key = generateSigningKey();
  assert.equal(new Set(CONTEXTS).size, CONTEXTS.length, "contexts are distinct");
  for (const signedAs of CONTEXTS) {
    const sig = signWith(key, signedAs, MESSAGE);
    for (const checkedAs of CONTEXTS) {
      assert.equal(
        verifyWith(key.publicKey, checkedAs, sig, [MESSAGE]),
        signedAs === checkedAs,
        `${signedAs} checked as ${checkedAs}`,
      );
    }
  }
});

test("wrong keys, damaged signatures and garbage are simply not valid, never an exception", () => {
  const key = generateSigningKey();
  const other = generateSigningKey();
  const ctx = SIGNING_CONTEXT.registry;
  const sig = signWith(key, ctx, MESSAGE);
  const flipped = Uint8Array.from(sig);
  flipped[10] = (flipped[10] ?? 0) ^ 1;
  const cases: [string, Uint8Array, Uint8Array][] = [
    ["another key", other.publicKey, sig],
    ["a flipped bit", key.publicKey, flipped],
    ["a truncated signature", key.publicKey, sig.subarray(0, 63)],
    ["an overlong signature", key.publicKey, Buffer.concat([sig, Uint8Array.of(0)])],
    ["an empty signature", key.publicKey, new Uint8Array(0)],
    ["a zero signature", key.publicKey, new Uint8Array(64)],
    ["a truncated key", key.publicKey.subarray(0, 31), sig],
    ["an empty key", new Uint8Array(0), sig],
    ["a key that is no curve point", new Uint8Array(32).fill(0xff), sig],
    ["an all-zero key", new Uint8Array(32), sig],
  ];
  for (const [name, publicKey, signature] of cases) {
    for (const registryKey of [false, true]) {
      assert.equal(verifyWith(publicKey, ctx, signature, [MESSAGE], { registryKey }), false, name);
    }
  }
  assert.equal(
    verifyWith(key.publicKey, ctx, sig, [MESSAGE]),
    true,
    "the undamaged signature still verifies",
  );
});

test("loadPublicKey reads SPKI PEM, hex and base64, with or without surrounding whitespace", () => {
  const { publicKey } = generateSigningKey();
  const hex = Buffer.from(publicKey).toString("hex");
  const b64 = Buffer.from(publicKey).toString("base64");
  const cases: [string, string][] = [
    ["PEM", publicKeyPem(publicKey)],
    ["hex", hex],
    ["upper-case hex with a newline", `${hex.toUpperCase()}\n`],
    ["base64", b64],
    ["base64 with spaces and a newline", `  ${b64}\n`],
  ];
  for (const [name, content] of cases) {
    const got = loadPublicKey(file(content));
    assert.ok(got instanceof Uint8Array, name);
    assert.deepEqual(Buffer.from(got), Buffer.from(publicKey), name);
  }
});

test("loadPublicKey refuses keys of the wrong length with INVALID_ARGUMENT", () => {
  const raw = generateSigningKey().publicKey;
  const cases: [string, string][] = [
    ["31 bytes in hex", Buffer.from(raw.subarray(0, 31)).toString("hex")],
    ["33 bytes in hex", Buffer.concat([raw, Uint8Array.of(0)]).toString("hex")],
    ["31 bytes in base64", Buffer.from(raw.subarray(0, 31)).toString("base64")],
    ["33 bytes in base64", Buffer.concat([raw, Uint8Array.of(0)]).toString("base64")],
    ["an empty file", ""],
    ["a signature instead of a key", Buffer.alloc(64, 7).toString("base64")],
  ];
  for (const [name, content] of cases) {
    assert.throws(() => loadPublicKey(file(content)), isInvalid, name);
  }
  assert.throws(() => loadPublicKey(join(dir, "missing.pub")), /ENOENT/);
});

test("loadPublicKey refuses a PEM file holding another kind of key", () => {
  const others = [
    ["x25519", generateKeyPairSync("x25519").publicKey],
    ["ed448", generateKeyPairSync("ed448").publicKey],
    ["rsa", generateKeyPairSync("rsa", { modulusLength: 1024 }).publicKey],
  ] as const;
  for (const [type, key] of others) {
    const pem = key.export({ format: "pem", type: "spki" }).toString();
    assert.throws(() => loadPublicKey(file(pem)), isInvalid, type);
  }
});

test("checkPublicKey accepts exactly 32 bytes and names what it checked", () => {
  assert.doesNotThrow(() => checkPublicKey(new Uint8Array(32), "k"));
  for (const n of [0, 31, 33, 64]) {
    assert.throws(
      () => checkPublicKey(new Uint8Array(n), "the MSP's signing key"),
      (e: unknown) => isInvalid(e) && /the MSP's signing key/.test((e as Error).message),
      String(n),
    );
  }
});

test("a private key saved as PEM loads back to the same key", () => {
  const key = generateSigningKey();
  const loaded = loadSigningKey(file(signingKeyPem(key)));
  assert.deepEqual(loaded.publicKey, key.publicKey);
  const sig = signWith(loaded, SIGNING_CONTEXT.actionUser, MESSAGE);
  assert.equal(verifyWith(key.publicKey, SIGNING_CONTEXT.actionUser, sig, [MESSAGE]), true);
  assert.ok(!signingKeyPem(key).includes("PUBLIC KEY"));
});

test("loadSigningKey refuses a private key that is not Ed25519", () => {
  const x25519 = generateKeyPairSync("x25519").privateKey.export({ format: "pem", type: "pkcs8" }).toString();
  assert.throws(() => loadSigningKey(file(x25519)), /x25519 key, not an Ed25519 key/);
  assert.throws(() => loadSigningKey(file("not a key")));
});

test("a signature that verified once is remembered; anything else is verified afresh", () => {
  const key = generateSigningKey();
  const other = generateSigningKey();
  const sig = signWith(key, SIGNING_CONTEXT.mappingMsp, MESSAGE);
  const count = () => ({ ...verifications });
  const c0 = count();
  assert.equal(verifyWith(key.publicKey, SIGNING_CONTEXT.mappingMsp, sig, [MESSAGE]), true);
  assert.equal(verifyWith(key.publicKey, SIGNING_CONTEXT.mappingMsp, sig, [MESSAGE]), true);
  const c1 = count();
  assert.deepEqual([c1.computed - c0.computed, c1.remembered - c0.remembered], [1, 1]);
  // Another key (a rotation), another context, another message or a changed signature: the
  // memory does not answer, and each is refused on its own merits.
  const tampered = Uint8Array.from(sig);
  tampered[0] = (tampered[0] ?? 0) ^ 1;
  assert.equal(verifyWith(other.publicKey, SIGNING_CONTEXT.mappingMsp, sig, [MESSAGE]), false);
  assert.equal(verifyWith(key.publicKey, SIGNING_CONTEXT.mappingUser, sig, [MESSAGE]), false);
  assert.equal(verifyWith(key.publicKey, SIGNING_CONTEXT.mappingMsp, sig, [Buffer.from("x")]), false);
  assert.equal(verifyWith(key.publicKey, SIGNING_CONTEXT.mappingMsp, tampered, [MESSAGE]), false);
  const c2 = count();
  assert.deepEqual([c2.computed - c1.computed, c2.remembered - c1.remembered], [4, 0]);
  // A failure is not remembered: the same bad signature is checked again.
  verifyWith(key.publicKey, SIGNING_CONTEXT.mappingMsp, tampered, [MESSAGE]);
  assert.equal(count().computed - c2.computed, 1);
});

test("deferred checks are collected instead of made, and only what verifies is remembered", () => {
  const key = generateSigningKey();
  const good = signWith(key, SIGNING_CONTEXT.mappingDp, MESSAGE);
  const bad = Uint8Array.from(good);
  bad[5] = (bad[5] ?? 0) ^ 1;
  const check = (sig: Uint8Array) => verifyWith(key.publicKey, SIGNING_CONTEXT.mappingDp, sig, [MESSAGE]);
  const c0 = { ...verifications };
  // Taken as valid while deferred, whatever the signature; nothing is computed yet.
  const run = deferVerification(() => [check(good), check(bad)]);
  assert.ok(run.ok);
  assert.deepEqual(run.ok && run.result, [true, true]);
  assert.equal(run.checks.length, 2);
  assert.equal(verifications.computed, c0.computed);
  // Each check carries exactly the bytes a worker needs.
  const [g, b] = run.checks;
  assert.ok(g && b);
  assert.equal(signatureValid(g.publicKey, g.message, g.signature, g.registryKey), true);
  assert.equal(signatureValid(b.publicKey, b.message, b.signature, b.registryKey), false);
  settleDeferred(run.checks, Uint8Array.of(1, 0));
  assert.equal(verifications.computed, c0.computed + 2);
  // The valid one is remembered (no check collected for it now); the invalid one is not.
  const again = deferVerification(() => [check(good), check(bad)]);
  assert.deepEqual(
    again.checks.map((c) => c.id),
    [b.id],
  );
  // Outside a deferral the invalid signature is refused as ever.
  assert.equal(check(bad), false);
  // What `f` throws is kept with the checks it collected; deferrals do not nest.
  const thrown = deferVerification(() => {
    check(bad);
    throw new Error("structural problem");
  });
  assert.equal(thrown.ok, false);
  assert.equal(thrown.checks.length, 1);
  const nested = deferVerification(() => deferVerification(() => 1));
  assert.match(String(!nested.ok && nested.error), /does not nest/);
});

test("verifyDeferred gives what inline checking gives now: big runs are not handed off, and a key removed meanwhile is refused", async () => {
  const key = generateSigningKey();
  const other = generateSigningKey();
  const msg = (n: number) => Buffer.from(`deferred record ${n}`);
  const sig = (n: number, k = key) => signWith(k, SIGNING_CONTEXT.mappingMsp, msg(n));
  // The registry's key for the MSP, as verifyOutcome would read it at each run.
  let registered = key.publicKey;
  const verifyAll = (sigs: Uint8Array[], from: number) => () => {
    sigs.forEach((s, i) => {
      if (!verifyWith(registered, SIGNING_CONTEXT.mappingMsp, s, [msg(from + i)]))
        throw new Error(`record ${from + i} does not verify`);
    });
    return sigs.length;
  };
  const handedOff: number[] = [];
  const worker = async (checks: readonly PendingCheck[]) => {
    handedOff.push(checks.length);
    return Uint8Array.from(checks, (c) =>
      signatureValid(c.publicKey, c.message, c.signature, c.registryKey) ? 1 : 0,
    );
  };
  assert.equal(await verifyDeferred(verifyAll([sig(0), sig(1)], 0), worker), 2);
  assert.deepEqual(handedOff, [2]);
  // A forged signature among good ones: the inline error.
  await assert.rejects(
    verifyDeferred(verifyAll([sig(2), sig(3, other)], 2), worker),
    /record 3 does not verify/,
  );
  // More checks than may be handed off (a flood of made-up mappings): inline, stopping at the first bad one.
  const many = Array.from({ length: MAX_DEFERRED_CHECKS + 1 }, (_, i) => sig(100 + i, other));
  handedOff.length = 0;
  await assert.rejects(verifyDeferred(verifyAll(many, 100), worker), /record 100 does not verify/);
  assert.deepEqual(handedOff, []);
  // The registry drops the key while the checks are out: the answer is refused, though they passed.
  const pending = verifyDeferred(
    verifyAll([sig(200)], 200),
    async (checks) => {
      const valid = await worker(checks);
      registered = other.publicKey;
      return valid;
    },
    () => registered,
  );
  await assert.rejects(pending, /record 200 does not verify/);
  // With the state unchanged and every check valid, the deferred run stands: `verify` runs once.
  registered = key.publicKey;
  let runs = 0;
  const counted = () => {
    runs++;
    return verifyAll([sig(300), sig(301)], 300)();
  };
  assert.equal(await verifyDeferred(counted, worker, () => registered), 2);
  assert.equal(runs, 1);
  // Asked again, every check is remembered: one run, nothing handed off.
  const handed = handedOff.length;
  assert.equal(await verifyDeferred(counted, worker, () => registered), 2);
  assert.equal(runs, 2);
  assert.equal(handedOff.length, handed);
});

test("a secret derived from a key is the same for every holder of the key, and differs by key and purpose", () => {
  const dir = mkdtempSync(join(tmpdir(), "mimi-derived-"));
  try {
    const key = generateSigningKey();
    const path = join(dir, "dp.pem");
    writeFileSync(path, signingKeyPem(key));
    const again = loadSigningKey(path); // another endpoint of the DP, with the same key file
    const code = derivedSecret(key, "MIMI-CODE-HASH-v1");
    assert.equal(code.length, 32);
    assert.deepEqual(derivedSecret(again, "MIMI-CODE-HASH-v1"), code);
    assert.notDeepEqual(derivedSecret(key, "another purpose"), code);
    assert.notDeepEqual(derivedSecret(generateSigningKey(), "MIMI-CODE-HASH-v1"), code);
    assert.equal(derivedSecret(key, "MIMI-CODE-HASH-v1", 16).length, 16);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
