// Keeps a local copy of the root registry (H1, like RFC 8806's local root copy): follows
// RootService.WatchRegistry over several root endpoints (followLog: failover and backoff),
// verifies every snapshot and change against the pinned root key, and persists the copy so
// a restart while every root is down still resolves.
import { randomBytes } from "node:crypto";
import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import type * as grpc from "@grpc/grpc-js";
import {
  type Clock,
  changeFromProto,
  followLog,
  type RegistryChange,
  type RegistryData,
  type RegistrySeal,
  RegistryView,
  registrySignatureValid,
  sealProblem,
  snapshotFromProto,
  snapshotToProto,
  systemClock,
} from "@mimi/core";
import { RegistrySnapshotSchema, RootService, type WatchRegistryResponse } from "@mimi/core/pb";
import { type Channel, openChannel } from "@mimi/rpc";
import type { Logger } from "pino";

/** Options for following the root. */
export interface RegistrySyncOptions {
  /** Root endpoints ("host:port"), tried in order, then round-robin on failure. */
  rootEndpoints: readonly string[];
  credentials: grpc.ChannelCredentials;
  log: Logger;
  /**
   * The pinned root key: every snapshot and change must carry the root's valid signature
   * over the resulting registry, or it is refused and the next root is tried.
   */
  rootPublicKey: Uint8Array;
  /** Judges seal expiry; the wall clock unless a test moves it. */
  clock?: Clock;
  /** Where the copy is saved after each change; nothing is saved when unset. */
  persistPath?: string;
  /** Called after each change is applied (not after snapshots). */
  onChange?: (change: RegistryChange, view: RegistryView) => void;
  /**
   * A copy the caller keeps itself (a secondary root keeps it in its own store), used instead
   * of `persistPath`: adopted when its signature verifies, ignored with a warning otherwise.
   */
  initialCopy?: RegistryData;
  /** Called after a snapshot replaced the copy; `data` carries the root's signature. */
  onSnapshot?: (view: RegistryView, data: RegistryData) => void;
  /** Longest pause between reconnect attempts. */
  maxBackoffMs?: number;
}

/** A followed registry copy. */
export interface RegistrySync {
  readonly view: RegistryView;
  /** Resolves once the copy is usable: caught up with a root, or loaded from disk. */
  readonly ready: Promise<void>;
  /** True while a watch stream to a root is open and caught up. */
  connected(): boolean;
  /**
   * Why the copy may not be used now (no verified copy yet, its seal expired, or was made in
   * the future), or undefined when it may. Checked by whoever resolves against the copy.
   */
  problem(): string | undefined;
  /** The seal of the copy in use, when there is one. */
  seal(): RegistrySeal | undefined;
  close(): void;
}

