// Where the local network keeps its PKI, and the ports `npm start` binds: the conventions the
// CLI's defaults (`--pki data/pki`, `--resolver 127.0.0.1:7600`) and the launcher share. No
// certificate code here, so the CLI can load it without the X.509 generator.
import { join } from "node:path";

/** The fixed loopback ports of `npm start`'s network. */
export const LOCAL_PORTS = { root: 7400, eu: 7501, us: 7502, fed: 7503, resolver: 7600 } as const;

/** Every certificate identity the local network uses. */
export const IDENTITIES = [
  "root",
  "dp-eu",
  "dp-us",
  "dp-fed",
  "resolver",
  "admin",
  "cli",
  "msp-bluebird",
  "msp-wirechat",
  "msp-parrot",
] as const;

/** The certificate roles of the local network (as core's ROLES; kept here so the CLI loads no core code for them). */
export type DevRole = "root" | "dp" | "resolver" | "msp" | "admin";
const DEV_ROLES: readonly DevRole[] = ["root", "dp", "resolver", "msp", "admin"];

/**
 * The name and roles of a development certificate, from "name" or "name=role[+role...]". Without
 * roles, the local network's naming gives them: root*, dp-*, resolver*, admin*; msp-* and "cli"
 * are MSPs; any other name gets none (it can call only what every member may call).
 */
export function parseDevIdentity(spec: string): { name: string; roles: DevRole[] } {
  const [name = "", roleText] = spec.split("=", 2);
  if (roleText !== undefined) {
    const roles = roleText.split("+").filter((r) => r !== "");
    for (const r of roles) {
      if (!(DEV_ROLES as readonly string[]).includes(r)) {
        throw new Error(`unknown role "${r}" in "${spec}": roles are ${DEV_ROLES.join(", ")}`);
      }
    }
    return { name, roles: roles as DevRole[] };
  }
  const roles: DevRole[] = [];
  if (name.startsWith("root")) roles.push("root");
  else if (name.startsWith("dp-")) roles.push("dp");
  else if (name.startsWith("resolver")) roles.push("resolver");
  else if (name.startsWith("admin")) roles.push("admin");
  else if (name.startsWith("msp-") || name === "cli") roles.push("msp");
  return { name, roles };
}

/** Names of the Ed25519 signing keys the local network uses (the root, DPs, MSPs). */
export const SIGNING_KEYS = [
  "root",
  "dp-eu",
  "dp-us",
  "dp-fed",
  "msp-bluebird",
  "msp-wirechat",
  "msp-parrot",
] as const;

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
