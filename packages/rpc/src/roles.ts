// What a certificate may do in the network. Identity (the subject CN) says who a party is; the
// role says which part it plays, so that a certificate from the network's CA is not valid for
// every service: an MSP's certificate cannot serve a registry, watch a DP's changes or call
// PeerService. Roles travel in the certificate as URI subject alternative names
// ("urn:mimi:role:dp"), the way SPIFFE carries workload identities.
import type { PeerCertificate } from "node:tls";

/** The parts a certificate may play; one certificate may hold several. */
export const ROLES = ["root", "dp", "resolver", "msp", "admin"] as const;
export type Role = (typeof ROLES)[number];

/** The URI SAN prefix naming a role. */
export const ROLE_URI_PREFIX = "urn:mimi:role:";

/** The URI SAN that grants `role`. */
export function roleUri(role: Role): string {
  return `${ROLE_URI_PREFIX}${role}`;
}

/**
 * The roles a peer certificate grants. Node gives the SANs as one string
 * ("DNS:localhost, URI:urn:mimi:role:dp"); unknown roles are ignored.
 */
export function rolesOf(cert: Pick<PeerCertificate, "subjectaltname"> | undefined): ReadonlySet<Role> {
  const roles = new Set<Role>();
  const sans = cert?.subjectaltname;
  if (!sans) return roles;
  for (const part of sans.split(",")) {
    const san = part.trim();
    if (!san.startsWith(`URI:${ROLE_URI_PREFIX}`)) continue;
    const role = san.slice(4 + ROLE_URI_PREFIX.length);
    if ((ROLES as readonly string[]).includes(role)) roles.add(role as Role);
  }
  return roles;
}

/** "root", "dp or resolver": how a list of roles reads in an error. */
export function describeRoles(roles: Iterable<Role>): string {
  const list = [...roles];
  if (list.length === 0) return "(none)";
  return list.length === 1 ? (list[0] as string) : `${list.slice(0, -1).join(", ")} or ${list.at(-1)}`;
}
