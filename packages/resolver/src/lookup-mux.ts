// One long-lived LookupStream to one DP endpoint, over which lookups are multiplexed by request
// id: a lookup costs a message each way, not an HTTP/2 call. Items time out on their own; a
// stream that stops answering is dropped; when the stream ends every pending item fails as
// upstream_unavailable (reason STREAM_ENDED: upstream.ts asks once more on a new stream, then
// fails over). An item that timed out is still the DP's work until it answers it late (or the
// stream ends, or a bound passes): unansweredAtDp() gives that late reply, so the window can
// keep the lookup's place and the lookup can take the late answer instead of asking again (a
// lookup sent again would queue behind it at the DP, which answers a stream in order).
import { AsyncQueue, DiscoveryError, pb } from "@mimi/core";
import { type Channel, fromStatus, itemErrorDetails } from "@mimi/rpc";

/** Lookups one stream may have outstanding by default; past it the DP is treated as overloaded. */
const MAX_PENDING_PER_STREAM = 4_096;

const NO_CONTEXT: Uint8Array = new Uint8Array(0);

/**
 * What the DP sent for an item after it timed out: its answer, or its error; undefined when
 * nothing came (the stream ended, the bound passed, the item was never sent).
 */
export type LateReply = { answer: pb.Answer | undefined } | { error: DiscoveryError } | undefined;

/** The DP's late replies to items that timed out, by the timeout's error. */
const lateReplies = new WeakMap<DiscoveryError, Promise<LateReply>>();

/**
 * The DP's late reply to the item that failed with `err`, a timeout of this module: it settles
 * when the DP is done with it (answered late, the stream ended, or `lateAnswerMs` passed).
 * Undefined for any other failure: the DP holds nothing of it.
 */
export function unansweredAtDp(err: unknown): Promise<LateReply> | undefined {
  return err instanceof DiscoveryError ? lateReplies.get(err) : undefined;
}

/** Options of one multiplexed stream. */
export interface LookupMuxOptions {
  /** Names the stream in errors, e.g. "LookupStream at 10.0.0.1:7501". */
  what: string;
  /** How long one lookup waits for its answer. */
  timeoutMs: number;
  /**
   * How long past its timeout an unanswered item still counts as the DP's work (default four
   * timeouts): a DP that never answers it gives its place back then.
   */
  lateAnswerMs?: number;
  /** Lookups outstanding at once; more are refused as upstream_unavailable. */
  maxPending?: number;
  /** Hears the rate the endpoint publishes at the start of each stream (lookups per second; 0: none). */
  onLimits?: (lookupsPerSecond: number) => void;
}

interface Pending {
  resolve: (answer: pb.Answer | undefined) => void;
  reject: (err: DiscoveryError) => void;
  timer: NodeJS.Timeout;
}

/** The reason of an item that timed out: the adaptive window's signal of an overloaded DP. */
export const UPSTREAM_TIMEOUT = "UPSTREAM_TIMEOUT";
/**
 * The reason of an item whose stream ended or failed under it (a connection closed at its age,
 * a DP restarting, a connection lost): the DP never answered it, and a new stream may.
 */
export const STREAM_ENDED = "STREAM_ENDED";

/**
 * One LookupStream to one endpoint. Items time out on their own, and stay the DP's work until
 * it replies late; when the stream ends or fails, every pending item fails as
 * upstream_unavailable (STREAM_ENDED), and the next lookup opens a new stream. A stream on
 * which items time out while nothing it was asked arrives is presumed stuck and dropped (its
 * items time out with it), rather than waiting for keepalive to notice.
 */
export class LookupMux {
  private readonly queue = new AsyncQueue<{ requestId: bigint; csi: string; rateContext: Uint8Array }>();
  private readonly pending = new Map<bigint, Pending>();
  /** Items that timed out and are not answered yet: each one's settling with the DP's late reply. */
  private readonly unanswered = new Map<bigint, (reply: LateReply) => void>();
  private nextId = 1n;
  /** Messages heard on the stream (replies to items it waits on, its first limits). */
  private heard = 0;
  private abort = new AbortController();
  dead = false;
  /** Set by retire(): no more lookups, and the stream ends once the DP has answered. */
  private retired = false;
  /** Settles when the stream has ended (read() catches everything). */
  readonly ended: Promise<void>;

  private readonly what: string;
  private readonly timeoutMs: number;
  private readonly lateAnswerMs: number;
  private readonly maxPending: number;
  private readonly onLimits: ((lookupsPerSecond: number) => void) | undefined;

  constructor(
    private readonly channel: Channel,
    o: LookupMuxOptions,
  ) {
    this.what = o.what;
    this.timeoutMs = o.timeoutMs;
    this.lateAnswerMs = o.lateAnswerMs ?? 4 * o.timeoutMs;
    this.maxPending = o.maxPending ?? MAX_PENDING_PER_STREAM;
    this.onLimits = o.onLimits;
    this.ended = this.read();
  }

  /** Lookups not yet answered: waited for, or timed out and still the DP's work. */
  get pendingCount(): number {
    return this.pending.size + this.unanswered.size;
  }

