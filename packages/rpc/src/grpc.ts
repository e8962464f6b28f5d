// The server half of the bridge between grpc-js and protobuf-es: typed service handlers built
// from generated service descriptors, with backpressure and cancellation. Whatever a handler
// throws reaches the peer only as a status (status.ts); the client half is channel.ts.

import type { DescMessage, DescMethod, MessageInitShape, MessageShape } from "@bufbuild/protobuf";
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import type { GenService, GenServiceMethods } from "@bufbuild/protobuf/codegenv2";
import type * as grpc from "@grpc/grpc-js";
import { status as grpcStatus } from "@grpc/grpc-js";
import type { Encoded } from "@mimi/core";
import { DiscoveryError } from "@mimi/core";
import type { Logger } from "pino";
import {
  deadlineOf,
  decoder,
  type FastPath,
  fastUnary,
  type ItemErrorReply,
  sizeChecked,
  wellFormed,
} from "./fast-path.js";
import { type CallObservers, observed, streamEnded } from "./metrics.js";
import { type RefusalLog, refusalLog } from "./refusals.js";
import { describeRoles, type Role, rolesOf } from "./roles.js";
import { limitsOf, type WatchSlots } from "./server-limits.js";
import { toWireStatus } from "./status.js";
import { incoming } from "./stream-intake.js";
import { asReply, sending, writer } from "./stream-write.js";

/** Who is calling, as read from the client certificate of the mutual-TLS connection. */
export interface PeerIdentity {
  /** The certificate subject's common name. */
  readonly name: string;
  /** The roles the certificate grants (roles.ts). */
  readonly roles: ReadonlySet<Role>;
}

/** What a handler knows about the call besides the request. */
export interface CallContext {
  /** The authenticated caller; reading it throws UNAUTHENTICATED when the certificate has no common name. */
  readonly peer: PeerIdentity;
  /** The caller's name for logs; never throws, so logging cannot change a call's outcome. */
  readonly peerName: string;
  /** Aborted when the caller cancels or the deadline passes. */
  readonly signal: AbortSignal;
  /** Full method path, e.g. "/mimi.discovery.v1.ResolverService/Resolve". */
  readonly method: string;
  /** When the caller stops waiting (ms since 1970 by this host's clock); Infinity for no deadline. */
  readonly deadlineMs: number;
}

/** The request message of a method. */
export type In<M> = M extends { input: infer I extends DescMessage } ? I : never;
/** The response message of a method. */
export type Out<M> = M extends { output: infer O extends DescMessage } ? O : never;

/** The handler of one method, by its kind. */
export type MethodHandler<M> = M extends { methodKind: "unary" }
  ? (req: MessageShape<In<M>>, ctx: CallContext) => Promise<Reply<M>>
  : M extends { methodKind: "server_streaming" }
    ? (req: MessageShape<In<M>>, ctx: CallContext, send: (msg: Reply<M>) => Promise<void>) => Promise<void>
    : M extends { methodKind: "client_streaming" }
      ? (reqs: AsyncIterable<MessageShape<In<M>>>, ctx: CallContext) => Promise<Reply<M>>
      : M extends { methodKind: "bidi_streaming" }
        ? (
            reqs: AsyncIterable<MessageShape<In<M>>>,
            ctx: CallContext,
            send: (msg: Reply<M>) => Promise<void>,
          ) => Promise<void>
        : never;

/** A response: a message (or its init shape), or its bytes already encoded. */
export type Reply<M> = MessageInitShape<Out<M>> | Encoded<MessageShape<Out<M>>>;

/** Handlers for every method of a service; a missing or mistyped handler is a compile error. */
export type ServiceHandlers<S extends GenServiceMethods> = { [K in keyof S]: MethodHandler<S[K]> };

/** Options for registering a service on a server. */
export interface AddServiceOptions {
  log: Logger;
  /**
   * Roles of which the caller's certificate must hold at least one; checked before the request
   * is read or any hook runs. Unset: any certificate from the network's CA may call.
   */
  roles?: readonly Role[];
  /** Called before every handler, after the role check; throw a DiscoveryError to refuse the call. */
  authorize?: (peer: PeerIdentity, method: string) => void;
  /**
   * Largest request message per method (by its local name) where it is more than the server's
   * `connections.maxRequestBytes`, e.g. a bulk batch; larger messages fail RESOURCE_EXHAUSTED.
   */
  maxRequestBytes?: Readonly<Record<string, number>>;
  /**
   * Per method (by its local name; unary or bidirectional): answers from a request's bytes,
   * tried before it is decoded (rpc/fast-path.ts), e.g. the resolver's cache hits.
   */
  fast?: Readonly<Record<string, FastPath>>;
  /**
   * Per bidirectional method (by its local name): the reply to an item that could not be
   * decoded, so that one bad item fails alone (rpc/fast-path.ts ItemErrorReply). Unset: such
   * an item ends the stream with its status.
   */
  itemErrors?: Readonly<Record<string, ItemErrorReply>>;
}

