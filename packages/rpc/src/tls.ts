// Mutual TLS for every connection (R23): loading key material, server and
// channel credentials, and checking that a server presents the expected identity.
import { closeSync, constants, fstatSync, openSync, readFileSync } from "node:fs";
import { resolve } from "node:path";
import { checkServerIdentity, type PeerCertificate, type SecureContextOptions } from "node:tls";
import * as grpc from "@grpc/grpc-js";
import type { ConfigReader } from "@mimi/core";
import { DiscoveryError } from "@mimi/core";
import { type Role, rolesOf } from "./roles.js";

/** Paths of the PEM files a component uses. */
export interface TlsPaths {
  /** CA bundle that peers' certificates must chain to. */
  caFile: string;
  certFile: string;
  keyFile: string;
  /**
   * Certificate revocation lists (PEM "X509 CRL" blocks), one from each CA of the CA file: a
   * client certificate they list is refused at the handshake. Optional.
   */
  crlFile?: string;
  /** How often a server checks the files for a rotation (0: only on SIGHUP); default 60. */
  watchSeconds?: number;
}

/** Loaded PEM material. */
export interface TlsMaterial {
  ca: Buffer;
  cert: Buffer;
  key: Buffer;
  /** The CRL file's bytes, when the paths name one. */
  crl?: Buffer;
}

/** The largest PEM file read: a CA bundle of a few hundred certificates. */
const MAX_PEM_BYTES = 1024 * 1024;
/**
 * The largest CRL file read: some hundred thousand entries. A changed file is parsed and
 * checked on the event loop (a few hundred milliseconds at this size), once per change.
 */
const MAX_CRL_BYTES = 8 * 1024 * 1024;

/**
 * Reads one PEM file: a regular file of at most MAX_PEM_BYTES, opened without blocking, so a
 * FIFO, a device or a huge file put in its place (a rotation gone wrong, or on purpose) is
 * refused rather than freezing or exhausting the server that reads it.
 */
