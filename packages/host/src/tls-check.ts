// Checking TLS material before it is used: a pair that matches, current certificates that chain
// to the CA file, PEM blocks OpenSSL reads whole, an identity a rotation keeps, and the CRLs
// (crl.ts) against the CA file. TlsFiles (tls-files.ts) publishes only what passes.
import { createHash, X509Certificate } from "node:crypto";
import { createSecureContext } from "node:tls";
import { ConfigError } from "@mimi/core";
import { ROLE_URI_PREFIX, subjectAltNames, type TlsMaterial, type TlsPaths } from "@mimi/rpc";
import { type CrlSet, readCrls } from "./crl.js";

/** What an operator needs to know of a certificate in use (logged at every change). */
export interface CertificateSummary {
  readonly subject: string;
  readonly serial: string;
  readonly notAfter: string;
  /** SHA-256 of the certificate, as `openssl x509 -fingerprint -sha256` prints it. */
  readonly fingerprint: string;
  /** SHA-256 of the CA bundle's bytes (first 16 hex digits), to tell a CA change apart. */
  readonly caBundle: string;
  /**
   * With a CRL file: how many lists, certificates they revoke, when the first is due again, and
   * how many lists were left out as signed by no CA of the CA file.
   */
  readonly crl?: {
    readonly lists: number;
    readonly revoked: number;
    readonly nextUpdate?: string;
    readonly skipped?: number;
  };
}

/** What checkTlsMaterial read: the summary, the CAs of the bundle and the CRLs. */
export interface CheckedTls {
  readonly summary: CertificateSummary;
  readonly cas: readonly X509Certificate[];
  readonly crls?: CrlSet;
}

export const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/**
 * Checks that `m` can serve: every PEM block is whole, the pair loads and matches, every
 * certificate of the chain is current at `nowMs`, the chain in the certificate file ends at a CA
 * of the bundle, and (when given) the leaf keeps the identity `sameIdentity` (identityOf: its
 * subject and its role URIs). Throws a ConfigError naming the files.
 */
export function checkTlsMaterial(
  m: TlsMaterial,
  paths: TlsPaths,
  nowMs: number,
  sameIdentity?: string,
): CertificateSummary {
  return checkTls(m, paths, nowMs, sameIdentity).summary;
}

