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
 * The entries of Node's one-string form of a certificate's subject alternative names
 * ("DNS:localhost, URI:urn:mimi:role:dp"). Node writes a value holding a comma, a quote or other
 * special characters as a JSON string (`URI:"urn:x,URI:urn:mimi:role:root"`): such a value is
 * read whole, so text a CA copied into one name cannot pass for another name. Undefined when
 * the string is not of that form.
 */
export function subjectAltNames(text: string): { type: string; value: string }[] | undefined {
  const out: { type: string; value: string }[] = [];
  let i = 0;
  while (i < text.length) {
    const colon = text.indexOf(":", i);
    if (colon < 0) return undefined;
    const type = text.slice(i, colon);
    let value: string;
    let end: number;
    if (text[colon + 1] === '"') {
      // A JSON string: up to the first quote not escaped.
      end = colon + 2;
      while (end < text.length && text[end] !== '"') end += text[end] === "\\" ? 2 : 1;
      if (end >= text.length) return undefined;
      try {
        value = JSON.parse(text.slice(colon + 1, end + 1)) as string;
      } catch {
        return undefined;
      }
      end += 1;
    } else {
      const next = text.indexOf(", ", colon + 1);
      end = next < 0 ? text.length : next;
      value = text.slice(colon + 1, end);
    }
    out.push({ type, value });
    if (end === text.length) break;
    if (text.slice(end, end + 2) !== ", ") return undefined;
    i = end + 2;
  }
  return out;
}

/**
 * The roles a peer certificate grants: its URI names `urn:mimi:role:<role>`, each whole (see
 * subjectAltNames); unknown roles are ignored, and a list Node did not write grants none.
 */
export function rolesOf(cert: Pick<PeerCertificate, "subjectaltname"> | undefined): ReadonlySet<Role> {
  const roles = new Set<Role>();
  const sans = cert?.subjectaltname;
  if (!sans) return roles;
  for (const { type, value } of subjectAltNames(sans) ?? []) {
    if (type !== "URI" || !value.startsWith(ROLE_URI_PREFIX)) continue;
    const role = value.slice(ROLE_URI_PREFIX.length);
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
