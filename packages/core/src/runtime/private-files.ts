// Private data folders and files. Stores hold phone numbers, email addresses and service ids,
// so a data folder is made 0700 and a store file 0600 whatever the umask, and a server refuses
// to start on a folder or file that group or others may open, or that another user owns (as
// sshd's StrictModes does), unless its config sets allowInsecureDataPermissions.
import { randomBytes } from "node:crypto";
import {
  chmodSync,
  closeSync,
  existsSync,
  fchmodSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { platform, userInfo } from "node:os";
import { dirname, resolve } from "node:path";
import { DiscoveryError } from "../domain/errors.js";

/** Mode of a data folder: only its owner may list, enter or change it. */
export const PRIVATE_DIR_MODE = 0o700;
/** Mode of a store file: only its owner may read or write it. */
export const PRIVATE_FILE_MODE = 0o600;
/** The config key that accepts group/other access and another owner (default false). */
export const ALLOW_INSECURE_KEY = "allowInsecureDataPermissions";

/** What a path must be. */
export type PrivateKind = "folder" | "file";

/** How strictly a path is checked. */
export interface PrivateOptions {
  /** Accept a path others may open or another user owns; the caller logs what was accepted. */
  readonly allowInsecure?: boolean;
  /** The uid that must own the path; default the user this process runs as. */
  readonly uid?: number;
  /** How to accept it anyway, said in the refusal; default names the config key. */
  readonly allowHint?: string;
}

/**
 * What is wrong with the permissions of `path`, or undefined when it is private or absent:
 * owned by `uid`, and no group or other bit set (mode & 0o077). A path of the wrong type
 * (a file where a folder should be) always throws: no option accepts that.
 */
export function privateProblem(path: string, kind: PrivateKind, uid = currentUid()): string | undefined {
  // Windows has no POSIX modes to check; its ACLs are the operator's business.
  if (platform() === "win32") return undefined;
  const st = statSync(path, { throwIfNoEntry: false });
  if (!st) return undefined;
  const what = kind === "folder" ? "data folder" : "store file";
  if (kind === "folder" ? !st.isDirectory() : !st.isFile()) {
    throw new DiscoveryError("failed_precondition", `${what} ${path} is not a ${kind}`);
  }
  const mode = (st.mode & 0o777).toString(8).padStart(4, "0");
  if (uid !== undefined && st.uid !== uid) {
    return (
      `${what} ${path} is owned by uid ${st.uid}, not by the user this runs as (uid ${uid}); ` +
      `fix: chown ${uid} ${path}`
    );
  }
  if ((st.mode & 0o077) !== 0) {
    const fix = kind === "folder" ? "chmod 700" : "chmod 600";
    return (
      `${what} ${path} has mode ${mode}: group or others may open it, and it holds phone numbers, ` +
      `email addresses and service ids; fix: ${fix} ${path}`
    );
  }
  return undefined;
}

/**
 * Throws when `path` is not private (see privateProblem), unless `allowInsecure`; then returns
 * the accepted problem, for the caller to log. Undefined when the path is private or absent.
 */
export function checkPrivate(path: string, kind: PrivateKind, opts: PrivateOptions = {}): string | undefined {
  const problem = privateProblem(path, kind, opts.uid ?? currentUid());
  if (problem === undefined || opts.allowInsecure) return problem;
  const hint = opts.allowHint ?? `set "${ALLOW_INSECURE_KEY}": true in the config`;
  throw new DiscoveryError(
    "failed_precondition",
    `refusing to start: ${problem} (or, to accept it, ${hint})`,
  );
}

/**
 * Creates the folder `path` with mode 0700 (parents too) when absent, whatever the umask; an
 * existing one is checked as by checkPrivate, whose result it returns.
 */
export function ensurePrivateDir(path: string, opts: PrivateOptions = {}): string | undefined {
  const missing: string[] = [];
  for (let p = resolve(path); !existsSync(p); p = dirname(p)) missing.unshift(p);
  if (missing.length === 0) return checkPrivate(path, "folder", opts);
  // One level at a time: mkdir applies the umask, and a umask such as 0o277 would take the
  // owner's write bit from a parent before its child is made.
  for (const p of missing) {
    mkdirSync(p, { mode: PRIVATE_DIR_MODE });
    chmodSync(p, PRIVATE_DIR_MODE);
  }
  return undefined;
}

/**
 * Creates an empty file with mode 0600, whatever the umask, unless `path` exists; returns
 * whether it did. SQLite treats an empty file as an empty database and gives the -wal, -shm
 * and -journal files it creates the main file's mode, so a store created here stays private.
 */
export function createPrivateFile(path: string): boolean {
  let fd: number;
  try {
    fd = openSync(path, "wx", PRIVATE_FILE_MODE);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "EEXIST") return false;
    throw err;
  }
  try {
    fchmodSync(fd, PRIVATE_FILE_MODE);
  } finally {
    closeSync(fd);
  }
  return true;
}

