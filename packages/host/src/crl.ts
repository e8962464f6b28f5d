// Certificate revocation lists: the client certificates a server refuses though they chain to
// its CA file. OpenSSL checks them at each handshake (Node's `crl` turns on CRL_CHECK_ALL: every
// certificate of a peer's chain needs a current list from its issuer, or the handshake fails).
// So that one bad list cannot make a server refuse every peer, the lists are checked here before
// they are used, as the certificates are (tls-files.ts): each parses, is signed by a CA of the
// CA file under that CA's name, is current, and every CA of the file has one. The lists also
// tell which open connections a new list revokes (peerTrusted), since a handshake is checked
// once and a connection can stay open for days.
import { verify as verifySignature, type X509Certificate } from "node:crypto";
import { AsnConvert } from "@peculiar/asn1-schema";
import { Certificate, CertificateList } from "@peculiar/asn1-x509";

/** One CA's list, as checked. */
export interface IssuedCrl {
  /** The CA that signed it (its subject, on one line). */
  readonly issuer: string;
  readonly thisUpdateMs: number;
  /** When a newer list is due; OpenSSL refuses every peer of the CA after it. */
  readonly nextUpdateMs: number | undefined;
  /** Serial numbers listed, as serialKey writes them. */
  readonly revoked: ReadonlySet<string>;
}

/** A CRL file, checked against a CA bundle. */
export interface CrlSet {
  /** The lists as Node's TLS context takes them: "X509 CRL" PEM blocks. */
  readonly pem: Buffer;
  /** Each list by the SHA-256 fingerprint of the CA that signed it. */
  readonly byIssuer: ReadonlyMap<string, IssuedCrl>;
  /** The earliest time a list is due again (ms), if any list says. */
  readonly nextUpdateMs: number | undefined;
}

/** The hash each signature algorithm we check uses (null: the algorithm has its own). */
const SIGNATURE_HASHES: Readonly<Record<string, string | null>> = {
  "1.2.840.10045.4.3.2": "sha256", // ecdsa-with-SHA256
  "1.2.840.10045.4.3.3": "sha384",
  "1.2.840.10045.4.3.4": "sha512",
  "1.2.840.113549.1.1.11": "sha256", // sha256WithRSAEncryption
  "1.2.840.113549.1.1.12": "sha384",
  "1.2.840.113549.1.1.13": "sha512",
  "1.3.101.112": null, // Ed25519
  "1.3.101.113": null, // Ed448
};

const PEM_CRL = /-----BEGIN (?:X509 )?CRL-----([\s\S]*?)-----END (?:X509 )?CRL-----/g;

/** A serial number as a lower-case hexadecimal string without leading zeros. */
export function serialKey(hex: string): string {
  return hex.toLowerCase().replace(/^0+(?=.)/, "");
}

/**
 * Reads and checks the lists in `pem` against the CAs of `cas` at `nowMs`; `fail` throws with
 * the reason (a sentence that follows the CRL file's name).
 */
