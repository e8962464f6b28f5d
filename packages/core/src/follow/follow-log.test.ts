// followLog's loop on its own, with streams and pauses the test controls: endpoint order,
// the backoff that doubles while attempts make no progress and starts over once caught up,
// a deliberate reconnect, and close.
import assert from "node:assert/strict";
import { test } from "node:test";
import { DiscoveryError } from "../domain/errors.js";
import { createLogger } from "../runtime/logger.js";
import { until } from "../testing.js";
import { followLog, type LogFollower } from "./follow-log.js";

const log = createLogger({ name: "test", level: "silent" });
type Msg = "item" | "caught-up" | "bad";

/** A stream of `msgs`, then an end; `hold` keeps it open until aborted. */
function stream(msgs: readonly Msg[], signal: AbortSignal, hold = false): AsyncIterable<Msg> {
  return {
    async *[Symbol.asyncIterator]() {
      for (const m of msgs) yield m;
      if (hold) {
        await new Promise<void>((r) => signal.addEventListener("abort", () => r(), { once: true }));
        throw new Error("aborted");
      }
    },
  };
}

/** Runs a follower whose attempts are scripted by `script(attempt)`; stops after `attempts`. */
async function run(
  script: (attempt: number, signal: AbortSignal) => AsyncIterable<Msg>,
  attempts: number,
  endpoints: readonly string[] = ["a", "b"],
  prefer?: () => string | undefined,
) {
  const opened: string[] = [];
  const pauses: number[] = [];
  const applied: Msg[] = [];
  let follower: LogFollower | undefined;
  follower = followLog<Msg>({
    endpoints: () => endpoints,
    ...(prefer && { prefer }),
    open(endpoint, signal) {
      opened.push(endpoint);
      if (opened.length > attempts) {
        follower?.close();
        return stream([], signal);
      }
      return script(opened.length, signal);
    },
    apply(msg) {
      applied.push(msg);
      if (msg === "bad") throw new Error("a gap");
      return msg === "caught-up";
    },
    log,
    messages: { ended: "ended", failed: "failed" },
    initialBackoffMs: 100,
    maxBackoffMs: 1_000,
    random: () => 1, // no jitter: a pause is the whole backoff
    pause: async (ms) => {
      pauses.push(ms);
    },
  });
  await follower.done;
  return { opened, pauses, applied };
}

test("failing attempts go round the endpoints with a doubling pause, up to the cap", async () => {
  const r = await run(() => {
    throw new Error("connection refused");
  }, 6);
  assert.deepEqual(r.opened.slice(0, 6), ["a", "b", "a", "b", "a", "b"]);
  assert.deepEqual(r.pauses.slice(0, 6), [200, 400, 800, 1_000, 1_000, 1_000]);
});

test("an endpoint that refuses with a retry-after is left alone that long; the others are tried meanwhile", async () => {
  // The clock moves by the pauses the loop takes. Every attempt is refused for 15 s.
  let clock = 0;
  const opened: string[] = [];
  const opens: number[] = [];
  const pauses: number[] = [];
  let follower: LogFollower | undefined;
  follower = followLog<Msg>({
    endpoints: () => ["a", "b"],
    open(endpoint, signal) {
      opened.push(endpoint);
      opens.push(clock);
      if (opened.length > 3) {
        follower?.close();
        return stream([], signal);
      }
      throw new DiscoveryError("resource_exhausted", "too many snapshots", {
        details: { retryAfterMs: 15_000 },
      });
    },
    apply: () => false,
    log,
    messages: { ended: "ended", failed: "failed" },
    initialBackoffMs: 100,
    maxBackoffMs: 1_000,
    random: () => 1,
    now: () => clock,
    pause: async (ms) => {
      pauses.push(ms);
      clock += ms;
    },
  });
  await follower.done;
  // a refuses for 15 s: b is asked after the usual backoff, not 15 s later; b refuses too, and
  // with both held the loop waits until a may be asked again, then asks it.
  assert.deepEqual(opened.slice(0, 3), ["a", "b", "a"]);
  assert.deepEqual(pauses.slice(0, 3), [200, 400, 14_400]);
  assert.deepEqual(opens.slice(0, 3), [0, 200, 15_000]);
});

test("an endpoint the caller prefers is tried instead of the one in turn, while it is listed", async () => {
  let preferred: string | undefined;
  const r = await run(
    (attempt) => {
      // After the second attempt the caller learns where to go (a new primary), for two tries.
      if (attempt === 2) preferred = "c";
      if (attempt === 4) preferred = "z"; // not an endpoint: ignored
      throw new Error("connection refused");
    },
    6,
    ["a", "b", "c"],
    () => preferred,
  );
  assert.deepEqual(r.opened.slice(0, 6), ["a", "b", "c", "c", "c", "a"]);
});

test("a stream that caught up starts the backoff over; one that fails midway does not", async () => {
  const r = await run(
    (attempt, signal) =>
      attempt === 1
        ? stream(["item", "bad"], signal) // fails before catching up
        : attempt === 2
          ? stream(["item", "caught-up", "item"], signal) // caught up, then ends
          : stream([], signal),
    3,
  );
  assert.deepEqual(r.applied, ["item", "bad", "item", "caught-up", "item"]);
  // After the first attempt the pause doubles; after the second it is back at the start; the
  // third made no progress again.
  assert.deepEqual(r.pauses.slice(0, 3), [200, 100, 200]);
});

test("reconnect drops the stream and goes on at once; close ends the loop", async () => {
  const opened: string[] = [];
  const pauses: number[] = [];
  const follower = followLog<Msg>({
    endpoints: () => ["a", "b"],
    open(endpoint, signal) {
      opened.push(endpoint);
      return stream(["caught-up"], signal, true);
    },
    apply: (msg) => msg === "caught-up",
    log,
    messages: { ended: "ended", failed: "failed" },
    maxBackoffMs: 1_000,
    pause: async (ms) => {
      pauses.push(ms);
    },
  });
  await until(() => follower.connected());
  assert.equal(follower.endpoint(), "a");
  follower.reconnect();
  await until(() => opened.length === 2 && follower.connected());
  assert.equal(follower.endpoint(), "b");
  assert.deepEqual(pauses, [], "a deliberate reconnect does not pause");
  follower.close();
  await follower.done;
  assert.equal(follower.connected(), false);
  assert.equal(opened.length, 2);
});
