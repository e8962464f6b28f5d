// The client half of the bridge between grpc-js and protobuf-es: typed clients built from
// generated service descriptors, on channels that keep long-lived streams alive. Failures come
// back as DiscoveryError (status.ts); request streams are written with backpressure.

import type { DescMessage, MessageInitShape, MessageShape } from "@bufbuild/protobuf";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import type { GenService, GenServiceMethods } from "@bufbuild/protobuf/codegenv2";
import * as grpc from "@grpc/grpc-js";
import { DiscoveryError } from "@mimi/core";
import type { In, Out } from "./grpc.js";
import { fromServiceError } from "./status.js";
import { MAX_BUFFERED_MESSAGES } from "./stream-write.js";

/** Per-call client options. */
export interface CallOptions {
  /** Deadline relative to now. */
  timeoutMs?: number;
  /** Cancels the call when aborted. */
  signal?: AbortSignal;
  /** Queue the call while the channel connects instead of failing fast. */
  waitForReady?: boolean;
}

/** The client form of one method, by its kind. */
export type ClientMethod<M> = M extends { methodKind: "unary" }
  ? (req: MessageInitShape<In<M>>, opts?: CallOptions) => Promise<MessageShape<Out<M>>>
  : M extends { methodKind: "server_streaming" }
    ? (req: MessageInitShape<In<M>>, opts?: CallOptions) => AsyncIterable<MessageShape<Out<M>>>
    : M extends { methodKind: "client_streaming" }
      ? (reqs: AsyncIterable<MessageInitShape<In<M>>>, opts?: CallOptions) => Promise<MessageShape<Out<M>>>
      : M extends { methodKind: "bidi_streaming" }
        ? (
            reqs: AsyncIterable<MessageInitShape<In<M>>>,
            opts?: CallOptions,
          ) => AsyncIterable<MessageShape<Out<M>>>
        : never;

/** A typed client for one service on one channel. */
export type ServiceClient<S extends GenServiceMethods> = { [K in keyof S]: ClientMethod<S[K]> };

/** Channel options that keep long-lived streams alive across idle periods and detect dead peers. */
const CHANNEL_OPTIONS: grpc.ChannelOptions = {
  "grpc.keepalive_time_ms": 30_000,
  "grpc.keepalive_timeout_ms": 10_000,
  "grpc.keepalive_permit_without_calls": 1,
  "grpc.max_reconnect_backoff_ms": 5_000,
  "grpc.initial_reconnect_backoff_ms": 200,
  "grpc.enable_channelz": 0,
};

/** A connection to one address, on which typed service clients are made. */
export interface Channel {
  readonly address: string;
  client<S extends GenServiceMethods>(service: GenService<S>): ServiceClient<S>;
  close(): void;
}

/**
 * Opens a channel (one multiplexed HTTP/2 connection, reconnected by grpc-js) to `address`.
 * Channels with the same address and credentials share their connection unless `ownConnection`:
 * a client that keeps more calls in flight than a server takes on one connection (its
 * SETTINGS_MAX_CONCURRENT_STREAMS; the rest wait in the client, unseen by the server) opens
 * several.
 */
export function openChannel(
  address: string,
  credentials: grpc.ChannelCredentials,
  opts?: { ownConnection?: boolean },
): Channel {
  const options = opts?.ownConnection
    ? { ...CHANNEL_OPTIONS, "grpc.use_local_subchannel_pool": 1 }
    : CHANNEL_OPTIONS;
  const raw = new grpc.Client(address, credentials, options);
  return {
    address,
    client: (service) => makeClient(raw, address, service),
    close: () => raw.close(),
  };
}

function callOptions(opts: CallOptions | undefined): grpc.CallOptions {
  const o: grpc.CallOptions = {};
  if (opts?.timeoutMs !== undefined) o.deadline = Date.now() + opts.timeoutMs;
  return o;
}

function metadataFor(opts: CallOptions | undefined): grpc.Metadata {
  return new grpc.Metadata({ waitForReady: opts?.waitForReady ?? false });
}

function bindSignal(call: { cancel(): void }, signal: AbortSignal | undefined): () => void {
  if (!signal) return () => {};
  if (signal.aborted) {
    call.cancel();
    return () => {};
  }
  const onAbort = () => call.cancel();
  signal.addEventListener("abort", onAbort, { once: true });
  return () => signal.removeEventListener("abort", onAbort);
}

/**
 * A call grpc-js started. On a channel that has been closed (a DP endpoint the registry no
 * longer lists) grpc-js throws at once instead of failing the call: that is upstream_unavailable,
 * as a failed call there would be. Any other throw is left as it is (a bug, not the peer).
 */
function started<T>(raw: grpc.Client, what: string, make: () => T): T {
  try {
    return make();
  } catch (err) {
    if (raw.getChannel().getConnectivityState(false) !== grpc.connectivityState.SHUTDOWN) throw err;
    throw new DiscoveryError("upstream_unavailable", `${what}: ${(err as Error).message}`, { cause: err });
  }
}