export function readCrls(
  pem: Buffer,
  cas: readonly X509Certificate[],
  nowMs: number,
  fail: (why: string) => never,
): CrlSet {
  const text = pem.toString("utf8");
  const blocks = [...text.matchAll(PEM_CRL)];
  if (blocks.length === 0) fail("holds no CRL (PEM blocks BEGIN X509 CRL)");
  if ((text.match(/-----BEGIN /g) ?? []).length !== blocks.length) {
    fail("holds a PEM block that is not a whole CRL");
  }
  const subjects = cas.map((ca) =>
    AsnConvert.serialize(AsnConvert.parse(ca.raw, Certificate).tbsCertificate.subject),
  );
  const byIssuer = new Map<string, IssuedCrl>();
  let nextUpdateMs: number | undefined;
  const out: string[] = [];
  blocks.forEach((block, i) => {
    const at = `CRL ${i + 1}`;
    const der = Buffer.from((block[1] ?? "").replace(/\s+/g, ""), "base64");
    let list: CertificateList;
    try {
      list = AsnConvert.parse(der, CertificateList);
    } catch (err) {
      fail(`has a ${at} that does not parse: ${(err as Error).message}`);
    }
    const tbs = list.tbsCertList;
    const oid = list.signatureAlgorithm.algorithm;
    const hash = SIGNATURE_HASHES[oid];
    if (hash === undefined || tbs.signature.algorithm !== oid) {
      fail(`has a ${at} signed with an algorithm this server does not check (${oid})`);
    }
    const issuerName = Buffer.from(AsnConvert.serialize(tbs.issuer));
    const signed = tbsBytes(der);
    const signature = Buffer.from(list.signature);
    const ca = cas.find(
      (c, k) =>
        issuerName.equals(Buffer.from(subjects[k] as ArrayBuffer)) && verifies(hash, signed, c, signature),
    );
    if (!ca) fail(`has a ${at} that no CA of the CA file signed (under its own name)`);
    const issuer = ca.subject.replace(/\n/g, ", ");
    if (byIssuer.has(ca.fingerprint256)) fail(`has two CRLs from ${issuer}; keep only the newest`);
    const thisUpdateMs = tbs.thisUpdate.getTime().getTime();
    const next = tbs.nextUpdate?.getTime().getTime();
    if (thisUpdateMs > nowMs)
      fail(`has a CRL from ${issuer} not valid before ${new Date(thisUpdateMs).toISOString()}`);
    if (next !== undefined && next <= nowMs) {
      fail(
        `has a CRL from ${issuer} that expired at ${new Date(next).toISOString()} (peers it covers are refused)`,
      );
    }
    const revoked = new Set(
      (tbs.revokedCertificates ?? []).map((r) => serialKey(Buffer.from(r.userCertificate).toString("hex"))),
    );
    byIssuer.set(ca.fingerprint256, { issuer, thisUpdateMs, nextUpdateMs: next, revoked });
    if (next !== undefined) nextUpdateMs = Math.min(nextUpdateMs ?? next, next);
    const lines = der.toString("base64").match(/.{1,64}/g) ?? [];
    out.push(`-----BEGIN X509 CRL-----\n${lines.join("\n")}\n-----END X509 CRL-----\n`);
  });
  const without = cas
    .filter((c) => !byIssuer.has(c.fingerprint256))
    .map((c) => c.subject.replace(/\n/g, ", "));
  if (without.length > 0) {
    fail(
      `has no CRL from ${without.join("; ")}: with a CRL file, every CA of the CA file needs a current one, ` +
        "or the handshakes of the peers it issued fail",
    );
  }
  return { pem: Buffer.from(out.join("")), byIssuer, nextUpdateMs };
}

/** Whether `ca`'s key made `signature` over `data`; false for a key of another type. */
function verifies(hash: string | null, data: Buffer, ca: X509Certificate, signature: Buffer): boolean {
  try {
    return verifySignature(hash, data, ca.publicKey, signature);
  } catch {
    return false;
  }
}

/** The signed part of a DER CertificateList: its first element, header included. */
function tbsBytes(der: Buffer): Buffer {
  const outer = header(der, 0);
  const inner = header(der, outer.content);
  return der.subarray(outer.content, inner.content + inner.length);
}

/** Where a DER element's content starts, and its length (definite lengths only, as DER has). */
function header(der: Buffer, at: number): { content: number; length: number } {
  const first = der[at + 1];
  if (first === undefined) throw new Error("DER cut short");
  if (first < 0x80) return { content: at + 2, length: first };
  const n = first & 0x7f;
  if (n === 0 || n > 4) throw new Error("unsupported DER length");
  let length = 0;
  for (let k = 0; k < n; k++) length = length * 256 + (der[at + 2 + k] ?? 0);
  return { content: at + 2 + n, length };
}

/**
 * Whether a peer that presented `chain` (leaf first, as getPeerCertificate(true) walks it) is
 * still trusted by `cas` and `crls`: some certificate of the chain is a CA of the bundle or was
 * issued by one, and none is listed as revoked by its issuer's list.
 */
export function peerTrusted(
  chain: readonly X509Certificate[],
  cas: readonly X509Certificate[],
  crls: CrlSet | undefined,
): boolean {
  const anchored = chain.some((c) =>
    cas.some((ca) => ca.fingerprint256 === c.fingerprint256 || (c.checkIssued(ca) && c.verify(ca.publicKey))),
  );
  if (!anchored) return false;
  if (!crls) return true;
  for (const [i, cert] of chain.entries()) {
    // Its issuer is the next of the chain or a CA of the bundle (a chain Node did not complete).
    const next = chain[i + 1];
    const issuers = [...(next ? [next] : []), ...cas].filter(
      (x) => x.fingerprint256 !== cert.fingerprint256 && cert.checkIssued(x) && cert.verify(x.publicKey),
    );
    const serial = serialKey(cert.serialNumber);
    if (issuers.some((x) => crls.byIssuer.get(x.fingerprint256)?.revoked.has(serial))) return false;
  }
  return true;
}
