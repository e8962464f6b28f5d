import assert from "node:assert/strict";
import { test } from "node:test";
import { ConfigError, ConfigReader } from "./config.js";

test("config reader applies defaults, checks bounds and rejects unknown keys", () => {
  const r = ConfigReader.of({ port: 10, name: "x", extra: 1 });
  assert.equal(r.integer("port", 5, 0, 65535), 10);
  assert.equal(r.string("name"), "x");
  assert.equal(r.integer("missing", 7, 0, 10), 7);
  assert.throws(() => r.done(), /unknown key: extra/);
  assert.throws(() => ConfigReader.of({ port: 70000 }).integer("port", 1, 0, 65535), ConfigError);
  assert.throws(() => ConfigReader.of([]), /must be an object/);
  assert.deepEqual(ConfigReader.of({}).object("cache", { optional: true }).integer("n", 3, 0, 9), 3);
});
