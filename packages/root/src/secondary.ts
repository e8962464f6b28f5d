// A read-only root (H1: root failure must not stop resolution): keeps the registry it follows
// from a primary in its own store exactly as received, with the primary's serials and
// signatures, and serves it through the same operations as the primary. It holds no signing key.
import {
  type Clock,
  DiscoveryError,
  type Logger,
  type RegistryChange,
  type RegistryData,
  type RegistrySeal,
  RegistryView,
  registrySignatureValid,
} from "@mimi/core";
import { frozenSnapshot, type RootService, referIn } from "./service.js";
import type { RegistryStore } from "./store.js";

/** The actor recorded with received changes; the primary's audit log keeps the admin's identity. */
const RECEIVED_ACTOR = "primary";

/** Options of a secondary root. */
export interface SecondaryOptions {
  store: RegistryStore;
  clock: Clock;
  log: Logger;
  /** The pinned root key; the stored copy must verify with it. */
  rootPublicKey: Uint8Array;
  /** Where edits go instead; named in every refusal. */
  primaryEndpoints: readonly string[];
}

/** A root that follows another root; feed it what registry-sync verified. */
export interface SecondaryService extends RootService {
  /** The verified copy held, with its signature; undefined until there is one. */
  copy(): RegistryData | undefined;
  /** Replaces the copy with a verified snapshot. */
  snapshotReceived(data: RegistryData): void;
  /** Applies a verified change; `current` reads the follower's whole registry after it. */
  changeReceived(change: RegistryChange, current: () => RegistryData): void;
}

/**
 * Opens a secondary over its store. A stored copy that does not verify with the pinned key
 * (altered on disk) is discarded, so the secondary refetches rather than serve it.
 */
export function createSecondaryService(opts: SecondaryOptions): SecondaryService {
  const { store, clock, rootPublicKey, primaryEndpoints } = opts;
  const log = opts.log.child({ component: "secondary" });
  const view = new RegistryView();
  // The primary's signature over `view`; undefined while no verified copy is held, during
  // which the read operations answer UNAVAILABLE so that watchers try another root.
  let seal: RegistrySeal | undefined;
  // The snapshot of (view, seal), made on first use after each change.
  let snapshot: RegistryData | undefined;
  const listeners = new Set<() => void>();
  const primaries = primaryEndpoints.join(", ");

  if (!store.isEmpty()) {
    let stored: RegistryData | undefined;
    let storedSeal: RegistrySeal | undefined;
    try {
      stored = store.load();
      storedSeal = store.seal();
    } catch (err) {
      log.warn({ err: (err as Error).message }, "stored registry copy is unreadable");
    }
    if (stored && storedSeal && registrySignatureValid(stored, storedSeal, rootPublicKey)) {
      view.replace(stored);
      seal = storedSeal;
      log.info({ serial: stored.serial.toString() }, "registry copy loaded");
    } else {
      // The backlog goes too: it led to a state nobody signed, so none of it can be trusted.
      log.warn(
        { serial: stored?.serial.toString() },
        "stored registry copy does not verify with the pinned root key; discarding it",
      );
      store.clear();
    }
  }

  const notify = () => {
    snapshot = undefined;
    for (const l of listeners) l();
  };
  const readOnly = () =>
    new DiscoveryError(
      "failed_precondition",
      `this root server is a read-only secondary; send registry edits to the primary at ${primaries}`,
    );
  const requireCopy = () => {
    if (!seal) {
      throw new DiscoveryError(
        "not_ready",
        `this secondary root holds no verified registry copy yet (following ${primaries})`,
      );
    }
    return seal;
  };

  return {
    copy: () => (seal ? { ...view.snapshot(), seal } : undefined),
    snapshotReceived(data) {
      if (!data.seal) return; // registry-sync passes only verified, hence signed, data
      store.replace({ ...data, seal: data.seal });
      view.replace(data);
      seal = data.seal;
      notify();
    },
    changeReceived(change, current) {
      if (!change.seal) return;
      if (seal && change.serial === view.serial + 1n) {
        store.append({ ...change, seal: change.seal }, clock(), RECEIVED_ACTOR);
        view.apply(change);
      } else {
        // The store missed a change (a failed write): the follower's whole registry is verified
        // under this same signature, so it replaces ours, and watchers behind it get a snapshot.
        log.warn(
          { serial: change.serial.toString(), held: view.serial.toString() },
          "registry change does not follow the stored copy; storing the whole registry",
        );
        const whole = current();
        store.replace({ ...whole, seal: change.seal });
        view.replace(whole);
      }
      seal = change.seal;
      notify();
    },
    snapshot: () => {
      const held = requireCopy();
      snapshot ??= frozenSnapshot({ ...view.snapshot(), seal: held });
      return snapshot;
    },
    serial: () => view.serial,
    changesSince: (since, limit) => store.changesSince(since, limit),
    backlogStart: () => store.baseSerial(),
    checkWritable: () => {
      throw readOnly();
    },
    subscribe(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    refer(csi) {
      requireCopy();
      return referIn(view, csi);
    },
    createDelegation: () => {
      throw readOnly();
    },
    updateDelegation: () => {
      throw readOnly();
    },
    deleteDelegation: () => {
      throw readOnly();
    },
    listDelegations: () => {
      const s = view.snapshot();
      return { delegations: s.delegations, serial: s.serial };
    },
    putDp: () => {
      throw readOnly();
    },
    deleteDp: () => {
      throw readOnly();
    },
    putMsp: () => {
      throw readOnly();
    },
    // The received changes carry no actor or time, so the audit log lives at the primary only.
    audit: () => {
      throw readOnly();
    },
    // Only the primary signs; a secondary serves the primary's seals as received.
    refreshIfDue: () => undefined,
  };
}
