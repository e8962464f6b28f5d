// TLS material that can change while a server runs: certificates are rotated by replacing the
// PEM files (a renewal job, cert-manager, a Kubernetes secret). TlsFiles is a grpc-js certificate
// provider for the server's credentials and for its outgoing channels alike, so a rotation
// reaches both. Unlike grpc-js's own file watcher, it checks new material before using it: a
// half-written pair, a key that does not match, an expired certificate, one that does not chain
// to the CA bundle or that names another identity (subject or roles) is refused and the old
// material kept, so a bad rotation never leaves a server unable to handshake. The CA file (whom
// the server trusts) changes only on an explicit reload (SIGHUP), logged with what it adds and
// removes, never by the file watch: write access to a certificate folder must not be enough to
// bring in a new trust anchor unnoticed. A CRL file (crl.ts) is checked the same way, and follows
// the watch: a newer list can only take trust away, and an older one is refused. When whom the
// server trusts changes, its listeners hear it (onTrustChange), so that open connections of
// peers no longer trusted can be ended.
import { createHash, X509Certificate } from "node:crypto";
import { createSecureContext } from "node:tls";
import type { experimental } from "@grpc/grpc-js";
import { ConfigError } from "@mimi/core";
import { loadTls, ROLE_URI_PREFIX, subjectAltNames, type TlsMaterial, type TlsPaths } from "@mimi/rpc";
import { type CrlSet, peerTrusted, readCrls } from "./crl.js";

type CaListener = experimental.CaCertificateUpdateListener;
type IdentityListener = experimental.IdentityCertificateUpdateListener;

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

