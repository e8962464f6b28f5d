// The resolver's multiplexed LookupStream against a DP played by an in-process gRPC server:
// answers matched by request id whatever their order, item errors as statuses, the per-item
// timeout and the DP's late answer to it, a stream that stops answering, the pending cap, a
// stream that ends, and a stream retired when its endpoint left the registry.
import assert from "node:assert/strict";
import { after, test } from "node:test";
import { status } from "@grpc/grpc-js";
import { DiscoveryError, pb } from "@mimi/core";
import { until } from "@mimi/core/testing";
import { type InProcessServer, type LookupItemHandler, startLookupStreamDp } from "@mimi/devnet/in-process";
import { LookupMux, STREAM_ENDED, UPSTREAM_TIMEOUT, unansweredAtDp } from "./lookup-mux.js";

const servers: InProcessServer[] = [];
after(async () => {
  for (const s of servers) await s.close();
});

type Item = { requestId: bigint; csi: string };

/** Whether `mux`'s stream has ended, as a function to poll with until(). */
function endedOf(mux: LookupMux): () => boolean {
  let ended = false;
  void mux.ended.then(() => {
    ended = true;
  });
  return () => ended;
}

/** A DP whose LookupStream hands every item to `onItem`, which answers (or not) through `reply`. */
async function dp(onItem: LookupItemHandler, o?: { endWithRequests?: boolean }) {
  const server = await startLookupStreamDp(onItem, o);
  servers.push(server);
  return server;
}

const found = (requestId: bigint, ssi: string) => ({
  requestId,
  result: {
    case: "response" as const,
    value: {
      answer: {
        status: pb.LookupStatus.FOUND,
        mappings: [{ mspId: "m.example", ssi }],
        ttlSeconds: 60,
      },
    },
  },
});

test("answers find their lookups by request id, in whatever order they come", async () => {
  const held: Item[] = [];
  const server = await dp((item, reply) => {
    held.push(item);
    // Answer in reverse once three are in.
    if (held.length === 3) for (const h of [...held].reverse()) void reply(found(h.requestId, h.csi));
  });
  const mux = new LookupMux(server.channel(), { what: "test stream", timeoutMs: 10_000 });
  const answers = await Promise.all(["a", "b", "c"].map((csi) => mux.lookup(csi)));
  assert.deepEqual(
    answers.map((a) => a?.mappings[0]?.ssi),
    ["a", "b", "c"],
  );
  assert.equal(mux.pendingCount, 0);
  mux.close();
});

test("an item error is that item's failure, with the DP's status", async () => {
  const server = await dp((item, reply) => {
    void reply(
      item.csi === "refused"
        ? {
            requestId: item.requestId,
            result: { case: "error", value: { code: status.PERMISSION_DENIED, message: "not yours" } },
          }
        : found(item.requestId, item.csi),
    );
  });
  const mux = new LookupMux(server.channel(), { what: "test stream", timeoutMs: 10_000 });
  await assert.rejects(mux.lookup("refused"), (err: unknown) => {
    assert.ok(err instanceof DiscoveryError);
    assert.equal(err.code, "permission_denied");
    assert.equal(err.remoteStatus, status.PERMISSION_DENIED);
    return true;
  });
  assert.equal((await mux.lookup("fine"))?.mappings[0]?.ssi, "fine", "the stream goes on");
  mux.close();
});

test("an unanswered item times out alone while the stream keeps answering others", async () => {
  const server = await dp((item, reply) => {
    if (item.csi !== "silent") void reply(found(item.requestId, item.csi));
  });
  const mux = new LookupMux(server.channel(), { what: "test stream", timeoutMs: 50 });
  const silent = mux.lookup("silent");
  assert.equal((await mux.lookup("heard"))?.mappings[0]?.ssi, "heard");
  await assert.rejects(silent, /no answer within 50 ms/);
  assert.equal(mux.dead, false, "something was heard after it was sent, so the stream is kept");
  mux.close();
});

