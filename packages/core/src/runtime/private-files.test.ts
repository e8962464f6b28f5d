// Finding 11 of the audit: data folders were made 0755 and stores 0644, readable by every user
// of the host although they hold phone numbers, email addresses and service ids.
import assert from "node:assert/strict";
import { chmodSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import {
  checkDataDir,
  checkPrivate,
  createPrivateFile,
  ensurePrivateDir,
  privateProblem,
  readOrCreateSecret,
  restrictFile,
} from "./private-files.js";

const base = mkdtempSync(join(tmpdir(), "mimi-private-"));
after(() => rmSync(base, { recursive: true, force: true }));
let n = 0;
const fresh = () => join(base, `case-${++n}`);
const modeOf = (path: string) => statSync(path).mode & 0o777;

/** Runs `f` under `mask`, as a server started from a shell with that umask would. */
function withUmask<T>(mask: number, f: () => T): T {
  const before = process.umask(mask);
  try {
    return f();
  } finally {
    process.umask(before);
  }
}

test("folders are made 0700 and files 0600 whatever the umask", () => {
  for (const mask of [0o022, 0o000, 0o277]) {
    const dir = join(fresh(), "nested", "data");
    const file = join(fresh(), "store.sqlite");
    mkdirSync(join(file, ".."), { mode: 0o700 });
    withUmask(mask, () => {
      assert.equal(ensurePrivateDir(dir), undefined);
      assert.equal(createPrivateFile(file), true);
    });
    assert.equal(modeOf(dir), 0o700, `folder under umask ${mask.toString(8)}`);
    assert.equal(modeOf(join(dir, "..")), 0o700, `parent under umask ${mask.toString(8)}`);
    assert.equal(modeOf(file), 0o600, `file under umask ${mask.toString(8)}`);
  }
});

test("an existing file is left as it is by createPrivateFile; restrictFile makes it 0600", () => {
  const dir = fresh();
  mkdirSync(dir, { mode: 0o700 });
  const file = join(dir, "store.sqlite-wal");
  writeFileSync(file, "x", { mode: 0o644 });
  assert.equal(createPrivateFile(file), false);
  assert.equal(modeOf(file), 0o644);
  assert.equal(restrictFile(file), true);
  assert.equal(modeOf(file), 0o600);
  assert.equal(restrictFile(join(dir, "absent")), false);
});

test("a 0755 folder is refused, naming the path, the mode and the fix", () => {
  const dir = fresh();
  mkdirSync(dir);
  chmodSync(dir, 0o755);
  assert.throws(
    () => ensurePrivateDir(dir),
    (err: Error) => {
      assert.match(err.message, /refusing to start/);
      assert.ok(err.message.includes(dir), "names the path");
      assert.match(err.message, /mode 0755/);
      assert.match(err.message, /chmod 700/);
      assert.match(err.message, /allowInsecureDataPermissions/);
      return true;
    },
  );
  chmodSync(dir, 0o700);
  assert.equal(ensurePrivateDir(dir), undefined);
});

test("a 0644 store file is refused; absent files pass", () => {
  const dir = fresh();
  mkdirSync(dir, { mode: 0o700 });
  const db = join(dir, "mappings.sqlite");
  assert.equal(checkPrivate(db, "file"), undefined, "absent");
  writeFileSync(db, "", { mode: 0o644 });
  chmodSync(db, 0o644);
  assert.throws(() => checkPrivate(db, "file"), /store file .*mappings\.sqlite has mode 0644.*chmod 600/);
  assert.throws(() => checkDataDir(dir, [db]), /mode 0644/);
  chmodSync(db, 0o640);
  assert.throws(() => checkPrivate(db, "file"), /mode 0640/, "group read alone is refused");
  chmodSync(db, 0o600);
  assert.deepEqual(checkDataDir(dir, [db, `${db}-wal`]), []);
});

test("another owner is refused", () => {
  const dir = fresh();
  mkdirSync(dir, { mode: 0o700 });
  const owner = statSync(dir).uid;
  assert.throws(
    () => checkPrivate(dir, "folder", { uid: owner + 1 }),
    new RegExp(`owned by uid ${owner}, not by the user this runs as \\(uid ${owner + 1}\\).*chown`),
  );
  assert.equal(checkPrivate(dir, "folder", { uid: owner }), undefined);
});

test("allowInsecure accepts and reports the problem; the wrong type is refused regardless", () => {
  const dir = fresh();
  mkdirSync(dir);
  chmodSync(dir, 0o755);
  const file = join(dir, "registry.sqlite");
  writeFileSync(file, "");
  chmodSync(file, 0o666);
  const accepted = checkDataDir(dir, [file], { allowInsecure: true });
  assert.equal(accepted.length, 2);
  assert.match(accepted[0] ?? "", /data folder .* mode 0755/);
  assert.match(accepted[1] ?? "", /store file .* mode 0666/);
  assert.equal(modeOf(dir), 0o755, "accepting changes nothing");
  assert.throws(() => ensurePrivateDir(file, { allowInsecure: true }));
  assert.throws(() => checkPrivate(dir, "file", { allowInsecure: true }), /is not a file/);
  assert.throws(
    () => checkPrivate(dir, "folder", { allowHint: "pass --allow-insecure" }),
    /pass --allow-insecure/,
  );
});

test("privateProblem is silent for private and absent paths", () => {
  const dir = fresh();
  ensurePrivateDir(dir);
  assert.equal(privateProblem(dir, "folder"), undefined);
  assert.equal(privateProblem(join(dir, "none"), "file"), undefined);
});

test("a secret is made once with mode 0600, read back the same, and refused when damaged", () => {
  const dir = mkdtempSync(join(tmpdir(), "mimi-secret-"));
  try {
    const path = join(dir, "key");
    const made = readOrCreateSecret(path, 32, "a test key");
    assert.equal(made.length, 32);
    assert.equal(statSync(path).mode & 0o777, 0o600);
    assert.deepEqual(readOrCreateSecret(path, 32, "a test key"), made);
    writeFileSync(path, "short");
    assert.throws(
      () => readOrCreateSecret(path, 32, "a test key"),
      /holds 5 bytes, not the 32 of a test key/,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
