// A stream's request intake over a Duplex standing in for grpc-js's server call (object mode,
// fed with push() as grpc-js feeds it): the bound on what it reads ahead of the handler, fast
// replies with no reader, their back-pressure, undecodable items, cancellation and stopping.
import assert from "node:assert/strict";
import { Duplex } from "node:stream";
import { test } from "node:test";
import type * as grpc from "@grpc/grpc-js";
import { DiscoveryError } from "@mimi/core";
import { until, untilCollected } from "@mimi/core/testing";
import { Malformed } from "./fast-path.js";
import { type FastItems, incoming, MAX_QUEUED_ITEMS } from "./stream-intake.js";

type Call = grpc.ServerDuplexStream<unknown, unknown>;

/** A call whose requests the test pushes, and whose writes it records. */
function fakeCall() {
  const written: unknown[] = [];
  const duplex = new Duplex({
    objectMode: true,
    read() {},
    write(chunk, _enc, done) {
      written.push(chunk);
      done();
    },
  });
  return { call: duplex as unknown as Call, duplex, written };
}

/** How `p` settles, failing (not hanging) when it does not within some turns of the event loop. */
async function settled<T>(p: Promise<T>): Promise<{ value: T } | { error: unknown }> {
  let out: { value: T } | { error: unknown } | undefined;
  p.then(
    (value) => {
      out = { value };
    },
    (error: unknown) => {
      out = { error };
    },
  );
  await until(() => out !== undefined, "the promise settled", 10_000);
  return out as { value: T } | { error: unknown };
}

/** The requests not yet handed to the intake: what the call still buffers. */
const unread = (d: Duplex) => d.readableLength;

test("an item waits for the handler: the call pauses while one is held and flows as items are taken", async () => {
  const { call, duplex } = fakeCall();
  const items = incoming(call)[Symbol.asyncIterator]();
  for (let i = 0; i < 40; i++) duplex.push(`r${i}`);
  duplex.push(null);
  // Nothing taken yet: the queue holds its bound and the call keeps the rest.
  await until(() => duplex.isPaused() && unread(duplex) === 40 - MAX_QUEUED_ITEMS, "paused at the bound");
  const got: unknown[] = [];
  for (let i = 0; i < 10; i++) got.push((await items.next()).value);
  await until(() => unread(duplex) === 40 - MAX_QUEUED_ITEMS - 10, "read on as the handler took ten");
  assert.ok(duplex.isPaused(), "full again");
  for (;;) {
    const r = await items.next();
    if (r.done) break;
    got.push(r.value);
  }
  assert.deepEqual(
    got,
    Array.from({ length: 40 }, (_, i) => `r${i}`),
  );
  assert.equal((await items.next()).done, true, "ended stays ended");
});

test("a fast path answers items as they come, with no reader; what it declines waits for the handler, in order", async () => {
  const { call, duplex, written } = fakeCall();
  const decoded: string[] = [];
  const fast: FastItems = {
    fast: (b) => (b.toString().startsWith("hit") ? Buffer.from(`answer ${b}`) : undefined),
    decode: (b) => {
      decoded.push(b.toString());
      return b.toString();
    },
    write: (reply) => {
      call.write(reply);
      return undefined;
    },
  };
  const items = incoming(call, fast)[Symbol.asyncIterator]();
  for (let i = 0; i < 30; i++) duplex.push(Buffer.from(`hit${i}`));
  for (let i = 0; i < 5; i++) duplex.push(Buffer.from(`miss${i}`));
  for (let i = 30; i < 60; i++) duplex.push(Buffer.from(`hit${i}`));
  // No reader yet: the hits before the first miss are answered, and the call pauses on the miss.
  await until(() => duplex.isPaused() && written.length === 30, "paused on the first miss");
  assert.deepEqual(decoded, ["miss0"]);
  assert.equal(unread(duplex), 34, "the misses and hits behind it wait in the call");
  const misses: unknown[] = [];
  while (misses.length < 5) misses.push((await items.next()).value);
  assert.deepEqual(
    misses,
    Array.from({ length: 5 }, (_, i) => `miss${i}`),
  );
  await until(() => written.length === 60, "every hit answered");
  assert.deepEqual(
    written.map(String),
    Array.from({ length: 60 }, (_, i) => `answer hit${i}`),
  );
});

test("a fast reply that must wait for the peer pauses reading until it is written", async () => {
  const { call, duplex, written } = fakeCall();
  let release: (() => void) | undefined;
  const fast: FastItems = {
    fast: (b) => Buffer.from(`answer ${b}`),
    decode: (b) => b,
    write: (reply) => {
      written.push(reply);
      // The third reply finds the peer behind.
      return written.length === 3
        ? new Promise<void>((r) => {
            release = r;
          })
        : undefined;
    },
  };
  incoming(call, fast)[Symbol.asyncIterator]();
  for (let i = 0; i < 10; i++) duplex.push(Buffer.from(`hit${i}`));
  await until(() => release !== undefined && duplex.isPaused(), "paused on the waiting write");
  assert.equal(written.length, 3);
  release?.();
  await until(() => written.length === 10, "the rest answered once it was written");
});

