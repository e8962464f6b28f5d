// Bulk registration at scale (G4, P3): a million signed mappings, the DP killed mid-import and
// restarted, the import resumed without loss. Several minutes on 2 cores: npm run test:slow.
import { bulkCrashScenario } from "../bulk.js";

bulkCrashScenario(1_000_000, 5_000);
