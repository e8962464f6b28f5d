// A queue read as an async iterable by one consumer, e.g. the request side of a client
// stream fed as work arrives: push() from anywhere, the stream's pump drains it in order;
// close() ends the iteration after what was pushed.

/** An unbounded single-consumer queue; callers bound it by what they push. */
export class AsyncQueue<T> {
  private items: T[] = [];
  private head = 0;
  private wake: (() => void) | undefined;
  private closed = false;

  /** Appends an item; ignored once the queue is closed. */
  push(item: T): void {
    if (this.closed) return;
    this.items.push(item);
    this.wake?.();
  }

  /** Ends the iteration once the items already pushed are taken. */
  close(): void {
    this.closed = true;
    this.wake?.();
  }

  /** Items pushed and not yet taken. */
  get length(): number {
    return this.items.length - this.head;
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<T> {
    for (;;) {
      if (this.head < this.items.length) {
        const item = this.items[this.head] as T;
        // The slot lets go of what it held: a queue that stays open (a resolver's stream to a
        // DP) would otherwise keep up to a compaction's worth of items it has handed out.
        this.items[this.head++] = undefined as T;
        // Compact now and then instead of shift() per item (O(n) each); drained, start afresh.
        if (this.head === this.items.length) {
          this.items = [];
          this.head = 0;
        } else if (this.head > 1024 && this.head * 2 > this.items.length) {
          this.items = this.items.slice(this.head);
          this.head = 0;
        }
        yield item;
        continue;
      }
      if (this.closed) return;
      await new Promise<void>((resolve) => {
        this.wake = resolve;
      });
      this.wake = undefined;
    }
  }
}
