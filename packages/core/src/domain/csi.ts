// Parsing and normalization of cross-service identifiers (CSIs, R8) into the
// canonical URI and the lookup key that delegations are matched against.
import { createHash } from "node:crypto";
import { domainToASCII } from "node:url";
import {
  type CountryCode,
  getCountries,
  getCountryCallingCode,
  Metadata,
  PhoneNumber,
  parsePhoneNumberWithError,
} from "libphonenumber-js/max";
import { clipped, DiscoveryError, invalidArgument } from "./errors.js";

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
 * Every way of writing one number or address yields the same canonical URI and key, and
 * parsing a canonical URI returns it unchanged.
 */
export function parseCsi(input: string): Csi {
  if (typeof input !== "string" || input.trim() === "") throw invalidArgument("CSI is empty");
  if (input.length > MAX_CSI_LENGTH) throw invalidArgument(`CSI is longer than ${MAX_CSI_LENGTH} characters`);
  const text = input.trim();
  const scheme = text.slice(0, 7).toLowerCase();
  if (scheme.startsWith("tel:")) return parseTel(text.slice(4));
  if (scheme === "mailto:") return parseEmail(decodeMailto(text.slice(7)));
  if (text.startsWith("+") || text.startsWith(FULLWIDTH_PLUS)) return parseTel(text);
  if (text.includes("@")) return parseEmail(text);
  throw invalidArgument(
    `cannot tell the type of CSI "${truncate(text)}": use tel:+<country code><number> or mailto:<address>`,
  );
}

/**
 * parseCsi for a CSI a request carries in `field`: its INVALID_ARGUMENT names the field, with
 * the reason INVALID_CSI (google.rpc.BadRequest and ErrorInfo), so a client can tell which of
 * its inputs to fix. parseCsi itself is also used on CSIs inside signed records and files.
 */
export function parseRequestCsi(input: string, field = "csi"): Csi {
  try {
    return parseCsi(input);
  } catch (err) {
    if (err instanceof DiscoveryError && err.code === "invalid_argument" && !err.details) {
      throw invalidArgument(err.message, field, "INVALID_CSI");
    }
    throw err;
  }
}

const FULLWIDTH_PLUS = "\uFF0B";
// Input that is already "+" and ASCII digits skips the per-character scan below.
const PLAIN_DIGITS = /^\+[0-9]+$/;
// What libphonenumber accepts between digits (its VALID_PUNCTUATION, plus any white space):
// dashes, slashes, dots, brackets, tildes and spaces, with their full-width forms. RFC 3966
// section 5.1.1 allows only "-", "." and brackets in a tel URI; people also write "/" and
// "(0)", and all of them are dropped before the number is read.
const TEL_SEPARATOR =
  /[\s\-\u2010-\u2015\u2212\u30FC\uFF0D/\uFF0F.\uFF0E\u00AD\u200B\u2060()\uFF08\uFF09[\]\uFF3B\uFF3D~\u2053\u223C\uFF5E]/;
// A national number longer than this (libphonenumber's MAX_LENGTH_FOR_NSN) is refused before
// any prefix handling; the E.164 limit of 15 digits applies after it.
const MAX_WRITTEN_DIGITS = 3 + 17;

function parseTel(raw: string): Csi {
  const digits = PLAIN_DIGITS.test(raw) ? raw.slice(1) : telDigits(raw);
  if (digits.length > MAX_WRITTEN_DIGITS) {
    throw invalidArgument("phone number is longer than the 15 digits E.164 allows");
  }
  if (digits.startsWith("0")) throw invalidArgument("country codes never start with 0");
  const cc = callingCodeOf(digits);
  if (!cc) throw invalidArgument(`+${digits} does not start with an assigned country code`);
  const written = digits.slice(cc.code.length);
  const national = withoutNationalPrefix(cc, written);
  // One key per number: the result must read back as itself. A second trunk prefix
  // ("+49 (0)0 30 ...") would be dropped when the canonical URI is parsed again.
  if (national !== written && withoutNationalPrefix(cc, national) !== national) {
    throw invalidArgument(
      `+${digits} still starts with a national prefix once one is removed: write the prefix once or leave it out`,
    );
  }
  const e164 = `${cc.code}${national}`;
  if (e164.length > 15) throw invalidArgument("phone number is longer than the 15 digits E.164 allows");
  // Full validity (libphonenumber's isValid) rejects numbers in ranges its metadata does not
  // know yet, and fictional ranges such as +44 7700 900xxx. A known country calling code and
  // a possible length are the checks that stay true over time.
  if (!cc.lengths.has(national.length)) {
    if (national.length < cc.min) throw invalidArgument(`+${e164} is too short for country code +${cc.code}`);
    if (national.length > cc.max) throw invalidArgument(`+${e164} is too long for country code +${cc.code}`);
    throw invalidArgument(`+${e164} has a length no number of country code +${cc.code} has`);
  }
  return { type: "tel", uri: `tel:+${e164}`, key: { kind: "e164", digits: e164 } };
}

