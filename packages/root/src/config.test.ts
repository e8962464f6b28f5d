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

const secondaryExample = () =>
  JSON.parse(readFileSync(new URL("../../../deploy/examples/root-secondary.json", import.meta.url), "utf8"));

test("the secondary deploy example parses; it holds no signing key", () => {
  const config = parseConfig(secondaryExample(), "/etc/mimi");
  assert.equal(config.signingKey, undefined);
  assert.deepEqual(config.primary?.endpoints, ["root-a.mimi.example:7400"]);
  assert.equal(config.primary?.rootPublicKey, "/etc/mimi/keys/root-signing.pub");
  assert.ok(Object.isFrozen(config.primary));
});

test("a secondary's primary section resolves paths and refuses a signing key beside it", () => {
  const { primary, ...rest } = secondaryExample();
  assert.equal(
    parseConfig({ ...rest, primary: { ...primary, rootPublicKey: "keys/root.pub" } }, "/srv/mimi").primary
      ?.rootPublicKey,
    "/srv/mimi/keys/root.pub",
  );
  assert.throws(
    () => parseConfig({ ...secondaryExample(), signingKey: "/etc/mimi/keys/root-signing.pem" }),
    /signingKey and config.primary exclude each other: a secondary never holds the root's private key/,
  );
  assert.throws(
    () => parseConfig({ ...rest, primary: { ...primary, endpoints: [] } }),
    /endpoints must not be empty/,
  );
  assert.throws(
    () => parseConfig({ ...rest, primary: { ...primary, port: 1 } }),
    /primary has unknown key: port/,
  );
  assert.throws(() => parseConfig({ ...rest, primary: { endpoints: ["a:1"] } }), /rootPublicKey/);
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
