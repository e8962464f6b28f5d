import assert from "node:assert/strict";
import { test } from "node:test";
import { type Csi, csiAddress, emailDomainHash, parseCsi, parseRequestCsi, revenueShareType } from "./csi.js";
import { DiscoveryError } from "./errors.js";

const ok: [input: string, uri: string][] = [
  ["tel:+447700900123", "tel:+447700900123"],
  ["+44 7700 900123", "tel:+447700900123"],
  ["tel:+1-202-555-0142", "tel:+12025550142"],
  ["TEL:+1 (202) 555.0142", "tel:+12025550142"],
  ["  tel:+4915123456789  ", "tel:+4915123456789"],
  ["mailto:alice@example.org", "mailto:alice@example.org"],
  ["Alice@Example.ORG", "mailto:alice@example.org"],
  ["MAILTO:bob.smith+tag@mail.example.com", "mailto:bob.smith+tag@mail.example.com"],
  ["mailto:jörg@bücher.example", "mailto:jörg@xn--bcher-kva.example"],
];

const bad: [input: string, reason: RegExp][] = [
  ["", /empty/],
  ["   ", /empty/],
  ["x".repeat(600), /longer than 512/],
  ["tel:447700900123", /international form/],
  ["tel:+44770090012a", /only digits/],
  ["tel:+4477009001234567", /longer than the 15 digits/],
  ["tel:+0447700900123", /never start with 0/],
  ["tel:+999123456", /assigned country code/],
  ["tel:+4477", /too short/],
  ["tel:+", /no digits/],
  ["hello", /cannot tell the type/],
  ["mailto:@example.org", /local-part@domain/],
  ["mailto:alice@", /local-part@domain/],
  ["mailto:alice@localhost", /two labels/],
  ["mailto:alice@-bad-.example", /invalid label|not a valid domain/],
  ["mailto:alice@exa mple.org", /invalid label|not a valid domain/],
  ["mailto:al ice@example.org", /character addresses cannot hold/],
  ["mailto:.alice@example.org", /misplaced dot/],
  ["mailto:a..b@example.org", /misplaced dot/],
  ["mailto:alice@10.0.0.1", /not an IP address/],
  [`mailto:${"a".repeat(65)}@example.org`, /local part is longer/],
  // URL syntax after the domain would otherwise be cut off or decoded by IDNA conversion.
  ["mailto:alice@example.org/x", /not a valid domain/],
  ["mailto:alice@example.org?subject=hi", /header fields/],
  ["mailto:alice@example.org#frag", /not a valid domain/],
  ["alice@exa%6Dple.org", /not a valid domain/],
  ["alice@example.org\\evil", /not a valid domain/],
];

function check(input: string): Csi {
  return parseCsi(input);
}

test("valid CSIs normalize to one canonical URI", () => {
  for (const [input, uri] of ok) assert.equal(check(input).uri, uri, input);
});

test("invalid CSIs are refused with INVALID_ARGUMENT and a reason", () => {
  for (const [input, reason] of bad) {
    assert.throws(
      () => check(input),
      (err: unknown) =>
        err instanceof DiscoveryError && err.code === "invalid_argument" && reason.test(err.message),
      `${input.slice(0, 30)} should fail with ${reason}`,
    );
  }
});

test("a request's CSI is refused naming its field, so a client can tell what to fix", () => {
  for (const [input, reason] of bad) {
    assert.throws(
      () => parseRequestCsi(input, "request.csi"),
      (err: unknown) => {
        assert.ok(err instanceof DiscoveryError);
        assert.equal(err.code, "invalid_argument");
        assert.match(err.message, reason);
        assert.deepEqual(err.details, {
          reason: "INVALID_CSI",
          fields: [{ field: "request.csi", description: err.message }],
        });
        return true;
      },
    );
  }
  assert.equal(parseRequestCsi("+44 7700 900123").uri, "tel:+447700900123");
});

test("tel keys are the E.164 digits; email keys hash the IDNA domain only", () => {
  assert.deepEqual(check("+44 7700 900123").key, { kind: "e164", digits: "447700900123" });
  const a = check("alice@Example.org").key;
  const b = check("bob@example.org").key;
  assert.equal(a.kind, "email");
  assert.deepEqual(a, b, "addresses of one domain share a delegation key");
  assert.deepEqual(a, { kind: "email", domainHash: emailDomainHash("example.org") });
  // SHA-256("example.org") starts with 0xa4b4...; the leading 64 bits as an unsigned integer.
  assert.equal(emailDomainHash("example.org") >> 63n, 1n);
});

