import assert from "node:assert/strict";
import { test } from "node:test";
import { type Csi, emailDomainHash, parseCsi } from "./csi.js";
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
  ["tel:+", /only digits/],
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
  ["mailto:alice@example.org?subject=hi", /not a valid domain/],
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
