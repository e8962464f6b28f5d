// A development certificate authority and leaf certificates for the local network
// and tests. Production operators bring their own PKI; the servers only read PEM files.
import "reflect-metadata";
import { webcrypto } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { generateSigningKey, loadSigningKey, publicKeyPem, type SigningKey, signingKeyPem } from "@mimi/core";
import { DEVELOPMENT_CA_SUBJECT } from "@mimi/host";
import * as x509 from "@peculiar/x509";
import { devSigningKeyPaths, devTlsPaths, parseDevIdentity } from "./paths.js";

type CryptoKey = webcrypto.CryptoKey;

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

const ALG = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" } as const;
const DAY_MS = 86_400_000;

/**
 * Makes sure `dir` holds a development CA and a certificate for each identity (subject CN,
 * SANs localhost, 127.0.0.1 and ::1 and a URI SAN per role, usable as server and client; see
 * parseDevIdentity for "name=role" and the roles names imply). `extraIps` adds IP SANs to the
 * certificates of the identities it names (servers on other hosts, e.g. the multi-host test's
 * network namespaces). Existing files are kept when they grant the same roles and addresses, so
 * re-running adds only what is missing. Private keys are written with mode 0600. A new CA is
 * named `caSubject` (tests of a second CA).
 */
export async function ensureDevPki(
  dir: string,
  identities: readonly string[],
  extraIps: Readonly<Record<string, readonly string[]>> = {},
  caSubject = DEVELOPMENT_CA_SUBJECT,
): Promise<void> {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const caCertPath = join(dir, "ca.pem");
  const caKeyPath = join(dir, "ca-key.pem");
  let caCert: x509.X509Certificate;
  let caKey: CryptoKey;
  if (existsSync(caCertPath) && existsSync(caKeyPath)) {
    caCert = new x509.X509Certificate(readFileSync(caCertPath, "utf8"));
    caKey = await importKey(readFileSync(caKeyPath, "utf8"));
  } else {
    const keys = await webcrypto.subtle.generateKey(ALG, true, ["sign", "verify"]);
    caCert = await x509.X509CertificateGenerator.createSelfSigned({
      serialNumber: randomSerial(),
      name: caSubject,
      notBefore: new Date(Date.now() - DAY_MS),
      notAfter: new Date(Date.now() + 3650 * DAY_MS),
      signingAlgorithm: ALG,
      keys,
      extensions: [
        new x509.BasicConstraintsExtension(true, 0, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      ],
    });
    caKey = keys.privateKey;
    writeFileSync(caKeyPath, await exportKey(caKey), { mode: 0o600 });
    writeFileSync(caCertPath, `${caCert.toString("pem")}\n`);
  }
  for (const spec of identities) {
    const { name: identity, roles } = parseDevIdentity(spec);
    const paths = devTlsPaths(dir, identity);
    const roleUris = roles.map((r) => `urn:mimi:role:${r}`);
    const ips = extraIps[identity] ?? [];
    if (
      existsSync(paths.certFile) &&
      existsSync(paths.keyFile) &&
      sameRoles(paths.certFile, roleUris) &&
      holdsIps(paths.certFile, ips)
    )
      continue;
    const keys = await webcrypto.subtle.generateKey(ALG, true, ["sign", "verify"]);
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: randomSerial(),
      subject: `CN=${identity}`,
      issuer: caCert.subject,
      notBefore: new Date(Date.now() - DAY_MS),
      notAfter: new Date(Date.now() + 825 * DAY_MS),
      signingAlgorithm: ALG,
      publicKey: keys.publicKey,
      signingKey: caKey,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(
          x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyAgreement,
          true,
        ),
        new x509.ExtendedKeyUsageExtension([
          x509.ExtendedKeyUsage.serverAuth,
          x509.ExtendedKeyUsage.clientAuth,
        ]),
        new x509.SubjectAlternativeNameExtension([
          { type: "dns", value: "localhost" },
          { type: "ip", value: "127.0.0.1" },
          { type: "ip", value: "::1" },
          ...ips.map((value) => ({ type: "ip" as const, value })),
          ...roleUris.map((value) => ({ type: "url" as const, value })),
        ]),
        await x509.AuthorityKeyIdentifierExtension.create(caCert),
      ],
    });
    writeFileSync(paths.keyFile, await exportKey(keys.privateKey), { mode: 0o600 });
    writeFileSync(paths.certFile, `${cert.toString("pem")}\n`);
  }
}

/** What writeDevCrl lists and when. */
export interface DevCrlOptions {
  /** Identities whose certificates (in the PKI folder) the list revokes. */
  readonly revoke?: readonly string[];
  /** When the list was issued (default: a minute ago). */
  readonly thisUpdate?: Date;
  /** When a newer list is due (default: a week after thisUpdate). */
  readonly nextUpdate?: Date;
  /** Its cRLNumber extension, when given. */
  readonly number?: number;
  /** Further list extensions (tests of lists a server must refuse). */
  readonly extensions?: readonly x509.Extension[];
}