/** Starts following the root. */
export function startRegistrySync(opts: RegistrySyncOptions): RegistrySync {
  const log = opts.log.child({ component: "registry-sync" });
  const view = new RegistryView();
  let markReady: () => void = () => {};
  const ready = new Promise<void>((resolve) => {
    markReady = resolve;
  });

  const clock = opts.clock ?? systemClock;
  // The last copy whose signature verified; a change that fails verification rolls back to it.
  let verified: RegistryData = view.snapshot();
  // The highest serial ever accepted, kept across restarts by the saved copy: a root (or
  // anyone holding a root's old signatures) cannot take this follower back to an older
  // registry, such as one with a DP's compromised, since rotated key.
  let highWater = 0n;
  let expiryLogged = false;
  // Freshness is judged for snapshots; a change of a backlog carries its own, possibly long
  // expired, seal (a follower offline longer than the validity replays it), so for changes only
  // the signature, the serial and a signing time not in this host's future count, and
  // problem()/ready judge the state reached.
  const accept = (data: RegistryData, what: string, judgeFreshness = true) => {
    if (!data.seal || !registrySignatureValid(data, data.seal, opts.rootPublicKey)) {
      throw new Error(`${what} at serial ${data.serial} is not signed by the pinned root key`);
    }
    if (data.serial < highWater) {
      throw new Error(
        `${what} at serial ${data.serial} is older than serial ${highWater}, which this follower ` +
          "already accepted; refusing to go back (a root is replaying an old registry)",
      );
    }
    // A seal from this host's future is refused either way: taking it would leave the copy
    // unusable here, while the copy held may still be good.
    const period = judgeFreshness ? data.seal : { ...data.seal, expiresAtMs: Number.MAX_SAFE_INTEGER };
    const problem = sealProblem(data.serial, period, clock());
    if (problem) throw new Error(`refusing ${what}: ${problem}`);
  };

  if (opts.persistPath || opts.initialCopy) {
    const saved = opts.persistPath ? loadPersisted(opts.persistPath, log) : opts.initialCopy;
    if (saved?.seal && registrySignatureValid(saved, saved.seal, opts.rootPublicKey)) {
      // A genuine copy sets the high-water mark even when it has expired; it is used (and the
      // follower ready) only while its seal holds.
      highWater = saved.serial;
      verified = saved;
      view.replace(saved);
      const problem = sealProblem(saved.serial, saved.seal, clock());
      if (problem) {
        log.warn(
          { serial: saved.serial.toString(), path: opts.persistPath, problem },
          "saved registry copy not used",
        );
      } else {
        log.info(
          { serial: saved.serial.toString(), path: opts.persistPath },
          "registry copy loaded from disk",
        );
        markReady();
      }
    } else if (saved) {
      log.warn(
        { path: opts.persistPath, serial: saved.serial.toString() },
        "ignoring saved registry copy: it is not signed by the pinned root key",
      );
    }
  }

  const channels = new Map(opts.rootEndpoints.map((a) => [a, openChannel(a, opts.credentials)]));
  // Saving writes the whole copy, so changes arriving together (a replayed backlog) are
  // saved once, shortly after the last of them.
  let saveTimer: NodeJS.Timeout | undefined;
  const save = () => {
    if (!opts.persistPath || saveTimer) return;
    const path = opts.persistPath;
    saveTimer = setTimeout(() => {
      saveTimer = undefined;
      persist(path, verified, log);
    }, 200);
  };

  // Set when a change failed to verify: the next watch asks for the whole registry (since 0), as
  // the root would replay the same change to a watch from the serial held, and fail it again.
  let resync = false;
  const apply = (msg: WatchRegistryResponse, root: string): boolean => {
    const ev = msg.event;
    if (ev.case === "snapshot") {
      resync = false;
      const data = snapshotFromProto(ev.value);
      accept(data, "registry snapshot");
      view.replace(data);
      verified = data;
      highWater = data.serial;
      expiryLogged = false;
      log.info({ serial: view.serial.toString(), root }, "registry snapshot applied");
      opts.onSnapshot?.(view, data);
      save();
    } else if (ev.case === "change") {
      const change = changeFromProto(ev.value);
      if (change.serial !== view.serial + 1n) {
        // A gap means a lost message; restart the watch from what we hold.
        throw new Error(`registry change ${change.serial} does not follow ${view.serial}`);
      }
      try {
        view.apply(change);
        const now: RegistryData = { ...view.snapshot(), ...(change.seal ? { seal: change.seal } : {}) };
        accept(now, "registry change", false);
        verified = now;
      } catch (err) {
        view.replace(verified);
        resync = true;
        throw err;
      }
      highWater = change.serial;
      expiryLogged = false;
      log.info({ serial: change.serial.toString(), kind: change.kind }, "registry change applied");
      opts.onChange?.(change, view);
      save();
    } else if (ev.case === "caughtUp") {
      log.info({ serial: view.serial.toString(), root }, "registry in sync");
      if (verified.seal && !sealProblem(verified.serial, verified.seal, clock())) markReady();
      return true;
    }
    return false;
  };

  const follower = followLog<WatchRegistryResponse>({
    endpoints: () => opts.rootEndpoints,
    open: (root, signal) =>
      (channels.get(root) as Channel)
        .client(RootService)
        .watchRegistry({ sinceSerial: resync ? 0n : view.serial }, { signal }),
    apply,
    log,
    messages: {
      ended: "registry watch ended; reconnecting",
      failed: "registry watch failed; trying next root",
    },
    endpointField: "root",
    maxBackoffMs: opts.maxBackoffMs ?? 5_000,
  });

  return {
    view,
    ready,
    connected: () => follower.connected(),
    problem() {
      if (!verified.seal) return "no verified copy of the root registry yet";
      const problem = sealProblem(verified.serial, verified.seal, clock());
      if (problem && !expiryLogged) {
        expiryLogged = true;
        log.warn({ serial: verified.serial.toString(), problem }, "registry copy unusable");
      }
      return problem;
    },
    seal: () => verified.seal,
    close() {
      follower.close();
      if (saveTimer) {
        clearTimeout(saveTimer);
        saveTimer = undefined;
        if (opts.persistPath) persist(opts.persistPath, verified, log);
      }
      for (const c of channels.values()) c.close();
    },
  };
}

// The persisted form is the RegistrySnapshot message, the same bytes the root sends.
function persist(path: string, data: RegistryData, log: Logger): void {
  // A name of its own: several processes (a resolver's cluster workers) may save the same copy at once.
  const tmp = `${path}.${randomBytes(6).toString("hex")}.tmp`;
  try {
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    writeFileSync(
      tmp,
      toBinary(RegistrySnapshotSchema, create(RegistrySnapshotSchema, snapshotToProto(data))),
      { mode: 0o600 },
    );
    renameSync(tmp, path);
  } catch (err) {
    try {
      rmSync(tmp, { force: true });
    } catch {
      // Left for the operator; the warning below names the cause.
    }
    log.warn({ path, err: (err as Error).message }, "cannot save registry copy");
  }
}

function loadPersisted(path: string, log: Logger): RegistryData | undefined {
  const saved = readSaved(path);
  if (!(saved instanceof Error)) return saved;
  log.warn({ path, err: saved.message }, "saved registry copy is unreadable; ignoring it");
  return undefined;
}

/** The copy saved at `path`: undefined when there is no file, an Error when it does not decode. */
function readSaved(path: string): RegistryData | Error | undefined {
  let bytes: Buffer;
  try {
    bytes = readFileSync(path);
  } catch {
    return undefined;
  }
  try {
    return snapshotFromProto(fromBinary(RegistrySnapshotSchema, bytes));
  } catch (err) {
    return err as Error;
  }
}

/**
 * The registry copy a server saved at `path` (for `--check`): undefined when there is none,
 * otherwise the copy when the pinned root key's signature over it verifies, or why not.
 */
export function savedRegistryCopy(
  path: string,
  rootPublicKey: Uint8Array,
): { readonly data: RegistryData } | { readonly problem: string } | undefined {
  const data = readSaved(path);
  if (data instanceof Error)
    return { problem: `the saved registry copy ${path} is unreadable: ${data.message}` };
  if (!data) return undefined;
  if (!data.seal || !registrySignatureValid(data, data.seal, rootPublicKey)) {
    return { problem: `the saved registry copy ${path} does not carry a valid signature of the root key` };
  }
  return { data };
}
