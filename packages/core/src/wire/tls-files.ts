// TLS material that can change while a server runs: certificates are rotated by replacing the
// PEM files (a renewal job, cert-manager, a Kubernetes secret). TlsFiles is a grpc-js certificate
// provider for the server's credentials and for its outgoing channels alike, so a rotation
// reaches both. Unlike grpc-js's own file watcher, it checks new material before using it: a
// half-written pair, a key that does not match, an expired certificate, one that does not chain
// to the CA bundle or that names another identity is refused and the old material kept, so a
// bad rotation never leaves a server unable to handshake.
import { createHash, X509Certificate } from "node:crypto";
import { createSecureContext } from "node:tls";
import type { experimental } from "@grpc/grpc-js";
import { ConfigError } from "../runtime/config.js";
import { loadTls, type TlsMaterial, type TlsPaths } from "./tls.js";

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
}

const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/**
 * Checks that `m` can serve: the pair loads and matches, the leaf is current at `nowMs`, the
 * chain in the certificate file ends at a CA of the bundle, and (when given) the leaf keeps the
 * subject `sameSubject`. Throws a ConfigError naming the files.
 */
export function checkTlsMaterial(
  m: TlsMaterial,
  paths: TlsPaths,
  nowMs: number,
  sameSubject?: string,
): CertificateSummary {
  const files = `${paths.certFile}, ${paths.keyFile}, ${paths.caFile}`;
  const fail = (why: string): never => {
    throw new ConfigError(`TLS material (${files}) ${why}`);
  };
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
  if (Date.parse(leaf.validTo) <= nowMs) fail(`has a certificate that expired on ${leaf.validTo}`);
  if (Date.parse(leaf.validFrom) > nowMs) fail(`has a certificate not valid before ${leaf.validFrom}`);
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
  if (sameSubject !== undefined && leaf.subject !== sameSubject) {
    fail(
      `names ${leaf.subject.replace(/\n/g, ", ")} instead of ${sameSubject.replace(/\n/g, ", ")}; ` +
        "a rotation keeps the identity (restart the server to change it)",
    );
  }
  return {
    subject: leaf.subject.replace(/\n/g, ", "),
    serial: leaf.serialNumber,
    notAfter: new Date(leaf.validTo).toISOString(),
    fingerprint: leaf.fingerprint256,
    caBundle: createHash("sha256").update(m.ca).digest("hex").slice(0, 16),
  };
}

/** The outcome of one reload: unchanged, or rotated to new material. */
export type TlsReload =
  | { readonly changed: false }
  | { readonly changed: true; readonly before: CertificateSummary; readonly after: CertificateSummary };

/**
 * A server's TLS files, loaded and checked at start, reloaded on request (SIGHUP) or when they
 * change on disk (`watch`). Listeners hear the new material only after it passed
 * checkTlsMaterial; established connections keep the material they were made with.
 */
export class TlsFiles implements experimental.CertificateProvider {
  #paths: TlsPaths;
  #material: TlsMaterial;
  #summary: CertificateSummary;
  readonly #now: () => number;
  readonly #caListeners = new Set<CaListener>();
  readonly #identityListeners = new Set<IdentityListener>();

  constructor(paths: TlsPaths, now: () => number = Date.now) {
    this.#now = now;
    this.#paths = paths;
    this.#material = loadTls(paths);
    this.#summary = checkTlsMaterial(this.#material, paths, now());
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
    return this.#summary;
  }

  /**
   * Reads the files again (at `paths`, when the config moved them) and, when their bytes
   * changed and pass the checks, uses them from the next handshake on. Throws a ConfigError
   * (keeping the material in use) when they do not load or pass.
   */
  reload(paths: TlsPaths = this.#paths): TlsReload {
    const next = loadTls(paths);
    const same =
      next.cert.equals(this.#material.cert) &&
      next.key.equals(this.#material.key) &&
      next.ca.equals(this.#material.ca);
    if (same && paths === this.#paths) return { changed: false };
    const before = this.#summary;
    const after = checkTlsMaterial(next, paths, this.#now(), this.#subject());
    this.#paths = paths;
    this.#material = next;
    this.#summary = after;
    if (same) return { changed: false };
    for (const l of this.#caListeners) l({ caCertificate: next.ca });
    for (const l of this.#identityListeners) l({ certificate: next.cert, privateKey: next.key });
    return { changed: true, before, after };
  }

  /** The leaf's subject as X509Certificate prints it (the identity a rotation keeps). */
  #subject(): string {
    return new X509Certificate(this.#material.cert).subject;
  }

  /**
   * Checks the files every `intervalMs` and reloads when their bytes changed; `onResult` hears
   * each rotation or refusal. Returns the function that stops watching.
   */
  watch(intervalMs: number, onResult: (r: TlsReload | Error) => void): () => void {
    let lastError = "";
    const timer = setInterval(() => {
      try {
        const r = this.reload();
        lastError = "";
        if (r.changed) onResult(r);
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