test("a stream on which nothing is heard while an item times out is dropped, failing every pending item", async () => {
  const server = await dp(() => {});
  const mux = new LookupMux(server.channel(), { what: "test stream", timeoutMs: 50 });
  const first = mux.lookup("one");
  const second = mux.lookup("two");
  // Nothing heard since the first was sent when it gives up.
  await assert.rejects(first, /no answer within/);
  await assert.rejects(second, (err: unknown) => {
    assert.ok(err instanceof DiscoveryError);
    assert.equal(err.code, "upstream_unavailable");
    assert.match(err.message, /stopped answering/);
    // Timed out with its stream: the window shrinks, and the lookup may be tried again.
    assert.equal(err.details?.reason, UPSTREAM_TIMEOUT);
    // The stream is gone, and what the DP held of it with it.
    assert.equal(unansweredAtDp(err), undefined);
    return true;
  });
  assert.equal(mux.dead, true);
  assert.equal(mux.pendingCount, 0);
});

/** The failure of `p`, which must fail. */
const failureOf = (p: Promise<unknown>) =>
  p.then(
    () => assert.fail("answered"),
    (err: unknown) => err,
  );

/**
 * A DP that answers "ping" at once and holds everything else for the test (a DP that is slow,
 * not silent: the pings keep its stream heard).
 */
async function slowDp() {
  const held: { item: Item; reply: (m: ReturnType<typeof found>) => Promise<void> }[] = [];
  let end = () => {};
  const server = await dp((item, reply, endStream) => {
    if (item.csi === "ping") void reply(found(item.requestId, "pong"));
    else held.push({ item, reply });
    end = endStream;
  });
  return { server, held, end: () => end() };
}

/** `csi` looked up and failed (timed out), with a ping answered after it was sent. */
async function timedOutWhileHeard(mux: LookupMux, csi: string): Promise<unknown> {
  const failure = failureOf(mux.lookup(csi));
  assert.equal((await mux.lookup("ping"))?.mappings[0]?.ssi, "pong");
  return failure;
}

test("an item that timed out is the DP's work until it answers late, or the stream ends", async () => {
  const dp = await slowDp();
  const mux = new LookupMux(dp.server.channel(), {
    what: "test stream",
    timeoutMs: 500,
    lateAnswerMs: 60_000,
  });
  const first = await timedOutWhileHeard(mux, "late");
  assert.match(String(first), /no answer within 500 ms/);
  const late = unansweredAtDp(first);
  assert.ok(late, "a timeout says when the DP is done with it");
  assert.equal(mux.pendingCount, 1, "still the DP's work");
  await dp.held[0]?.reply(found(dp.held[0]?.item.requestId ?? 0n, "late"));
  const reply = await late;
  assert.ok(reply && "answer" in reply, "the late reply is the DP's answer");
  assert.equal(reply.answer?.mappings[0]?.ssi, "late");
  assert.equal(mux.pendingCount, 0);

  // One the DP never answers is its work until its stream ends.
  const second = await timedOutWhileHeard(mux, "never");
  assert.equal(mux.pendingCount, 1);
  dp.end();
  assert.equal(await unansweredAtDp(second), undefined, "no reply came");
  assert.equal(mux.pendingCount, 0);
  assert.equal(mux.dead, true);

  // Any other failure leaves nothing at the DP to wait for.
  const refused = await failureOf(mux.lookup("after the end"));
  assert.match(String(refused), /the stream has ended/);
  assert.equal(unansweredAtDp(refused), undefined);
});

test("an item the DP never answers gives its place back at the bound", async () => {
  const dp = await slowDp();
  const mux = new LookupMux(dp.server.channel(), { what: "test stream", timeoutMs: 500, lateAnswerMs: 50 });
  const err = await timedOutWhileHeard(mux, "never");
  assert.equal(mux.pendingCount, 1);
  assert.equal(await unansweredAtDp(err), undefined);
  assert.equal(mux.pendingCount, 0);
  assert.equal(mux.dead, false);
  mux.close();
});

test("a stream silent for a deadline after an item timed out is dropped, ending the wait for its late reply", async () => {
  const dp = await slowDp();
  const mux = new LookupMux(dp.server.channel(), {
    what: "test stream",
    timeoutMs: 100,
    lateAnswerMs: 60_000,
  });
  const err = await timedOutWhileHeard(mux, "late");
  assert.equal(mux.dead, false, "heard after it was sent");
  assert.equal(await unansweredAtDp(err), undefined, "no reply: the stream went silent");
  assert.equal(mux.dead, true);
  assert.equal(mux.pendingCount, 0);
});