test("an undecodable item is answered as it comes; without a reply its status ends the items, after those before it", async () => {
  const bad = (b: Buffer) => new Malformed("bad varint", b);
  // With an item error reply: written as it comes, as a fast reply is, and the stream goes on.
  {
    const { call, duplex, written } = fakeCall();
    const errors = {
      reply: (bytes: Buffer, err: DiscoveryError) => Buffer.from(`error for ${bytes}: ${err.code}`),
      write: (r: unknown) => {
        call.write(r);
        return undefined;
      },
    };
    const items = incoming(call, undefined, errors)[Symbol.asyncIterator]();
    duplex.push(bad(Buffer.from("x")));
    duplex.push("a");
    duplex.push("b");
    duplex.push(null);
    await until(() => written.length === 1, "answered with no reader");
    assert.deepEqual(written.map(String), ["error for x: invalid_argument"]);
    assert.equal((await items.next()).value, "a");
    assert.equal((await items.next()).value, "b");
    assert.equal((await items.next()).done, true);
  }
  // While the handler waits for an item, any number of bad ones are answered and its wait
  // goes on, for the next good one.
  {
    const { call, duplex, written } = fakeCall();
    let behind: (() => void) | undefined;
    const errors = {
      reply: (bytes: Buffer) => Buffer.from(`error for ${bytes}`),
      write: (r: unknown) => {
        written.push(r);
        // The 500th reply finds the peer behind: reading waits for it.
        return written.length === 500
          ? new Promise<void>((resolve) => {
              behind = resolve;
            })
          : undefined;
      },
    };
    const items = incoming(call, undefined, errors)[Symbol.asyncIterator]();
    const waiting = items.next();
    for (let i = 0; i < 1_000; i++) duplex.push(bad(Buffer.from(`x${i}`)));
    duplex.push("good");
    await until(() => behind !== undefined && duplex.isPaused(), "paused behind the peer");
    assert.equal(written.length, 500);
    behind?.();
    const out = await settled(waiting);
    assert.ok("value" in out && out.value.value === "good", "the wait ends with the good item");
    assert.equal(written.length, 1_000);
  }
  // Without one: the items before it, then its status; nothing after it is read.
  {
    const { call, duplex } = fakeCall();
    const items = incoming(call)[Symbol.asyncIterator]();
    duplex.push("a");
    duplex.push(bad(Buffer.from("x")));
    duplex.push("b");
    assert.equal((await items.next()).value, "a");
    await assert.rejects(items.next(), (err: unknown) => {
      assert.ok(err instanceof DiscoveryError);
      assert.equal(err.code, "invalid_argument");
      assert.match(err.message, /malformed request message: bad varint/);
      return true;
    });
    assert.equal(duplex.listenerCount("data"), 0, "reading stopped at the bad item");
    assert.equal(unread(duplex), 1, "the item after it is not taken");
  }
  // An item over the method's size ends the stream even with an item error reply.
  {
    const { call, duplex } = fakeCall();
    const errors = { reply: () => Buffer.from("never"), write: () => undefined };
    const items = incoming(call, undefined, errors)[Symbol.asyncIterator]();
    duplex.push(new Malformed("too large", Buffer.alloc(8), true));
    await assert.rejects(
      items.next(),
      (err: unknown) => err instanceof DiscoveryError && err.code === "resource_exhausted",
    );
  }
});

test("a call cancelled before or while the handler reads ends its items with an error; return() stops reading", async () => {
  // Cancelled (grpc-js destroys the call) before the handler began: no event is missed.
  {
    const { call, duplex } = fakeCall();
    duplex.destroy();
    await until(() => duplex.closed, "closed");
    const out = await settled(incoming(call)[Symbol.asyncIterator]().next());
    assert.ok(
      "error" in out && /closed before its requests ended/.test(String(out.error)),
      "an error, at once",
    );
  }
  // Cancelled while the handler waits for an item.
  {
    const { call, duplex } = fakeCall();
    const waiting = incoming(call)[Symbol.asyncIterator]().next();
    duplex.destroy();
    const out = await settled(waiting);
    assert.ok(
      "error" in out && /closed before its requests ended/.test(String(out.error)),
      "the wait ends in an error",
    );
  }
  // Half-closed before the handler began: done.
  {
    const { call, duplex } = fakeCall();
    duplex.push(null);
    duplex.resume();
    await until(() => duplex.readableEnded, "ended");
    const out = await settled(incoming(call)[Symbol.asyncIterator]().next());
    assert.ok("value" in out && out.value.done === true, "done, at once");
  }
  // The handler stops early: nothing more is read, and the call stays open for its replies.
  {
    const { call, duplex, written } = fakeCall();
    const items = incoming(call)[Symbol.asyncIterator]();
    duplex.push("a");
    assert.equal((await items.next()).value, "a");
    await items.return?.();
    duplex.push("b");
    assert.equal(duplex.listenerCount("data"), 0);
    assert.equal(unread(duplex), 1, "b is not taken");
    assert.equal((await items.next()).done, true);
    call.write("reply");
    assert.deepEqual(written, ["reply"]);
    assert.ok(!duplex.destroyed);
  }
});