/** Registers typed handlers for a generated service on a grpc-js server. */
export function addService<S extends GenServiceMethods>(
  server: grpc.Server,
  service: GenService<S>,
  handlers: ServiceHandlers<S>,
  options: AddServiceOptions,
): void {
  const definition: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  const implementation: grpc.UntypedServiceImplementation = {};
  const limits = { ...limitsOf(server), refused: refusalLog(options.log) };
  for (const method of service.methods) {
    const path = `/${service.typeName}/${method.name}`;
    const maxBytes = options.maxRequestBytes?.[method.localName] ?? limits.limits.maxRequestBytes;
    limits.requestBytes.set(path, maxBytes);
    const decode = decoder(method, maxBytes);
    const fast = fastPathOf(method, options);
    // With a fast path the request stays bytes until the fast path declines it.
    definition[method.localName] = methodDefinition(
      method,
      path,
      fast ? sizeChecked(method, maxBytes) : decode,
    );
    const handler = (handlers as Record<string, unknown>)[method.localName] as (
      ...args: unknown[]
    ) => unknown;
    implementation[method.localName] = serverHandler(
      method,
      path,
      handler,
      options,
      limits,
      fast && { fast, decode },
    );
  }
  server.addService(definition, implementation);
}

/** The fast path of `method`, checked against what fast paths allow. */
function fastPathOf(method: DescMethod, options: AddServiceOptions): FastPath | undefined {
  const fast = options.fast?.[method.localName];
  if (!fast) return undefined;
  if (options.roles || options.authorize) {
    throw new Error(`${method.name}: a fast path runs before role checks, so its service may have none`);
  }
  if (method.methodKind !== "unary" && method.methodKind !== "bidi_streaming") {
    throw new Error(`${method.name}: fast paths are for unary and bidirectional methods`);
  }
  return fast;
}

function methodDefinition(
  method: DescMethod,
  path: string,
  deserialize: (buf: Buffer) => unknown,
): grpc.MethodDefinition<unknown, unknown> {
  return {
    path,
    requestStream: method.methodKind === "client_streaming" || method.methodKind === "bidi_streaming",
    responseStream: method.methodKind === "server_streaming" || method.methodKind === "bidi_streaming",
    requestSerialize: (msg: unknown) => Buffer.from(toBinary(method.input, msg as MessageShape<DescMessage>)),
    requestDeserialize: deserialize,
    responseSerialize: (msg: unknown) =>
      msg instanceof Uint8Array
        ? Buffer.from(msg.buffer, msg.byteOffset, msg.byteLength)
        : Buffer.from(toBinary(method.output, msg as MessageShape<DescMessage>)),
    responseDeserialize: (buf: Buffer) => fromBinary(method.output, buf),
  };
}

type AnyCall =
  | grpc.ServerUnaryCall<unknown, unknown>
  | grpc.ServerReadableStream<unknown, unknown>
  | grpc.ServerWritableStream<unknown, unknown>
  | grpc.ServerDuplexStream<unknown, unknown>;

/**
 * The per-call context. Both the peer identity and the abort signal are made on first use:
 * reading the certificate (grpc-js converts the whole X.509, fingerprints included) and
 * wiring an AbortController cost more than a cache hit does, and most calls need neither.
 *
 * A class with its getters on the prototype, never an object literal with getters made per
 * call: V8 allocates such a literal's accessor pairs in old space, so what the getters' closures
 * hold (here the whole grpc-js call) outlives the young generation until a full collection, for
 * every call (ARCHITECTURE.md, "Hot paths").
 */
class ServerCallContext implements CallContext {
  readonly #call: AnyCall;
  #controller: AbortController | undefined;
  #onCancel: (() => void) | undefined;
  #peer: PeerIdentity | undefined;

  constructor(
    call: AnyCall,
    readonly method: string,
  ) {
    this.#call = call;
  }

