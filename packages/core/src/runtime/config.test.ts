import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { ConfigError, ConfigReader, readConfigFile } from "./config.js";

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

test("a config that is not JSON is refused by line and column, never quoting the file", () => {
  const dir = mkdtempSync(join(tmpdir(), "mimi-cfg-"));
  try {
    const file = join(dir, "bad.json");
    writeFileSync(file, '{\n  "logLevel": "info",\n  "password": hunter2-secret\n}\n');
    assert.throws(
      () => readConfigFile(file),
      (err: Error) =>
        /is not valid JSON at line 3, column 15$/.test(err.message) && !err.message.includes("hunter2"),
    );
    writeFileSync(file, '{\n  "a": 1,\n}\n');
    assert.throws(() => readConfigFile(file), /is not valid JSON at line 3, column 1$/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
