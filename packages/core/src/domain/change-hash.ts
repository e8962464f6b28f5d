// The change hash: how DPs name a CSI in their change-log events (authoritative.proto,
// MappingChanged) without sending it in clear. Resolvers index cached answers by it. It is keyed
// with the DP's change-hash key, which only certificates allowed to watch get (in the log's
// start message): an unkeyed hash of a phone number is reversed by hashing every number of a
// country, which takes seconds.
import { createHmac } from "node:crypto";

/** Bytes of a DP's change-hash key. */
export const CHANGE_HASH_KEY_BYTES = 32;

const PREFIX = Buffer.from("MIMI-CHANGE-v2\0", "latin1");

function mac(key: Uint8Array, uri: string): Buffer {
  return createHmac("sha256", key).update(PREFIX).update(uri, "utf8").digest();
}

/** First 8 bytes of HMAC-SHA256(key, "MIMI-CHANGE-v2" || 0x00 || canonical CSI URI). */
export function changeHash(key: Uint8Array, uri: string): Uint8Array {
  const d = mac(key, uri);
  return new Uint8Array(d.buffer, d.byteOffset, 8);
}

/** The change hash as 16 lowercase hex digits, for map keys. */
export function changeHashHex(key: Uint8Array, uri: string): string {
  return mac(key, uri).toString("hex", 0, 8);
}

/** Hex form of a change hash received on the wire; undefined when it is not 8 bytes. */
export function changeHashKey(hash: Uint8Array): string | undefined {
  return hash.length === 8 ? Buffer.from(hash.buffer, hash.byteOffset, 8).toString("hex") : undefined;
}