const TEL_CHARS_MESSAGE =
  "phone number may hold only digits and the separators space - . / ( ) [ ] ~ after the +";

/** The ASCII digits after the leading "+", with separators dropped and non-ASCII digits mapped. */
function telDigits(raw: string): string {
  let digits = "";
  let plus = false;
  for (const ch of raw) {
    const digit = asciiDigit(ch.charCodeAt(0));
    if (digit !== undefined) {
      if (!plus) throw invalidArgument("phone number must be in international form: + then the country code");
      digits += digit;
    } else if (ch === "+" || ch === FULLWIDTH_PLUS) {
      if (plus || digits !== "") throw invalidArgument(TEL_CHARS_MESSAGE);
      plus = true;
    } else if (ch === ";") {
      // RFC 3966 parameters: ;ext= and ;isub= name another endpoint than the number's key,
      // and ;phone-context= only qualifies local numbers, which are refused anyway.
      throw invalidArgument(
        "tel URI parameters (;ext=, ;isub=, ...) are not part of a CSI: give the number alone",
      );
    } else if (!TEL_SEPARATOR.test(ch)) {
      throw invalidArgument(TEL_CHARS_MESSAGE);
    }
  }
  if (!plus) throw invalidArgument("phone number must be in international form: + then the country code");
  if (digits === "") throw invalidArgument("phone number has no digits after the +");
  return digits;
}

// The digits libphonenumber reads as digits: ASCII, full-width, Arabic-Indic, Eastern Arabic-Indic.
function asciiDigit(c: number): string | undefined {
  if (c >= 0x30 && c <= 0x39) return String.fromCharCode(c);
  for (const zero of [0xff10, 0x0660, 0x06f0]) {
    if (c >= zero && c <= zero + 9) return String.fromCharCode(0x30 + c - zero);
  }
  return undefined;
}

/**
 * The national number with a trunk prefix written after the country code removed, as
 * libphonenumber's parser removes it ("+49 (0)30 123456" is +49 30 123456).
 * libphonenumber strips national_prefix_for_parsing of the calling code's main region (with
 * its transform rule), except where the number as written matches the national number
 * pattern and the stripped one does not (+7 800 ...: the 8 is part of the number), or where
 * the stripped one has no possible length. One more guard: a number valid as written is
 * kept if the stripped reading is not valid (+375 810 ... premium numbers), so that no real
 * number's E.164 form turns into another number's key.
 */
function withoutNationalPrefix(cc: CallingCode, national: string): string {
  // When the prefix pattern does not match, or matches only the empty string (so no group
  // captured anything), libphonenumber's extractNationalNumber returns the number unchanged.
  const match = cc.nationalPrefix?.exec(national);
  if (!match || match[0] === "") return national;
  const digits = `${cc.code}${national}`;
  const cached = STRIPPED.get(digits);
  if (cached !== undefined) return cached;
  let stripped = national;
  try {
    const parsed = parsePhoneNumberWithError(`+${digits}`, { extract: false });
    if (parsed.countryCallingCode === cc.code) stripped = parsed.nationalNumber;
  } catch {
    // Too short or too long for libphonenumber: the length checks of the caller report it.
  }
  if (stripped !== national && isValidNumber(`+${digits}`) && !isValidNumber(`+${cc.code}${stripped}`)) {
    stripped = national;
  }
  if (STRIPPED.size >= MAX_STRIPPED_ENTRIES) STRIPPED.clear();
  STRIPPED.set(digits, stripped);
  return stripped;
}

function isValidNumber(e164: string): boolean {
  return new PhoneNumber(e164 as ConstructorParameters<typeof PhoneNumber>[0]).isValid();
}

// Numbers whose start matches a prefix pattern go through libphonenumber's parser (several
// microseconds); their results are kept here. The map is cleared when full, so it stays
// bounded whatever a peer sends.
const MAX_STRIPPED_ENTRIES = 1024;
const STRIPPED = new Map<string, string>();

/** Possible national-number lengths and the national prefix pattern of one country calling code. */
interface CallingCode {
  readonly code: string;
  readonly lengths: ReadonlySet<number>;
  readonly min: number;
  readonly max: number;
  /** national_prefix_for_parsing of the code's main region, anchored; absent if it has none. */
  readonly nationalPrefix: RegExp | undefined;
}