/** checkTlsMaterial, with the CAs and CRLs it read (a CRL file is checked against the CA file). */
export function checkTls(m: TlsMaterial, paths: TlsPaths, nowMs: number, sameIdentity?: string): CheckedTls {
  const files = `${paths.certFile}, ${paths.keyFile}, ${paths.caFile}`;
  const fail = (why: string): never => {
    throw new ConfigError(`TLS material (${files}) ${why}`);
  };
  for (const [what, pem] of [
    ["certificate file", m.cert],
    ["CA file", m.ca],
  ] as const) {
    const text = pem.toString("utf8");
    if ((text.match(/-----BEGIN /g) ?? []).length !== (text.match(/-----END /g) ?? []).length) {
      fail(`has a ${what} with a PEM block cut short`);
    }
    // OpenSSL stops at an END line run into the next BEGIN (files concatenated without a
    // newline between them) and loses what follows, though Node loads the file without a word.
    if (/-----END [A-Z0-9 ]+-----(?!\r?\n|\s*$)/.test(text)) {
      fail(`has a ${what} whose PEM blocks are not each on their own lines`);
    }
  }
  let chain: X509Certificate[] = [];
  let cas: X509Certificate[] = [];
  try {
    createSecureContext({ key: m.key, cert: m.cert, ca: m.ca });
    chain = (m.cert.toString("utf8").match(PEM_CERT) ?? []).map((b) => new X509Certificate(b));
    cas = (m.ca.toString("utf8").match(PEM_CERT) ?? []).map((b) => new X509Certificate(b));
  } catch (err) {
    fail(`does not load: ${(err as Error).message}`);
  }
  const leaf = chain[0] ?? fail("holds no certificate");
  if (cas.length === 0) fail("has a CA file with no certificate");
  // OpenSSL looks issuers up by subject: with two different CAs of one subject, peers whose
  // certificates one of them issued are refused (seen with Node 20's OpenSSL).
  const bySubject = new Map<string, string>();
  for (const ca of cas) {
    const seen = bySubject.get(ca.subject);
    if (seen !== undefined && seen !== ca.fingerprint256) {
      fail(
        `has two different CAs named ${ca.subject.replace(/\n/g, ", ")} in its CA file; give each CA its own name`,
      );
    }
    bySubject.set(ca.subject, ca.fingerprint256);
  }
  for (const c of [...chain, ...cas]) {
    const name = c.subject.replace(/\n/g, ", ");
    if (Date.parse(c.validTo) <= nowMs) fail(`has a certificate (${name}) that expired on ${c.validTo}`);
    if (Date.parse(c.validFrom) > nowMs) fail(`has a certificate (${name}) not valid before ${c.validFrom}`);
  }
  for (let i = 0; i + 1 < chain.length; i++) {
    const [child, parent] = [chain[i] as X509Certificate, chain[i + 1] as X509Certificate];
    if (!child.checkIssued(parent) || !child.verify(parent.publicKey)) {
      fail(`has a certificate chain out of order at certificate ${i + 1}`);
    }
  }
  const top = chain[chain.length - 1] as X509Certificate;
  if (!cas.some((ca) => top.checkIssued(ca) && top.verify(ca.publicKey))) {
    fail("has a certificate that does not chain to a CA of the CA file");
  }
  if (sameIdentity !== undefined && identityOf(leaf) !== sameIdentity) {
    fail(
      `names ${identityOf(leaf)} instead of ${sameIdentity}; a rotation keeps the identity and ` +
        "the roles (restart the server to change them)",
    );
  }
  const crlFail = (why: string): never => {
    throw new ConfigError(`CRL file ${paths.crlFile ?? ""} ${why}`);
  };
  const crls = m.crl === undefined ? undefined : readCrls(m.crl, cas, nowMs, crlFail);
  if (crls) {
    // As the server's context will be given them: what OpenSSL does not load fails here.
    try {
      createSecureContext({ key: m.key, cert: m.cert, ca: m.ca, crl: [...crls.pem] });
    } catch (err) {
      crlFail(`does not load: ${(err as Error).message}`);
    }
  }
  const lists = crls && [...new Set(crls.byIssuer.values())];
  const summary: CertificateSummary = {
    subject: leaf.subject.replace(/\n/g, ", "),
    serial: leaf.serialNumber,
    notAfter: new Date(leaf.validTo).toISOString(),
    fingerprint: leaf.fingerprint256,
    caBundle: createHash("sha256").update(m.ca).digest("hex").slice(0, 16),
    ...(crls &&
      lists && {
        crl: {
          lists: lists.length,
          revoked: lists.reduce((n, l) => n + l.revoked.size, 0),
          ...(crls.skipped > 0 && { skipped: crls.skipped }),
          ...(crls.nextUpdateMs !== undefined && { nextUpdate: new Date(crls.nextUpdateMs).toISOString() }),
        },
      }),
  };
  return { summary, cas, ...(crls && { crls }) };
}

/** A certificate's identity as a rotation must keep it: its subject and its role URIs. */
export function identityOf(c: X509Certificate): string {
  const roles = (subjectAltNames(c.subjectAltName ?? "") ?? [])
    .filter((n) => n.type === "URI" && n.value.startsWith(ROLE_URI_PREFIX))
    .map((n) => `URI:${n.value}`)
    .sort();
  return `${c.subject.replace(/\n/g, ", ")} [${roles.join(" ")}]`;
}

/** The subjects of the CAs in a PEM bundle (unparseable blocks are skipped). */
export function caSubjects(pem: Buffer): string[] {
  return (pem.toString("utf8").match(PEM_CERT) ?? []).flatMap((b) => {
    try {
      const c = new X509Certificate(b);
      return [`${c.subject.replace(/\n/g, ", ")} (${c.fingerprint256.slice(0, 23)})`];
    } catch {
      return [];
    }
  });
}
