// Offline access to a root's registry store, for operator tools that read a stopped store or a
// backup (`mimi store restore` checks a root backup's seal here). No server imports it;
// check.ts lets only the CLI do so.
import { registrySignatureValid } from "@mimi/core";
import { openRegistryStore } from "./store.js";

export { openRegistryStore, type RegistryStore } from "./store.js";

/**
 * Why the registry in the store at `path` is not one the root key signed, or undefined when it
 * is: the seal of its last change (or of the snapshot it holds) must verify over the registry
 * as stored. The seal's period is not judged (an old backup's seal has expired; the root signs
 * again at start). The store is opened as the root opens it, so it is upgraded to this build's
 * schema first: pass a copy, never a live store.
 */
export function registrySealProblem(path: string, rootPublicKey: Uint8Array): string | undefined {
  const store = openRegistryStore(path);
  try {
    const data = store.load();
    const seal = store.seal();
    if (!seal) {
      return (
        `it holds no root seal for serial ${data.serial} (a change the root had not signed yet, ` +
        "or a store restored and not started since)"
      );
    }
    if (!registrySignatureValid(data, seal, rootPublicKey)) {
      return (
        `it does not verify with the root's public key at serial ${data.serial}: it was changed ` +
        "after the root signed it, or it belongs to another root"
      );
    }
    return undefined;
  } finally {
    store.close();
  }
}
