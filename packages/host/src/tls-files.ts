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
import { X509Certificate } from "node:crypto";
import type { experimental } from "@grpc/grpc-js";
import { ConfigError } from "@mimi/core";
import { loadCrl, loadTls, type TlsMaterial, type TlsPaths } from "@mimi/rpc";
import { peerTrusted } from "./crl.js";
import {
  type CertificateSummary,
  type CheckedTls,
  caSubjects,
  checkTls,
  identityOf,
  PEM_CERT,
} from "./tls-check.js";

export { type CertificateSummary, checkTlsMaterial } from "./tls-check.js";

type CaListener = experimental.CaCertificateUpdateListener;
type IdentityListener = experimental.IdentityCertificateUpdateListener;

/** `m` with the CRL file's bytes `crl`, or without any. */
function withCrl(m: TlsMaterial, crl: Buffer | undefined): TlsMaterial {
  const { crl: _, ...rest } = m;
  return crl ? { ...rest, crl } : rest;
}

/** Whether two materials are the same buffers. */
function sameMaterial(a: TlsMaterial, b: TlsMaterial): boolean {
  return a.ca === b.ca && a.cert === b.cert && a.key === b.key && a.crl === b.crl;
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
    const was = this.#material;
    // The certificate files and the CRL file are read apart, as they are checked apart below:
    // one that cannot be read does not hold back the other.
    const attempt = <T>(f: () => T): T | Error => {
      try {
        return f();
      } catch (err) {
        return err instanceof Error ? err : new Error(String(err));
      }
    };
    const files = attempt(() => loadTls({ ...paths, crlFile: undefined }));
    const crlFile = paths.crlFile;
    const lists = crlFile === undefined ? undefined : attempt(() => loadCrl(crlFile));
    if (files instanceof Error && !(lists instanceof Buffer)) throw files;
    const unreadable =
      files instanceof Error ? files.message : lists instanceof Error ? lists.message : undefined;
    // No CRL file named: no lists (an operator drops them so, say after one expired). One that
    // cannot be read: the lists in use, if any, stay.
    const read = withCrl(files instanceof Error ? was : files, lists instanceof Error ? was.crl : lists);
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
    if (sameMaterial(next, was) && (paths === this.#paths || unreadable !== undefined)) {
      if (unreadable !== undefined) throw new ConfigError(unreadable);
      return { changed: false, ...pending };
    }
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
      // New lists, or the same lists used otherwise (a CA brought in or taken out by a reload).
      ...((!sameCrl || JSON.stringify(before.crl) !== JSON.stringify(after.crl)) && {
        crl: after.crl ?? null,
      }),
      ...((refused ?? unreadable) !== undefined && {
        refused: [unreadable, refused].filter((r) => r !== undefined).join("; "),
      }),
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
   * A warning while a CRL in use is near its next update (its last quarter, at least its last
   * hour and at most its last half):
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
