// The rows of generated mappings, signed as the demo MSPs and DPs sign them: shared by the
// generator's main thread and its signing workers (generate-worker.ts). A worker sends back only
// what signing made (records and signatures), packed in one buffer that is transferred, not
// copied; the writing thread derives everything else from the mapping's number. Cloning 5,000
// row objects cost the writing thread about 10 us a mapping, a fifth of what SQLite's insert
// costs it, and every microsecond it spends is one the signing threads do not get on a machine
// with as many threads as cores.
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

/** A job's signed records: per mapping, u16 record length, record, MSP and DP signatures. */
export interface SignedRows {
  job: RowsJob;
  packed: ArrayBuffer;
}

const SIGNATURE = 64;

/** The signing keys of the network whose PKI is in `pkiDir` (made there if missing). */
export function generatorKeys(pkiDir: string): (name: string) => SigningKey {
  const keys = ensureDevSigningKeys(pkiDir, SIGNING_KEYS);
  return (name) => {
    const k = keys.get(name);
    if (!k) throw new Error(`no signing key ${name}`);
    return k;
  };
}

/** The unsigned fields of generated CSI number i. */
function fieldsOf(i: number) {
  const msp = BENCH_MSPS[i % BENCH_MSPS.length] as string;
  return { csi: existingCsi(i), msp, ssi: `u${i}@${msp}`, dp: dpOf(i) };
}

/** Signs the job's mappings (two Ed25519 signatures each) into one buffer. */
export function signRows(key: (name: string) => SigningKey, job: RowsJob): SignedRows {
  const parts: Uint8Array[] = [];
  let size = 0;
  for (let k = job.from; k < job.to; k++) {
    const i = k * job.step;
    const { csi, msp, ssi, dp } = fieldsOf(i);
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
    const dpSig = signWith(key(`dp-${dp}`), SIGNING_CONTEXT.mappingDp, ...dpSignedParts(true, record));
    parts.push(record, mspSignature, dpSig);
    size += 2 + record.length + 2 * SIGNATURE;
  }
  const packed = new Uint8Array(size);
  let at = 0;
  for (let p = 0; p < parts.length; p += 3) {
    const record = parts[p] as Uint8Array;
    packed[at] = record.length >> 8;
    packed[at + 1] = record.length & 0xff;
    packed.set(record, at + 2);
    at += 2 + record.length;
    packed.set(parts[p + 1] as Uint8Array, at);
    packed.set(parts[p + 2] as Uint8Array, at + SIGNATURE);
    at += 2 * SIGNATURE;
  }
  return { job, packed: packed.buffer };
}

/** The store rows of signed job output, by DP; the arrays are views of the packed buffer. */
export function rowsOf({ job, packed }: SignedRows): Record<"eu" | "us", MappingRow[]> {
  const bytes = new Uint8Array(packed);
  const out: Record<"eu" | "us", MappingRow[]> = { eu: [], us: [] };
  const empty = new Uint8Array(0);
  let at = 0;
  for (let k = job.from; k < job.to; k++) {
    const { csi, msp, ssi, dp } = fieldsOf(k * job.step);
    const length = ((bytes[at] as number) << 8) | (bytes[at + 1] as number);
    const record = bytes.subarray(at + 2, at + 2 + length);
    at += 2 + length;
    out[dp].push({
      csi,
      mspId: msp,
      ssi,
      isDefault: true,
      precedence: job.createdAtMs,
      expiresAtMs: job.expiresAtMs,
      record,
      userSig: empty,
      mspSig: bytes.subarray(at, at + SIGNATURE),
      dpSig: bytes.subarray(at + SIGNATURE, at + 2 * SIGNATURE),
    });
    at += 2 * SIGNATURE;
  }
  if (at !== bytes.length)
    throw new Error(`signed rows of ${job.from}..${job.to}: ${bytes.length - at} bytes left over`);
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
