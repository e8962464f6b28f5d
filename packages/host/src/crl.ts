// Certificate revocation lists: the client certificates a server refuses though they chain to
// its CA file. OpenSSL checks them at each handshake (Node's `crl` turns on CRL_CHECK_ALL: every
// certificate of a peer's chain needs a current list from its issuer, or the handshake fails).
// So that one bad list cannot make a server refuse every peer, the lists are checked here before
// they are used, as the certificates are (tls-files.ts): each parses, is signed by a CA of the
// CA file under that CA's name (lists of other CAs are left out), is a plain full list, is
// current, and every CA of the file has one. The lists also
// tell which open connections a new list revokes (peerTrusted), since a handshake is checked
// once and a connection can stay open for days.
import { createHash, verify as verifySignature, type X509Certificate } from "node:crypto";
import { ConfigError } from "@mimi/core";
import { AsnConvert } from "@peculiar/asn1-schema";
import {
  AuthorityKeyIdentifier,
  Certificate,
  CertificateList,
  id_ce_authorityKeyIdentifier,
  id_ce_cRLNumber,
  id_ce_deltaCRLIndicator,
  id_ce_issuingDistributionPoint,
  id_ce_keyUsage,
  id_ce_subjectKeyIdentifier,
  KeyUsage,
  SubjectKeyIdentifier,
} from "@peculiar/asn1-x509";

/** One CA's list, as checked. */
export interface IssuedCrl {
  /** The CA that signed it (its subject, on one line). */
  readonly issuer: string;
  readonly thisUpdateMs: number;
  /** When a newer list is due; OpenSSL refuses every peer of the CA after it. */
  readonly nextUpdateMs: number | undefined;
  /** Its cRLNumber extension, when it has one: a newer list has a larger one. */
  readonly number: bigint | undefined;
  /** Serial numbers listed, as serialKey writes them. */
  readonly revoked: ReadonlySet<string>;
}

