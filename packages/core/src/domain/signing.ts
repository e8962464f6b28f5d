// Ed25519 keys and signatures (node:crypto). Every signature is made over a context string
// and a zero byte before the message, so a signature made for one purpose (a mapping
// record, an action, the registry) can never be replayed as another.
import {
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  hkdfSync,
  type KeyObject,
  sign,
  verify,
} from "node:crypto";
import { readFileSync } from "node:fs";
import { setNewest } from "../runtime/bounded-map.js";
import { sha256OfParts } from "./digest.js";
import { invalidArgument } from "./errors.js";

/** Signature contexts; each names what is signed and by whom. */
export const SIGNING_CONTEXT = {
  mappingUser: "MIMI-MAPPING-USER-v1",
  mappingMsp: "MIMI-MAPPING-MSP-v1",
  mappingDp: "MIMI-MAPPING-DP-v1",
  actionUser: "MIMI-ACTION-USER-v1",
  actionMsp: "MIMI-ACTION-MSP-v1",
  contestHolder: "MIMI-CONTEST-HOLDER-v1",
  answerDp: "MIMI-ANSWER-DP-v1",
  answerDpBatch: "MIMI-ANSWER-BATCH-DP-v1",
  registry: "MIMI-REGISTRY-SIG-v1",
  privateParams: "MIMI-PRIVATE-PARAMS-DP-v1",
  privateBucket: "MIMI-PRIVATE-BUCKET-DP-v1",
} as const;
export type SigningContext = (typeof SIGNING_CONTEXT)[keyof typeof SIGNING_CONTEXT];

/** Length of a raw Ed25519 public key and of a signature. */
export const PUBLIC_KEY_BYTES = 32;
export const SIGNATURE_BYTES = 64;

// DER SubjectPublicKeyInfo header of an Ed25519 key; the raw key follows it.
const SPKI_PREFIX = Buffer.from("302a300506032b6570032100", "hex");

/** A private key with its raw public key. */
export interface SigningKey {
  readonly privateKey: KeyObject;
  readonly publicKey: Uint8Array;
}

/** Makes a new key pair. */
export function generateSigningKey(): SigningKey {
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  return { privateKey, publicKey: rawPublicKey(publicKey) };
}

/**
 * A secret for one `purpose`, derived from `key`'s private seed (HKDF-SHA256): whoever holds the
 * key derives the same secret (every endpoint of a DP), and the secret reveals nothing of the
 * key or of the secrets of other purposes.
 */
export function derivedSecret(key: SigningKey, purpose: string, bytes = 32): Uint8Array {
  const jwk = key.privateKey.export({ format: "jwk" });
  if (typeof jwk.d !== "string") throw new Error("the signing key has no private part");
  const seed = Buffer.from(jwk.d, "base64url");
  return new Uint8Array(hkdfSync("sha256", seed, "MIMI-DERIVED-v1", purpose, bytes));
}

/** Reads a PKCS#8 PEM Ed25519 private key. */
export function loadSigningKey(path: string): SigningKey {
  const privateKey = createPrivateKey(readFileSync(path));
  if (privateKey.asymmetricKeyType !== "ed25519") {
    throw new Error(`${path} holds a ${privateKey.asymmetricKeyType} key, not an Ed25519 key`);
  }
  return { privateKey, publicKey: rawPublicKey(createPublicKey(privateKey)) };
}

/** PEM text of a private key, to save it. */
export function signingKeyPem(key: SigningKey): string {
  return key.privateKey.export({ format: "pem", type: "pkcs8" }).toString();
}

/** PEM text of a raw public key. */
export function publicKeyPem(raw: Uint8Array): string {
  return publicKeyObject(raw).export({ format: "pem", type: "spki" }).toString();
}

/**
 * Reads a public key file: SPKI PEM, or the raw key in base64 or hex on one line.
 * Returns the raw 32 bytes.
 */
