import assert from "node:assert/strict";
import { test } from "node:test";
import { until } from "@mimi/core/testing";
import { replyInOrder } from "./ordered-replies.js";

/** A request stream the test feeds: push() items, end() it, or fail() its next read. */
function requests<T>() {
  const queue: T[] = [];
  let wake: (() => void) | undefined;
  let ended = false;
  let error: Error | undefined;
  let read = 0;
  const iterable: AsyncIterable<T> = {
    [Symbol.asyncIterator]: () => ({
      async next(): Promise<IteratorResult<T>> {
        for (;;) {
          if (queue.length > 0) {
            read++;
            return { done: false, value: queue.shift() as T };
          }
          if (error) throw error;
          if (ended) return { done: true, value: undefined };
          await new Promise<void>((r) => {
            wake = r;
          });
        }
      },
    }),
  };
  const poke = () => {
    wake?.();
    wake = undefined;
  };
  return {
    iterable,
    push: (...items: T[]) => {
      queue.push(...items);
      poke();
    },
    end: () => {
      ended = true;
      poke();
    },
    fail: (e: Error) => {
      error = e;
      poke();
    },
    read: () => read,
  };
}

/** Answers the test settles by hand, by request. */
function answers() {
  const pending = new Map<number, (v: string) => void>();
  return {
    answer: (n: number) =>
      new Promise<string>((resolve) => {
        pending.set(n, resolve);
      }),
    settle: (n: number) => pending.get(n)?.(`answer ${n}`),
    started: () => [...pending.keys()],
  };
}

test("requests are read on while answers wait, and answers go out in the order asked", async () => {
  const reqs = requests<number>();
  const a = answers();
  const sent: string[] = [];
  const done = replyInOrder(reqs.iterable, a.answer, async (r) => void sent.push(r), 16);
  reqs.push(1, 2, 3);
  await until(() => a.started().length === 3, "all three answers begun before any is done");
  a.settle(3);
  a.settle(2);
  await until(() => reqs.read() === 3, "read");
  assert.deepEqual(sent, [], "nothing goes out before the first answer");
  a.settle(1);
  await until(() => sent.length === 3, "the three answers sent");
  assert.deepEqual(sent, ["answer 1", "answer 2", "answer 3"]);
  reqs.end();
  await done;
});

test("at most maxUnwritten answers wait: reading stops until the oldest is written", async () => {
  const reqs = requests<number>();
  const a = answers();
  const sent: string[] = [];
  const done = replyInOrder(reqs.iterable, a.answer, async (r) => void sent.push(r), 4);
  reqs.push(1, 2, 3, 4, 5, 6);
  await until(() => a.started().length === 4, "four begun");
  // The reader waits for the oldest; the fifth request stays unread.
  await new Promise((r) => setImmediate(r));
  assert.equal(reqs.read(), 4);
  a.settle(2);
  await new Promise((r) => setImmediate(r));
  assert.equal(reqs.read(), 4, "a later answer does not free a place before the oldest is written");
  a.settle(1);
  await until(() => a.started().length === 6, "the oldest written, reading goes on");
  for (const n of [3, 4, 5, 6]) a.settle(n);
  reqs.end();
  await done;
  assert.deepEqual(
    sent,
    [1, 2, 3, 4, 5, 6].map((n) => `answer ${n}`),
  );
});

test("a failed send ends the stream at once, though the peer sends nothing more", async () => {
  const reqs = requests<number>();
  const sent: string[] = [];
  const broken = new Error("cannot encode");
  const done = replyInOrder(
    reqs.iterable,
    async (n) => `answer ${n}`,
    async (r) => {
      if (r === "answer 2") throw broken;
      sent.push(r);
    },
    16,
  );
  reqs.push(1, 2, 3);
  await assert.rejects(done, broken);
  assert.deepEqual(sent, ["answer 1"], "nothing after the failure is sent");
});

test("an answer that rejects fails the stream as a failed send does, unheard by nobody", async () => {
  const reqs = requests<number>();
  const sent: string[] = [];
  const broken = new Error("the seal could not be made");
  const done = replyInOrder(
    reqs.iterable,
    async (n) => {
      if (n >= 2) throw broken;
      return `answer ${n}`;
    },
    async (r) => void sent.push(r),
    16,
  );
  reqs.push(1, 2, 3, 4);
  await assert.rejects(done, broken);
  assert.deepEqual(sent, ["answer 1"]);
});

test("a failed read rejects only after every answer begun before it was written", async () => {
  const reqs = requests<number>();
  const a = answers();
  const sent: string[] = [];
  const done = replyInOrder(reqs.iterable, a.answer, async (r) => void sent.push(r), 16);
  reqs.push(1, 2);
  await until(() => a.started().length === 2, "both begun");
  const malformed = new Error("malformed request message");
  reqs.fail(malformed);
  let settled = false;
  void done.catch(() => {
    settled = true;
  });
  await new Promise((r) => setImmediate(r));
  assert.equal(settled, false, "the error waits for the answers begun");
  a.settle(1);
  a.settle(2);
  await assert.rejects(done, malformed);
  assert.deepEqual(sent, ["answer 1", "answer 2"]);
});