test("every example mobile number of every region parses (the length table matches the library)", async () => {
  const { getCountries, getExampleNumber } = await import("libphonenumber-js/max");
  const { createRequire } = await import("node:module");
  const { readFileSync } = await import("node:fs");
  const { dirname, join } = await import("node:path");
  const pkg = dirname(createRequire(import.meta.url).resolve("libphonenumber-js/package.json"));
  const examples = JSON.parse(readFileSync(join(pkg, "examples.mobile.json"), "utf8"));
  let checked = 0;
  for (const country of getCountries()) {
    const n = getExampleNumber(country, examples);
    if (!n) continue;
    assert.equal(check(n.number).uri, `tel:${n.number}`, country);
    checked++;
  }
  assert.ok(checked > 200, `checked ${checked} regions`);
  // Non-geographic codes come from the untyped part of the metadata.
  assert.equal(check("+80012345678").uri, "tel:+80012345678");
});

// Finding 15 ("one number, two keys"): a trunk prefix written after the country code was kept,
// so "+49 (0)30 123456" became tel:+49030123456, a second key beside tel:+4930123456, and
// "+44 (0)20 ..." or "+421 2/212 ..." were refused. libphonenumber drops such a prefix.
const written: [input: string, uri: string][] = [
  ["+49 (0)30 123456", "tel:+4930123456"],
  ["+49 030 123456", "tel:+4930123456"],
  ["tel:+49-(0)30-123456", "tel:+4930123456"],
  ["tel:+49030123456", "tel:+4930123456"],
  ["+44 (0)20 7946 0000", "tel:+442079460000"],
  ["+44 (0)7700 900123", "tel:+447700900123"],
  ["+33 (0)6 12 34 56 78", "tel:+33612345678"],
  ["+421 2/212 345 67", "tel:+421221234567"],
  ["+36 (06) 1 234 5678", "tel:+3612345678"],
  ["+1 1 202 555 0142", "tel:+12025550142"],
  ["+31 (0)20 123 4567", "tel:+31201234567"],
  // Italy has no trunk prefix: the 0 belongs to the number, written or not in brackets.
  ["+39 06 1234 5678", "tel:+390612345678"],
  ["+39 (0)6 1234 5678", "tel:+390612345678"],
  // Russia's trunk prefix is 8, and 800 numbers start with 8: only a second 8 is a prefix.
  ["+7 800 555 35 35", "tel:+78005553535"],
  ["+7 8 800 555 35 35", "tel:+78005553535"],
  ["+7 (8) 495 123 45 67", "tel:+74951234567"],
  // Argentina's mobile "15" after the area code becomes the 9 of the international form.
  ["+54 11 15 2345 6789", "tel:+5491123456789"],
  ["+54 011 15-2345-6789", "tel:+5491123456789"],
  ["+54 9 11 2345 6789", "tel:+5491123456789"],
  // A valid premium number is kept whole although libphonenumber reads its 8 as a prefix.
  ["+375 810 196 2932", "tel:+3758101962932"],
  ["+375 8 029 491 19 11", "tel:+375294911911"],
  ["+81 (0)3-1234-5678", "tel:+81312345678"],
  ["+61 (0)2 9876 5432", "tel:+61298765432"],
  ["+86 (0)10 1234 5678", "tel:+861012345678"],
  ["+44 7700 900 123", "tel:+447700900123"],
  ["+44\u00a07700\u2013900123", "tel:+447700900123"],
  ["\uff0b\uff14\uff14 \uff17\uff17\uff10\uff10 \uff19\uff10\uff10\uff11\uff12\uff13", "tel:+447700900123"],
  ["tel:(+44) 20 [7946] 0000", "tel:+442079460000"],
  ["+44 20~7946~0000", "tel:+442079460000"],
];

test("a national prefix written after the country code is dropped, as libphonenumber drops it", () => {
  for (const [input, uri] of written) assert.equal(check(input).uri, uri, input);
});

// Finding 15, email half: "mailto:a%2Bb@example.com" kept its escape and became a second key
// beside "a+b@example.com". RFC 6068 section 2: the address in a mailto URI is percent-encoded.
const mailto: [input: string, uri: string][] = [
  ["mailto:a%2Bb@example.com", "mailto:a+b@example.com"],
  ["mailto:a%2bb@example.com", "mailto:a+b@example.com"],
  ["a+b@example.com", "mailto:a+b@example.com"],
  ["mailto:%41lice@example.org", "mailto:alice@example.org"],
  ["mailto:alice@%65xample.org", "mailto:alice@example.org"],
  ["mailto:j%C3%B6rg@b%C3%BCcher.example", "mailto:jörg@xn--bcher-kva.example"],
  ["mailto:a%3Fb@example.org", "mailto:a%3Fb@example.org"],
  ["mailto:a%25b@example.org", "mailto:a%25b@example.org"],
  // A bare address is not a URI: its "%" and "?" are characters, escaped in the canonical URI.
  ["a%2Bb@example.com", "mailto:a%252bb@example.com"],
  ["a?b@example.org", "mailto:a%3Fb@example.org"],
];

