// The change hash: how DPs name a CSI in their change-log events (authoritative.proto,
// MappingChanged) without sending it in clear. Resolvers index cached answers by it.
import { createHash } from "node:crypto";

const PREFIX = Buffer.from("MIMI-CHANGE-v1\0", "latin1");

/** First 8 bytes of SHA-256("MIMI-CHANGE-v1" || 0x00 || canonical CSI URI). */
export function changeHash(uri: string): Uint8Array {
  const d = createHash("sha256").update(PREFIX).update(uri, "utf8").digest();
  return new Uint8Array(d.buffer, d.byteOffset, 8);
}

/** The change hash as 16 lowercase hex digits, for map keys and logs. */
export function changeHashHex(uri: string): string {
  return createHash("sha256").update(PREFIX).update(uri, "utf8").digest("hex").slice(0, 16);
}

/** Hex form of a change hash received on the wire; undefined when it is not 8 bytes. */
export function changeHashKey(hash: Uint8Array): string | undefined {
  return hash.length === 8 ? Buffer.from(hash.buffer, hash.byteOffset, 8).toString("hex") : undefined;
}
