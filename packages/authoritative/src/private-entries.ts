// What the private-lookup table (private-table.ts) needs of its entries beyond sealing them:
// room in a bucket (larger buckets up to SPLIT_BUCKET_BYTES, then twice as many: positions do
// not move, so a split rewrites nothing), and what makes an entry changed.
import { createHash } from "node:crypto";
import { create, toBinary } from "@bufbuild/protobuf";
import {
  bucketBytesFor,
  bucketOf,
  type Logger,
  MAX_BUCKET_BITS,
  MAX_BUCKET_BYTES,
  pb,
  positionsOf,
  SPLIT_BUCKET_BYTES,
} from "@mimi/core";
import type { MappingStore } from "./store/store.js";

/** A table's layout as it grows. */
export interface GrowingLayout {
  bucketBits: number;
  bucketBytes: number;
}

/**
 * Grows `layout` until the bucket of `position` holds `delta` more bytes. Throws when the bucket
 * cannot grow further (what it grew before stays).
 */
export function growToFit(
  store: Pick<MappingStore, "privateBucket">,
  epoch: number,
  layout: GrowingLayout,
  position: number,
  delta: number,
  log: Logger,
): void {
  for (;;) {
    const bits = layout.bucketBits;
    const [first, last] = positionsOf(bucketOf(position, bits), bits);
    const need = store.privateBucket(epoch, first, last).reduce((n, e) => n + e.length, 0) + delta + 2;
    if (need <= layout.bucketBytes) return;
    if (bucketBytesFor(need) <= SPLIT_BUCKET_BYTES || bits >= MAX_BUCKET_BITS) {
      if (need > MAX_BUCKET_BYTES) throw new Error(`bucket of position ${position} is full`);
      layout.bucketBytes = bucketBytesFor(need);
      log.info({ bucketBytes: layout.bucketBytes }, "private-lookup buckets grown");
    } else {
      layout.bucketBits = bits + 1;
      log.info({ buckets: 2 ** layout.bucketBits }, "private-lookup buckets split");
    }
  }
}

/** The answer without its seal's times: what must change for the entry to count as changed. */
export function contentDigest(a: pb.Answer): Uint8Array {
  const h = createHash("sha256");
  h.update(toBinary(pb.AnswerSchema, create(pb.AnswerSchema, { ...a, seal: undefined, ttlSeconds: 0 })));
  return new Uint8Array(h.digest());
}