test("mailto URIs are percent-decoded and bare addresses are not", () => {
  for (const [input, uri] of mailto) assert.equal(check(input).uri, uri, input);
});

// Codes for "a%b@example.org" went to "a%25b@example.org", the local part as its canonical URI
// escapes it (RFC 6068 section 2), a mailbox its holder does not own: an address is not a URI.
const addresses: [input: string, address: string][] = [
  ["tel:+44 7700 900123", "+447700900123"],
  ["Alice@Example.ORG", "alice@example.org"],
  ["a%b@example.org", "a%b@example.org"],
  ["mailto:a%25b@example.org", "a%b@example.org"],
  ["a?b@example.org", "a?b@example.org"],
  ["a%3Fb?%25@example.org", "a%3fb?%25@example.org"],
  ["a%2Bb@example.com", "a%2bb@example.com"],
  ["mailto:j%C3%B6rg@b%C3%BCcher.example", "jörg@xn--bcher-kva.example"],
];

test("csiAddress gives the address a code is sent to, which parses back to the same CSI", () => {
  for (const [input, address] of addresses) {
    const csi = check(input);
    assert.equal(csiAddress(csi.uri), address, input);
    assert.equal(check(address).uri, csi.uri, `${input}: the address is the same CSI`);
  }
});

const refused: [input: string, reason: RegExp][] = [
  ["mailto:a%2@example.org", /malformed percent-escape/],
  ["mailto:a%zzb@example.org", /malformed percent-escape/],
  ["mailto:alice@example.org%", /malformed percent-escape/],
  ["mailto:a%C3@example.org", /not UTF-8/],
  ["mailto:a%ED%A0%80@example.org", /not UTF-8/],
  ["mailto:a%00b@example.org", /control character/],
  ["mailto:alice@example.org%0A", /control character/],
  ["mailto:?to=alice@example.org", /header fields/],
  ["mailto:alice@example.org?", /header fields/],
  ["mailto:alice@example.org,bob@example.org", /more than one address/],
  ["mailto:a%40b@example.org", /character addresses cannot hold/],
  ["mailto:alice@exa%2Fmple.org", /not a valid domain/],
  ["mailto:alice@example.org%3Fx", /not a valid domain/],
  ["mailto:alice@exa%256Dple.org", /not a valid domain/],
  ["tel:+1-202-555-0142;ext=123", /tel URI parameters/],
  ["tel:+44-20-7946-0000;phone-context=example.com", /tel URI parameters/],
  ["+1 202 555 0142 x123", /only digits/],
  ["+44 20 7946 0000 #", /only digits/],
  ["+44 +20 7946 0000", /only digits/],
  ["tel:44 +20 7946 0000", /international form/],
  ["+49 (0)0 30 123456", /still starts with a national prefix/],
  ["+44 (0)20 7946 00001", /too long/],
  [`+4${"1".repeat(25)}`, /longer than the 15 digits/],
];

test("malformed escapes, headers, extensions and doubled prefixes are refused with a reason", () => {
  for (const [input, reason] of refused) {
    assert.throws(
      () => check(input),
      (err: unknown) =>
        err instanceof DiscoveryError && err.code === "invalid_argument" && reason.test(err.message),
      `${input} should fail with ${reason}`,
    );
  }
});

test("canonical URIs parse back to themselves", () => {
  for (const [input] of [...ok, ...written, ...mailto]) {
    const csi = check(input);
    assert.deepEqual(check(csi.uri), csi, input);
  }
});