export function loadPublicKey(path: string): Uint8Array {
  const text = readFileSync(path, "utf8").trim();
  if (text.startsWith("-----BEGIN")) {
    const key = createPublicKey(text);
    if (key.asymmetricKeyType !== "ed25519") {
      throw invalidArgument(`${path} holds a ${key.asymmetricKeyType} key, not an Ed25519 public key`);
    }
    return rawPublicKey(key);
  }
  const raw = /^[0-9a-f]{64}$/i.test(text) ? Buffer.from(text, "hex") : Buffer.from(text, "base64");
  checkPublicKey(raw, path);
  return new Uint8Array(raw);
}

/** Raw 32-byte form of a public key object. */
function rawPublicKey(key: KeyObject): Uint8Array {
  const der = key.export({ format: "der", type: "spki" });
  return new Uint8Array(der.subarray(SPKI_PREFIX.length));
}

/** Throws INVALID_ARGUMENT unless `raw` has the length of an Ed25519 public key (naming `field`, when given). */
export function checkPublicKey(raw: Uint8Array, what: string, field?: string): void {
  if (raw.length !== PUBLIC_KEY_BYTES) {
    throw invalidArgument(
      `${what} must be an Ed25519 public key of ${PUBLIC_KEY_BYTES} bytes, not ${raw.length}`,
      field,
    );
  }
}

// Registry keys (DPs, MSPs, the root) are few and used for every verification, so their
// key objects are kept; user keys are seen once per record and are not.
const keyObjects = new Map<string, KeyObject>();
const MAX_KEPT_KEYS = 4096;

function publicKeyObject(raw: Uint8Array, keep = false): KeyObject {
  const id = keep ? Buffer.from(raw).toString("hex") : "";
  if (keep) {
    const hit = keyObjects.get(id);
    if (hit) return hit;
  }
  const key = createPublicKey({ key: Buffer.concat([SPKI_PREFIX, raw]), format: "der", type: "spki" });
  if (keep) {
    if (keyObjects.size >= MAX_KEPT_KEYS) keyObjects.clear();
    keyObjects.set(id, key);
  }
  return key;
}

/** Each context's string and zero byte, made once. */
const prefixes = new Map<SigningContext, Buffer>();

function message(context: SigningContext, parts: readonly Uint8Array[]): Buffer {
  let prefix = prefixes.get(context);
  if (!prefix) {
    prefix = Buffer.concat([Buffer.from(context, "ascii"), Buffer.of(0)]);
    prefixes.set(context, prefix);
  }
  return Buffer.concat([prefix, ...parts]);
}

/** Signs `parts` (concatenated) under `context`. */
export function signWith(key: SigningKey, context: SigningContext, ...parts: Uint8Array[]): Uint8Array {
  return new Uint8Array(sign(null, message(context, parts), key.privateKey));
}

/**
 * Whether `signature` is `publicKey`'s signature of `parts` under `context`. Malformed keys
 * and signatures are simply not valid. `registryKey` keeps the key object for reuse.
 */
export function verifyWith(
  publicKey: Uint8Array,
  context: SigningContext,
  signature: Uint8Array,
  parts: readonly Uint8Array[],
  { registryKey = false } = {},
): boolean {
  if (publicKey.length !== PUBLIC_KEY_BYTES || signature.length !== SIGNATURE_BYTES) return false;
  const msg = message(context, parts);
  // A signature that verified once verifies again: a record fetched again (a refresh, another
  // DP's copy) costs a hash, not an Ed25519 verification. Keyed by everything verified (the
  // key, the message, the signature), so a key the registry rotates is a new entry.
  const id = sha256OfParts([publicKey, signature, msg], "base64");
  if (verified.has(id)) {
    verifications.remembered++;
    return true;
  }
  if (deferred) {
    deferred.push({ id, publicKey, message: msg, signature, registryKey });
    return true;
  }
  verifications.computed++;
  const ok = signatureValid(publicKey, msg, signature, registryKey);
  if (ok) setNewest(verified, id, true, MAX_VERIFIED);
  return ok;
}

