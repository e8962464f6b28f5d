import assert from "node:assert/strict";
import { test } from "node:test";
import { EndpointPicker, HOLD_DOWN_MS } from "./endpoint-picker.js";

const EPS = ["a:1", "b:1", "c:1"];
const idle = () => 0;

test("lookups are spread across the endpoints that are up, per call", () => {
  const picker = new EndpointPicker(() => 0);
  const firsts = new Map<string, number>();
  for (let i = 0; i < 300; i++) {
    const order = picker.order(EPS, idle);
    assert.deepEqual([...order].sort(), EPS, "every endpoint is in the order, once");
    const first = order[0] as string;
    firsts.set(first, (firsts.get(first) ?? 0) + 1);
  }
  for (const e of EPS)
    assert.ok((firsts.get(e) ?? 0) > 50, `${e} went first ${firsts.get(e) ?? 0} of 300 times`);
});

test("of two endpoints picked, the one with fewer lookups in flight goes first", () => {
  const draws = [0, 0]; // picks a:1, then b:1
  const picker = new EndpointPicker(
    () => 0,
    () => draws.shift() ?? 0,
  );
  const busy = (e: string) => (e === "a:1" ? 40 : 2);
  assert.equal(picker.order(EPS, busy)[0], "b:1");
});

test("an endpoint that failed is held down, longer each time, and back at its first answer", () => {
  let now = 0;
  const picker = new EndpointPicker(() => now);
  picker.failed("b:1");
  for (let i = 0; i < 50; i++) assert.equal(picker.order(EPS, idle).at(-1), "b:1", "tried last while down");
  now = HOLD_DOWN_MS.min;
  assert.ok(
    Array.from({ length: 50 }, () => picker.order(EPS, idle)[0]).includes("b:1"),
    "up again after the hold-down",
  );
  picker.failed("b:1");
  now += HOLD_DOWN_MS.min; // the second hold-down is twice as long
  assert.equal(picker.order(EPS, idle).at(-1), "b:1");
  assert.equal(picker.answered("b:1"), true, "it was down");
  assert.equal(picker.answered("b:1"), false);
  assert.ok(Array.from({ length: 50 }, () => picker.order(EPS, idle)[0]).includes("b:1"));
  for (let i = 0; i < 40; i++) picker.failed("c:1");
  now += HOLD_DOWN_MS.max - 1;
  assert.equal(picker.order(EPS, idle).at(-1), "c:1", "held down at most the longest hold-down");
  now += 1;
  assert.ok(Array.from({ length: 50 }, () => picker.order(EPS, idle)[0]).includes("c:1"));
});

test("when every endpoint is down they are still tried, soonest back first", () => {
  let now = 0;
  const picker = new EndpointPicker(() => now);
  picker.failed("c:1");
  now = 10;
  picker.failed("a:1");
  now = 20;
  picker.failed("b:1");
  assert.deepEqual(picker.order(EPS, idle), ["c:1", "a:1", "b:1"]);
});

test("a preferred endpoint goes first while it is up", () => {
  const picker = new EndpointPicker(() => 0);
  for (let i = 0; i < 20; i++) assert.equal(picker.order(EPS, idle, "c:1")[0], "c:1");
  assert.notEqual(picker.order(EPS, idle, "z:9")[0], "z:9", "not one the DP does not list");
  picker.failed("c:1");
  assert.equal(picker.order(EPS, idle, "c:1").at(-1), "c:1", "not while held down");
});

test("the DP's rate is the lowest an endpoint publishes times the endpoints up", () => {
  let now = 0;
  const picker = new EndpointPicker(() => now);
  assert.equal(picker.rate(EPS), 0, "no pacing before any endpoint says");
  picker.setRate("a:1", 100);
  picker.setRate("b:1", 80);
  picker.setRate("c:1", 0);
  assert.equal(picker.rate(EPS), 240);
  picker.failed("a:1");
  assert.equal(picker.rate(EPS), 160, "an endpoint down takes nothing");
  now = HOLD_DOWN_MS.min;
  assert.equal(picker.rate(EPS), 240);
});

test("endpoints the registry stops listing are forgotten", () => {
  const picker = new EndpointPicker(() => 0);
  picker.failed("a:1");
  picker.setRate("b:1", 10);
  picker.order(["c:1", "d:1"], idle);
  const states = (picker as unknown as { states: Map<string, unknown> }).states;
  assert.deepEqual([...states.keys()], []);
});
