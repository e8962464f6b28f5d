// Writing a server stream's messages: at once while the peer keeps up, waiting for it to read
// past MAX_BUFFERED_MESSAGES (rpc/grpc.ts's handlers and fast paths).
import type { DescMessage, DescMethod, MessageInitShape } from "@bufbuild/protobuf";
import { create } from "@bufbuild/protobuf";
import type * as grpc from "@grpc/grpc-js";

/** Messages a stream may queue, either way, before the writer waits for the peer to read. */
export const MAX_BUFFERED_MESSAGES = 1_024;

/** Pre-encoded bytes pass through; anything else becomes a message of the method's output type. */
export function asReply(method: DescMethod, out: unknown): unknown {
  return out instanceof Uint8Array ? out : create(method.output, out as MessageInitShape<DescMessage>);
}

/**
 * Writes a message to a stream at once. It returns a promise only when the writer is to wait
 * (for the peer to read, so a slow reader slows the writer instead of growing memory) or the
 * call has ended; otherwise nothing, so that a run of writes costs no promise each.
 */
export type Write = (msg: unknown) => Promise<void> | undefined;

const SENT = Promise.resolve();

/** The handlers' send: `write`, always a promise (a message it cannot encode rejects it). */
export function sending(write: Write): (msg: unknown) => Promise<void> {
  return (msg) => {
    try {
      return write(msg) ?? SENT;
    } catch (err) {
      return Promise.reject(err);
    }
  };
}

/** A stream's Write. */
export function writer(
  call: grpc.ServerWritableStream<unknown, unknown> | grpc.ServerDuplexStream<unknown, unknown>,
  method: DescMethod,
  signal: AbortSignal,
): Write {
  // One wait for "drain" shared by all senders, so a stalled reader costs one listener, not one per send.
  let drained: Promise<void> | undefined;
  const drain = () => {
    drained ??= new Promise<void>((resolve, reject) => {
      const onAbort = () => {
        call.removeListener("drain", onDrain);
        reject(signal.reason);
      };
      const onDrain = () => {
        signal.removeEventListener("abort", onAbort);
        resolve();
      };
      call.once("drain", onDrain);
      signal.addEventListener("abort", onAbort, { once: true });
    }).finally(() => {
      drained = undefined;
    });
    return drained;
  };
  return (msg: unknown) => {
    if (signal.aborted) return Promise.reject(signal.reason);
    // Waiting for "drain" each time write() says the buffer is past grpc-js's small object-mode
    // mark would cost a listener per message; callers bound their own in-flight work, so the
    // wait starts only once MAX_BUFFERED_MESSAGES are queued.
    if (call.write(asReply(method, msg)) || call.writableLength < MAX_BUFFERED_MESSAGES) return undefined;
    return drain();
  };
}
