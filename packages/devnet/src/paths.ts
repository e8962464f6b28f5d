// Where the local network keeps its PKI, and the ports `npm start` binds: the conventions the
// CLI's defaults (`--pki data/pki`, `--resolver 127.0.0.1:7600`) and the launcher share. No
// certificate code here, so the CLI can load it without the X.509 generator.
import { join } from "node:path";

/** The fixed loopback ports of `npm start`'s network. */
export const LOCAL_PORTS = { root: 7400, eu: 7501, us: 7502, resolver: 7600 } as const;

/** Every certificate identity the local network uses. */
export const IDENTITIES = [
  "root",
  "dp-eu",
  "dp-us",
  "resolver",
  "admin",
  "cli",
  "msp-bluebird",
  "msp-wirechat",
  "msp-parrot",
] as const;

/** Names of the Ed25519 signing keys the local network uses (the root, DPs, MSPs). */
export const SIGNING_KEYS = ["root", "dp-eu", "dp-us", "msp-bluebird", "msp-wirechat", "msp-parrot"] as const;

/** Paths of the CA and of an identity's certificate and key in a PKI folder. */
export function devTlsPaths(
  dir: string,
  identity: string,
): { caFile: string; certFile: string; keyFile: string } {
  return {
    caFile: join(dir, "ca.pem"),
    certFile: join(dir, `${identity}.pem`),
    keyFile: join(dir, `${identity}-key.pem`),
  };
}

/** Paths of a development Ed25519 signing key (private PEM) and its public key (SPKI PEM). */
export function devSigningKeyPaths(dir: string, name: string): { keyFile: string; publicKeyFile: string } {
  return { keyFile: join(dir, `${name}-signing.pem`), publicKeyFile: join(dir, `${name}-signing.pub`) };
}