/**
 * Writes to `file` a certificate revocation list of the development CA in `dir` (ensureDevPki),
 * revoking the certificates of the identities `o.revoke` names, as a CA operator would publish
 * one (`openssl ca -gencrl`): a PEM "X509 CRL" block, for a server's `tls.crlFile`.
 */
export async function writeDevCrl(dir: string, file: string, o: DevCrlOptions = {}): Promise<void> {
  const caCert = new x509.X509Certificate(readFileSync(join(dir, "ca.pem"), "utf8"));
  const caKey = await importKey(readFileSync(join(dir, "ca-key.pem"), "utf8"));
  const thisUpdate = o.thisUpdate ?? new Date(Date.now() - 60_000);
  const crl = await x509.X509CrlGenerator.create({
    issuer: caCert.subject,
    thisUpdate,
    nextUpdate: o.nextUpdate ?? new Date(thisUpdate.getTime() + 7 * DAY_MS),
    entries: (o.revoke ?? []).map((identity) => ({
      serialNumber: new x509.X509Certificate(readFileSync(devTlsPaths(dir, identity).certFile, "utf8"))
        .serialNumber,
      revocationDate: thisUpdate,
    })),
    extensions: [
      ...(o.number !== undefined ? [new x509.Extension("2.5.29.20", false, derInteger(o.number))] : []),
      ...(o.extensions ?? []),
    ],
    signingKey: caKey,
    signingAlgorithm: ALG,
  });
  // OpenSSL (and so Node's `crl`) reads CRLs under the label "X509 CRL" only.
  writeFileSync(file, `${crl.toString("pem").replace(/(BEGIN|END) CRL/g, "$1 X509 CRL")}\n`);
}

/** A non-negative integer as DER. */
function derInteger(n: number): Uint8Array {
  let hex = n.toString(16);
  if (hex.length % 2) hex = `0${hex}`;
  if (Number.parseInt(hex.slice(0, 2), 16) >= 0x80) hex = `00${hex}`;
  return Uint8Array.from([0x02, hex.length / 2, ...Buffer.from(hex, "hex")]);
}

/** Whether the certificate at `path` grants exactly these role URIs (older ones grant none). */
function sameRoles(path: string, roleUris: readonly string[]): boolean {
  const cert = new x509.X509Certificate(readFileSync(path, "utf8"));
  const san = cert.getExtension(x509.SubjectAlternativeNameExtension);
  const held = (san?.names.items ?? [])
    .filter((n) => n.type === "url" && n.value.startsWith("urn:mimi:role:"))
    .map((n) => n.value)
    .sort();
  return held.join(" ") === [...roleUris].sort().join(" ");
}

/** Whether the certificate at `path` names every one of these IP addresses. */
function holdsIps(path: string, ips: readonly string[]): boolean {
  if (ips.length === 0) return true;
  const cert = new x509.X509Certificate(readFileSync(path, "utf8"));
  const san = cert.getExtension(x509.SubjectAlternativeNameExtension);
  const held = new Set((san?.names.items ?? []).filter((n) => n.type === "ip").map((n) => n.value));
  return ips.every((ip) => held.has(ip));
}

function randomSerial(): string {
  const b = webcrypto.getRandomValues(new Uint8Array(16));
  b[0] = (b[0] ?? 0) & 0x7f;
  return Buffer.from(b).toString("hex");
}

async function exportKey(key: CryptoKey): Promise<string> {
  const der = Buffer.from(await webcrypto.subtle.exportKey("pkcs8", key));
  const b64 = der.toString("base64").replace(/(.{64})/g, "$1\n");
  return `-----BEGIN PRIVATE KEY-----\n${b64.trimEnd()}\n-----END PRIVATE KEY-----\n`;
}

async function importKey(pem: string): Promise<CryptoKey> {
  const b64 = pem.replace(/-----[^-]+-----/g, "").replace(/\s+/g, "");
  return webcrypto.subtle.importKey("pkcs8", Buffer.from(b64, "base64"), ALG, true, ["sign"]);
}

/**
 * Makes sure `dir` holds an Ed25519 signing key for each name (the root, DPs, MSPs, demo
 * users); existing keys are kept. Returns the keys by name.
 */
export function ensureDevSigningKeys(dir: string, names: readonly string[]): Map<string, SigningKey> {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const out = new Map<string, SigningKey>();
  for (const name of names) {
    const p = devSigningKeyPaths(dir, name);
    if (!existsSync(p.keyFile)) {
      const key = generateSigningKey();
      writeFileSync(p.keyFile, signingKeyPem(key), { mode: 0o600 });
      writeFileSync(p.publicKeyFile, publicKeyPem(key.publicKey));
    }
    out.set(name, loadSigningKey(p.keyFile));
  }
  return out;
}
