// The DP's private-lookup keys on disk (private-keys.ts): a JSON file, mode 0600, replaced
// atomically, holding at most MAX_HELD_KEYS keys oldest first; and what a set of keys must be.
import { readFileSync } from "node:fs";
import { generateOprfKeys, oprfKeysMatch, replacePrivateFile } from "@mimi/core";
import type { EpochKeys } from "./private-table.js";

/** Keys a DP holds at most: the one served and the next (or the previous, while it retires). */
export const MAX_HELD_KEYS = 2;

/**
 * The DP's OPRF keys, kept in `path` (mode 0600), oldest first. With `make`, a file that is
 * absent or holds no key is made with one key, the current time in seconds as its epoch, so a
 * new key never reuses an epoch; without it, none is read (a secondary waiting for its
 * primary's). A file that is not a key file is refused: it would silently make new tables. The
 * first version's file (one key as the whole object) is read too.
 */
export function readKeyFile(path: string, now: () => number = Date.now, make = true): EpochKeys[] {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    return make ? firstKey(path, now) : [];
  }
  const bad = () =>
    new Error(
      `${path} does not hold this DP's OPRF keys (epoch, secretKey, publicKey); remove it to make new ones`,
    );
  let j: unknown;
  try {
    j = JSON.parse(text);
  } catch {
    throw bad();
  }
  const list = j !== null && typeof j === "object" && "keys" in j ? (j as { keys: unknown }).keys : [j];
  if (!Array.isArray(list) || list.length > MAX_HELD_KEYS) throw bad();
  // Empty only as a secondary left it (its keys retired before its primary's came).
  if (list.length === 0) return make ? firstKey(path, now) : [];
  const keys = list.map((k: { epoch?: unknown; secretKey?: unknown; publicKey?: unknown }) => {
    if (
      !(Number.isInteger(k?.epoch) && (k.epoch as number) >= 0 && (k.epoch as number) < 2 ** 32) ||
      typeof k.secretKey !== "string" ||
      typeof k.publicKey !== "string" ||
      !/^[0-9a-f]{64}$/.test(k.secretKey) ||
      !/^[0-9a-f]{64}$/.test(k.publicKey)
    )
      throw bad();
    return {
      epoch: k.epoch as number,
      secretKey: new Uint8Array(Buffer.from(k.secretKey, "hex")),
      publicKey: new Uint8Array(Buffer.from(k.publicKey, "hex")),
    };
  });
  keys.sort((a, b) => a.epoch - b.epoch);
  if (new Set(keys.map((k) => k.epoch)).size !== keys.length) throw bad();
  return keys;
}

/** Why `keys` is not a set of keys a DP may hold (at most two, distinct epochs, matching halves). */
export function keySetProblem(keys: readonly EpochKeys[]): string | undefined {
  if (keys.length < 1 || keys.length > MAX_HELD_KEYS) return `1 to ${MAX_HELD_KEYS} keys, not ${keys.length}`;
  if (new Set(keys.map((k) => k.epoch)).size !== keys.length) return "two keys share an epoch";
  for (let i = 0; i < keys.length; i++) {
    const k = keys[i] as EpochKeys;
    if (!Number.isInteger(k.epoch) || k.epoch < 0 || k.epoch >= 2 ** 32)
      return `epoch ${k.epoch} is out of range`;
    if (i > 0 && k.epoch < (keys[i - 1] as EpochKeys).epoch) return "keys are not oldest first";
    if (!oprfKeysMatch(k)) return `the key of epoch ${k.epoch} is not a key pair of the suite`;
  }
  return undefined;
}

/** A DP's first key, with the current time in seconds as its epoch, written to `path`. */
function firstKey(path: string, now: () => number): EpochKeys[] {
  const first: EpochKeys = { epoch: Math.floor(now() / 1000) % 2 ** 32, ...generateOprfKeys() };
  writeKeyFile(path, [first]);
  return [first];
}

export function writeKeyFile(path: string, keys: readonly EpochKeys[]): void {
  const json = {
    keys: keys.map((k) => ({ epoch: k.epoch, secretKey: hex(k.secretKey), publicKey: hex(k.publicKey) })),
  };
  replacePrivateFile(path, [Buffer.from(`${JSON.stringify(json)}\n`)]);
}

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");
/** A key as `mimi root dp put --private-lookup-key` takes it. */
export const keyText = (k: EpochKeys) => `${k.epoch}:${hex(k.publicKey)}`;