  private async read(): Promise<void> {
    let cause = "the stream ended";
    try {
      // Lookups whose callers gave up (timed out) are not sent: a slow DP should not spend
      // its time on answers nobody waits for (and holds none of them).
      const pending = this.pending;
      const unanswered = this.unanswered;
      const queue = this.queue;
      const live = (async function* () {
        for await (const item of queue) {
          if (pending.has(item.requestId)) yield item;
          else unanswered.get(item.requestId)?.(undefined);
        }
      })();
      const responses = this.channel
        .client(pb.AuthoritativeService)
        .lookupStream(live, { signal: this.abort.signal });
      let first = true;
      for await (const res of responses) {
        if (res.result.case === "limits") {
          // Only as the stream's first message, as the protocol says; later ones are ignored.
          if (first) {
            this.heard++;
            this.onLimits?.(res.result.value.lookupsPerSecond);
          }
          first = false;
          continue;
        }
        first = false;
        const p = this.pending.get(res.requestId);
        if (!p) {
          // Timed out already: the late reply. A request id this stream is not waiting on says
          // nothing of the DP's life.
          const late = this.unanswered.get(res.requestId);
          if (!late) continue;
          this.heard++;
          late(this.replyOf(res));
          continue;
        }
        this.heard++;
        this.pending.delete(res.requestId);
        clearTimeout(p.timer);
        const reply = this.replyOf(res);
        if ("answer" in reply) p.resolve(reply.answer);
        else p.reject(reply.error);
      }
    } catch (err) {
      cause = (err as Error).message;
    } finally {
      this.fail(cause, STREAM_ENDED);
    }
  }

  /** An item's answer, or its error. */
  private replyOf(res: pb.LookupStreamResponse): NonNullable<LateReply> {
    if (res.result.case === "response") return { answer: res.result.value.answer };
    if (res.result.case === "error") {
      const e = res.result.value;
      return { error: fromStatus(e.code, e.message, this.what, undefined, itemErrorDetails(e)) };
    }
    return { error: new DiscoveryError("upstream_failed", `${this.what}: an item came back empty`) };
  }

  /** Ends the mux: pending items fail with `cause`, and `reason` when one is given. */
  private fail(cause: string, reason?: string): void {
    this.dead = true;
    this.queue.close();
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(
        new DiscoveryError(
          "upstream_unavailable",
          `${this.what}: ${cause}`,
          reason === undefined ? undefined : { details: { reason } },
        ),
      );
      this.pending.delete(id);
    }
    for (const settle of [...this.unanswered.values()]) settle(undefined);
  }

  /** Looks `csi` up, forwarding `rateContext` (P2; empty for none). */
  lookup(csi: string, rateContext: Uint8Array = NO_CONTEXT): Promise<pb.Answer | undefined> {
    if (this.dead || this.retired) {
      return Promise.reject(new DiscoveryError("upstream_unavailable", `${this.what}: the stream has ended`));
    }
    if (this.pendingCount >= this.maxPending) {
      return Promise.reject(
        new DiscoveryError(
          "upstream_unavailable",
          `${this.what}: ${this.maxPending} lookups already waiting`,
        ),
      );
    }
    const requestId = this.nextId++;
    const heardAtSend = this.heard;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(requestId);
        const err = new DiscoveryError(
          "upstream_unavailable",
          `${this.what}: no answer within ${this.timeoutMs} ms`,
          {
            details: { reason: UPSTREAM_TIMEOUT },
          },
        );
        lateReplies.set(err, this.awaitLate(requestId));
        reject(err);
        // Nothing heard on the stream for a whole deadline (counted, not timed: a timer may
        // fire a little early by another clock, and the check must not miss a silent stream).
        if (this.heard === heardAtSend) this.stalled();
      }, this.timeoutMs);
      this.pending.set(requestId, { resolve, reject, timer });
      this.queue.push({ requestId, csi, rateContext });
    });
  }

  /**
   * The DP's late reply to `requestId`; nothing when the stream ends or lateAnswerMs passes. A
   * stream on which nothing at all is heard for another deadline is dropped as stalled, so a
   * lookup does not wait out the bound on a DP that went silent (and could be answered stale).
   */
  private awaitLate(requestId: bigint): Promise<LateReply> {
    const heardAtTimeout = this.heard;
    return new Promise<LateReply>((resolve) => {
      const settle = (reply: LateReply) => {
        clearTimeout(bound);
        clearTimeout(silence);
        this.unanswered.delete(requestId);
        resolve(reply);
      };
      const bound = setTimeout(() => settle(undefined), this.lateAnswerMs);
      const silence = setTimeout(() => {
        if (this.heard === heardAtTimeout) this.stalled();
      }, this.timeoutMs);
      bound.unref();
      silence.unref();
      this.unanswered.set(requestId, settle);
    });
  }

  /** The DP said nothing on the stream for a deadline: what is pending there times out with it. */
  private stalled(): void {
    if (this.dead) return;
    this.abort.abort();
    // (The window shrinks; the lookups may be tried again on a new stream.)
    this.fail("the stream stopped answering", UPSTREAM_TIMEOUT);
  }

  /**
   * Its endpoint left the registry: it takes no more lookups and ends its half of the stream, so
   * the DP answers what it was sent and then ends the call. A DP that has not ended it by
   * `lateAnswerMs` (when its late answers would no longer count) has it cut; one that goes
   * silent meanwhile has it dropped as stalled, as before.
   */
  retire(): void {
    if (this.retired || this.dead) return;
    this.retired = true;
    this.queue.close();
    const cut = setTimeout(() => {
      this.abort.abort();
      this.fail("the endpoint left the registry, and the DP did not end the stream", STREAM_ENDED);
    }, this.lateAnswerMs);
    cut.unref();
    void this.ended.then(() => clearTimeout(cut));
  }

  close(): void {
    this.abort.abort();
    this.fail("the resolver is shutting down");
  }
}
