import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { parseConfig } from "./config.js";

const example = () =>
  JSON.parse(readFileSync(new URL("../../../deploy/examples/root.json", import.meta.url), "utf8"));

test("the deploy example parses", () => {
  const config = parseConfig(example(), "/etc/mimi");
  assert.equal(config.tls.caFile, "/etc/mimi/tls/ca.pem");
  assert.equal(config.signingKey, "/etc/mimi/keys/root-signing.pem");
  assert.ok(Object.isFrozen(config));
});

test("the registry signing key is required and resolves against the config's folder", () => {
  const { signingKey: _omit, ...rest } = example();
  assert.throws(() => parseConfig(rest, "/etc/mimi"), /signingKey must be a non-empty string/);
  assert.throws(() => parseConfig({ ...rest, signingKey: "" }, "/etc/mimi"), /signingKey/);
  assert.equal(
    parseConfig({ ...rest, signingKey: "keys/root.pem" }, "/srv/mimi").signingKey,
    "/srv/mimi/keys/root.pem",
  );
});

test("unknown keys and out-of-range values are refused", () => {
  assert.throws(() => parseConfig({ ...example(), prot: 1 }), /unknown key: prot/);
  assert.throws(() => parseConfig({ ...example(), port: 70000 }), /port must be an integer/);
  assert.throws(() => parseConfig({ ...example(), logLevel: "loud" }), /logLevel/);
});
