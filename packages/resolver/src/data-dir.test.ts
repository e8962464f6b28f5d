// Finding 11 of the audit: the resolver's data folder (its saved registry copy) was made with
// the umask's mode; it is now 0700 and checked at start unless the config accepts otherwise.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { parseConfig } from "./config.js";

const example = () =>
  JSON.parse(readFileSync(new URL("../../../deploy/examples/resolver.json", import.meta.url), "utf8"));

test("the data folder's permission check is on unless the config accepts insecure permissions", () => {
  assert.equal(parseConfig(example(), "/etc/mimi").allowInsecureDataPermissions, false);
  const relaxed = parseConfig({ ...example(), allowInsecureDataPermissions: true }, "/etc/mimi");
  assert.equal(relaxed.allowInsecureDataPermissions, true);
  assert.throws(
    () => parseConfig({ ...example(), allowInsecureDataPermissions: 1 }),
    /must be true or false/,
  );
});
