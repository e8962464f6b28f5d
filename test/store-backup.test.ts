// Store safety across real processes (audit findings 11 and 12): data folders and stores are
// private and a server refuses one that is not; `mimi store backup` copies a running server's
// store; `mimi store restore` refuses while the server holds it, and after a restore the
// followers start over: resolvers resync a DP whose log is a new one, and take a snapshot of
// a root whose serial jumped past what they hold.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { chmodSync, mkdirSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { pb } from "@mimi/core";
import { devSigningKeyPaths, startResolver } from "@mimi/devnet";
import { eventually, scenario, useNetwork, writeMapping } from "./harness.js";

const REPO = resolve(fileURLToPath(import.meta.url), "../..");
const t = useNetwork();

/** Runs `mimi store ...` (no TLS, so no --pki as the harness's cli adds). */
const store = (...args: string[]) =>
  new Promise<{ code: number; stdout: string; stderr: string }>((done) => {
    execFile(
      process.execPath,
      [join(REPO, "packages/cli/bin/mimi.js"), "store", ...args],
      { timeout: 60_000 },
      (err, stdout, stderr) => done({ code: err ? Number(err.code ?? 1) : 0, stdout, stderr }),
    );
  });
const modeOf = (path: string) => statSync(path).mode & 0o777;
const subscription = async (dp: "eu" | "us") => {
  const s = (await t.stats()).subscriptions.find((x) => x.dpId === dp);
  assert.ok(s, `a subscription to ${dp}`);
  return s;
};

const write = (dp: "eu" | "us", csi: string, ssi: string) => writeMapping(t, dp, csi, ssi);
const found = async (csi: string) => (await t.resolve(csi)).answer?.status === pb.LookupStatus.FOUND;

scenario(t, "data folders are 0700 and stores 0600; a server refuses a folder others may open", async () => {
  for (const dir of ["root", "dp-eu", "dp-us", "resolver"])
    assert.equal(modeOf(join(t.net.dir, dir)), 0o700, dir);
  assert.equal(modeOf(join(t.net.dir, "dp-eu", "mappings.sqlite")), 0o600);
  assert.equal(modeOf(join(t.net.dir, "dp-eu", "mappings.sqlite-wal")), 0o600);
  assert.equal(modeOf(join(t.net.dir, "root", "registry.sqlite")), 0o600);
  const name = "resolver-shared-folder";
  const dir = join(t.net.dir, name);
  mkdirSync(dir);
  chmodSync(dir, 0o755);
  await assert.rejects(
    startResolver(t.net, { name, rootEndpoints: [t.net.root.address] }),
    /resolver: refusing to start: data folder .*resolver-shared-folder has mode 0755.*chmod 700/,
  );
  chmodSync(dir, 0o700);
  const proc = await startResolver(t.net, { name, rootEndpoints: [t.net.root.address] });
  await proc.stop();
});

scenario(
  t,
  "a DP backed up while it runs and restored serves what it held, and resolvers resync",
  async () => {
    const eu = t.net.dps.eu;
    const db = join(t.net.dir, "dp-eu", "mappings.sqlite");
    const backup = join(t.net.dir, "backups", "dp-eu.sqlite");
    await eventually(async () => assert.equal((await subscription("eu")).connected, true));
    const kept = "tel:+447700900931";
    await write("eu", kept, "parrot:before-backup");
    await eventually(async () => assert.ok(await found(kept)));

    const b = await store("backup", "--db", db, "--out", backup);
    assert.equal(b.code, 0, b.stderr);
    assert.match(b.stdout, /backed up DP store/);
    assert.equal(modeOf(backup), 0o600);
    assert.equal(modeOf(join(backup, "..")), 0o700);
    const v = await store("verify", backup);
    assert.equal(v.code, 0, v.stderr);
    const refused = await store("restore", "--from", backup, "--db", db);
    assert.equal(refused.code, 1, "refused while the DP holds its store");
    assert.match(refused.stderr, /is in use .*stop its server first/);

    const lost = "tel:+447700900932";
    await write("eu", lost, "parrot:after-backup");
    await eventually(async () => assert.ok(await found(lost)));
    const before = await subscription("eu");
    await eu.stop();
    const r = await store("restore", "--from", backup, "--db", db);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /resolvers see a new change log and resync/);
    await eu.start({ samePort: true });

    await eventually(async () => {
      const s = await subscription("eu");
      assert.equal(s.connected, true);
      assert.notEqual(s.logId, before.logId, "the restored store's log is a new one");
      assert.equal(s.resyncs, before.resyncs + 1n);
    });
    await t.logged(/resolver: .*"reason":"the DP's store is another one.*resyncing/);
    // The resync dropped the cached answers, so these are the restored store's own.
    const served = await t.lookupsServed("eu");
    assert.ok(await found(kept), "the mapping committed before the backup");
    assert.equal((await t.resolve(lost)).answer?.status, pb.LookupStatus.NOT_FOUND, "committed after it");
    assert.equal((await t.lookupsServed("eu")) - served, 2n, "both asked of the restored DP");
  },
);

scenario(t, "a root restored from a backup publishes a serial above what followers hold", async () => {
  const root = t.net.root;
  const db = join(t.net.dir, "root", "registry.sqlite");
  const backup = join(t.net.dir, "backups", "root.sqlite");
  const b = await store("backup", "--db", db, "--out", backup, "--json");
  assert.equal(b.code, 0, b.stderr);
  const backedUp = JSON.parse(b.stdout) as { kind: string; serial: number };
  assert.equal(backedUp.kind, "root");
  // A change after the backup: published, seen by the resolver, then lost with the store.
  const put = await t.putDp("us", [t.net.dps.us.address]);
  await t.resolverApplied(put);
  const published = (await t.stats()).registrySerial;
  assert.ok(published > BigInt(backedUp.serial));

  await root.stop();
  const restore = (...more: string[]) =>
    store("restore", "--from", backup, "--db", db, "--serial-bump", "1000", "--json", ...more);
  // The restored root signs what it holds, so the backup must carry the root's seal.
  const unchecked = await restore();
  assert.equal(unchecked.code, 1, unchecked.stderr);
  assert.match(
    unchecked.stderr,
    /restoring a root needs the root's public signing key \(--root-key <file>\)/,
  );
  const r = await restore("--root-key", devSigningKeyPaths(t.net.pkiDir, "root").publicKeyFile);
  assert.equal(r.code, 0, r.stderr);
  const restored = JSON.parse(r.stdout) as { restored: { serial: number } };
  assert.equal(
    BigInt(restored.restored.serial),
    published + 1000n,
    "above the highest serial the store held",
  );
  await root.start({ samePort: true });
  // The resolver holds a later serial than the backup's: it takes the restored root's snapshot.
  await eventually(async () => {
    const s = await t.stats();
    assert.equal(s.registrySerial, BigInt(restored.restored.serial));
    assert.equal(s.registryConnected, true);
  });
  assert.ok(await found("tel:+447700900123"), "a demo mapping still resolves");
});
