// gRPC servers inside a test process, on a free loopback port without TLS: the tier between
// unit tests and the multi-process network, for code that streams, resumes, back-pressures and
// times out (log followers, multiplexed streams, peers). Never used by a server.
import type { MessageInitShape } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { createLogger, DiscoveryError, pb } from "@mimi/core";
import {
  addService,
  type Channel,
  type ChannelPool,
  channelPool,
  createGrpcServer,
  listen,
  openChannel,
} from "@mimi/rpc";

/** A server in this process and channels to it. */
export interface InProcessServer {
  readonly address: string;
  /** A new channel to the server (closed by close()). */
  channel(): Channel;
  /** A channel pool that connects every address without TLS (for code that takes a pool). */
  pool(): ChannelPool;
  /** Stops the server at once and closes the channels made here. */
  close(): Promise<void>;
}

/** Starts a server whose services `register` adds. */
export async function startInProcess(register: (server: grpc.Server) => void): Promise<InProcessServer> {
  const server = createGrpcServer();
  register(server);
  const port = await listen(server, "127.0.0.1", 0, grpc.ServerCredentials.createInsecure());
  const address = `127.0.0.1:${port}`;
  const channels: Channel[] = [];
  const open = (to: string) => {
    const ch = openChannel(to, grpc.credentials.createInsecure());
    channels.push(ch);
    return ch;
  };
  return {
    address,
    channel: () => open(address),
    pool: () => channelPool((to) => open(to)),
    async close() {
      for (const ch of channels) ch.close();
      server.forceShutdown();
    },
  };
}

/** What a test DP does with one LookupStream item: reply through `reply`, or not; `end` ends the stream. */
export type LookupItemHandler = (
  item: { requestId: bigint; csi: string },
  reply: (msg: MessageInitShape<typeof pb.LookupStreamResponseSchema>) => Promise<void>,
  end: () => void,
) => void;

/**
 * A DP in this process whose LookupStream hands every item to `onItem` (the other
 * AuthoritativeService calls are refused), for tests of the resolver's side of the stream. As a
 * DP does, it ends a stream whose requests ended once it has replied to each item, unless
 * `endWithRequests` is false (a DP that keeps it open).
 */
export async function startLookupStreamDp(
  onItem: LookupItemHandler,
  { endWithRequests = true } = {},
): Promise<InProcessServer & { readonly openStreams: number }> {
  const log = createLogger({ name: "test-dp", level: "silent" });
  const refuse = async (): Promise<never> => {
    throw new DiscoveryError("failed_precondition", "not in this test");
  };
  let openStreams = 0;
  const server = await startInProcess((s) =>
    addService(
      s,
      pb.AuthoritativeService,
      {
        lookup: refuse,
        watchChanges: refuse,
        async lookupStream(reqs, ctx, send) {
          let ended: () => void = () => {};
          const over = new Promise<void>((r) => {
            ended = r;
          });
          // Items not replied to yet, by request id (a reply to any other id answers none).
          const unanswered = new Set<bigint>();
          let requestsEnded = false;
          const endIfDone = () => {
            if (endWithRequests && requestsEnded && unanswered.size === 0) ended();
          };
          const reply = async (msg: MessageInitShape<typeof pb.LookupStreamResponseSchema>) => {
            await send(msg);
            if (msg.requestId !== undefined) unanswered.delete(BigInt(msg.requestId));
            endIfDone();
          };
          (async () => {
            for await (const r of reqs) {
              unanswered.add(r.requestId);
              onItem({ requestId: r.requestId, csi: r.csi }, reply, ended);
            }
            requestsEnded = true;
            endIfDone();
          })().catch(() => {});
          openStreams++;
          try {
            await Promise.race([
              over,
              new Promise<void>((r) => ctx.signal.addEventListener("abort", () => r(), { once: true })),
            ]);
          } finally {
            openStreams--;
          }
        },
      },
      { log },
    ),
  );
  return {
    ...server,
    get openStreams() {
      return openStreams;
    },
  };
}
