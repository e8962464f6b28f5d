// Checking command-line values, and the defaults that tie the CLI to the local network's
// layout (data/pki next to data/dp-eu and data/dp-us). Pure: no sockets, so it is unit-tested.
import { dirname, join } from "node:path";
import { parseCsi } from "@mimi/core";

import { UsageError } from "./errors.js";

export { Interrupted, UsageError } from "./errors.js";

/** A whole-number flag within bounds. */
export function count(flag: string, text: string, min: number, max: number): number {
  const n = Number(text);
  if (!/^[0-9]+$/.test(text) || n < min || n > max)
    throw new UsageError(`${flag} must be a whole number from ${min} to ${max}`);
  return n;
}

/** The canonical URI of a CSI argument ("+447700900123" becomes "tel:+447700900123"). */
export function csiArg(text: string): string {
  try {
    return parseCsi(text).uri;
  } catch (err) {
    throw new UsageError(`invalid CSI: ${(err as Error).message}`);
  }
}

/** Collects a repeatable flag (`--tag a --tag b`) into a list. */
export function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

/**
 * The MSP id of a local-network MSP certificate identity: "msp-bluebird" is
 * "bluebird.example" (packages/devnet/demo.json). Undefined for any other identity.
 */
export function mspIdOf(identity: string): string | undefined {
  const m = /^msp-([a-z0-9][a-z0-9-]*)$/.exec(identity);
  return m ? `${m[1]}.example` : undefined;
}

/** A DP of the local network, found by the loopback port `mimi` talks to. */
export interface LocalDp {
  readonly dpId: string;
  /** Where the DP writes codes when no SMS gateway or mail relay is configured. */
  readonly outboxDir: string;
}

const LOCAL_DPS: Readonly<Record<string, string>> = { "7501": "eu", "7502": "us" };
const LOOPBACK = new Set(["127.0.0.1", "localhost", "::1", "[::1]"]);

/**
 * The local DP behind `address`, when it is a loopback address on a local DP port. Its
 * outbox is <pki>/../dp-<id>/outbox: the network keeps its PKI and each DP's data folder
 * side by side (data/pki and data/dp-eu for `npm start`).
 */
export function localDp(address: string, pkiDir: string): LocalDp | undefined {
  const at = address.lastIndexOf(":");
  if (at <= 0) return undefined;
  const dpId = LOCAL_DPS[address.slice(at + 1)];
  if (!dpId || !LOOPBACK.has(address.slice(0, at))) return undefined;
  return { dpId, outboxDir: localOutbox(pkiDir, dpId) };
}

/** The outbox of every local DP, for commands that look for a code without knowing the DP. */
export function localOutboxes(pkiDir: string): string[] {
  return Object.values(LOCAL_DPS).map((id) => localOutbox(pkiDir, id));
}

function localOutbox(pkiDir: string, dpId: string): string {
  return join(dirname(pkiDir), `dp-${dpId}`, "outbox");
}

/** Short fingerprint of a raw public key (its first 8 hex digits), or "none". */
export function fingerprint(key: Uint8Array): string {
  return key.length === 0 ? "none" : Buffer.from(key.subarray(0, 4)).toString("hex");
}
