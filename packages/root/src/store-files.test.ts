// Findings 11 and 12 of the audit: the registry store was created 0644 and ran
// synchronous=NORMAL, so a serial the root had published could vanish in a power loss and be
// published again with other content.
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { parseConfig } from "./config.js";
import { openRegistryStore } from "./store.js";

const dir = mkdtempSync(join(tmpdir(), "mimi-root-store-"));
after(() => rmSync(dir, { recursive: true, force: true }));
const modeOf = (path: string) => statSync(path).mode & 0o777;

test("a new registry store and its -wal and -shm are 0600, whatever the umask", () => {
  const path = join(dir, "registry.sqlite");
  const before = process.umask(0);
  try {
    const store = openRegistryStore(path);
    store.commit("admin", 1, (serial) => ({ serial, kind: "delete_msp", id: "none" }));
    for (const f of [path, `${path}-wal`, `${path}-shm`]) assert.equal(modeOf(f), 0o600, f);
    store.close();
  } finally {
    process.umask(before);
  }
});

test("commits are synced (synchronous=FULL) unless durability is normal", () => {
  const full = openRegistryStore(join(dir, "full.sqlite"));
  assert.equal(full.durability(), "full");
  full.close();
  const normal = openRegistryStore(join(dir, "normal.sqlite"), { durability: "normal" });
  assert.equal(normal.durability(), "normal");
  normal.close();
});

test("the config's durability defaults to full; the permission check is on unless accepted", () => {
  const raw = JSON.parse(
    readFileSync(new URL("../../../deploy/examples/root.json", import.meta.url), "utf8"),
  );
  const config = parseConfig(raw, "/etc/mimi");
  assert.equal(config.durability, "full");
  assert.equal(config.allowInsecureDataPermissions, false);
  const relaxed = parseConfig(
    { ...raw, durability: "normal", allowInsecureDataPermissions: true },
    "/etc/mimi",
  );
  assert.equal(relaxed.durability, "normal");
  assert.equal(relaxed.allowInsecureDataPermissions, true);
  assert.throws(
    () => parseConfig({ ...raw, durability: "extra" }),
    /config.durability must be "full" or "normal"/,
  );
});