/** One Ed25519 check: `message` already holds its context prefix (see verifyWith). */
export function signatureValid(
  publicKey: Uint8Array,
  message: Uint8Array,
  signature: Uint8Array,
  registryKey: boolean,
): boolean {
  try {
    return verify(null, message, publicKeyObject(publicKey, registryKey), signature);
  } catch {
    return false;
  }
}

/** A signature check that verifyWith left for later (deferVerification). */
export interface PendingCheck {
  /** The memo's key of the check (key, signature, message). */
  readonly id: string;
  readonly publicKey: Uint8Array;
  /** Context, zero byte, parts: the bytes signed. */
  readonly message: Uint8Array;
  readonly signature: Uint8Array;
  readonly registryKey: boolean;
}

let deferred: PendingCheck[] | undefined;

/**
 * Runs `f` (synchronous) with every Ed25519 check it makes that is not already remembered
 * taken as valid and collected instead, so they can be made elsewhere (a worker thread) in one
 * batch. `f`'s outcome (its result, or what it threw) stands only if every collected check then
 * passes; if one fails, run `f` again without deferring for its real outcome (the checks that
 * passed are remembered by then, so only the failing ones cost again). Calls do not nest.
 */
export function deferVerification<T>(
  f: () => T,
): { checks: PendingCheck[] } & ({ ok: true; result: T } | { ok: false; error: unknown }) {
  if (deferred) throw new Error("deferVerification does not nest");
  const checks: PendingCheck[] = [];
  deferred = checks;
  try {
    return { checks, ok: true, result: f() };
  } catch (error) {
    return { checks, ok: false, error };
  } finally {
    deferred = undefined;
  }
}

/** Records the outcome of deferred checks made elsewhere: counted, and the valid ones remembered. */
export function settleDeferred(checks: readonly PendingCheck[], valid: Uint8Array): void {
  verifications.computed += checks.length;
  checks.forEach((c, i) => {
    if (valid[i] === 1) setNewest(verified, c.id, true, MAX_VERIFIED);
  });
}

/**
 * Deferred checks one verification may hand off at most. An answer that needs more (a DP's
 * answer of thousands of made-up mappings) is verified inline instead, which stops at its first
 * bad signature: deferring takes every check as valid, so it would collect them all.
 */
export const MAX_DEFERRED_CHECKS = 64;

/**
 * Runs `verify` (synchronous, e.g. verifyOutcome) with its Ed25519 checks made by `check`
 * (e.g. on a worker thread), and resolves to exactly what running it inline would give. The
 * deferred run's outcome stands when every check passed and `state()` (what `verify` reads
 * besides signatures, e.g. the registry's serial) is what it was before; otherwise `verify`
 * runs again inline, where every valid check is a memo hit (a key the registry removed while
 * the checks were out is refused; a bad signature gives the inline error). A run that needs
 * more than MAX_DEFERRED_CHECKS checks is not handed off.
 */
export async function verifyDeferred<T>(
  verify: () => T,
  check: (checks: readonly PendingCheck[]) => Promise<Uint8Array>,
  state: () => unknown = () => undefined,
): Promise<T> {
  const before = state();
  const run = deferVerification(verify);
  const outcome = () => {
    if (run.ok) return run.result;
    throw run.error;
  };
  // Every check remembered: the run was the inline one already.
  if (run.checks.length === 0) return outcome();
  if (run.checks.length > MAX_DEFERRED_CHECKS) return verify();
  const valid = await check(run.checks);
  settleDeferred(run.checks, valid);
  if (valid.every((v) => v === 1) && Object.is(state(), before)) return outcome();
  return verify();
}

/** Signature checks so far in this process: Ed25519 verifications made, and answered from memory. */
export const verifications = { computed: 0, remembered: 0 };

/** Signatures that verified, by a digest of key, signature and message (most recent last). */
const verified = new Map<string, true>();
/** About 8 MB of digests: the records a resolver refreshes in a day are far fewer. */
const MAX_VERIFIED = 100_000;
