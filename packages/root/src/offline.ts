// Offline access to a root's registry store, for operator tools that read a stopped store or a
// backup (`mimi store restore` checks a root backup here). No server imports it; check.ts lets
// only the CLI do so.
import { registrySignatureValid } from "@mimi/core";
import { openRegistryStore, schemaDriftOf } from "./store.js";

export { openRegistryStore, type RegistryStore } from "./store.js";

/**
 * Why the root store at `path` (a copy: it is upgraded to this build's schema first, as the
 * root would at start) must not be restored, or undefined when it may: its schema must be
 * exactly this build's (no planted trigger or view), and the seal of its last change (or of the
 * snapshot it holds) must be the root key's signature over the registry as stored. The seal's
 * period is not judged: an old backup's seal has expired, and the root signs again at start.
 * Returns the serial and signing time the seal vouches for, for the operator to confirm.
 */
export function rootBackupProblem(
  path: string,
  rootPublicKey: Uint8Array,
): { problem: string } | { serial: bigint; signedAtMs: number } {
  const store = openRegistryStore(path);
  let data: ReturnType<typeof store.load>;
  let seal: ReturnType<typeof store.seal>;
  let nextIndex: number;
  try {
    data = store.load();
    seal = store.seal();
    nextIndex = store.nextMspIndex();
  } finally {
    store.close();
  }
  const drift = schemaDriftOf(path);
  if (drift.length > 0) return { problem: `its schema is not this build's: ${drift.slice(0, 3).join("; ")}` };
  if (!seal) {
    return {
      problem:
        `it holds no root seal for serial ${data.serial} (a change the root had not signed yet, ` +
        "or a store restored and not started since)",
    };
  }
  if (!registrySignatureValid(data, seal, rootPublicKey)) {
    return {
      problem:
        `it does not verify with the root's public key at serial ${data.serial}: it was changed ` +
        "after the root signed it, or it belongs to another root",
    };
  }
  // Not under the seal, so checked here: an index below one in use would be given twice.
  if (data.msps.some((m) => m.index >= nextIndex)) {
    return { problem: "its next MSP index is one an MSP already holds" };
  }
  return { serial: data.serial, signedAtMs: seal.signedAtMs };
}
