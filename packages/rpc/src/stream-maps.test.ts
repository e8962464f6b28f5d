// Each HTTP/2 session's map of open streams is swapped for a fresh one after full collections
// (stream-maps.ts): over a real grpc-js server, with Node's own sessions, so that a Node that
// keeps its streams otherwise fails here rather than leaving servers unprotected unnoticed.
import assert from "node:assert/strict";
import { EventEmitter } from "node:events";
import type { Http2Server, Http2Session } from "node:http2";
import { after, test } from "node:test";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { create } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { AsyncQueue, createLogger } from "@mimi/core";
import { AuthoritativeService, LookupStreamResponseSchema } from "@mimi/core/pb";
import { until } from "@mimi/core/testing";
import { type Channel, openChannel } from "./channel.js";
import { addService, type ServiceHandlers } from "./grpc.js";
import { createGrpcServer, listen } from "./listen.js";
import { keepStreamMapsYoung, refreshStreamMaps, streamMapRefreshes, streamStateOf } from "./stream-maps.js";

const log = createLogger({ name: "test", level: "silent" });
const servers: grpc.Server[] = [];
const channels: Channel[] = [];
after(() => {
  for (const c of channels) c.close();
  for (const s of servers) s.forceShutdown();
});

/** A server answering Lookup and LookupStream, hooked, and the sessions it is given. */
async function hookedServer(): Promise<{ ch: Channel; sessions: Http2Session[] }> {
  const server = createGrpcServer();
  servers.push(server);
  const answer = { answer: { dpIds: ["dp"] } };
  const handlers: Partial<ServiceHandlers<typeof AuthoritativeService.method>> = {
    lookup: async () => answer,
    async lookupStream(reqs, _ctx, send) {
      for await (const r of reqs) {
        await send(
          create(LookupStreamResponseSchema, {
            requestId: r.requestId,
            result: { case: "response", value: answer },
          }),
        );
      }
    },
  };
  addService(server, AuthoritativeService, handlers as ServiceHandlers<typeof AuthoritativeService.method>, {
    log,
  });
  const port = await listen(server, "127.0.0.1", 0, grpc.ServerCredentials.createInsecure());
  assert.equal(keepStreamMapsYoung(server), true, "grpc-js's listeners are reachable");
  const sessions: Http2Session[] = [];
  const listeners = (server as unknown as { http2Servers: Map<Http2Server, unknown> }).http2Servers;
  for (const l of listeners.keys()) l.on("session", (s: Http2Session) => sessions.push(s));
  const ch = openChannel(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  channels.push(ch);
  return { ch, sessions };
}

test("a session's streams move to a fresh map, and calls open across the swap go on", async () => {
  const { ch, sessions } = await hookedServer();
  const dp = ch.client(AuthoritativeService);
  const feed = new AsyncQueue<{ requestId: bigint; csi: string }>();
  const answers = dp.lookupStream(feed)[Symbol.asyncIterator]();
  feed.push({ requestId: 1n, csi: "tel:+441" });
  assert.equal((await answers.next()).value?.requestId, 1n);

  const session = sessions[0];
  assert.ok(session, "the server saw the connection's session");
  const state = streamStateOf(session);
  assert.ok(state, "Node keeps a session's streams in its state's Map (stream-maps.ts relies on it)");
  const before = state.streams;
  assert.equal(before.size, 1, "the open LookupStream");
  assert.ok(refreshStreamMaps() >= 1);
  const refreshed = streamMapRefreshes();
  const now = streamStateOf(session)?.streams;
  assert.ok(now && now !== before, "a fresh map");
  assert.deepEqual([...now.entries()], [...before.entries()], "holding the same streams");

  // The stream opened before the swap goes on, and ends, leaving the new map; new calls are
  // entered in it.
  feed.push({ requestId: 2n, csi: "tel:+442" });
  assert.equal((await answers.next()).value?.requestId, 2n);
  feed.close();
  assert.equal((await answers.next()).done, true);
  await until(() => streamStateOf(session)?.streams.size === 0, "the ended stream leaves the new map");
  const unary = await dp.lookup({ csi: "tel:+443" });
  assert.deepEqual(unary.answer?.dpIds, ["dp"]);
  // Unless a full collection came meanwhile (the observer is on), the map is the same.
  if (streamMapRefreshes() === refreshed) {
    assert.equal(streamStateOf(session)?.streams, now, "the map is swapped only when asked");
  }
});

test("a session laid out otherwise is said once and left alone", () => {
  const listener = new EventEmitter();
  const server = { http2Servers: new Map([[listener, {}]]) } as unknown as grpc.Server;
  const said: string[] = [];
  assert.equal(
    keepStreamMapsYoung(server, (why) => said.push(why)),
    true,
  );
  const swappable = refreshStreamMaps(); // the other tests' sessions, still open
  const odd = [new EventEmitter(), new EventEmitter()];
  for (const s of odd) listener.emit("session", s);
  assert.equal(said.length, 1, "said at the first session only");
  assert.match(said[0] ?? "", /HTTP\/2 session's streams/);
  assert.equal(refreshStreamMaps(), swappable, "nothing more to swap");
  for (const s of odd) s.emit("close");
});

test("the maps are swapped after a full collection", async () => {
  const { ch } = await hookedServer();
  await ch.client(AuthoritativeService).lookup({ csi: "tel:+441" });
  setFlagsFromString("--expose-gc");
  const gc = runInNewContext("gc") as () => void;
  const before = streamMapRefreshes();
  gc();
  await until(() => streamMapRefreshes() > before, "a refresh after the full collection");
});
