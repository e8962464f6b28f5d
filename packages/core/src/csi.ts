// Parsing and normalization of cross-service identifiers (CSIs, R8) into the
// canonical URI and the lookup key that delegations are matched against.
import { createHash } from "node:crypto";
import { domainToASCII } from "node:url";
import { parsePhoneNumberFromString, validatePhoneNumberLength } from "libphonenumber-js/max";
import { invalidArgument } from "./errors.js";

/** The CSI types this network knows. */
export type CsiType = "tel" | "mailto";

/** What delegations are matched against: E.164 digits (longest prefix) or an email-domain hash (range). */
export type LookupKey =
  | { readonly kind: "e164"; readonly digits: string }
  | { readonly kind: "email"; readonly domainHash: bigint };

/** A parsed, normalized CSI. */
export interface Csi {
  readonly type: CsiType;
  /** Canonical URI: "tel:+447700900123" or "mailto:alice@example.org". */
  readonly uri: string;
  readonly key: LookupKey;
}

/** Longest input accepted, before any parsing. */
export const MAX_CSI_LENGTH = 512;
const MAX_EMAIL_LENGTH = 254;
const MAX_LOCAL_PART_LENGTH = 64;

/**
 * Parses a CSI given as a URI ("tel:+44 7700 900123", "mailto:Alice@Example.ORG") or bare
 * ("+447700900123", "alice@example.org"). Throws INVALID_ARGUMENT with the reason otherwise.
 */
export function parseCsi(input: string): Csi {
  if (typeof input !== "string" || input.trim() === "") throw invalidArgument("CSI is empty");
  if (input.length > MAX_CSI_LENGTH) throw invalidArgument(`CSI is longer than ${MAX_CSI_LENGTH} characters`);
  const text = input.trim();
  const lower = text.toLowerCase();
  if (lower.startsWith("tel:")) return parseTel(text.slice(4));
  if (lower.startsWith("mailto:")) return parseEmail(text.slice(7));
  if (text.startsWith("+")) return parseTel(text);
  if (text.includes("@")) return parseEmail(text);
  throw invalidArgument(
    `cannot tell the type of CSI "${truncate(text)}": use tel:+<country code><number> or mailto:<address>`,
  );
}

// Visual separators allowed in tel URIs (RFC 3966 section 5.1.1) and in typed numbers.
const TEL_SEPARATORS = /[\s\-.()]/g;

function parseTel(raw: string): Csi {
  const number = raw.replace(TEL_SEPARATORS, "");
  if (!number.startsWith("+")) {
    throw invalidArgument("phone number must be in international form: + then the country code");
  }
  const digits = number.slice(1);
  if (!/^[0-9]+$/.test(digits)) throw invalidArgument("phone number may hold only digits after the +");
  if (digits.length > 15) throw invalidArgument("phone number is longer than the 15 digits E.164 allows");
  if (digits.startsWith("0")) throw invalidArgument("country codes never start with 0");
  // Full validity (libphonenumber's isValid) rejects numbers in ranges its metadata does not
  // know yet, and fictional ranges such as +44 7700 900xxx. A known country code and a
  // possible length are the checks that stay true over time.
  const problem = validatePhoneNumberLength(number);
  if (problem === "INVALID_COUNTRY")
    throw invalidArgument(`+${digits} does not start with an assigned country code`);
  if (problem === "TOO_SHORT") throw invalidArgument(`+${digits} is too short for its country code`);
  if (problem === "TOO_LONG") throw invalidArgument(`+${digits} is too long for its country code`);
  if (problem !== undefined) throw invalidArgument(`+${digits} has a length no number of its country has`);
  const parsed = parsePhoneNumberFromString(number);
  if (!parsed || parsed.number !== number) throw invalidArgument(`+${digits} is not a phone number`);
  return { type: "tel", uri: `tel:${number}`, key: { kind: "e164", digits } };
}

// Characters never allowed in an unquoted local part (RFC 5322 specials, controls, space).
const LOCAL_FORBIDDEN = /[\s"(),:;<>@[\\\]\p{Cc}]/u;
const LABEL = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/;

function parseEmail(raw: string): Csi {
  const at = raw.lastIndexOf("@");
  if (at <= 0 || at === raw.length - 1) throw invalidArgument("email address must be local-part@domain");
  // Local parts are compared case-insensitively: every large provider treats them so, and a
  // discovery network that told Alice@ from alice@ would split one person's mappings.
  const local = raw.slice(0, at).normalize("NFC").toLowerCase();
  const domainIn = raw.slice(at + 1);
  if (local.length > MAX_LOCAL_PART_LENGTH) {
    throw invalidArgument(`email local part is longer than ${MAX_LOCAL_PART_LENGTH} characters`);
  }
  if (LOCAL_FORBIDDEN.test(local))
    throw invalidArgument("email local part holds a character addresses cannot hold");
  if (local.startsWith(".") || local.endsWith(".") || local.includes("..")) {
    throw invalidArgument("email local part has a misplaced dot");
  }
  const domain = domainToASCII(domainIn.toLowerCase());
  if (domain === "") throw invalidArgument(`"${truncate(domainIn)}" is not a valid domain name`);
  const labels = domain.split(".");
  if (labels.length < 2) throw invalidArgument(`domain "${truncate(domain)}" needs at least two labels`);
  if (!labels.every((l) => LABEL.test(l)))
    throw invalidArgument(`domain "${truncate(domain)}" has an invalid label`);
  if (/^[0-9]+$/.test(labels[labels.length - 1] ?? "")) {
    throw invalidArgument("email domain must be a name, not an IP address");
  }
  const address = `${local}@${domain}`;
  if (address.length > MAX_EMAIL_LENGTH)
    throw invalidArgument(`email address is longer than ${MAX_EMAIL_LENGTH} characters`);
  return {
    type: "mailto",
    uri: `mailto:${address}`,
    key: { kind: "email", domainHash: emailDomainHash(domain) },
  };
}

/** The leading 64 bits of SHA-256 over the IDNA (ASCII, lowercase) domain, as an unsigned integer. */
export function emailDomainHash(asciiDomain: string): bigint {
  return createHash("sha256").update(asciiDomain).digest().readBigUInt64BE(0);
}

function truncate(s: string): string {
  return s.length > 40 ? `${s.slice(0, 40)}...` : s;
}
