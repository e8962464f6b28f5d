// Offline access to a DP's store, for operator tools that read or write it while no server runs
// on it: the benchmark's data generator fills stores with the schema the server opens, and
// `mimi store restore` checks a DP backup. No server imports it; check.ts lets only bench/ and
// the CLI do so.
import { openMappingStore, schemaDriftOf } from "./store/store.js";

export type { MappingRow } from "./store/rows.js";
export { type MappingStore, openMappingStore } from "./store/store.js";

/**
 * Why the DP store at `path` (a copy: it is upgraded to this build's schema first, as the DP
 * would at start) must not be restored, or undefined when it may: its schema must be exactly
 * this build's, so no trigger or view planted in a backup runs inside the DP. Its mappings need
 * no check here: each carries its MSP's and holder's signatures, which resolvers verify.
 */
export function dpBackupProblem(path: string): string | undefined {
  openMappingStore(path).close();
  const drift = schemaDriftOf(path);
  return drift.length > 0 ? `its schema is not this build's: ${drift.slice(0, 3).join("; ")}` : undefined;
}