test("every region's example number maps to one URI in each of libphonenumber's formats", async () => {
  // libphonenumber-js ships example numbers for the mobile type only; the fixed-line and
  // non-geographic cases are in the tables above.
  const { getCountries, getCountryCallingCode, getExampleNumber, Metadata, parsePhoneNumberWithError } =
    await import("libphonenumber-js/max");
  const examples = (await import("libphonenumber-js/mobile/examples")).default;
  const meta = new Metadata() as unknown as {
    selectNumberingPlan(country: string): void;
    numberingPlan: { nationalPrefix(): unknown };
  };
  let checked = 0;
  let withPrefix = 0;
  for (const country of getCountries()) {
    const n = getExampleNumber(country, examples);
    if (!n) continue;
    const cc = getCountryCallingCode(country);
    const international = n.formatInternational();
    const national = n.formatNational();
    const forms = [
      n.format("E.164"),
      international,
      n.format("RFC3966"),
      `tel:${international.replaceAll(" ", "-")}`,
      // How a number is written for readers abroad: the national form after "+<country code>".
      `+${cc} ${national}`,
    ];
    meta.selectNumberingPlan(country);
    const prefix = meta.numberingPlan.nationalPrefix();
    if (typeof prefix === "string" && prefix !== "" && national.startsWith(prefix)) {
      forms.push(`+${cc} (${prefix})${national.slice(prefix.length)}`);
      withPrefix++;
    }
    for (const form of forms) {
      assert.equal(check(form).uri, `tel:${n.number}`, `${country}: ${form}`);
      if (!form.startsWith("tel:")) {
        assert.equal(parsePhoneNumberWithError(form).number, n.number, `libphonenumber on ${form}`);
      }
    }
    checked++;
  }
  assert.ok(checked > 200, `checked ${checked} regions`);
  assert.ok(withPrefix > 100, `checked ${withPrefix} regions with a trunk prefix`);
});

test("tel keys agree with libphonenumber on generated numbers, with and without a trunk prefix", async () => {
  const { getCountries, getCountryCallingCode, Metadata, PhoneNumber, parsePhoneNumberWithError } =
    await import("libphonenumber-js/max");
  type E164 = ConstructorParameters<typeof PhoneNumber>[0];
  const meta = new Metadata() as unknown as {
    selectNumberingPlan(code: string): void;
    numberingPlan: { possibleLengths(): number[]; nationalPrefix(): unknown };
    nonGeographic(): Record<string, unknown>;
  };
  const codes = new Set<string>(getCountries().map((c) => getCountryCallingCode(c)));
  for (const code of Object.keys(meta.nonGeographic())) codes.add(code);
  let seed = 15;
  const digit = () => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return String(Math.floor((seed / 2147483648) * 10));
  };
  const valid = (e164: string) => new PhoneNumber(`+${e164}` as E164).isValid();
  let agreed = 0;
  let stripped = 0;
  for (const code of codes) {
    meta.selectNumberingPlan(code);
    const np = meta.numberingPlan.nationalPrefix();
    const prefixes = ["", "0", ...(typeof np === "string" && np !== "0" ? [np] : [])];
    for (const length of meta.numberingPlan.possibleLengths()) {
      for (let k = 0; k < 8; k++) {
        const rest = Array.from({ length }, digit).join("");
        for (const prefix of prefixes) {
          const digits = `${code}${prefix}${rest}`;
          let ours: string | undefined;
          try {
            ours = check(`+${digits}`).uri.slice(5);
          } catch {
            continue;
          }
          assert.equal(check(`tel:+${ours}`).uri, `tel:+${ours}`, `+${digits} reads back`);
          let theirs: string | undefined;
          try {
            const p = parsePhoneNumberWithError(`+${digits}`);
            theirs = `${p.countryCallingCode}${p.nationalNumber}`;
          } catch {
            continue;
          }
          if (ours !== theirs) {
            // The one deliberate difference: a valid number is not turned into an invalid one.
            assert.ok(ours === digits && valid(digits) && !valid(theirs), `+${digits}: ${ours} vs ${theirs}`);
          }
          if (ours !== digits) stripped++;
          agreed++;
        }
      }
    }
  }
  assert.ok(agreed > 2000, `compared ${agreed} numbers`);
  assert.ok(stripped > 500, `${stripped} of them had a prefix dropped`);
});

test("revenueShareType names premium-rate and shared-cost numbers, and nothing else", () => {
  const cases: [uri: string, type: string | undefined][] = [
    ["tel:+449098790000", "PREMIUM_RATE"],
    ["tel:+19005550100", "PREMIUM_RATE"],
    ["tel:+33810123456", "SHARED_COST"],
    ["tel:+447700100000", undefined], // mobile
    ["tel:+31201234567", undefined], // fixed line
    ["tel:+447700900123", undefined], // fictional (drama) range: not known, so not refused
    ["mailto:a@example.org", undefined],
  ];
  for (const [uri, type] of cases) assert.equal(revenueShareType(uri), type, uri);
});
