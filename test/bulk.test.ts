// The bulk crash-and-resume scenario at a size that proves the logic in every run of npm test
// (several batches on each side of the crash); test/slow/bulk-million.test.ts runs it at scale.
import { bulkCrashScenario } from "./bulk.js";

bulkCrashScenario(30_000, 2_000);