/**
 * The secret kept in `path` (`bytes` random bytes), made there with mode 0600 (O_EXCL) when the
 * file is absent; a file of another length is refused, naming `what` it should hold, since a
 * damaged key would silently change what was derived from it.
 */
export function readOrCreateSecret(path: string, bytes: number, what: string): Uint8Array {
  try {
    writeFileSync(path, randomBytes(bytes), { mode: PRIVATE_FILE_MODE, flag: "wx" });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
  }
  const key = readFileSync(path);
  if (key.length !== bytes)
    throw new Error(
      `${path} holds ${key.length} bytes, not the ${bytes} of ${what}; remove it to make a new one`,
    );
  return new Uint8Array(key);
}

/**
 * Replaces `path` with `parts` (mode 0600) so that a crash leaves the old content or the new,
 * never a mix: written to a temporary file beside it, synced, renamed over it, and the folder
 * synced so the rename itself survives a power loss.
 */
export function replacePrivateFile(path: string, parts: readonly Uint8Array[]): void {
  // A leftover temporary file (or a link planted there) is removed, never written through.
  const tmp = `${path}.tmp`;
  rmSync(tmp, { force: true });
  const fd = openSync(tmp, "wx", PRIVATE_FILE_MODE);
  try {
    fchmodSync(fd, PRIVATE_FILE_MODE);
    for (const p of parts) {
      for (let off = 0; off < p.length; ) off += writeSync(fd, p, off, p.length - off);
    }
    fsyncSync(fd);
  } catch (err) {
    closeSync(fd);
    rmSync(tmp, { force: true });
    throw err;
  }
  closeSync(fd);
  renameSync(tmp, path);
  const dir = openSync(dirname(path), "r");
  try {
    fsyncSync(dir);
  } finally {
    closeSync(dir);
  }
}

/** Sets mode 0600 on `path` if it exists (a store's -wal and -shm after open); returns whether it did. */
export function restrictFile(path: string): boolean {
  try {
    chmodSync(path, PRIVATE_FILE_MODE);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw err;
  }
}

/** The files of a SQLite store in WAL mode: the database, its write-ahead log and its shared-memory index. */
export function sqliteFilesOf(path: string): readonly string[] {
  return [path, `${path}-wal`, `${path}-shm`];
}

/**
 * The start-up check of a server's data: creates `dir` (0700) when absent, else checks it, and
 * checks each of `files` that exists. Throws on the first problem unless `allowInsecure`;
 * returns the accepted problems, which the server logs at warn.
 */
export function checkDataDir(dir: string, files: readonly string[], opts: PrivateOptions = {}): string[] {
  const accepted = [ensurePrivateDir(dir, opts), ...files.map((f) => checkPrivate(f, "file", opts))];
  return accepted.filter((p): p is string => p !== undefined);
}

// The user this process runs as, without the process global (core never touches it): from the
// password database, else from /proc (a container's uid may have no passwd entry), else
// unknown, and then only the mode is checked.
function currentUid(): number | undefined {
  try {
    return userInfo().uid;
  } catch {
    return statSync("/proc/self", { throwIfNoEntry: false })?.uid;
  }
}
