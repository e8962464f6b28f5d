// Slots (the DP's whole filter sends, its OPRF evaluations): one identity (a resolver's workers)
// holds one whole-send slot at a time, so a reader that does not read cannot hold every other
// resolver's filter back; a waiter whose call ended leaves the line.
import assert from "node:assert/strict";
import { test } from "node:test";
import { DiscoveryError } from "@mimi/core";
import { createSlots } from "./slots.js";

const turn = () => new Promise((r) => setImmediate(r));
const ended = () => new DiscoveryError("upstream_unavailable", "the call ended while it waited for a slot");

test("one identity holds one whole send at a time; other identities take the free slots", async () => {
  const slots = createSlots(2, 1, ended);
  const order: string[] = [];
  const gates = new Map<string, () => void>();
  const task = (name: string) => () =>
    new Promise<string>((done) => {
      order.push(`start ${name}`);
      gates.set(name, () => done(name));
    });
  const open = new AbortController().signal;
  const a1 = slots.run("a", open, task("a1"));
  const a2 = slots.run("a", open, task("a2"));
  const b1 = slots.run("b", open, task("b1"));
  const c1 = slots.run("c", open, task("c1"));
  await turn();
  // a2 waits for a1 though a slot is free; b1 takes it; c1 waits for any.
  assert.deepEqual(order, ["start a1", "start b1"]);
  gates.get("a1")?.();
  assert.equal(await a1, "a1");
  await turn();
  // a's slot is free again: a2 (first in line) takes it, c1 still waits.
  assert.deepEqual(order, ["start a1", "start b1", "start a2"]);
  gates.get("b1")?.();
  await b1;
  await turn();
  assert.deepEqual(order.at(-1), "start c1");
  gates.get("a2")?.();
  gates.get("c1")?.();
  assert.deepEqual(await Promise.all([a2, c1]), ["a2", "c1"]);
});

test("a waiter whose call ends leaves the line, and the next one takes the slot", async () => {
  const slots = createSlots(1, 1, ended);
  let release = () => {};
  const first = slots.run("a", new AbortController().signal, () => new Promise<void>((r) => (release = r)));
  const gone = new AbortController();
  const started: string[] = [];
  const second = slots
    .run("b", gone.signal, async () => started.push("b"))
    .then(
      () => undefined,
      (e: unknown) => e,
    );
  const third = slots.run("c", new AbortController().signal, async () => started.push("c"));
  await turn();
  assert.equal(slots.waiting, 2);
  gone.abort();
  const err = await second;
  assert.ok(err instanceof DiscoveryError && /call ended/.test(err.message));
  assert.equal(slots.waiting, 1, "the ended call's waiter is gone at once");
  release();
  await first;
  await third;
  assert.deepEqual(started, ["c"], "the slot went to the next live waiter");
});
