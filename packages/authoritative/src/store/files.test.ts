// Findings 11 and 12 of the audit: the store was created 0644 (readable by every user of the
// host, though it holds phone numbers, email addresses and service ids) and ran
// synchronous=NORMAL, so a claim acknowledged just before a power loss could vanish.
import assert from "node:assert/strict";
import { chmodSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import Database from "better-sqlite3";
import { parseConfig } from "../config.js";
import { MIGRATIONS } from "./schema.js";
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

test("a v5 store upgrades in place: opt-outs and opt-out conflicts kept, without evidence until new ones", () => {
  const path = join(dir, "v5.sqlite");
  const db = new Database(path);
  for (const m of MIGRATIONS.slice(0, 5)) db.exec(m);
  db.pragma("user_version = 5");
  db.prepare("INSERT INTO opt_outs (csi, at_ms) VALUES ('tel:+441', 7)").run();
  db.prepare(
    `INSERT INTO conflicts (id, csi, claimant_msp, new_msp, new_ssi, replace, make_default, opened_at_ms, deadline_ms, state, opt_out)
     VALUES ('c1', 'tel:+442', 'm', '', '', 1, 0, 1, 2, 'open', 1)`,
  ).run();
  db.close();
  const store = openMappingStore(path);
  try {
    assert.deepEqual(store.optOut("tel:+441"), { atMs: 7 });
    const c = store.conflict("c1");
    assert.equal(c?.optOut, true);
    assert.equal(c?.optOutEvidence, undefined);
    const evidence = {
      statement: Uint8Array.of(1),
      userSignature: Uint8Array.of(2),
      mspSignature: Uint8Array.of(3),
      mspKey: Uint8Array.of(4),
    };
    store.setOptOut("tel:+443", 9, evidence);
    assert.deepEqual(store.optOut("tel:+443"), { atMs: 9, evidence });
  } finally {
    store.close();
  }
});
