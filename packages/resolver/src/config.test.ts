import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { parseConfig } from "./config.js";

const example = () =>
  JSON.parse(readFileSync(new URL("../../../deploy/examples/resolver.json", import.meta.url), "utf8"));

test("the deploy example parses", () => {
  const config = parseConfig(example(), "/etc/mimi");
  assert.equal(config.tls.caFile, "/etc/mimi/tls/ca.pem");
  assert.equal(config.rootPublicKey, "/etc/mimi/keys/root-signing.pub");
  assert.ok(Object.isFrozen(config));
});

test("the pinned root key is required and resolves against the config's folder", () => {
  const { rootPublicKey: _omit, ...rest } = example();
  assert.throws(() => parseConfig(rest, "/etc/mimi"), /rootPublicKey must be a non-empty string/);
  assert.throws(() => parseConfig({ ...rest, rootPublicKey: 32 }, "/etc/mimi"), /rootPublicKey/);
  assert.equal(
    parseConfig({ ...rest, rootPublicKey: "root.pub" }, "/srv/mimi").rootPublicKey,
    "/srv/mimi/root.pub",
  );
});

test("unknown keys and out-of-range values are refused", () => {
  assert.throws(() => parseConfig({ ...example(), prot: 1 }), /unknown key: prot/);
  assert.throws(() => parseConfig({ ...example(), port: 70000 }), /port must be an integer/);
  assert.throws(() => parseConfig({ ...example(), logLevel: "loud" }), /logLevel/);
});

test("the cache section is optional and takes defaults", () => {
  const { cache: _omit, ...rest } = example();
  const config = parseConfig(rest, "/");
  assert.equal(config.cache.negativeMaxTtlSeconds, 300);
  assert.throws(() => parseConfig({ ...rest, cache: { minTtlSeconds: 100, maxTtlSeconds: 10 } }), /exceeds/);
});

test("the event-loop guard is off unless configured, and its bound is checked", () => {
  assert.equal(parseConfig(example(), "/").maxEventLoopDelayMs, 0);
  assert.equal(parseConfig({ ...example(), maxEventLoopDelayMs: 100 }, "/").maxEventLoopDelayMs, 100);
  assert.throws(() => parseConfig({ ...example(), maxEventLoopDelayMs: -1 }, "/"), /maxEventLoopDelayMs/);
  assert.throws(() => parseConfig({ ...example(), maxEventLoopDelayMs: "fast" }, "/"), /maxEventLoopDelayMs/);
});

test("workers: one by default, one per core at 0 (at most 32), and several need a data folder", () => {
  const withData = { ...example(), dataDir: "/var/lib/mimi/resolver" };
  assert.equal(parseConfig(withData, "/", 8).workers, 1);
  assert.equal(parseConfig(withData, "/", 8).verifyThreads, 7);
  const all = parseConfig({ ...withData, workers: 0 }, "/", 8);
  assert.equal(all.workers, 8);
  assert.equal(all.verifyThreads, 1, "one verification thread per worker");
  assert.equal(parseConfig({ ...withData, workers: 0 }, "/", 64).workers, 32);
  assert.throws(() => parseConfig({ ...withData, workers: 33 }, "/"), /workers must be an integer/);
  const { dataDir: _omit, ...noData } = withData;
  assert.throws(
    () => parseConfig({ ...noData, workers: 2 }, "/"),
    /config.workers is 2 but dataDir is unset/,
  );
});