function makeClient<S extends GenServiceMethods>(
  raw: grpc.Client,
  address: string,
  service: GenService<S>,
): ServiceClient<S> {
  const out: Record<string, unknown> = {};
  for (const method of service.methods) {
    const path = `/${service.typeName}/${method.name}`;
    const what = `${method.name} at ${address}`;
    const ser = (msg: unknown) =>
      Buffer.from(toBinary(method.input, create(method.input, msg as MessageInitShape<DescMessage>)));
    const de = (buf: Buffer) => fromBinary(method.output, buf);
    switch (method.methodKind) {
      case "unary":
        out[method.localName] = (req: unknown, opts?: CallOptions) =>
          new Promise((resolve, reject) => {
            const call = started(raw, what, () =>
              raw.makeUnaryRequest(path, ser, de, req, metadataFor(opts), callOptions(opts), (err, res) => {
                unbind();
                if (err) reject(fromServiceError(err, what));
                else resolve(res);
              }),
            );
            const unbind = bindSignal(call, opts?.signal);
          });
        break;
      case "server_streaming":
        out[method.localName] = (req: unknown, opts?: CallOptions) => ({
          async *[Symbol.asyncIterator]() {
            const call = started(raw, what, () =>
              raw.makeServerStreamRequest(path, ser, de, req, metadataFor(opts), callOptions(opts)),
            );
            const unbind = bindSignal(call, opts?.signal);
            try {
              for await (const msg of call) yield msg;
            } catch (err) {
              throw fromServiceError(err, what);
            } finally {
              unbind();
              call.cancel();
            }
          },
        });
        break;
      case "client_streaming":
        out[method.localName] = (reqs: AsyncIterable<unknown>, opts?: CallOptions) =>
          new Promise((resolve, reject) => {
            const call = started(raw, what, () =>
              raw.makeClientStreamRequest(path, ser, de, metadataFor(opts), callOptions(opts), (err, res) => {
                unbind();
                if (err) reject(fromServiceError(err, what));
                else resolve(res);
              }),
            );
            const unbind = bindSignal(call, opts?.signal);
            pump(reqs, call).catch((err) => {
              call.cancel();
              reject(err);
            });
          });
        break;
      case "bidi_streaming":
        out[method.localName] = (reqs: AsyncIterable<unknown>, opts?: CallOptions) => ({
          async *[Symbol.asyncIterator]() {
            const call = started(raw, what, () =>
              raw.makeBidiStreamRequest(path, ser, de, metadataFor(opts), callOptions(opts)),
            );
            const unbind = bindSignal(call, opts?.signal);
            pump(reqs, call).catch(() => call.cancel());
            try {
              for await (const msg of call) yield msg;
            } catch (err) {
              throw fromServiceError(err, what);
            } finally {
              unbind();
              call.cancel();
            }
          },
        });
        break;
    }
  }
  return out as ServiceClient<S>;
}

/** What a wait yields when the call ended first. */
const ENDED = Symbol("call ended");

/**
 * Writes the request messages of a client or bidi stream, in order. Like the server side it
 * waits for the peer only once many messages are queued. It stops as soon as the call ends
 * (cancelled, failed, or finished by the server), whether it is waiting for "drain" or for
 * the next request, and then closes the request iterable: otherwise a wait that can never
 * end would hold the call and the iterable, and everything they hold, for good.
 *
 * The call's end wakes the one wait in progress. Racing each wait against a single promise of
 * the call's end would leave a reaction on that promise per message, each holding what its
 * wait returned (the request), until the call ends: a resolver's stream to a DP, open for
 * days, kept every lookup it ever sent.
 */
async function pump(reqs: AsyncIterable<unknown>, call: grpc.ClientWritableStream<unknown>): Promise<void> {
  let ended = false;
  let wake: ((v: typeof ENDED) => void) | undefined;
  const onEnd = () => {
    ended = true;
    wake?.(ENDED);
  };
  // `wait` settles through its resolve (or reject); the call's end settles it with ENDED. One
  // wait at a time: the caller clears `wake` once it has settled.
  const untilEnded = <T>(
    wait: (resolve: (v: T) => void, reject: (err: unknown) => void) => void,
  ): Promise<T | typeof ENDED> =>
    ended
      ? Promise.resolve(ENDED)
      : new Promise<T | typeof ENDED>((resolve, reject) => {
          wake = resolve;
          wait(resolve, reject);
        });
  call.once("status", onEnd);
  call.once("error", onEnd);
  const it = reqs[Symbol.asyncIterator]();
  let finished = false;
  try {
    for (;;) {
      // Once the call has ended nothing more is taken from the source; a request source that
      // fails after it ended has nobody left to tell (its rejection settles a finished wait).
      const next = await untilEnded<IteratorResult<unknown>>((resolve, reject) => {
        it.next().then(resolve, reject);
      });
      wake = undefined;
      if (next === ENDED) return;
      if (next.done) {
        finished = true;
        break;
      }
      if (!call.write(next.value) && call.writableLength >= MAX_BUFFERED_MESSAGES) {
        let onDrain: () => void = () => {};
        const woke = await untilEnded<void>((resolve) => {
          onDrain = () => resolve();
          call.once("drain", onDrain);
        });
        wake = undefined;
        call.removeListener("drain", onDrain);
        if (woke === ENDED) return;
      }
    }
    if (!ended) call.end();
  } finally {
    call.removeListener("status", onEnd);
    call.removeListener("error", onEnd);
    // An iterable left early is closed, so a generator runs its finally blocks (once a pending
    // next() settles: async generators take requests in order).
    if (!finished) it.return?.().catch(() => {});
  }
}
