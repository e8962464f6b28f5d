// The channel pool: one channel per (identity, address), kept until the peer is no longer
// listed, then closed and forgotten.
import assert from "node:assert/strict";
import { test } from "node:test";
import type { Channel } from "./channel.js";
import { channelPool } from "./channel-pool.js";

/** A pool of fake channels that records which were opened and closed. */
function fakePool() {
  const opened: string[] = [];
  const closed: string[] = [];
  const pool = channelPool((address, identity) => {
    const name = `${identity}@${address}#${opened.length}`;
    opened.push(name);
    return {
      address,
      client: () => {
        throw new Error("not in this test");
      },
      close: () => closed.push(name),
    } as Channel;
  });
  return { pool, opened, closed };
}

test("a channel per identity and address, made once", () => {
  const { pool, opened } = fakePool();
  const a = pool.get("10.0.0.1:7501", "dp-eu");
  assert.equal(pool.get("10.0.0.1:7501", "dp-eu"), a);
  assert.notEqual(pool.get("10.0.0.1:7501", "dp-us"), a, "another identity at the same address");
  assert.deepEqual(opened, ["dp-eu@10.0.0.1:7501#0", "dp-us@10.0.0.1:7501#1"]);
});

test("retain closes and forgets the channels of what is no longer listed, and keeps the rest", () => {
  const { pool, opened, closed } = fakePool();
  const kept = pool.get("10.0.0.1:7501", "dp-eu");
  pool.get("10.0.0.2:7501", "dp-eu");
  pool.get("10.0.0.1:7501", "dp-us");
  const listed = (address: string, identity: string) => address === "10.0.0.1:7501" && identity === "dp-eu";
  assert.equal(pool.retain(listed), 2);
  assert.deepEqual(closed, ["dp-eu@10.0.0.2:7501#1", "dp-us@10.0.0.1:7501#2"]);
  assert.equal(pool.get("10.0.0.1:7501", "dp-eu"), kept, "a listed channel stays");
  // A channel let go is made afresh if asked for again, never handed out closed.
  assert.notEqual(pool.get("10.0.0.2:7501", "dp-eu"), undefined);
  assert.equal(opened.length, 4);
  assert.equal(pool.retain(listed), 1);
  pool.close();
  assert.deepEqual(closed, [
    "dp-eu@10.0.0.2:7501#1",
    "dp-us@10.0.0.1:7501#2",
    "dp-eu@10.0.0.2:7501#3",
    "dp-eu@10.0.0.1:7501#0",
  ]);
});
