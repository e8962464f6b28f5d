import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { parseConfig } from "./config.js";

const example = () =>
  JSON.parse(
    readFileSync(new URL("../../../deploy/examples/authoritative-eu.json", import.meta.url), "utf8"),
  );

test("the deploy example parses", () => {
  const config = parseConfig(example(), "/etc/mimi");
  assert.equal(config.tls.caFile, "/etc/mimi/tls/ca.pem");
  assert.ok(Object.isFrozen(config));
});

test("unknown keys and out-of-range values are refused", () => {
  assert.throws(() => parseConfig({ ...example(), prot: 1 }), /unknown key: prot/);
  assert.throws(() => parseConfig({ ...example(), port: 70000 }), /port must be an integer/);
  assert.throws(() => parseConfig({ ...example(), logLevel: "loud" }), /logLevel/);
});
