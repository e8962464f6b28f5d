// Offline access to a DP's store, for operator tools that write it while no server runs on it
// (the benchmark's data generator fills stores with the schema the server opens). No server
// imports it; check.ts lets only bench/ do so.
export type { MappingRow } from "./store/rows.js";
export { type MappingStore, openMappingStore } from "./store/store.js";
