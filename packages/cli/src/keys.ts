// Loading the Ed25519 keys that commands name by flag, with errors that say which flag and
// file are wrong (exit 2) instead of a crypto library's message.
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import {
  generateSigningKey,
  loadPublicKey,
  loadSigningKey,
  PUBLIC_KEY_BYTES,
  publicKeyPem,
  type SigningKey,
  signingKeyPem,
} from "@mimi/core";
import { UsageError } from "./args.js";

/**
 * The raw public key in `file`: a public key file (SPKI PEM, or the raw key in hex or
 * base64) or an Ed25519 private key PEM, whose public half is taken.
 */
export function publicKeyArg(flag: string, file: string): Uint8Array {
  if (!existsSync(file)) throw new UsageError(`${flag}: there is no file ${file}`);
  try {
    const raw = loadPublicKey(file);
    // A PEM of another key type decodes too; only the length tells it is not Ed25519.
    if (raw.length === PUBLIC_KEY_BYTES) return raw;
  } catch {
    // Not a public key file; try it as a private key below.
  }
  try {
    return loadSigningKey(file).publicKey;
  } catch (err) {
    throw new UsageError(
      `${flag}: ${file} holds neither an Ed25519 public key (PEM, hex or base64) nor an Ed25519 private key PEM (${(err as Error).message})`,
    );
  }
}

/** The Ed25519 private key in `file`. `hint` says how to get one when it is missing. */
export function signingKeyArg(flag: string, file: string, hint = ""): SigningKey {
  if (!existsSync(file)) throw new UsageError(`${flag}: there is no file ${file}${hint ? `; ${hint}` : ""}`);
  try {
    return loadSigningKey(file);
  } catch (err) {
    throw new UsageError(`${flag}: ${file} is not an Ed25519 private key PEM (${(err as Error).message})`);
  }
}

/**
 * The key at `file`, made when absent: a new Ed25519 key written as PKCS#8 PEM with mode
 * 0600, and its public key next to it (`.pub` in place of `.pem`).
 */
export function ensureSigningKey(file: string): { key: SigningKey; created: boolean } {
  if (existsSync(file)) return { key: signingKeyArg("--user-key", file), created: false };
  const key = generateSigningKey();
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  // "wx": another mimi started at the same moment must not have its key overwritten.
  writeFileSync(file, signingKeyPem(key), { mode: 0o600, flag: "wx" });
  if (file.endsWith(".pem")) writeFileSync(`${file.slice(0, -4)}.pub`, publicKeyPem(key.publicKey));
  return { key, created: true };
}