function readPem(what: string, path: string, maxBytes = MAX_PEM_BYTES): Buffer {
  let fd: number | undefined;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
    const st = fstatSync(fd);
    if (!st.isFile()) throw new Error("not a regular file");
    if (st.size > maxBytes) throw new Error(`larger than ${maxBytes} bytes`);
    return readFileSync(fd);
  } catch (err) {
    throw new DiscoveryError(
      "failed_precondition",
      `cannot read TLS ${what} ${path}: ${(err as Error).message}`,
    );
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/** Reads the PEM files; a missing or unreadable file is reported with its path. */
export function loadTls(paths: TlsPaths): TlsMaterial {
  return {
    ca: readPem("CA file", paths.caFile),
    cert: readPem("certificate", paths.certFile),
    key: readPem("key", paths.keyFile),
    ...(paths.crlFile !== undefined && { crl: loadCrl(paths.crlFile) }),
  };
}

/** Reads a CRL file (at most MAX_CRL_BYTES); a missing or unreadable file is reported with its path. */
export function loadCrl(path: string): Buffer {
  return readPem("CRL file", path, MAX_CRL_BYTES);
}

/**
 * TLS material that may change while a process runs (TlsFiles in tls-files.ts): a grpc-js
 * certificate provider, so new connections use the newest material. A change is published as
 * new buffers, never by writing into ones published before: outgoing connections keep the TLS
 * context they built while the buffers are the same (channelCredentials).
 */
export interface LiveTls extends grpc.experimental.CertificateProvider {
  /** The material in use now. */
  readonly material: TlsMaterial;
  /**
   * The revocation lists a server's TLS context takes (Node's `crl`: one "X509 CRL" buffer per
   * list), when there are any; read at each context the provider publishes.
   */
  readonly crl?: readonly Buffer[] | undefined;
}

/** Fixed material, or material that may rotate. */
export type TlsSource = TlsMaterial | LiveTls;

const isLive = (t: TlsSource): t is LiveTls => "addCaCertificateListener" in t;

/**
 * Server credentials that require and verify a client certificate; a connection that has not
 * finished its handshake after `handshakeTimeoutMs` is closed. Live material (TlsFiles) is used
 * through grpc-js's certificate-provider credentials, so a rotation applies to new handshakes.
 */
export function serverCredentials(
  tls: TlsSource,
  { handshakeTimeoutMs }: { handshakeTimeoutMs?: number } = {},
): grpc.ServerCredentials {
  const creds = isLive(tls)
    ? grpc.experimental.createCertificateProviderServerCredentials(tls, tls, true)
    : grpc.ServerCredentials.createSsl(tls.ca, [{ private_key: tls.key, cert_chain: tls.cert }], true);
  // grpc-js passes these options to Node's TLS server (1.14: _getConstructorOptions); the
  // handshake timeout and the minimum version are among those createSsl does not take.
  const options = (
    creds as unknown as { _getConstructorOptions(): Record<string, unknown> | null }
  )._getConstructorOptions();
  if (!options) throw new Error("cannot set the TLS server options (grpc-js changed?)");
  // TLS 1.3 only: no renegotiation, so a connection's client certificate is fixed and its
  // identity can be read once per connection (grpc.ts).
  options.minVersion = "TLSv1.3";
  if (isLive(tls)) {
    // Each context a provider publishes reaches Node's setSecureContext, which resets what it
    // is not given (the minimum version, the CRLs): give them every time. A change of the CRLs
    // alone is published as the CA material again (TlsFiles), so it comes through here too.
    const c = creds as unknown as { updateSecureContextOptions(o: SecureContextOptions | null): void };
    const update = c.updateSecureContextOptions.bind(c);
    c.updateSecureContextOptions = (o) => {
      const crl = tls.crl;
      update(o && { ...o, minVersion: "TLSv1.3", ...(crl && { crl: [...crl] }) });
    };
  } else if (tls.crl) {
    // Lists are checked before use (host crl.ts), which fixed material never is.
    throw new Error("a CRL file needs live TLS material (host's TlsFiles), which checks it");
  }
  if (handshakeTimeoutMs !== undefined) options.handshakeTimeout = handshakeTimeoutMs;
  return creds;
}

/** What a server must present, besides a certificate chaining to our CA and naming the host. */
export interface ServerExpectation {
  /** The subject common name, so a DP endpoint cannot be answered by another DP. */
  readonly identity?: string;
  /** A role the certificate must grant, so that only a root can serve a registry. */
  readonly role?: Role;
}

/**
 * Client credentials presenting our certificate (live material: the newest for each new
 * connection). The server's certificate must also carry what
 * `expect` names: a string is the expected identity (subject common name); an object may also
 * name the role.
 */
export function channelCredentials(
  tls: TlsSource,
  expect?: string | ServerExpectation,
): grpc.ChannelCredentials {
  const want: ServerExpectation = typeof expect === "string" ? { identity: expect } : (expect ?? {});
  const verify = {
    checkServerIdentity: (host: string, cert: PeerCertificate) => {
      const hostErr = checkServerIdentity(host, cert);
      if (hostErr) return hostErr;
      const cn = cert.subject?.CN;
      const name = Array.isArray(cn) ? cn[0] : cn;
      if (want.identity !== undefined && name !== want.identity) {
        return new Error(`server presented identity "${name ?? "(none)"}", expected "${want.identity}"`);
      }
      if (want.role !== undefined && !rolesOf(cert).has(want.role)) {
        return new Error(
          `server "${name ?? "(none)"}" presented a certificate without role ${want.role}; ` +
            `only a ${want.role} may serve here`,
        );
      }
      return undefined;
    },
  };
  return isLive(tls)
    ? oneContextPerMaterial(
        grpc.experimental.createCertificateProviderChannelCredentials(tls, tls, verify),
        tls,
      )
    : grpc.credentials.createSsl(tls.ca, tls.key, tls.cert, verify);
}

/** The TLS context last built from each provider's material (oneContextPerMaterial). */
const contexts = new WeakMap<LiveTls, { readonly material: readonly unknown[]; readonly context: unknown }>();

/**
 * grpc-js (1.14) builds a new SecureContext from a certificate provider's latest material for
 * every connection it makes (getLatestSecureContext): 0.8 ms of CPU parsing the CA bundle, the
 * certificate and the key, twice for every connection to a DP and every retry of one that does
 * not answer. This keeps the context built from a provider's material for as long as the
 * material is the same buffers (TlsFiles publishes the buffers it holds, again to each new
 * listener, and new ones at a rotation, so the next connection after one builds a new context),
 * shared by every channel made with that provider (a resolver's channels to each DP endpoint):
 * the context holds our certificate and whom we trust, and the server's identity is checked
 * on each connection all the same. Where grpc-js names these fields otherwise, nothing is
 * changed and each connection builds its own context, as before (devnet tls-context.test.ts
 * notices).
 */
function oneContextPerMaterial(creds: grpc.ChannelCredentials, provider: LiveTls): grpc.ChannelCredentials {
  const c = creds as unknown as {
    getLatestSecureContext?: () => unknown;
    latestCaUpdate?: { caCertificate?: unknown };
    latestIdentityUpdate?: { certificate?: unknown; privateKey?: unknown };
  };
  const build = c.getLatestSecureContext;
  if (typeof build !== "function" || !("latestCaUpdate" in c) || !("latestIdentityUpdate" in c)) return creds;
  c.getLatestSecureContext = () => {
    const material = [
      c.latestCaUpdate?.caCertificate,
      c.latestIdentityUpdate?.certificate,
      c.latestIdentityUpdate?.privateKey,
    ];
    const kept = contexts.get(provider);
    if (kept?.material.every((m, i) => m === material[i])) return kept.context;
    const context = build.call(c);
    // null while this credentials' provider has published nothing to it yet, or when the
    // material did not load: then nothing is kept, and what another channel keeps stays.
    if (context) contexts.set(provider, { material, context });
    return context;
  };
  return creds;
}

/** Reads a `tls` section ({caFile, certFile, keyFile}); relative paths are resolved against `baseDir`. */
export function readTlsSection(r: ConfigReader, baseDir: string): TlsPaths {
  const t = r.object("tls");
  const crlFile = t.optionalString("crlFile");
  const paths = {
    caFile: resolve(baseDir, t.string("caFile")),
    certFile: resolve(baseDir, t.string("certFile")),
    keyFile: resolve(baseDir, t.string("keyFile")),
    ...(crlFile !== undefined && { crlFile: resolve(baseDir, crlFile) }),
    watchSeconds: t.integer("watchSeconds", 60, 0, 86_400),
  };
  t.done();
  return paths;
}

/** The part of Node's `process` that emits warnings. */
export interface WarningEmitter {
  emitWarning: (warning: string | Error, ...rest: never[]) => void;
}

/**
 * Drops Node's DEP0123 warning from `proc` (the process). grpc-js passes the target host as the
 * TLS servername even when it is an IP literal (loopback endpoints), which only affects SNI; our
 * certificates carry the IP as a SAN and the identity check is ours. Every other warning still
 * prints.
 */
export function silenceIpServernameWarning(proc: WarningEmitter): void {
  const emit = proc.emitWarning.bind(proc) as (...a: unknown[]) => void;
  proc.emitWarning = ((warning: string | Error, ...rest: unknown[]) => {
    const opt = rest[0];
    const code = typeof opt === "object" && opt !== null ? (opt as { code?: string }).code : rest[1];
    if (code === "DEP0123") return;
    emit(warning, ...rest);
  }) as WarningEmitter["emitWarning"];
}