const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

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
function checkTls(m: TlsMaterial, paths: TlsPaths, nowMs: number, sameIdentity?: string): CheckedTls {
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

/** `m` with the CRL file's bytes `crl`, or without any. */
function withCrl(m: TlsMaterial, crl: Buffer | undefined): TlsMaterial {
  const { crl: _, ...rest } = m;
  return crl ? { ...rest, crl } : rest;
}

/** Whether two materials are the same buffers. */
function sameMaterial(a: TlsMaterial, b: TlsMaterial): boolean {
  return a.ca === b.ca && a.cert === b.cert && a.key === b.key && a.crl === b.crl;
}

/** A certificate's identity as a rotation must keep it: its subject and its role URIs. */
function identityOf(c: X509Certificate): string {
  const roles = (subjectAltNames(c.subjectAltName ?? "") ?? [])
    .filter((n) => n.type === "URI" && n.value.startsWith(ROLE_URI_PREFIX))
    .map((n) => `URI:${n.value}`)
    .sort();
  return `${c.subject.replace(/\n/g, ", ")} [${roles.join(" ")}]`;
}

/** The subjects of the CAs in a PEM bundle (unparseable blocks are skipped). */
function caSubjects(pem: Buffer): string[] {
  return (pem.toString("utf8").match(PEM_CERT) ?? []).flatMap((b) => {
    try {
      const c = new X509Certificate(b);
      return [`${c.subject.replace(/\n/g, ", ")} (${c.fingerprint256.slice(0, 23)})`];
    } catch {
      return [];
    }
  });
}

/** The subject of the development CA (devnet's pki.ts makes it). */
export const DEVELOPMENT_CA_SUBJECT = "CN=MIMI Development CA";

/** Whether a PEM bundle holds the development CA. */
export function holdsDevelopmentCa(pem: Buffer): boolean {
  const blocks = pem.toString("utf8").match(PEM_CERT) ?? [];
  return blocks.some((b) => {
    try {
      return new X509Certificate(b).subject === DEVELOPMENT_CA_SUBJECT;
    } catch {
      return false;
    }
  });
}

/** The outcome of one reload: unchanged, or rotated to new material. */
export type TlsReload = {
  /** The CA file changed but was not applied (the file watch): it needs a reload. */
  readonly caPending?: boolean;
} & (
  | { readonly changed: false }
  | {
      readonly changed: true;
      readonly before: CertificateSummary;
      readonly after: CertificateSummary;
      /** CAs the reload added to and removed from what the server trusts, when it changed them. */
      readonly ca?: { readonly added: readonly string[]; readonly removed: readonly string[] };
      /** The CRLs now in use, when they changed (null: the server no longer has any). */
      readonly crl?: CertificateSummary["crl"] | null;
      /** Whether the certificate or its key changed. */
      readonly rotated: boolean;
      /**
       * Why part of the new material was refused while the rest was applied (new lists with
       * the certificate in use, or a new certificate with the lists in use).
       */
      readonly refused?: string;
    }
);

/**
 * A server's TLS files, loaded and checked at start, reloaded on request (SIGHUP) or when they
 * change on disk (`watch`). Listeners hear the new material only after it passed
 * checkTlsMaterial; established connections keep the material they were made with.
 */
export class TlsFiles implements experimental.CertificateProvider {
  #paths: TlsPaths;
  #material: TlsMaterial;
  #checked: CheckedTls;
  readonly #now: () => number;
  readonly #caListeners = new Set<CaListener>();
  readonly #identityListeners = new Set<IdentityListener>();
  readonly #trustListeners = new Set<() => void>();

  readonly #allowDevelopmentCa: boolean;

  constructor(paths: TlsPaths, o: { now?: () => number; allowDevelopmentCa?: boolean } = {}) {
    this.#now = o.now ?? Date.now;
    this.#allowDevelopmentCa = o.allowDevelopmentCa ?? true;
    this.#paths = paths;
    this.#material = loadTls(paths);
    this.#checked = checkTls(this.#material, paths, this.#now());
  }

  /** The CRLs in use, as the server's TLS context takes them (rpc serverCredentials). */
  get crl(): readonly Buffer[] | undefined {
    return this.#checked.crls?.pem;
  }

  /**
   * Whether a peer that presented `chain` (leaf first) is trusted by the CAs and CRLs in use:
   * a connection made before a CA was removed or a certificate revoked is not.
   */
  trustsPeer(chain: readonly X509Certificate[]): boolean {
    return peerTrusted(chain, this.#checked.cas, this.#checked.crls);
  }

  /** Calls `listener` each time the CAs or the CRLs in use change; returns the function that stops. */
  onTrustChange(listener: () => void): () => void {
    this.#trustListeners.add(listener);
    return () => this.#trustListeners.delete(listener);
  }

  /**
   * Why the server cannot accept peers now, or undefined: a CRL in use that is past its next
   * update makes OpenSSL refuse every peer of its CA until a current one is in place.
   */
  problem(): string | undefined {
    const due = this.#checked.crls?.nextUpdateMs;
    if (due === undefined || due > this.#now()) return undefined;
    return (
      `a CRL in ${this.#paths.crlFile ?? "the CRL file"} expired at ${new Date(due).toISOString()}; ` +
      "handshakes are refused until a current one is in place"
    );
  }

  /** The material in use. */
  get material(): TlsMaterial {
    return this.#material;
  }

  get paths(): TlsPaths {
    return this.#paths;
  }

  /** The certificate in use. */
  get summary(): CertificateSummary {
    return this.#checked.summary;
  }

  /**
   * Reads the files again (at `paths`, when the config moved them) and, when their bytes
   * changed and pass the checks, uses them from the next handshake on. With `ca` false (the
   * file watch) the CA file in use is kept, and a changed one is only reported (`caPending`).
   * Throws a ConfigError (keeping the material in use) when they do not load or pass.
   */
  reload(paths: TlsPaths = this.#paths, { ca = true }: { ca?: boolean } = {}): TlsReload {
    const read = loadTls(paths);
    const was = this.#material;
    const caPending = !ca && !read.ca.equals(was.ca);
    // Parts whose bytes did not change keep the buffers in use: outgoing channels keep their
    // TLS context while the buffers they were given stay the same (rpc channelCredentials).
    const kept = (b: Buffer, old: Buffer) => (b.equals(old) ? old : b);
    const next = withCrl(
      {
        ca: ca ? kept(read.ca, was.ca) : was.ca,
        cert: kept(read.cert, was.cert),
        key: kept(read.key, was.key),
      },
      read.crl && was.crl ? kept(read.crl, was.crl) : read.crl,
    );
    const pending = caPending ? { caPending } : {};
    if (sameMaterial(next, was) && paths === this.#paths) return { changed: false, ...pending };
    const identity = identityOf(new X509Certificate(was.cert));
    let material = next;
    let checked: CheckedTls;
    let refused: string | undefined;
    try {
      checked = this.#check(next, paths, identity);
    } catch (err) {
      // Lists and certificates come from different jobs: one that does not pass does not hold
      // back the other (a certificate file stuck bad would otherwise let the lists expire).
      const crlChanged = next.crl !== was.crl;
      const restChanged = next.ca !== was.ca || next.cert !== was.cert || next.key !== was.key;
      if (!(err instanceof ConfigError) || !crlChanged || !restChanged) throw err;
      let fallback: { material: TlsMaterial; checked: CheckedTls } | undefined;
      for (const m of [withCrl(was, next.crl), withCrl(next, was.crl)]) {
        try {
          fallback = { material: m, checked: this.#check(m, paths, identity) };
          break;
        } catch {
          // The other part, then.
        }
      }
      if (!fallback) throw err;
      ({ material, checked } = fallback);
      refused = err.message;
    }
    const sameCa = material.ca === was.ca;
    const sameCrl = material.crl === was.crl;
    const rotated = material.cert !== was.cert || material.key !== was.key;
    const before = this.#checked.summary;
    const after = checked.summary;
    const caChange = sameCa
      ? undefined
      : (() => {
          const [was, now] = [caSubjects(this.#material.ca), caSubjects(material.ca)];
          return { added: now.filter((c) => !was.includes(c)), removed: was.filter((c) => !now.includes(c)) };
        })();
    this.#paths = paths;
    this.#material = material;
    this.#checked = checked;
    if (sameCa && sameCrl && !rotated) return { changed: false, ...pending };
    // The server's context takes the CRLs when the CA material is published (rpc serverCredentials).
    if (!sameCa || !sameCrl) for (const l of this.#caListeners) l({ caCertificate: material.ca });
    if (rotated) {
      for (const l of this.#identityListeners) l({ certificate: material.cert, privateKey: material.key });
    }
    if (!sameCa || !sameCrl) for (const l of this.#trustListeners) l();
    return {
      changed: true,
      rotated,
      before,
      after,
      ...(caChange && { ca: caChange }),
      ...(!sameCrl && { crl: after.crl ?? null }),
      ...(refused !== undefined && { refused }),
      ...pending,
    };
  }

  /** checkTlsMaterial for a reload: a development CA brought in, and lists older than those in use, refused too. */
  #check(m: TlsMaterial, paths: TlsPaths, identity: string): CheckedTls {
    if (m.ca !== this.#material.ca && holdsDevelopmentCa(m.ca) && !this.#allowDevelopmentCa) {
      throw new ConfigError(
        `${paths.caFile} now holds the development CA; allowDevelopmentCa is off, so it is refused`,
      );
    }
    const checked = checkTls(m, paths, this.#now(), identity);
    for (const [key, list] of checked.crls?.byIssuer ?? []) {
      const inUse = this.#checked.crls?.byIssuer.get(key);
      if (!inUse) continue;
      // By cRLNumber when both lists carry one, else by issue time.
      const numbered = list.number !== undefined && inUse.number !== undefined;
      const older = numbered
        ? (list.number as bigint) < (inUse.number as bigint)
        : list.thisUpdateMs < inUse.thisUpdateMs;
      if (older) {
        const [what, mine, theirs] = numbered
          ? ["numbered", String(list.number), String(inUse.number)]
          : ["issued", new Date(list.thisUpdateMs).toISOString(), new Date(inUse.thisUpdateMs).toISOString()];
        throw new ConfigError(
          `CRL file ${paths.crlFile ?? ""} holds a CRL from ${list.issuer} ${what} ${mine}, older than ` +
            `the one in use (${theirs}); an older list could take back a revocation`,
        );
      }
    }
    return checked;
  }

  /**
   * A warning while a CRL in use is near its next update (its last quarter, or its last hour):
   * past it OpenSSL refuses every peer of its CA.
   */
  crlWarning(): string | undefined {
    const now = this.#now();
    for (const l of this.#checked.crls?.byIssuer.values() ?? []) {
      if (l.nextUpdateMs === undefined || l.nextUpdateMs <= now) continue;
      const span = l.nextUpdateMs - l.thisUpdateMs;
      const margin = Math.min(span / 2, Math.max(3_600_000, span / 4));
      if (l.nextUpdateMs - now <= margin) {
        return (
          `the CRL from ${l.issuer} is due again at ${new Date(l.nextUpdateMs).toISOString()}; ` +
          "publish a newer one before then, or every peer of that CA is refused"
        );
      }
    }
    return undefined;
  }

  /**
   * Checks the files every `intervalMs` and reloads when their bytes changed; `onResult` hears
   * each rotation or refusal. Returns the function that stops watching.
   */
  watch(intervalMs: number, onResult: (r: TlsReload | Error) => void): () => void {
    let lastError = "";
    let pendingSaid = false;
    const timer = setInterval(() => {
      try {
        const r = this.reload(undefined, { ca: false });
        // A part refused while the rest was taken is said with it, not again at the next check.
        lastError = (r.changed && r.refused) || "";
        // A changed CA file is said once, until a reload applies it.
        const sayPending = r.caPending === true && !pendingSaid;
        pendingSaid = r.caPending === true;
        if (r.changed || sayPending) onResult(r);
      } catch (err) {
        // Said once per distinct problem, not at every check while the files stay bad.
        const message = (err as Error).message;
        if (message !== lastError) onResult(err as Error);
        lastError = message;
      }
    }, intervalMs);
    timer.unref();
    return () => clearInterval(timer);
  }

  // grpc-js's certificate provider interface. A new listener hears the material in use on the
  // next microtask, as grpc-js's own providers do: its server credentials add their watcher
  // only after registering with the provider.
  addCaCertificateListener(listener: CaListener): void {
    this.#caListeners.add(listener);
    queueMicrotask(() => {
      if (this.#caListeners.has(listener)) listener({ caCertificate: this.#material.ca });
    });
  }

  removeCaCertificateListener(listener: CaListener): void {
    this.#caListeners.delete(listener);
  }

  addIdentityCertificateListener(listener: IdentityListener): void {
    this.#identityListeners.add(listener);
    queueMicrotask(() => {
      if (this.#identityListeners.has(listener)) {
        listener({ certificate: this.#material.cert, privateKey: this.#material.key });
      }
    });
  }

  removeIdentityCertificateListener(listener: IdentityListener): void {
    this.#identityListeners.delete(listener);
  }
}
