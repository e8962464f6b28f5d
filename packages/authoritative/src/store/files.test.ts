// Findings 11 and 12 of the audit: the store was created 0644 (readable by every user of the
// host, though it holds phone numbers, email addresses and service ids) and ran
// synchronous=NORMAL, so a claim acknowledged just before a power loss could vanish.
import assert from "node:assert/strict";
import { chmodSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { parseConfig } from "../config.js";
import { openMappingStore } from "./store.js";

const dir = mkdtempSync(join(tmpdir(), "mimi-dp-store-"));
after(() => rmSync(dir, { recursive: true, force: true }));
const modeOf = (path: string) => statSync(path).mode & 0o777;

test("a new store and its -wal and -shm are 0600, whatever the umask", () => {
  const path = join(dir, "mappings.sqlite");
  const before = process.umask(0);
  try {
    const store = openMappingStore(path);
    store.setOptOut("tel:+441", 1); // a commit, so the WAL holds something
    for (const f of [path, `${path}-wal`, `${path}-shm`]) assert.equal(modeOf(f), 0o600, f);
    store.close();
  } finally {
    process.umask(before);
  }
});

test("opening sets the -wal and -shm left by an older version to 0600", () => {
  const path = join(dir, "older.sqlite");
  openMappingStore(path).close();
  for (const f of [`${path}-wal`, `${path}-shm`]) {
    writeFileSync(f, "");
    chmodSync(f, 0o644);
  }
  const store = openMappingStore(path);
  for (const f of [`${path}-wal`, `${path}-shm`]) assert.equal(modeOf(f), 0o600, f);
  store.close();
});

test("commits are synced (synchronous=FULL) unless durability is normal", () => {
  const cases: [{ durability?: "full" | "normal" }, "full" | "normal"][] = [
    [{}, "full"],
    [{ durability: "full" }, "full"],
    [{ durability: "normal" }, "normal"],
  ];
  for (const [options, expected] of cases) {
    const store = openMappingStore(
      join(dir, `durability-${expected}-${Object.keys(options).length}.sqlite`),
      options,
    );
    assert.equal(store.durability(), expected);
    store.close();
  }
});

test("the config's durability defaults to full; the permission check is on unless accepted", () => {
  const raw = {
    dpId: "eu",
    dataDir: "/var/lib/mimi/dp-eu",
    tls: { caFile: "ca.pem", certFile: "dp.pem", keyFile: "dp-key.pem" },
    rootEndpoints: ["root:7400"],
    signingKey: "dp.pem",
    rootPublicKey: "root.pub",
  };
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
    () => parseConfig({ ...raw, durability: "off" }),
    /config.durability must be "full" or "normal"/,
  );
  assert.throws(() => parseConfig({ ...raw, allowInsecureDataPermissions: "yes" }), /must be true or false/);
});