test("replies to request ids the stream is not waiting on are no sign of life: a stream sending only those is dropped", async () => {
  const server = await dp((item, reply) => void reply(found(item.requestId + 1_000n, "junk")));
  const mux = new LookupMux(server.channel(), { what: "test stream", timeoutMs: 50 });
  await assert.rejects(mux.lookup("x"), /no answer within 50 ms/);
  assert.equal(mux.dead, true, "nothing it was asked was heard while it waited");
});

test("past the pending cap a lookup is refused at once, as an overloaded DP; timed-out items count", async () => {
  const server = await dp(() => {});
  const mux = new LookupMux(server.channel(), { what: "test stream", timeoutMs: 10_000, maxPending: 3 });
  const waiting = ["a", "b", "c"].map((csi) => mux.lookup(csi).catch((err: Error) => err));
  await assert.rejects(mux.lookup("d"), /3 lookups already waiting/);
  assert.equal(mux.pendingCount, 3);
  mux.close();
  for (const w of await Promise.all(waiting)) assert.ok(w instanceof DiscoveryError);

  // Items that timed out and are not answered yet still take their places under the cap.
  const slowly = await slowDp();
  const slow = new LookupMux(slowly.server.channel(), {
    what: "test stream",
    timeoutMs: 500,
    maxPending: 3,
    lateAnswerMs: 60_000,
  });
  const a = failureOf(slow.lookup("a"));
  await timedOutWhileHeard(slow, "b");
  await a;
  const c = failureOf(slow.lookup("c"));
  await assert.rejects(slow.lookup("d"), /3 lookups already waiting/);
  slow.close();
  await c;
  assert.equal(slow.pendingCount, 0, "closing gives them back");
});

test("when the DP ends the stream, pending items fail as unavailable and the mux is dead", async () => {
  const server = await dp((_item, _reply, end) => end());
  const mux = new LookupMux(server.channel(), { what: "test stream", timeoutMs: 10_000 });
  await assert.rejects(mux.lookup("x"), (err: unknown) => {
    assert.ok(err instanceof DiscoveryError);
    assert.equal(err.code, "upstream_unavailable");
    // Not answered: a new stream may be asked.
    assert.equal(err.details?.reason, STREAM_ENDED);
    return true;
  });
  assert.equal(mux.dead, true);
});

test("a retired stream sends what was queued, takes no more lookups, and ends once the DP has answered", async () => {
  const held: (() => Promise<void>)[] = [];
  const server = await dp((item, reply) => void held.push(() => reply(found(item.requestId, item.csi))));
  // Nothing here times out, stalls or is cut: only the DP's end can end the stream.
  const mux = new LookupMux(server.channel(), { what: "test stream", timeoutMs: 60_000 });
  // Retired in the same turn as the lookup, which is still queued: it is sent all the same.
  const sent = mux.lookup("a");
  mux.retire();
  await assert.rejects(mux.lookup("b"), (e: DiscoveryError) => e.code === "upstream_unavailable");
  await until(() => held.length === 1, "the DP holds the item");
  await (held[0] as () => Promise<void>)();
  assert.equal((await sent)?.mappings[0]?.ssi, "a");
  const ended = endedOf(mux);
  await until(() => ended() && server.openStreams === 0, "the DP ends the stream");
  assert.equal(held.length, 1, "nothing more was sent");
});

test("a retired stream the DP keeps open is cut at the late-answer bound; one it stops answering is dropped", async () => {
  // The DP answered everything but does not end the stream: only the cut ends it.
  const open = await dp((item, reply) => void reply(found(item.requestId, item.csi)), {
    endWithRequests: false,
  });
  const kept = new LookupMux(open.channel(), { what: "test stream", timeoutMs: 60_000, lateAnswerMs: 200 });
  assert.equal((await kept.lookup("a"))?.mappings[0]?.ssi, "a");
  kept.retire();
  const cut = endedOf(kept);
  await until(() => cut() && open.openStreams === 0, "the stream is cut");
  // A DP silent on a retired stream: its item times out and the stream is dropped as stalled.
  const silent = await dp(() => {}, { endWithRequests: false });
  const quiet = new LookupMux(silent.channel(), {
    what: "test stream",
    timeoutMs: 50,
    lateAnswerMs: 3_600_000,
  });
  const lost = quiet.lookup("a");
  quiet.retire();
  await assert.rejects(lost, (e: DiscoveryError) => e.details?.reason === UPSTREAM_TIMEOUT);
  const dropped = endedOf(quiet);
  await until(() => dropped() && silent.openStreams === 0, "the silent stream is dropped");
});
