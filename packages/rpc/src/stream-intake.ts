// The request messages of a client or bidirectional stream, as the handler's AsyncIterable
// (rpc/grpc.ts). They are read from the call's "data" events, not through the Readable's async
// iterator, which costs a generator step and a promise per message: a fast path's items
// (fast-path.ts), and the error replies to items that cannot be decoded, are answered as they
// arrive, with no promise at all; an item for the handler goes to its waiting next(), or is held.
// The call is paused while an item is held or a reply written here waits for the peer to read, so
// a stream holds one item more than it held before and a slow handler slows its peer.

import type * as grpc from "@grpc/grpc-js";
import { streamItemSlab } from "@mimi/core";
import { type FastPath, type ItemErrorReply, Malformed, tryFast } from "./fast-path.js";
import type { Write } from "./stream-write.js";

/**
 * Items read for the handler and not yet taken, at which the call is paused. Its Readable
 * buffers up to its own mark behind them (16 messages in object mode), as it did when handlers
 * read it through its async iterator, so a stream holds one item more than then. A queue of more
 * would multiply what a stream of large messages may hold (a bulk batch is up to 16 MiB); one
 * keeps most of the gain (in a loop, 0.28-0.47 µs a message against 0.23-0.42 with 16, and
 * 0.41-0.66 through the iterator). A hit behind a held item waits with it.
 */
export const MAX_QUEUED_ITEMS = 1;

/** What a method's fast path needs to answer items: the path, the decoder of what it declines, and the stream's Write. */
export interface FastItems {
  readonly fast: FastPath;
  readonly decode: (buf: Buffer) => unknown;
  readonly write: Write;
}

/** The reply to an item that could not be decoded, and the stream's Write to send it with. */
export interface ItemErrors {
  readonly reply: ItemErrorReply;
  readonly write: Write;
}

type Call = grpc.ServerReadableStream<unknown, unknown> | grpc.ServerDuplexStream<unknown, unknown>;

/**
 * The request messages of a streaming call. The call stays open when the handler stops
 * iterating (iterating a Readable with for-await would destroy it, closing the response side
 * before the handler sent its last responses). An item that cannot be decoded is answered with
 * `itemErrors`' reply as it comes, as a fast path's items are, and the stream goes on; without
 * one (or an item over the method's size) iteration throws its status after the items before it.
 */
export function incoming(call: Call, fast?: FastItems, itemErrors?: ItemErrors): AsyncIterable<unknown> {
  return { [Symbol.asyncIterator]: () => new Intake(call, fast, itemErrors) };
}

class Intake implements AsyncIterator<unknown> {
  readonly #call: Call;
  readonly #fast: (FastItems & { readonly itemBytes: ReturnType<typeof streamItemSlab> }) | undefined;
  readonly #itemErrors: ItemErrors | undefined;
  /** Items for the handler, in the order read: at most MAX_QUEUED_ITEMS. */
  readonly #queue: unknown[] = [];
  /** The end of the requests once the queue is drained: done, or an error to throw. */
  #end: { readonly error?: unknown } | undefined;
  /** A next() waiting for an item. */
  #waiter: { resolve: (r: IteratorResult<unknown>) => void; reject: (err: unknown) => void } | undefined;
  /** Replies written here (fast, or to undecodable items) waiting for the peer to read; the call is paused meanwhile. */
  #writeWaits = 0;
  #paused = false;

