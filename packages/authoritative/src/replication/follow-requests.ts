// The request side of a follower's Follow stream: its start, then acks. Only the latest ack
// matters (it covers every earlier one), so the queue never grows.
import { create } from "@bufbuild/protobuf";
import { pb } from "@mimi/core";

/** A follower's requests: the start, then the latest ack whenever one is waiting. */
export class FollowRequests implements AsyncIterable<pb.FollowRequest> {
  private ack: { seq: number; writerSeq: number } | undefined;
  private wake: (() => void) | undefined;
  private closed = false;
  constructor(private readonly start: pb.FollowStart) {}
  push(seq: number, writerSeq: number): void {
    this.ack = { seq, writerSeq };
    this.wake?.();
  }
  close(): void {
    this.closed = true;
    this.wake?.();
  }
  async *[Symbol.asyncIterator](): AsyncIterator<pb.FollowRequest> {
    yield create(pb.FollowRequestSchema, { message: { case: "start", value: this.start } });
    while (!this.closed) {
      if (this.ack === undefined) {
        await new Promise<void>((r) => {
          this.wake = r;
        });
        this.wake = undefined;
        continue;
      }
      const { seq, writerSeq } = this.ack;
      this.ack = undefined;
      yield create(pb.FollowRequestSchema, {
        message: { case: "ack", value: { seq: BigInt(seq), writerSeq: BigInt(writerSeq) } },
      });
    }
  }
}
