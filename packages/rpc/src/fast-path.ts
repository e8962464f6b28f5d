// Request decoding for the server adapter (rpc/grpc.ts), and its fast paths: a method may
// answer some requests straight from their bytes (the resolver's cache hits), before protobuf-es
// decodes them and before the adapter builds a call context, a promise chain and a typed reply.
// A fast path sees only requests whose size its method takes; whatever it declines (returns
// undefined) is decoded and handled as usual, so it can answer a subset of requests and nothing
// else changes.

import type { DescMessage, DescMethod } from "@bufbuild/protobuf";
import { fromBinary } from "@bufbuild/protobuf";
import type * as grpc from "@grpc/grpc-js";
import { DiscoveryError, type ItemBytes } from "@mimi/core";

/** What a unary call's fast path may read of the call besides its request. */
export interface FastCall {
  /** The call's deadline (ms since the epoch; Infinity when it has none). */
  readonly deadlineMs: number;
  /** The caller's identity, from its certificate (read once per connection); throws without one. */
  readonly peer: { readonly name: string };
}

/**
 * Answers a request from its encoded bytes, or declines with undefined. It must answer exactly
 * what the method's handler would, and runs before any role check, so only services without
 * `roles` or `authorize` may have one. Should it throw, the request takes the full path.
 * A unary call's fast path is also given the call, and may refuse it by returning a
 * DiscoveryError, which is sent as a handler's would be; it must refuse only what the handler
 * would refuse alike. A stream's items are given no call, and must not be refused: an error
 * returned for one is a decline, and whatever the fast path counted for it stays counted. They
 * are given their stream's ItemBytes (core streamItemSlab) to write their replies in.
 */
export type FastPath = (
  request: Buffer,
  call?: FastCall,
  itemBytes?: ItemBytes,
) => Uint8Array | DiscoveryError | undefined;

/** What `fast` answers, or undefined when it declines or fails (the full path then answers). */
export function tryFast(
  fast: FastPath,
  request: Buffer,
  call?: FastCall,
  itemBytes?: ItemBytes,
): Uint8Array | DiscoveryError | undefined {
  try {
    return fast(request, call, itemBytes);
  } catch {
    return undefined;
  }
}

/**
 * A request message that was not decoded: malformed (INVALID_ARGUMENT) or larger than its method
 * takes (RESOURCE_EXHAUSTED, as gRPC reports oversized messages). The handler wrapper answers it.
 */
export class Malformed {
  constructor(
    readonly reason: string,
    /** The message as it came (a stream's item error reads its id from them). */
    readonly bytes: Buffer,
    readonly tooLarge = false,
  ) {}

  /** The status naming what in the bytes is wrong. */
  get error(): DiscoveryError {
    if (this.tooLarge) {
      return new DiscoveryError("resource_exhausted", this.reason, {
        details: { reason: "REQUEST_TOO_LARGE" },
      });
    }
    return new DiscoveryError("invalid_argument", `malformed request message: ${this.reason}`, {
      details: { reason: "MALFORMED_MESSAGE" },
    });
  }
}

/** The request, or the status naming what in its bytes is wrong. */
export function wellFormed<T>(msg: T): T {
  if (msg instanceof Malformed) throw msg.error;
  return msg;
}

/**
 * A streaming method's answer to an item it could not decode, from the item's bytes and the
 * status naming what is wrong with them: that item's own error reply, after which the stream
 * goes on, or undefined when the item cannot be told apart from the others (the stream then
 * ends with the status).
 */
export type ItemErrorReply = (bytes: Buffer, err: DiscoveryError) => Uint8Array | undefined;

/** The size check every request gets: the bytes, or Malformed when they are too many. */
export function sizeChecked(method: DescMethod, maxBytes: number): (buf: Buffer) => Buffer | Malformed {
  return (buf) =>
    buf.length > maxBytes
      ? new Malformed(
          `the request message of ${buf.length} bytes is larger than ${maxBytes}, the most ${method.name} takes`,
          buf,
          true,
        )
      : buf;
}

/**
 * The request decoder of a method: the message, or Malformed. (grpc-js answers a throwing
 * deserializer with INTERNAL; bad bytes are the caller's fault.)
 */
export function decoder(method: DescMethod, maxBytes: number): (buf: Buffer) => unknown {
  const checked = sizeChecked(method, maxBytes);
  return (buf) => {
    const b = checked(buf);
    if (b instanceof Malformed) return b;
    try {
      return fromBinary(method.input as DescMessage, b);
    } catch (err) {
      return new Malformed((err as Error).message, b);
    }
  };
}

/** A call's deadline in ms since 1970 (Infinity when it has none), as FastCall and CallContext give it. */
export function deadlineOf(call: { getDeadline(): Date | number }): number {
  const d = call.getDeadline();
  return d instanceof Date ? d.getTime() : d;
}

/**
 * What a unary call's fast path reads of the call, read when asked. A class, as the call
 * context is (ARCHITECTURE.md, "Hot paths": not an object literal with getters).
 */
class UnaryFastCall implements FastCall {
  readonly #call: grpc.ServerUnaryCall<unknown, unknown>;
  readonly #peerOf: (call: grpc.ServerUnaryCall<unknown, unknown>) => { readonly name: string };

  constructor(
    call: grpc.ServerUnaryCall<unknown, unknown>,
    peerOf: (call: grpc.ServerUnaryCall<unknown, unknown>) => { readonly name: string },
  ) {
    this.#call = call;
    this.#peerOf = peerOf;
  }

  get deadlineMs(): number {
    return deadlineOf(this.#call);
  }

  get peer(): { readonly name: string } {
    return this.#peerOf(this.#call);
  }
}

/**
 * A unary handler that tries `fast` on the request's bytes first (the method's deserializer kept
 * them); a refusal it returns is sent as `fail` makes it into a status.
 */
export function fastUnary(
  slow: grpc.handleUnaryCall<unknown, unknown>,
  fast: FastPath,
  decode: (buf: Buffer) => unknown,
  fail: (err: DiscoveryError) => Partial<grpc.StatusObject>,
  peerOf: (call: grpc.ServerUnaryCall<unknown, unknown>) => { readonly name: string },
): grpc.handleUnaryCall<unknown, unknown> {
  return (call, callback) => {
    const req = call.request;
    if (req instanceof Buffer) {
      const out = tryFast(fast, req, new UnaryFastCall(call, peerOf));
      if (out instanceof Uint8Array) {
        callback(null, out);
        return;
      }
      if (out) {
        callback(fail(out));
        return;
      }
      call.request = decode(req);
    }
    slow(call, callback);
  };
}
