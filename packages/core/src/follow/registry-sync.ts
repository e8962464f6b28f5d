// Keeps a local copy of the root registry (H1, like RFC 8806's local root copy): follows
// RootService.WatchRegistry over several root endpoints (followLog: failover and backoff),
// verifies every snapshot and change against the pinned root key, and persists the copy so
// a restart while every root is down still resolves.
import { mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import type * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";
import { type RegistryChange, type RegistryData, RegistryView } from "../domain/registry.js";
import { registrySignatureValid } from "../domain/verify.js";
import { RegistrySnapshotSchema } from "../gen/generated/mimi/discovery/v1/common_pb.js";
import { RootService, type WatchRegistryResponse } from "../gen/generated/mimi/discovery/v1/root_pb.js";
import { type Channel, openChannel } from "../wire/channel.js";
import { changeFromProto, snapshotFromProto, snapshotToProto } from "../wire/convert.js";
import { followLog } from "./follow-log.js";

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

  // The last copy whose signature verified; a change that fails verification rolls back to it.
  let verified: RegistryData = view.snapshot();
  const accept = (data: RegistryData, what: string) => {
    if (!data.signature || !registrySignatureValid(data, data.signature, opts.rootPublicKey)) {
      throw new Error(`${what} at serial ${data.serial} is not signed by the pinned root key`);
    }
  };

  if (opts.persistPath || opts.initialCopy) {
    const saved = opts.persistPath ? loadPersisted(opts.persistPath, log) : opts.initialCopy;
    let trusted = false;
    try {
      if (saved) accept(saved, "saved registry copy");
      trusted = saved !== undefined;
    } catch (err) {
      log.warn({ path: opts.persistPath, err: (err as Error).message }, "ignoring saved registry copy");
    }
    if (saved && trusted) {
      verified = saved;
      view.replace(saved);
      log.info({ serial: saved.serial.toString(), path: opts.persistPath }, "registry copy loaded from disk");
      markReady();
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

  const apply = (msg: WatchRegistryResponse, root: string): boolean => {
    const ev = msg.event;
    if (ev.case === "snapshot") {
      const data = snapshotFromProto(ev.value);
      accept(data, "registry snapshot");
      view.replace(data);
      verified = data;
      log.info({ serial: view.serial.toString(), root }, "registry snapshot applied");
      opts.onSnapshot?.(view, data);
      save();
    } else if (ev.case === "change") {
      const change = changeFromProto(ev.value);
      if (change.serial !== view.serial + 1n) {
        // A gap means a lost message; restart the watch from what we hold.
        throw new Error(`registry change ${change.serial} does not follow ${view.serial}`);
      }
      view.apply(change);
      const now: RegistryData = { ...view.snapshot(), signature: change.signature };
      try {
        accept(now, "registry change");
      } catch (err) {
        view.replace(verified);
        throw err;
      }
      verified = now;
      log.info({ serial: change.serial.toString(), kind: change.kind }, "registry change applied");
      opts.onChange?.(change, view);
      save();
    } else if (ev.case === "caughtUp") {
      log.info({ serial: view.serial.toString(), root }, "registry in sync");
      markReady();
      return true;
    }
    return false;
  };

  const follower = followLog<WatchRegistryResponse>({
    endpoints: () => opts.rootEndpoints,
    open: (root, signal) =>
      (channels.get(root) as Channel)
        .client(RootService)
        .watchRegistry({ sinceSerial: view.serial }, { signal }),
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
  try {
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(
      `${path}.tmp`,
      toBinary(RegistrySnapshotSchema, create(RegistrySnapshotSchema, snapshotToProto(data))),
    );
    renameSync(`${path}.tmp`, path);
  } catch (err) {
    log.warn({ path, err: (err as Error).message }, "cannot save registry copy");
  }
}

function loadPersisted(path: string, log: Logger): RegistryData | undefined {
  let bytes: Buffer;
  try {
    bytes = readFileSync(path);
  } catch {
    return undefined;
  }
  try {
    return snapshotFromProto(fromBinary(RegistrySnapshotSchema, bytes));
  } catch (err) {
    log.warn({ path, err: (err as Error).message }, "saved registry copy is unreadable; ignoring it");
    return undefined;
  }
}
