// Mutual TLS for every connection (R23): loading key material, server and
// channel credentials, and checking that a server presents the expected identity.
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { checkServerIdentity, type PeerCertificate } from "node:tls";
import * as grpc from "@grpc/grpc-js";
import { DiscoveryError } from "../domain/errors.js";
import type { ConfigReader } from "../runtime/config.js";

/** Paths of the PEM files a component uses. */
export interface TlsPaths {
  /** CA bundle that peers' certificates must chain to. */
  caFile: string;
  certFile: string;
  keyFile: string;
}

/** Loaded PEM material. */
export interface TlsMaterial {
  ca: Buffer;
  cert: Buffer;
  key: Buffer;
}

/** Reads the PEM files; a missing or unreadable file is reported with its path. */
export function loadTls(paths: TlsPaths): TlsMaterial {
  const read = (what: string, path: string) => {
    try {
      return readFileSync(path);
    } catch (err) {
      throw new DiscoveryError(
        "failed_precondition",
        `cannot read TLS ${what} ${path}: ${(err as Error).message}`,
      );
    }
  };
  return {
    ca: read("CA file", paths.caFile),
    cert: read("certificate", paths.certFile),
    key: read("key", paths.keyFile),
  };
}

/** Server credentials that require and verify a client certificate. */
export function serverCredentials(tls: TlsMaterial): grpc.ServerCredentials {
  return grpc.ServerCredentials.createSsl(tls.ca, [{ private_key: tls.key, cert_chain: tls.cert }], true);
}

/**
 * Client credentials presenting our certificate. When `expectedIdentity` is given, the server's
 * certificate must also carry it as subject common name, so a DP endpoint cannot be answered by
 * another DP holding a certificate from the same CA.
 */
export function channelCredentials(tls: TlsMaterial, expectedIdentity?: string): grpc.ChannelCredentials {
  return grpc.credentials.createSsl(tls.ca, tls.key, tls.cert, {
    checkServerIdentity: (host: string, cert: PeerCertificate) => {
      const hostErr = checkServerIdentity(host, cert);
      if (hostErr) return hostErr;
      if (expectedIdentity === undefined) return undefined;
      const cn = cert.subject?.CN;
      const name = Array.isArray(cn) ? cn[0] : cn;
      if (name === expectedIdentity) return undefined;
      return new Error(`server presented identity "${name ?? "(none)"}", expected "${expectedIdentity}"`);
    },
  });
}

/** Reads a `tls` section ({caFile, certFile, keyFile}); relative paths are resolved against `baseDir`. */
export function readTlsSection(r: ConfigReader, baseDir: string): TlsPaths {
  const t = r.object("tls");
  const paths = {
    caFile: resolve(baseDir, t.string("caFile")),
    certFile: resolve(baseDir, t.string("certFile")),
    keyFile: resolve(baseDir, t.string("keyFile")),
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
