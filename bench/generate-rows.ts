// The rows of generated mappings, signed as the demo MSPs and DPs sign them: shared by the
// generator's main thread and its signing workers (generate-worker.ts).
import type { MappingRow } from "@mimi/authoritative/offline";

import { bulkRecord, dpSignedParts, SIGNING_CONTEXT, type SigningKey, signWith } from "@mimi/core";
import { ensureDevSigningKeys, SIGNING_KEYS } from "@mimi/devnet";
import { BENCH_MSPS, dpOf, existingCsi } from "./keys.js";

/** What to sign: mapping numbers [from, to), CSI index k * step, with these times. */
export interface RowsJob {
  from: number;
  to: number;
  step: number;
  createdAtMs: number;
  expiresAtMs: number;
}

/** The signing keys of the network whose PKI is in `pkiDir` (made there if missing). */
export function generatorKeys(pkiDir: string): (name: string) => SigningKey {
  const keys = ensureDevSigningKeys(pkiDir, SIGNING_KEYS);
  return (name) => {
    const k = keys.get(name);
    if (!k) throw new Error(`no signing key ${name}`);
    return k;
  };
}

/** Signs the job's mappings (two Ed25519 signatures each), by DP. */
export function signRows(key: (name: string) => SigningKey, job: RowsJob): Record<"eu" | "us", MappingRow[]> {
  const out: Record<"eu" | "us", MappingRow[]> = { eu: [], us: [] };
  for (let k = job.from; k < job.to; k++) {
    const i = k * job.step;
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
        createdAtMs: job.createdAtMs,
        dpId: dp,
        expiresAtMs: job.expiresAtMs,
      },
      key(`msp-${msp.split(".")[0]}`),
    );
    out[dp].push({
      csi,
      mspId: msp,
      ssi,
      isDefault: true,
      precedence: job.createdAtMs,
      expiresAtMs: job.expiresAtMs,
      record,
      userSig: new Uint8Array(0),
      mspSig: mspSignature,
      dpSig: signWith(key(`dp-${dp}`), SIGNING_CONTEXT.mappingDp, ...dpSignedParts(true, record)),
    });
  }
  return out;
}

/** Ed25519 signatures of a 150-byte record this thread makes in about `ms` milliseconds. */
export function signingRate(key: SigningKey, ms: number): number {
  const data = new Uint8Array(150);
  let n = 0;
  const end = performance.now() + ms;
  const started = performance.now();
  while (performance.now() < end) {
    for (let j = 0; j < 50; j++) signWith(key, SIGNING_CONTEXT.mappingDp, data);
    n += 50;
  }
  return n / ((performance.now() - started) / 1000);
}