  constructor(call: Call, fast: FastItems | undefined, itemErrors: ItemErrors | undefined) {
    this.#call = call;
    this.#fast = fast && { ...fast, itemBytes: streamItemSlab() };
    this.#itemErrors = itemErrors;
    call.on("data", this.#onData);
    call.once("end", this.#onEnd);
    call.once("error", this.#onError);
    call.once("close", this.#onClose);
    // Ended or cancelled before the handler began to read: those events have gone by.
    if (call.readableEnded) this.#onEnd();
    else if (call.destroyed) this.#onClose();
    // A "data" listener does not restart a call paused before (by an earlier reader).
    else call.resume();
  }

  next(): Promise<IteratorResult<unknown>> {
    // Cancelled: even after the peer's half-close (a "close" event then finds nobody listening),
    // or destroyed before its "close" event, which comes a tick later.
    const call = this.#call;
    if (call.cancelled || (call.destroyed && !call.readableEnded)) this.#cancelled();
    if (this.#queue.length > 0) {
      const item = this.#queue.shift();
      this.#flow();
      return Promise.resolve({ done: false, value: item });
    }
    if (this.#end) {
      this.#stop();
      return "error" in this.#end
        ? Promise.reject(this.#end.error)
        : Promise.resolve({ done: true, value: undefined });
    }
    return new Promise((resolve, reject) => {
      this.#waiter = { resolve, reject };
    });
  }

  /** Stops reading; a next() still waiting ends, done. */
  return(value?: unknown): Promise<IteratorResult<unknown>> {
    this.#stop();
    const waiter = this.#waiter;
    this.#waiter = undefined;
    waiter?.resolve({ done: true, value: undefined });
    return Promise.resolve({ done: true, value });
  }

  readonly #onData = (msg: unknown): void => {
    if (this.#end) return;
    // Run inside grpc-js's delivery of the message: what throws here ends the stream, not the process.
    try {
      this.#read(msg);
    } catch (err) {
      this.#finish({ error: err }, true);
    }
  };

  #read(msg: unknown): void {
    let item = msg;
    const fast = this.#fast;
    if (fast && item instanceof Buffer) {
      const out = tryFast(fast.fast, item, undefined, fast.itemBytes);
      if (out instanceof Uint8Array) {
        this.#write(fast.write, out);
        return;
      }
      item = fast.decode(item);
    }
    if (item instanceof Malformed) {
      const err = item.error;
      // An item over the method's size ends the stream, as before: its bytes are not read.
      const errors = this.#itemErrors;
      const reply = item.tooLarge ? undefined : errors?.reply(item.bytes, err);
      if (!(errors && reply)) {
        this.#finish({ error: err });
        return;
      }
      this.#write(errors.write, reply);
      return;
    }
    const waiter = this.#waiter;
    if (waiter) {
      // A next() waits only on an empty queue.
      this.#waiter = undefined;
      waiter.resolve({ done: false, value: item });
      return;
    }
    this.#queue.push(item);
    this.#flow();
  }

  readonly #onEnd = (): void => this.#finish({});

  readonly #onError = (err: unknown): void => this.#finish({ error: err }, true);

  /** Closed before its requests ended: the call was cancelled (grpc-js destroys it then). */
  readonly #onClose = (): void => this.#finish({ error: closedEarly() }, true);

  /** Cancelled: what waits is dropped and iteration ends with the error, whatever end was set. */
  #cancelled(): void {
    if (this.#end && "error" in this.#end) return;
    this.#end = undefined;
    this.#finish({ error: closedEarly() }, true);
  }

  /** Writes a reply made here; while the peer is behind, reading waits for it. */
  #write(write: Write, reply: Uint8Array): void {
    const wait = write(reply);
    if (!wait) return;
    this.#writeWaits++;
    this.#flow();
    wait.then(
      () => {
        this.#writeWaits--;
        this.#flow();
      },
      (err: unknown) => this.#finish({ error: err }, true),
    );
  }

  /**
   * Sets the end. An item held is still taken first (one read before the peer's half-close),
   * unless `drop`: a call cancelled or failing has nobody to answer it to, so no more work
   * starts for it.
   */
  #finish(end: { readonly error?: unknown }, drop = false): void {
    if (this.#end) return;
    this.#end = end;
    if (drop) this.#queue.length = 0;
    // No item after the end is read: an error ends reading where it happened.
    this.#detach();
    const waiter = this.#waiter;
    if (waiter) {
      this.#waiter = undefined;
      this.next().then(waiter.resolve, waiter.reject);
    }
  }

  /** Pauses the call while the queue is full or a reply waits, and lets it flow otherwise. */
  #flow(): void {
    if (this.#end) return;
    const hold = this.#writeWaits > 0 || this.#queue.length >= MAX_QUEUED_ITEMS;
    if (hold && !this.#paused) {
      this.#paused = true;
      this.#call.pause();
    } else if (!hold && this.#paused) {
      this.#paused = false;
      this.#call.resume();
    }
  }

  /** Stops reading: once the end is set (removing a listener twice does nothing). */
  #detach(): void {
    this.#call.removeListener("data", this.#onData);
    this.#call.removeListener("end", this.#onEnd);
    this.#call.removeListener("error", this.#onError);
    this.#call.removeListener("close", this.#onClose);
    // Nothing reads the call's requests any more; the handler may still write its replies.
    this.#call.pause();
  }

  /** The handler is done with the requests: nothing more is read or kept. */
  #stop(): void {
    this.#end ??= {};
    this.#queue.length = 0;
    this.#detach();
  }
}

function closedEarly(): Error {
  return new Error("the call was closed before its requests ended");
}
