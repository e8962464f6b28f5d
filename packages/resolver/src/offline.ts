// The resolver's answer cache for tools that measure it outside a server: the benchmark's memory
// probe (bench/cache-memory.ts) fills it with answers as a DP sends them and reads the heap each
// entry holds. No server imports it; check.ts lets only bench/ do so.
export { createTtlCache, type TtlCache } from "./cache.js";
export { answerIndex, CachedAnswer, outcomeFromAnswer } from "./cached-answer.js";
