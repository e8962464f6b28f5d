// Parsing and normalization of cross-service identifiers (CSIs, R8) into the
// canonical URI and the lookup key that delegations are matched against.
import { createHash } from "node:crypto";
import { domainToASCII } from "node:url";
import { type CountryCode, getCountries, getCountryCallingCode, Metadata } from "libphonenumber-js/max";
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
const MAX_CSI_LENGTH = 512;
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
  // know yet, and fictional ranges such as +44 7700 900xxx. A known country calling code and
  // a possible length are the checks that stay true over time.
  const cc = callingCodeOf(digits);
  if (!cc) throw invalidArgument(`+${digits} does not start with an assigned country code`);
  const national = digits.length - cc.code.length;
  if (!cc.lengths.has(national)) {
    if (national < cc.min) throw invalidArgument(`+${digits} is too short for country code +${cc.code}`);
    if (national > cc.max) throw invalidArgument(`+${digits} is too long for country code +${cc.code}`);
    throw invalidArgument(`+${digits} has a length no number of country code +${cc.code} has`);
  }
  return { type: "tel", uri: `tel:${number}`, key: { kind: "e164", digits } };
}

/** Possible national-number lengths of one country calling code. */
interface CallingCode {
  readonly code: string;
  readonly lengths: ReadonlySet<number>;
  readonly min: number;
  readonly max: number;
}

// The parts of libphonenumber-js's Metadata used here; nonGeographic() and selecting a
// non-geographic plan ("001") are part of its metadata API but absent from its type declarations.
interface PlanMetadata {
  selectNumberingPlan(country: string, callingCode?: string): void;
  numberingPlan?: { possibleLengths(): number[] };
  nonGeographic?: () => Record<string, unknown>;
}

/**
 * Built once from libphonenumber-js's metadata: for each calling code, the union of the
 * possible lengths of every region sharing it (+1 covers the US, Canada and the rest of NANP).
 * Its validatePhoneNumberLength first works out the region by matching national-number
 * patterns, which cost more than everything else on a resolver cache hit; the union needs no
 * region and accepts every length one of the code's regions accepts.
 */
const CALLING_CODES: ReadonlyMap<string, CallingCode> = (() => {
  const meta = new Metadata() as unknown as PlanMetadata;
  const lengths = new Map<string, Set<number>>();
  const add = (code: string, region: string) => {
    meta.selectNumberingPlan(region, code);
    const set = lengths.get(code) ?? new Set<number>();
    for (const l of meta.numberingPlan?.possibleLengths() ?? []) set.add(l);
    lengths.set(code, set);
  };
  for (const country of getCountries()) add(getCountryCallingCode(country as CountryCode), country);
  for (const code of Object.keys(meta.nonGeographic?.() ?? {})) add(code, "001"); // +800, +882, ...
  const out = new Map<string, CallingCode>();
  for (const [code, set] of lengths) {
    if (set.size > 0) out.set(code, { code, lengths: set, min: Math.min(...set), max: Math.max(...set) });
  }
  return out;
})();

// Calling codes are prefix-free (ITU-T E.164), so at most one of the first 1-3 digits matches.
function callingCodeOf(digits: string): CallingCode | undefined {
  for (let len = 1; len <= 3 && len < digits.length; len++) {
    const cc = CALLING_CODES.get(digits.slice(0, len));
    if (cc) return cc;
  }
  return undefined;
}

// Characters never allowed in an unquoted local part (RFC 5322 specials, controls, space).
const LOCAL_FORBIDDEN = /[\s"(),:;<>@[\\\]\p{Cc}]/u;
const LABEL = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/;
// Characters a domain as typed may hold before IDNA encoding: no URL syntax, no spaces.
const DOMAIN_CHARS = /^[^\s/?#\\%@:[\]]+$/u;

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
  // domainToASCII would cut the host at "/", "?", "#" or "\\" and decode "%xx", turning
  // "alice@example.org/x" into a valid address; such input is refused instead.
  if (!DOMAIN_CHARS.test(domainIn))
    throw invalidArgument(`"${truncate(domainIn)}" is not a valid domain name`);
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
