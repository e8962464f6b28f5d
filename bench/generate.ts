// Writes N generated mappings into the two DPs' SQLite stores, through the authoritative's
// own store module so the schema is the server's. Results are kept under the bench folder
// and reused while the mapping count matches.
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type MappingRow, openMappingStore } from "@mimi/authoritative/offline";
import { bulkRecord, dpSignedParts, SIGNING_CONTEXT, signWith } from "@mimi/core";
import { ensureDevSigningKeys, SIGNING_KEYS } from "@mimi/devnet";
import { BENCH_MSPS, dpOf, existingCsi } from "./keys.js";

const FORMAT = 2; // bump when keys.ts or the generated content changes

/**
 * Ensures `dir`/dp-eu and dp-us hold the N generated mappings (indexes 0..N-1, alternating
 * between the DPs), or with `euOnly` N mappings all at eu (the even indexes 0..2N-2).
 * Returns the seconds spent, 0 when the folder already held them.
 */
export function ensureGenerated(
  dir: string,
  n: number,
  log: (s: string) => void,
  { euOnly = false } = {},
): number {
  const marker = join(dir, "generated.json");
  if (existsSync(marker)) {
    const m = JSON.parse(readFileSync(marker, "utf8")) as { n: number; format: number; euOnly?: boolean };
    if (m.n === n && m.format === FORMAT && (m.euOnly ?? false) === euOnly) return 0;
  }
  const started = performance.now();
  for (const dp of ["eu", "us"] as const) {
    const folder = join(dir, `dp-${dp}`);
    rmSync(folder, { recursive: true, force: true });
    mkdirSync(folder, { recursive: true, mode: 0o700 });
  }
  const stores = {
    eu: openMappingStore(join(dir, "dp-eu", "mappings.sqlite")),
    us: openMappingStore(join(dir, "dp-us", "mappings.sqlite")),
  };
  // Records are signed as the demo MSPs and DPs sign them, with the keys of the network that
  // will serve them (the PKI lives in `dir`), so the resolver verifies them like any others.
  const keys = ensureDevSigningKeys(join(dir, "pki"), SIGNING_KEYS);
  const key = (name: string) => {
    const k = keys.get(name);
    if (!k) throw new Error(`no signing key ${name}`);
    return k;
  };
  const BATCH = 100_000;
  const createdAtMs = Date.now();
  const expiresAtMs = createdAtMs + 360 * 86_400_000;
  const step = euOnly ? 2 : 1;
  for (let start = 0; start < n; start += BATCH) {
    const batch: Record<"eu" | "us", MappingRow[]> = { eu: [], us: [] };
    for (let k = start; k < Math.min(n, start + BATCH); k++) {
      const i = k * step;
      const msp = BENCH_MSPS[i % BENCH_MSPS.length] as string;
      const dp = dpOf(i);
      const csi = existingCsi(i);
      const ssi = `u${i}@${msp}`;
      const { record, mspSignature } = bulkRecord(
        {
          csi,
          mspId: msp,
          ssi,
          defaultRequested: true,
          tags: i % 4 === 0 ? ["Business"] : [],
          createdAtMs,
          dpId: dp,
          expiresAtMs,
        },
        key(`msp-${msp.split(".")[0]}`),
      );
      batch[dp].push({
        csi,
        mspId: msp,
        ssi,
        isDefault: true,
        precedence: createdAtMs,
        expiresAtMs,
        record,
        userSig: new Uint8Array(0),
        mspSig: mspSignature,
        dpSig: signWith(key(`dp-${dp}`), SIGNING_CONTEXT.mappingDp, ...dpSignedParts(true, record)),
      });
    }
    for (const dp of ["eu", "us"] as const) {
      const store = stores[dp];
      store.transaction(() => {
        for (const row of batch[dp]) store.putMapping(row);
      });
    }
    if ((start / BATCH) % 10 === 9) log(`generated ${start + BATCH} of ${n} mappings`);
  }
  stores.eu.close();
  stores.us.close();
  writeFileSync(marker, JSON.stringify({ n, format: FORMAT, euOnly }));
  return (performance.now() - started) / 1000;
}
