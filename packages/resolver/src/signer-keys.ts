// The signing keys of DPs and MSPs as they were when cached answers were verified: after a
// registry change, the DPs and MSPs whose key changed or vanished are named, so the answers
// they signed can go (they would not verify any more).
import type { RegistryView } from "@mimi/core";

/** Watches the registry's signing keys. */
export interface SignerKeys {
  /** The DPs and MSPs whose key changed since the last call (or the start); both empty when none did. */
  changed(): { dps: Set<string>; msps: Set<string> };
}

export function watchSignerKeys(registry: Pick<RegistryView, "allDps" | "allMsps">): SignerKeys {
  const now = () => {
    const keys = new Map<string, string>();
    for (const dp of registry.allDps())
      keys.set(`dp:${dp.id}`, Buffer.from(dp.signingPublicKey).toString("hex"));
    for (const m of registry.allMsps())
      keys.set(`msp:${m.id}`, Buffer.from(m.signingPublicKey).toString("hex"));
    return keys;
  };
  let held = now();
  return {
    changed() {
      const next = now();
      const dps = new Set<string>();
      const msps = new Set<string>();
      for (const k of new Set([...held.keys(), ...next.keys()])) {
        if (held.get(k) === next.get(k)) continue;
        (k.startsWith("dp:") ? dps : msps).add(k.slice(k.indexOf(":") + 1));
      }
      held = next;
      return { dps, msps };
    },
  };
}
