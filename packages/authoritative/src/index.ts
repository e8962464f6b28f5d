// Library surface of the authoritative for operator tools (the benchmark's data generator
// writes stores with the same schema the server opens). Servers never import this.
export { type EnrolledMsp, type MappingRow, type MappingStore, openMappingStore } from "./store.js";
