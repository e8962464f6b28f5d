import assert from "node:assert/strict";
import { join } from "node:path";
import { test } from "node:test";
import { collect, count, csiArg, fingerprint, localDp, localOutboxes, mspIdOf, UsageError } from "./args.js";

test("mspIdOf derives the local network's MSP ids from certificate identities", () => {
  const cases: [string, string | undefined][] = [
    ["msp-bluebird", "bluebird.example"],
    ["msp-wirechat", "wirechat.example"],
    ["msp-parrot", "parrot.example"],
    ["msp-two-words", "two-words.example"],
    ["admin", undefined],
    ["msp-", undefined],
    ["msp-Bluebird", undefined],
    ["xmsp-bluebird", undefined],
    ["msp-blue.bird", undefined],
  ];
  for (const [identity, expected] of cases) assert.equal(mspIdOf(identity), expected, identity);
});

test("localDp knows the local DPs by loopback port and puts their outbox next to the PKI", () => {
  const cases: [string, string, { dpId: string; outboxDir: string } | undefined][] = [
    ["127.0.0.1:7501", "data/pki", { dpId: "eu", outboxDir: join("data", "dp-eu", "outbox") }],
    ["localhost:7502", "data/pki", { dpId: "us", outboxDir: join("data", "dp-us", "outbox") }],
    ["[::1]:7501", "/tmp/net/pki", { dpId: "eu", outboxDir: "/tmp/net/dp-eu/outbox" }],
    ["127.0.0.1:7400", "data/pki", undefined],
    ["dp.example:7501", "data/pki", undefined],
    ["7501", "data/pki", undefined],
  ];
  for (const [address, pki, expected] of cases) assert.deepEqual(localDp(address, pki), expected, address);
  assert.deepEqual(localOutboxes("/n/pki"), ["/n/dp-eu/outbox", "/n/dp-us/outbox"]);
});

test("count accepts whole numbers within bounds only", () => {
  assert.equal(count("--batch", "2000", 1, 10_000), 2000);
  for (const bad of ["0", "10001", "-1", "1.5", "", "1e3", " 5"]) {
    assert.throws(() => count("--batch", bad, 1, 10_000), UsageError, bad);
  }
});

test("csiArg normalizes and reports bad CSIs as usage errors", () => {
  assert.equal(csiArg("+44 7700 900123"), "tel:+447700900123");
  assert.equal(csiArg("mailto:Alice@Example.ORG"), "mailto:alice@example.org");
  assert.throws(() => csiArg("tel:+44-nope"), /invalid CSI/);
});

test("collect gathers a repeatable flag", () => {
  assert.deepEqual(collect("b", collect("a", undefined)), ["a", "b"]);
});

test("fingerprint is the first 8 hex digits of a key", () => {
  assert.equal(fingerprint(Uint8Array.of(0xde, 0xad, 0xbe, 0xef, 1, 2)), "deadbeef");
  assert.equal(fingerprint(new Uint8Array(0)), "none");
});