  get peer(): PeerIdentity {
    this.#peer ??= peerOf(this.#call);
    return this.#peer;
  }

  get peerName(): string {
    try {
      return this.peer.name;
    } catch {
      return "(no common name)";
    }
  }

  get signal(): AbortSignal {
    if (!this.#controller) {
      const c = new AbortController();
      this.#controller = c;
      const onCancel = () => c.abort(new DiscoveryError("upstream_unavailable", "call cancelled"));
      this.#onCancel = onCancel;
      const events = this.#events();
      if (events.cancelled) onCancel();
      else events.on("cancelled", onCancel);
    }
    return this.#controller.signal;
  }

  get deadlineMs(): number {
    return deadlineOf(this.#call);
  }

  /** The handler is done with the call: stops listening for its cancellation. */
  done(): void {
    if (this.#onCancel) this.#events().removeListener("cancelled", this.#onCancel);
  }

  #events(): NodeJS.EventEmitter & { cancelled?: boolean } {
    return this.#call as unknown as NodeJS.EventEmitter & { cancelled?: boolean };
  }
}

// The identity of each HTTP/2 connection, read from its certificate once. Node converts the
// whole X.509 on every getPeerCertificate() (about 25 us here), and a DP limits every lookup
// by its caller, as a resolver does every miss. A connection's
// certificate cannot change: Node's HTTP/2 disables TLS renegotiation on every session, and
// servers speak TLS 1.3 only (tls.ts), which has none.
const peersBySession = new WeakMap<object, PeerIdentity>();

/**
 * The HTTP/2 session under a call, reached through grpc-js 1.14's private fields (the call's
 * `call`, then `nextCall` through any interceptors, to the base call's `stream`); undefined
 * when they are not there, and the certificate is then read per call as before.
 */
function sessionOf(call: AnyCall): object | undefined {
  let c = (call as unknown as { call?: unknown }).call as
    | { stream?: { session?: object }; nextCall?: unknown }
    | undefined;
  for (let depth = 0; c && depth < 8; depth++) {
    if (c.stream) return c.stream.session;
    c = c.nextCall as typeof c;
  }
  return undefined;
}

/** The certificate identity of a call's peer, read once per connection (for raw grpc-js handlers). */
export function peerOf(call: AnyCall): PeerIdentity {
  const session = sessionOf(call);
  const known = session && peersBySession.get(session);
  if (known) return known;
  const peer = peerFromCertificate(call);
  if (session) peersBySession.set(session, peer);
  return peer;
}

function peerFromCertificate(call: AnyCall): PeerIdentity {
  const cert = call.getAuthContext().sslPeerCertificate;
  const cn = cert?.subject?.CN;
  const name = Array.isArray(cn) ? cn[0] : cn;
  if (!name) {
    throw new DiscoveryError(
      "unauthenticated",
      "a client certificate with a subject common name is required",
    );
  }
  return { name, roles: rolesOf(cert) };
}

/** The per-call check of a service's required roles, or undefined when any role may call. */
function roleCheck(
  roles: readonly Role[] | undefined,
  path: string,
): ((peer: PeerIdentity) => void) | undefined {
  if (!roles) return undefined;
  const service = path.split("/")[1] ?? path;
  return (peer) => {
    for (const r of roles) if (peer.roles.has(r)) return;
    throw new DiscoveryError(
      "permission_denied",
      `identity "${peer.name}" (role ${describeRoles(peer.roles)}) may not call ${service}: ` +
        `it needs a certificate with role ${describeRoles(roles)}`,
    );
  };
}

const CALL_TYPES = {
  unary: "unary",
  client_streaming: "client_stream",
  server_streaming: "server_stream",
  bidi_streaming: "bidi_stream",
} as const;

/**
 * The grpc-js handler of one method, counted for the ops listener's metrics when the server has
 * observers: each call's start, and its end with the status it ended with (CANCELLED when the
 * caller went away).
 */
function serverHandler(
  method: DescMethod,
  path: string,
  handler: (...args: unknown[]) => unknown,
  options: AddServiceOptions,
  limits: {
    watchers: WatchSlots;
    streamingCalls: WatchSlots;
    observers?: CallObservers;
    refused: RefusalLog;
  },
  fast?: FastDecoding,
): grpc.UntypedHandleCall {
  let raw = methodHandler(method, path, handler, options, limits, fast);
  if (fast && method.methodKind === "unary") {
    const fail = (err: DiscoveryError) => toWireStatus(err, options.log, path);
    raw = fastUnary(raw as grpc.handleUnaryCall<unknown, unknown>, fast.fast, fast.decode, fail, peerOf);
  }
  if (!limits.observers) return raw;
  return observed(raw, limits.observers(path, CALL_TYPES[method.methodKind]), method.methodKind);
}

/** A method's fast path and the decoder of the requests it declines. */
interface FastDecoding {
  fast: FastPath;
  decode: (buf: Buffer) => unknown;
}

function methodHandler(
  method: DescMethod,
  path: string,
  handler: (...args: unknown[]) => unknown,
  { log, authorize, roles, itemErrors }: AddServiceOptions,
  {
    watchers,
    streamingCalls,
    refused,
  }: { watchers: WatchSlots; streamingCalls: WatchSlots; refused: RefusalLog },
  fast: FastDecoding | undefined,
): grpc.UntypedHandleCall {
  const fail = (err: unknown) => toWireStatus(err, log, path);
  // The TLS handshake already refused clients without a certificate from our CA (servers
  // require and verify one); the identity is read per call only where a check needs it.
  const needsRole = roleCheck(roles, path);
  const check =
    needsRole || authorize
      ? (ctx: CallContext) => {
          try {
            needsRole?.(ctx.peer);
            authorize?.(ctx.peer, path);
          } catch (err) {
            refused(() => ctx.peer.name, path, err);
            throw err;
          }
        }
      : undefined;
  switch (method.methodKind) {
    case "unary":
      return (call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => {
        const ctx = new ServerCallContext(call, path);
        (async () => {
          check?.(ctx);
          const out = await handler(wellFormed(call.request), ctx);
          return asReply(method, out);
        })().then(
          (res) => {
            ctx.done();
            callback(null, res);
          },
          (err) => {
            ctx.done();
            callback(fail(err));
          },
        );
      };
    case "server_streaming":
      // Server streams are watches, held open for long: each takes a slot of its caller's
      // identity (connections.maxWatchersPerIdentity), given back when the stream ends.
      return (call: grpc.ServerWritableStream<unknown, unknown>) => {
        const ctx = new ServerCallContext(call, path);
        const send = sending(writer(call, method, ctx.signal));
        let release: (() => void) | undefined;
        const finish = () => {
          release?.();
          ctx.done();
        };
        (async () => {
          check?.(ctx);
          release = watchers.acquire(ctx.peerName);
          await handler(wellFormed(call.request), ctx, send);
        })().then(
          () => {
            finish();
            streamEnded(call, grpcStatus.OK);
            call.end();
          },
          (err) => {
            finish();
            if (call.cancelled) return;
            const status = fail(err);
            streamEnded(call, status.code ?? grpcStatus.UNKNOWN);
            call.emit("error", status);
          },
        );
      };
    case "client_streaming":
      // Client and bidirectional streams take a slot of their caller's identity too
      // (connections.maxStreamingCallsPerIdentity), for as long as they are open.
      return (call: grpc.ServerReadableStream<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => {
        const ctx = new ServerCallContext(call, path);
        let release: (() => void) | undefined;
        (async () => {
          check?.(ctx);
          release = streamingCalls.acquire(ctx.peerName);
          const out = await handler(incoming(call), ctx);
          return asReply(method, out);
        })().then(
          (res) => {
            release?.();
            ctx.done();
            callback(null, res);
          },
          (err) => {
            release?.();
            ctx.done();
            callback(fail(err));
          },
        );
      };
    case "bidi_streaming":
      return (call: grpc.ServerDuplexStream<unknown, unknown>) => {
        const ctx = new ServerCallContext(call, path);
        const write = writer(call, method, ctx.signal);
        const send = sending(write);
        let release: (() => void) | undefined;
        (async () => {
          check?.(ctx);
          release = streamingCalls.acquire(ctx.peerName);
          const itemError = itemErrors?.[method.localName];
          await handler(
            incoming(call, fast && { ...fast, write }, itemError && { reply: itemError, write }),
            ctx,
            send,
          );
        })().then(
          () => {
            release?.();
            ctx.done();
            streamEnded(call, grpcStatus.OK);
            call.end();
          },
          (err) => {
            release?.();
            ctx.done();
            if (call.cancelled) return;
            const status = fail(err);
            streamEnded(call, status.code ?? grpcStatus.UNKNOWN);
            call.emit("error", status);
          },
        );
      };
  }
}