/** A CRL file, checked against a CA bundle. */
export interface CrlSet {
  /**
   * The lists as Node's TLS context takes them: one PEM "X509 CRL" buffer each (Node reads one
   * list from each buffer it is given, and would silently drop the rest of a bundle).
   */
  readonly pem: readonly Buffer[];
  /** Each list by its CA's key and name (issuerKey). */
  readonly byIssuer: ReadonlyMap<string, IssuedCrl>;
  /** The earliest time a list is due again (ms), if any list says. */
  readonly nextUpdateMs: number | undefined;
  /** Lists in the file that no CA of the CA file signed: not used (a CA still to come, or a stray). */
  readonly skipped: number;
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

/** The longest chain a peer's trust is followed through (peerTrusted). */
const MAX_CHAIN = 8;

/** A serial number as a lower-case hexadecimal string without leading zeros. */
export function serialKey(hex: string): string {
  return hex.toLowerCase().replace(/^0+(?=.)/, "");
}

/** A CA's key (SHA-256 of its SubjectPublicKeyInfo): what its lists are found by. */
function keyOf(c: X509Certificate): string {
  return createHash("sha256")
    .update(c.publicKey.export({ type: "spki", format: "der" }))
    .digest("hex");
}

/** The base64 bodies of the CRL blocks of `text`, scanned once (no regular expression to backtrack). */
function crlBlocks(text: string, fail: (why: string) => never): string[] {
  const out: string[] = [];
  let at = 0;
  for (;;) {
    const begin = text.indexOf("-----BEGIN ", at);
    if (begin < 0) return out;
    const label = /^-----BEGIN (X509 CRL|CRL)-----/.exec(text.slice(begin, begin + 30));
    if (!label) fail("holds a PEM block that is not a CRL");
    const body = begin + label[0].length;
    const end = text.indexOf(`-----END ${label[1]}-----`, body);
    const nextBegin = text.indexOf("-----BEGIN ", body);
    if (end < 0 || (nextBegin >= 0 && nextBegin < end)) fail("holds a CRL block cut short");
    out.push(text.slice(body, end));
    at = end + 1;
  }
}

/** A CA of the CA file as a list's signer: what OpenSSL matches a list to it by. */
interface Signer {
  readonly c: X509Certificate;
  /** Where its list is kept (issuerKey). */
  readonly key: string;
  /** Its subject, DER-encoded: OpenSSL finds a CA's list by name. */
  readonly name: Buffer;
  /**
   * Its subject key identifier, serial and issuer's name (DER), which a list's authority key
   * identifier must match where it names them.
   */
  readonly ski: Buffer | undefined;
  readonly serial: string;
  readonly issuerName: Buffer;
  /** Whether its key usage allows signing lists (cRLSign; no key usage allows all). */
  readonly mayList: boolean;
}

function signerOf(c: X509Certificate): Signer {
  const parsed = AsnConvert.parse(c.raw, Certificate).tbsCertificate;
  const ext = (id: string) => parsed.extensions?.find((e) => e.extnID === id);
  const usage = ext(id_ce_keyUsage);
  const ski = ext(id_ce_subjectKeyIdentifier);
  return {
    c,
    key: issuerKey(c),
    name: Buffer.from(AsnConvert.serialize(parsed.subject)),
    ski: ski && Buffer.from(AsnConvert.parse(ski.extnValue, SubjectKeyIdentifier).buffer),
    serial: serialKey(c.serialNumber),
    issuerName: Buffer.from(AsnConvert.serialize(parsed.issuer)),
    mayList: !usage || AsnConvert.parse(usage.extnValue, KeyUsage).toJSON().includes("crlSign"),
  };
}

/**
 * Where a CA's list is kept and found: its key and its name, both, since OpenSSL finds a list by
 * the issuer's name and checks it with the issuer's key.
 */
function issuerKey(c: X509Certificate): string {
  return `${keyOf(c)}\n${c.subject}`;
}

/** Whether a list's authority key identifier (if any) names `s`, as OpenSSL requires. */
function akidNames(list: CertificateList, s: Signer): boolean {
  const akid = list.tbsCertList.crlExtensions?.find((e) => e.extnID === id_ce_authorityKeyIdentifier);
  if (!akid) return true;
  const a = AsnConvert.parse(akid.extnValue, AuthorityKeyIdentifier);
  if (a.keyIdentifier && s.ski && !Buffer.from(a.keyIdentifier.buffer).equals(s.ski)) return false;
  // As OpenSSL: the first directory name among the issuer names is the CA's own issuer.
  const named = a.authorityCertIssuer?.find((g) => g.directoryName)?.directoryName;
  if (named && !Buffer.from(AsnConvert.serialize(named)).equals(s.issuerName)) return false;
  if (a.authorityCertSerialNumber) {
    return serialKey(Buffer.from(a.authorityCertSerialNumber).toString("hex")) === s.serial;
  }
  return true;
}

/**
 * Reads and checks the lists in `pem` against the CAs of `cas` at `nowMs`; `fail` throws with
 * the reason (a sentence that follows the CRL file's name). Lists no CA of the file signed are
 * left out (counted in `skipped`).
 */
export function readCrls(
  pem: Buffer,
  cas: readonly X509Certificate[],
  nowMs: number,
  fail: (why: string) => never,
): CrlSet {
  try {
    return readChecked(pem, cas, nowMs, fail);
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    // What the parser throws, said as the file's problem.
    return fail(`could not be read: ${err instanceof Error ? err.message : String(err)}`);
  }
}

function readChecked(
  pem: Buffer,
  cas: readonly X509Certificate[],
  nowMs: number,
  fail: (why: string) => never,
): CrlSet {
  const blocks = crlBlocks(pem.toString("utf8"), fail);
  if (blocks.length === 0) fail("holds no CRL (PEM blocks BEGIN X509 CRL)");
  let signers: Signer[];
  try {
    signers = cas.map(signerOf);
  } catch (err) {
    throw new ConfigError(`the CA file has a certificate whose extensions do not parse: ${String(err)}`);
  }
  const byIssuer = new Map<string, IssuedCrl>();
  /** The CAs (by fingerprint) a list covers. */
  const covered = new Set<string>();
  const pems: Buffer[] = [];
  let nextUpdateMs: number | undefined;
  let skipped = 0;
  blocks.forEach((body, i) => {
    const at = `CRL ${i + 1}`;
    const der = Buffer.from(body.replace(/\s+/g, ""), "base64");
    let list: CertificateList;
    let signed: Buffer;
    let issuerName: Buffer;
    try {
      list = AsnConvert.parse(der, CertificateList);
      signed = tbsBytes(der);
      issuerName = Buffer.from(AsnConvert.serialize(list.tbsCertList.issuer));
    } catch (err) {
      fail(`has a ${at} that does not parse: ${(err as Error).message}`);
    }
    const tbs = list.tbsCertList;
    // A list of a CA not in the file (one still to come, or a stray) is left out, whatever it is.
    const named = signers.filter((s) => issuerName.equals(s.name));
    if (named.length === 0) {
      skipped++;
      return;
    }
    const oid = list.signatureAlgorithm.algorithm;
    const hash = SIGNATURE_HASHES[oid];
    if (hash === undefined || tbs.signature.algorithm !== oid) {
      fail(`has a ${at} signed with an algorithm this server does not check (${oid})`);
    }
    const signature = Buffer.from(list.signature);
    // The CA of the file of this name whose key signed it (the CA file holds one CA a name).
    const mine = named.filter((s) => akidNames(list, s) && verifies(hash, signed, s.c, signature));
    const signer = mine[0];
    if (!signer) {
      skipped++;
      return;
    }
    const issuer = signer.c.subject.replace(/\n/g, ", ");
    if (!signer.mayList) fail(`has a CRL from ${issuer}, whose certificate's key usage leaves out cRLSign`);
    for (const e of tbs.crlExtensions ?? []) {
      if (e.extnID === id_ce_deltaCRLIndicator || e.extnID === id_ce_issuingDistributionPoint) {
        fail(`has a CRL from ${issuer} that is a delta or partial list (${e.extnID}); give full lists`);
      }
      // OpenSSL handles only the authority key identifier among critical list extensions.
      if (e.critical && e.extnID !== id_ce_authorityKeyIdentifier) {
        fail(`has a CRL from ${issuer} with a critical extension OpenSSL does not take (${e.extnID})`);
      }
    }
    for (const r of tbs.revokedCertificates ?? []) {
      if (r.crlEntryExtensions?.some((e) => e.critical)) {
        fail(
          `has a CRL from ${issuer} with a critical entry extension (an indirect list?); give direct lists`,
        );
      }
    }
    if (mine.some((s) => covered.has(s.c.fingerprint256)))
      fail(`has two CRLs from ${issuer}; keep only the newest`);
    const thisUpdateMs = tbs.thisUpdate.getTime().getTime();
    const next = tbs.nextUpdate?.getTime().getTime();
    if (thisUpdateMs > nowMs) {
      fail(`has a CRL from ${issuer} not valid before ${new Date(thisUpdateMs).toISOString()}`);
    }
    if (next !== undefined && next <= nowMs) {
      fail(
        `has a CRL from ${issuer} that expired at ${new Date(next).toISOString()} (peers it covers are refused)`,
      );
    }
    const numbered = tbs.crlExtensions?.find((e) => e.extnID === id_ce_cRLNumber);
    const revoked = new Set(
      (tbs.revokedCertificates ?? []).map((r) => serialKey(Buffer.from(r.userCertificate).toString("hex"))),
    );
    const issued: IssuedCrl = {
      issuer,
      thisUpdateMs,
      nextUpdateMs: next,
      number: numbered && integerOf(Buffer.from(numbered.extnValue.buffer)),
      revoked,
    };
    for (const s of mine) {
      covered.add(s.c.fingerprint256);
      byIssuer.set(s.key, issued);
    }
    if (next !== undefined) nextUpdateMs = Math.min(nextUpdateMs ?? next, next);
    const lines = der.toString("base64").match(/.{1,64}/g) ?? [];
    pems.push(Buffer.from(`-----BEGIN X509 CRL-----\n${lines.join("\n")}\n-----END X509 CRL-----\n`));
  });
  const without = signers
    .filter((s) => !covered.has(s.c.fingerprint256))
    .map((s) => s.c.subject.replace(/\n/g, ", "));
  if (without.length > 0) {
    fail(
      `has no CRL from ${without.join("; ")}: with a CRL file, every CA of the CA file needs a current one, ` +
        "or the handshakes of the peers it issued fail" +
        (skipped > 0
          ? ` (${skipped} list(s) in the file are signed by no CA of the CA file, under its name)`
          : ""),
    );
  }
  return { pem: pems, byIssuer, nextUpdateMs, skipped };
}

/** The value of a DER INTEGER (a cRLNumber), or undefined when it is not one. */
function integerOf(der: Buffer): bigint | undefined {
  if (der[0] !== 0x02 || der.length < 2) return undefined;
  const h = header(der, 0);
  const bytes = der.subarray(h.content, h.content + h.length);
  return bytes.length === 0 ? undefined : BigInt(`0x${bytes.toString("hex")}`);
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
 * Whether a peer that presented `chain` (leaf first, as getPeerCertificate(true) gives it) is
 * still trusted by `cas` and `crls`. What is checked: a path of signatures from the leaf, each
 * issuer taken from the CA file first and else from the chain (where it must be a CA), ends at a
 * self-signed certificate of the file; and with lists, every issuer on it has one (a CA of the
 * file has; an intermediate the peer brought has none, which OpenSSL refuses) that does not list
 * the certificate it issued. Not checked again: validity periods, path lengths, purposes. Only
 * signatures are followed: Node links a chain without checking them, and a peer may add a
 * certificate that merely names a trusted CA.
 */
export function peerTrusted(
  chain: readonly X509Certificate[],
  cas: readonly X509Certificate[],
  crls: CrlSet | undefined,
): boolean {
  const issued = (c: X509Certificate, by: X509Certificate) =>
    by.fingerprint256 !== c.fingerprint256 && c.checkIssued(by) && c.verify(by.publicKey);
  const inFile = (c: X509Certificate) => cas.some((ca) => ca.fingerprint256 === c.fingerprint256);
  const presented = chain.slice(1, MAX_CHAIN);
  let cert = chain[0];
  for (let depth = 0; cert && depth < MAX_CHAIN; depth++) {
    const c: X509Certificate = cert;
    // Self-signed: trusted when it is in the file (OpenSSL asks no key usage of such an anchor).
    if (c.subject === c.issuer && c.verify(c.publicKey)) return inFile(c);
    // An issuer the peer brought must be a CA; those of the file are what the operator trusts.
    const issuer = cas.find((ca) => issued(c, ca)) ?? presented.find((x) => x.ca && issued(c, x));
    if (!issuer) return false;
    if (crls) {
      const list = crls.byIssuer.get(issuerKey(issuer));
      if (!list || list.revoked.has(serialKey(c.serialNumber))) return false;
    }
    cert = issuer;
  }
  return false;
}