// The parts of libphonenumber-js's Metadata used here; nonGeographic(), selecting a
// non-geographic plan ("001") and nationalPrefixForParsing() are part of its metadata API but
// absent from its type declarations.
interface PlanMetadata {
  selectNumberingPlan(country: string, callingCode?: string): void;
  numberingPlan?: { possibleLengths(): number[]; nationalPrefixForParsing(): unknown };
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
    if (set.size === 0) continue;
    // Selecting by calling code picks its main region, whose rules libphonenumber parses with.
    meta.selectNumberingPlan(code);
    const prefix = meta.numberingPlan?.nationalPrefixForParsing();
    out.set(code, {
      code,
      lengths: set,
      min: Math.min(...set),
      max: Math.max(...set),
      nationalPrefix: typeof prefix === "string" && prefix !== "" ? new RegExp(`^(?:${prefix})`) : undefined,
    });
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

const MAILTO_HEADERS_MESSAGE =
  "mailto URI holds header fields (?subject=, ?body=, ...): a CSI is one address without headers";

/**
 * The address of a mailto URI, percent-decoded as RFC 6068 section 2 requires, so that
 * "mailto:a%2Bb@example.com" and "a+b@example.com" are one CSI. Bare addresses are not decoded.
 */
function decodeMailto(body: string): string {
  if (body.includes("?")) throw invalidArgument(MAILTO_HEADERS_MESSAGE);
  if (body.includes(","))
    throw invalidArgument("mailto URI lists more than one address: a CSI is one address");
  if (!body.includes("%")) return body;
  if (/%(?![0-9A-Fa-f]{2})/.test(body)) {
    throw invalidArgument("mailto URI has a malformed percent-escape: % must be followed by two hex digits");
  }
  let decoded: string;
  try {
    decoded = decodeURIComponent(body);
  } catch {
    throw invalidArgument("mailto URI has percent-escapes that are not UTF-8");
  }
  if (/\p{Cc}/u.test(decoded)) throw invalidArgument("mailto URI decodes to a control character");
  return decoded;
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
    uri: `mailto:${mailtoLocalPart(local)}@${domain}`,
    key: { kind: "email", domainHash: emailDomainHash(domain) },
  };
}

// The local part as the canonical URI writes it: "%" and "?" are escaped so that the URI
// parses back to the same address (RFC 6068 section 2); everything else stays as it is.
function mailtoLocalPart(local: string): string {
  if (!local.includes("%") && !local.includes("?")) return local;
  return local.replaceAll("%", "%25").replaceAll("?", "%3F");
}

/**
 * The kind of a phone number whose calls and messages are charged at a premium to the sender
 * and shared with the number's holder ("PREMIUM_RATE", "SHARED_COST"), as libphonenumber's
 * metadata knows them; undefined for any other number (an unknown or fictional one included).
 * A DP sends no codes there: SMS pumping fraud earns on exactly those messages.
 */
export function revenueShareType(uri: string): "PREMIUM_RATE" | "SHARED_COST" | undefined {
  if (!uri.startsWith("tel:")) return undefined;
  try {
    const type = parsePhoneNumberWithError(uri.slice(4)).getType();
    return type === "PREMIUM_RATE" || type === "SHARED_COST" ? type : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The address a CSI's proof-of-possession code goes to, from its canonical URI (`Csi.uri`):
 * "+447700900123" for tel, the email address itself for mailto. The URI's escapes of "%" and "?"
 * in the local part are undone, so "mailto:a%25b@example.org" is sent to "a%b@example.org", the
 * mailbox its holder owns, and the address parses back to the same CSI.
 */
export function csiAddress(uri: string): string {
  if (uri.startsWith("tel:")) return uri.slice(4);
  if (!uri.startsWith("mailto:")) throw new RangeError("csiAddress takes a canonical tel: or mailto: URI");
  const at = uri.lastIndexOf("@");
  // The inverse of mailtoLocalPart: a canonical local part holds no other escape, and the
  // domain (IDNA ASCII) none at all.
  const local = uri.slice(7, at).replace(/%25|%3F/g, (e) => (e === "%25" ? "%" : "?"));
  return `${local}${uri.slice(at)}`;
}

/** The leading 64 bits of SHA-256 over the IDNA (ASCII, lowercase) domain, as an unsigned integer. */
export function emailDomainHash(asciiDomain: string): bigint {
  return createHash("sha256").update(asciiDomain).digest().readBigUInt64BE(0);
}

function truncate(s: string): string {
  return clipped(s, 40);
}