test("a handler slower than its peer keeps only what waits: items it took are let go while the stream stays open", async () => {
  const { call, duplex } = fakeCall();
  const items = incoming(call)[Symbol.asyncIterator]();
  // Far more than the call buffers: it is never empty while the handler takes them one by one.
  for (let i = 0; i < 400; i++) duplex.push({ n: i });
  const taken: WeakRef<object>[] = [];
  for (let i = 0; i < 300; i++) {
    const r = await items.next();
    taken.push(new WeakRef(r.value as object));
    // The handler's own wait between items, in which the call reads on.
    await new Promise((resolve) => setImmediate(resolve));
  }
  assert.ok(unread(duplex) > 0, "the queue never ran dry");
  await untilCollected(taken, 1, "the items taken let go (the last may still be held)");
});

test("a cancelled call, or a fast reply that fails, starts no more work: what waits is dropped", async () => {
  // Destroyed, and asked at once, before the "close" event comes.
  {
    const { call, duplex } = fakeCall();
    const items = incoming(call)[Symbol.asyncIterator]();
    for (let i = 0; i < 5; i++) duplex.push(`r${i}`);
    await until(() => duplex.isPaused() && unread(duplex) === 5 - MAX_QUEUED_ITEMS, "one held");
    duplex.destroy();
    const out = await settled(items.next());
    assert.ok("error" in out && /closed before its requests ended/.test(String(out.error)));
  }
  // Cancelled after the peer's half-close (grpc-js marks the call cancelled).
  {
    const { call, duplex } = fakeCall();
    const items = incoming(call)[Symbol.asyncIterator]();
    duplex.push("r0");
    duplex.push(null);
    await until(() => duplex.readableEnded, "half-closed, r0 held");
    (duplex as unknown as { cancelled: boolean }).cancelled = true;
    const out = await settled(items.next());
    assert.ok("error" in out && /closed before its requests ended/.test(String(out.error)));
  }
  {
    const { call, duplex } = fakeCall();
    const items = incoming(call)[Symbol.asyncIterator]();
    for (let i = 0; i < 5; i++) duplex.push(`r${i}`);
    await until(() => duplex.isPaused() && unread(duplex) === 5 - MAX_QUEUED_ITEMS, "one held");
    duplex.destroy();
    await until(() => duplex.closed, "closed");
    const out = await settled(items.next());
    assert.ok(
      "error" in out && /closed before its requests ended/.test(String(out.error)),
      `no queued item after a cancel: ${JSON.stringify("value" in out ? out.value : String(out.error))}`,
    );
  }
  // A fast reply that fails ends the items at once (nothing is held then: the call was paused
  // for the reply, so the miss behind it was never read).
  {
    const { call, duplex } = fakeCall();
    let fail: ((err: Error) => void) | undefined;
    const fast: FastItems = {
      fast: (b) => (b.toString() === "hit" ? Buffer.from("answer") : undefined),
      decode: (b) => b.toString(),
      write: () =>
        new Promise<void>((_, reject) => {
          fail = reject;
        }),
    };
    const items = incoming(call, fast)[Symbol.asyncIterator]();
    duplex.push(Buffer.from("hit"));
    duplex.push(Buffer.from("miss"));
    await until(() => fail !== undefined && duplex.isPaused(), "the hit's reply waits");
    fail?.(new Error("the peer went away"));
    await new Promise((resolve) => setImmediate(resolve));
    const out = await settled(items.next());
    assert.ok(
      "error" in out && /the peer went away/.test(String(out.error)),
      "the miss behind it is never handed over",
    );
  }
});

test("a pending next() ends when the handler stops; a decoder that throws fails the stream, not the process", async () => {
  {
    const { call } = fakeCall();
    const items = incoming(call)[Symbol.asyncIterator]();
    const waiting = items.next();
    await items.return?.();
    const out = await settled(waiting);
    assert.ok("value" in out && out.value.done === true);
  }
  {
    const { call, duplex } = fakeCall();
    const fast: FastItems = {
      fast: () => undefined,
      decode: () => {
        throw new Error("a decoder that fails");
      },
      write: () => undefined,
    };
    const items = incoming(call, fast)[Symbol.asyncIterator]();
    duplex.push(Buffer.from("x"));
    const out = await settled(items.next());
    assert.ok("error" in out && /a decoder that fails/.test(String(out.error)));
  }
  // A second reader of the same requests (the first stopped, pausing the call) reads on.
  {
    const { call, duplex } = fakeCall();
    const reqs = incoming(call);
    const first = reqs[Symbol.asyncIterator]();
    duplex.push("a");
    assert.equal((await first.next()).value, "a");
    await first.return?.();
    duplex.push("b");
    const out = await settled(reqs[Symbol.asyncIterator]().next());
    assert.ok("value" in out && out.value.value === "b");
  }
});
