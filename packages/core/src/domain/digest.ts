// SHA-256 on the hot paths (answer seals and their batches), made in one call. crypto.hash
// (Node 20.12 and later) makes no Hash object: each of those is a native object with a weak
// handle that every young-generation collection visits, and its digest() a buffer of its own,
// which every such collection sweeps. On a DP answering a lookup stream the two were about a
// twelfth of its CPU (bench/README.md, "Fewer objects per lookup"). Older Nodes hash the same
// bytes through createHash.
import * as crypto from "node:crypto";

const oneShot = typeof crypto.hash === "function";

/**
 * SHA-256 of `data` as a string of 32 one-byte characters (latin1): a digest that is only
 * hashed again or copied into other bytes (Buffer.write with "latin1") needs no buffer at all.
 * 0.4 µs a hash of 65 bytes here, against 1.3 µs with createHash and a Buffer. ("binary" is
 * Node's other name for latin1.)
 */
export function sha256Latin1(data: Uint8Array): string {
  return sha256Text(data, "binary");
}

/** SHA-256 of `data` as text: "binary" (sha256Latin1), "base64", "base64url" or "hex". */
export function sha256Text(data: Uint8Array, encoding: crypto.BinaryToTextEncoding): string {
  return oneShot
    ? crypto.hash("sha256", data, encoding)
    : crypto.createHash("sha256").update(data).digest(encoding);
}

/** SHA-256 of `parts` one after the other, as sha256Text (joined by Buffer.concat, in a slice of the buffer pool). */
export function sha256OfParts(parts: readonly Uint8Array[], encoding: crypto.BinaryToTextEncoding): string {
  return sha256Text(Buffer.concat(parts), encoding);
}

/** SHA-256 of `data`, as a plain Uint8Array of its own. */
export function sha256(data: Uint8Array): Uint8Array {
  const b = oneShot
    ? crypto.hash("sha256", data, "buffer")
    : crypto.createHash("sha256").update(data).digest();
  return new Uint8Array(b.buffer, b.byteOffset, b.length);
}
