// What the private-lookup table (private-table.ts) signs, kept for reuse: signing is the costly
// part of serving a bucket, and a bucket is the same for every reader. A bucket is reused while
// its content is unchanged (the table forgets a bucket whose entries it rewrote) and for half
// of its validity; all kept buckets together are bounded in bytes, oldest out first. The
// parameters are signed once per layout and minute (their call is unmetered).
import {
  type OprfKeys,
  PRIVATE_SUITE,
  type SigningKey,
  signBucket,
  signPrivateParams,
  type TableLayout,
} from "@mimi/core";

/** Bytes of signed buckets kept. */
const SIGNED_CACHE_BYTES = 64 * 1024 * 1024;
/** How long signed parameters are handed out again before they are signed anew. */
const PARAMS_RESIGN_MS = 60_000;

/** A bucket as served: its padded entries and the DP's signed statement over them. */
export interface SignedBucket {
  readonly data: Uint8Array;
  readonly statement: Uint8Array;
  readonly signature: Uint8Array;
}

/** What a bucket's statement names besides its content and times. */
export interface BucketIdentity {
  readonly dpId: string;
  readonly epoch: number;
  readonly keyId: Uint8Array;
  readonly bucketBits: number;
  readonly bucket: number;
}

/** The kept buckets of one table. */
export interface SignedBuckets {
  /** Bucket `bucket` as kept, while it is good and signed for no longer than `sealMs` from `now`. */
  kept(bucket: number, sealMs: number, now: number): SignedBucket | undefined;
  /** Bucket `id.bucket` holding `data`, signed for `sealMs` from `now`, and kept. */
  sign(id: BucketIdentity, data: Uint8Array, sealMs: number, now: number): SignedBucket;
  /** Forgets a bucket whose content changed. */
  forget(bucket: number): void;
  /** Forgets them all (the layout changed). */
  clear(): void;
}

export function createSignedBuckets(signingKey: SigningKey): SignedBuckets {
  const kept = new Map<number, SignedBucket & { until: number; expiresAtMs: number }>();
  let bytes = 0;
  const forget = (bucket: number) => {
    const s = kept.get(bucket);
    if (s) bytes -= s.data.length;
    kept.delete(bucket);
  };
  return {
    kept(bucket, sealMs, now) {
      const k = kept.get(bucket);
      // Not one signed for longer than asked now (an endpoint that went out of touch since).
      return k && k.until > now && k.expiresAtMs <= now + sealMs ? k : undefined;
    },
    sign(id, data, sealMs, now) {
      forget(id.bucket);
      const expiresAtMs = now + sealMs;
      const s = signBucket({ ...id, signedAtMs: now, expiresAtMs }, data, signingKey);
      const made = { until: now + sealMs / 2, expiresAtMs, data, ...s };
      for (const [b] of kept) {
        if (bytes + data.length <= SIGNED_CACHE_BYTES) break;
        forget(b);
      }
      kept.set(id.bucket, made);
      bytes += data.length;
      return made;
    },
    forget,
    clear() {
      kept.clear();
      bytes = 0;
    },
  };
}

/** The table's signed parameters (GetPrivateParameters) for its layout now, signed anew when it changed or a minute passed. */
export function createSignedParams(
  dpId: string,
  keys: OprfKeys,
  signingKey: SigningKey,
): (layout: TableLayout, now: number) => { statement: Uint8Array; signature: Uint8Array } {
  let kept:
    | { layout: string; atMs: number; signed: { statement: Uint8Array; signature: Uint8Array } }
    | undefined;
  return (layout, now) => {
    const key = `${layout.epoch}/${layout.bucketBits}/${layout.bucketBytes}`;
    if (!kept || kept.layout !== key || now - kept.atMs >= PARAMS_RESIGN_MS) {
      const p = {
        dpId,
        suite: PRIVATE_SUITE,
        epoch: layout.epoch,
        publicKey: keys.publicKey,
        bucketBits: layout.bucketBits,
        bucketBytes: layout.bucketBytes,
        signedAtMs: now,
      };
      kept = { layout: key, atMs: now, signed: signPrivateParams(p, signingKey) };
    }
    return kept.signed;
  };
}
