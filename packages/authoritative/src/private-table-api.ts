// What the DP's private-lookup table (private-table.ts) offers and takes: its interface, its
// options, the keys of an epoch, and where its progress is kept.
import type { Logger, LookupOutcome, OprfKeys, SigningKey, TableLayout } from "@mimi/core";
import type { ChangeLog } from "./change-log.js";
import type { OprfPool } from "./oprf-pool.js";
import type { SignedBucket } from "./private-signing.js";
import type { MappingStore } from "./store/store.js";

/** An epoch's OPRF keys as the DP keeps them (private-keys.ts). */
export interface EpochKeys extends OprfKeys {
  readonly epoch: number;
}

/** The store_meta key of the table of `epoch`'s progress. */
export const tableMetaKey = (epoch: number) => `private_table_${epoch}`;

/** The table a DP serves. */
export interface PrivateTable {
  readonly epoch: number;
  /** Why lookups cannot be served yet (the first build), or undefined when they can. */
  notReady(): string | undefined;
  /** The signed parameters (GetPrivateParameters). */
  parameters(): { statement: Uint8Array; signature: Uint8Array };
  /** Evaluates blinded elements of `epoch` (the caller's budgets are the server's to charge). */
  evaluate(
    epoch: number,
    blinded: readonly Uint8Array[],
    signal?: AbortSignal,
  ): Promise<{ evaluated: Uint8Array[]; proof: Uint8Array }>;
  /** Bucket `bucket` of `epoch`, signed now. */
  bucket(epoch: number, bucket: number): SignedBucket;
  /** A wait (bounded) until the table has applied what the store holds; undefined when no wait is needed. */
  caughtUp(): Promise<void> | undefined;
  /** The change log the table follows and the last of its events applied. */
  applied(): { logId: string; seq: number };
  /** Deletes every entry and builds the table again (the store under it was replaced by a copy). */
  restart(why: string): void;
  /** Renews, in pages on later turns, the entries whose seal is past half its life (the sweep calls it). */
  renew(): void;
  /** Reads every CSI again while serving (the registry changed what this DP serves or how). */
  rescan(why: string): void;
  stats(): { built: boolean; scanning: boolean; layout: TableLayout };
  close(): void;
}

/** Options of the table. */
export interface PrivateTableOptions {
  dpId: string;
  store: MappingStore;
  changeLog: Pick<ChangeLog, "subscribe" | "since">;
  keys: EpochKeys;
  signingKey: SigningKey;
  /** The answer a plain lookup of `csi` gives now, its seal lasting `sealMs`; undefined for a CSI this DP does not serve. */
  answer(csi: string, sealMs: number): LookupOutcome | undefined;
  mspIndex(mspId: string): number | undefined;
  /** Why answers cannot be made now (no usable registry copy); the table waits meanwhile. */
  notReady?: () => string | undefined;
  /** Whether the table logs its own change events (true when not given; a secondary's log is its primary's). */
  logsChanges?: () => boolean;
  /** The longest TTL answers may carry now (a secondary out of touch): buckets are signed no longer. */
  ttlCapSeconds?: () => number | undefined;
  entrySealMs: number;
  bucketSealMs: number;
  /** Where the OPRF arithmetic runs (worker threads, or inline). */
  pool: OprfPool;
  now: () => number;
  log: Logger;
  /** Waits before a build tries again (a second by default); tests pass one that waits a turn. */
  pause?: (ms: number) => Promise<void>;
}
