// Change events seen lately, numbered in arrival order: an answer whose lookup started before an
// event for its CSI and arrived after it may predate the change, so the service asks again
// rather than caching it; and a lookup for a CSI with a recent event is sent first to the
// endpoint that delivered the event (endpoint-picker.ts), which holds the change. Events are
// forgotten after a minute, longer than any lookup may take
// (the attempt timeout times a DP's endpoints); the queue that forgets them is compacted as it
// drains, so memory follows the events of the last minute.

import { changeHashHex } from "@mimi/core";

/** The key of the events of DP `dpId` for CSI `uri`, whose change hashes are made under `hashKey`. */
export function eventKey(dpId: string, hashKey: Uint8Array, uri: string): string {
  return `${dpId}/${changeHashHex(hashKey, uri)}`;
}

/** How long a change event is remembered. */
const KEEP_MS = 60_000;

interface Event {
  atMs: number;
  key: string;
  n: number;
  endpoint: string | undefined;
}

export class RecentChanges {
  /** Events so far: a lookup notes this when it starts. */
  count = 0;
  private readonly last = new Map<string, Event>();
  private readonly queue: Event[] = [];
  private head = 0;

  constructor(
    private readonly now: () => number,
    private readonly keepMs = KEEP_MS,
  ) {}

  /** An event for `key` (a DP's id and a change hash) arrived, from `endpoint` of the DP. */
  note(key: string, endpoint?: string): void {
    this.count++;
    const e = { atMs: this.now(), key, n: this.count, endpoint };
    this.last.set(key, e);
    this.queue.push(e);
    this.forget();
  }

  /** Whether an event for `key` arrived after event number `since`. */
  after(key: string, since: number): boolean {
    return (this.last.get(key)?.n ?? 0) > since;
  }

  /**
   * The endpoint of DP `dpId` that delivered the latest event for CSI `uri` still remembered:
   * where to ask for it first (it holds the change).
   */
  deliveredBy(dpId: string, hashKey: Uint8Array | undefined, uri: string): string | undefined {
    if (this.last.size === 0 || hashKey === undefined) return undefined;
    return this.last.get(eventKey(dpId, hashKey, uri))?.endpoint;
  }

  private forget(): void {
    const cutoff = this.now() - this.keepMs;
    while (this.head < this.queue.length && (this.queue[this.head] as Event).atMs < cutoff) {
      const e = this.queue[this.head++] as Event;
      if (this.last.get(e.key) === e) this.last.delete(e.key);
    }
    if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue.splice(0, this.head);
      this.head = 0;
    }
  }
}
