// Whole CSI filters: a reader that does not read gives its slot up within a bound, and one
// identity (a resolver's workers) holds one slot at a time, so the others are never all held.
import assert from "node:assert/strict";
import { test } from "node:test";
import { DiscoveryError, FilterBits } from "@mimi/core";
import type { FilterVersion } from "./csi-filter.js";
import { createSlots, sendWholeWithin } from "./filter-server.js";

const version = (bytes: number): FilterVersion => ({
  version: new Uint8Array(16),
  bits: new FilterBits(new Uint8Array(32), { bits: bytes * 8, hashes: 7 }),
  sizedFor: 1_000,
  csis: 10,
  targetFpr: 0.01,
  additions: [],
  floor: 0,
});

test("one identity holds one whole send at a time; other identities take the free slots", async () => {
  const slots = createSlots(2, 1);
  const order: string[] = [];
  const gates = new Map<string, () => void>();
  const task = (name: string) => () =>
    new Promise<string>((done) => {
      order.push(`start ${name}`);
      gates.set(name, () => done(name));
    });
  const a1 = slots.run("a", task("a1"));
  const a2 = slots.run("a", task("a2"));
  const b1 = slots.run("b", task("b1"));
  const c1 = slots.run("c", task("c1"));
  await new Promise((r) => setImmediate(r));
  // a2 waits for a1 though a slot is free; b1 takes it; c1 waits for any.
  assert.deepEqual(order, ["start a1", "start b1"]);
  gates.get("a1")?.();
  assert.equal(await a1, "a1");
  await new Promise((r) => setImmediate(r));
  // a's slot is free again: a2 (first in line) takes it, c1 still waits.
  assert.deepEqual(order, ["start a1", "start b1", "start a2"]);
  gates.get("b1")?.();
  await b1;
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(order.at(-1), "start c1");
  gates.get("a2")?.();
  gates.get("c1")?.();
  assert.deepEqual(await Promise.all([a2, c1]), ["a2", "c1"]);
});

test("a whole send the reader does not take fails FILTER_NOT_READ after 30 s and a second per MiB", async (t) => {
  t.mock.timers.enable({ apis: ["setTimeout"] });
  const sent: string[] = [];
  // The reader takes the header and then nothing: every later send waits for good.
  const send = (m: { item?: { case?: string } }) => {
    sent.push(String(m.item?.case));
    return sent.length === 1 ? Promise.resolve() : new Promise<void>(() => {});
  };
  const outcome = sendWholeWithin(version(3 * 2 ** 20), send).then(
    () => undefined,
    (e: unknown) => e,
  );
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(sent, ["header", "chunk"]);
  t.mock.timers.tick(32_999);
  await new Promise((r) => setImmediate(r));
  let settled = false;
  void outcome.then(() => {
    settled = true;
  });
  await new Promise((r) => setImmediate(r));
  assert.equal(settled, false, "not before 30 s and 3 s for 3 MiB");
  t.mock.timers.tick(1);
  const err = await outcome;
  assert.ok(err instanceof DiscoveryError);
  assert.equal(err.code, "resource_exhausted");
  assert.equal(err.details?.reason, "FILTER_NOT_READ");
  // A reader that reads gets the whole filter: the header and one chunk per 64 KiB.
  const all: string[] = [];
  const position = await sendWholeWithin(version(200 * 1024), async (m) => {
    all.push(String(m.item?.case));
  });
  assert.equal(position, 0);
  assert.deepEqual(all, ["header", "chunk", "chunk", "chunk", "chunk"]);
});
