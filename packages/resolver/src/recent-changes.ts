// Change events seen lately, numbered in arrival order: an answer whose lookup started before an
// event for its CSI and arrived after it may predate the change, so the service asks again
// rather than caching it. Events are forgotten after a minute, longer than any lookup may take
// (the attempt timeout times a DP's endpoints); the queue that forgets them is compacted as it
// drains, so memory follows the events of the last minute.

/** How long a change event is remembered. */
const KEEP_MS = 60_000;

export class RecentChanges {
  /** Events so far: a lookup notes this when it starts. */
  count = 0;
  private readonly last = new Map<string, number>();
  private readonly queue: { atMs: number; key: string; n: number }[] = [];
  private head = 0;

  constructor(
    private readonly now: () => number,
    private readonly keepMs = KEEP_MS,
  ) {}

  /** An event for `key` (a DP's id and a change hash) arrived. */
  note(key: string): void {
    this.count++;
    this.last.set(key, this.count);
    this.queue.push({ atMs: this.now(), key, n: this.count });
    this.forget();
  }

  /** Whether an event for `key` arrived after event number `since`. */
  after(key: string, since: number): boolean {
    return (this.last.get(key) ?? 0) > since;
  }

  private forget(): void {
    const cutoff = this.now() - this.keepMs;
    while (this.head < this.queue.length && (this.queue[this.head] as { atMs: number }).atMs < cutoff) {
      const e = this.queue[this.head++] as { key: string; n: number };
      if (this.last.get(e.key) === e.n) this.last.delete(e.key);
    }
    if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue.splice(0, this.head);
      this.head = 0;
    }
  }
}
