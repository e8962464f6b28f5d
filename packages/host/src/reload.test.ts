// What a reload applies: reloadable keys take the file's values, others keep the running ones
// and are named; the log level reaches the components' loggers; admin sets are replaced.
import assert from "node:assert/strict";
import { test } from "node:test";
import { createLogger, setLogLevel } from "@mimi/core";
import { planReload, reloadAdmins } from "./reload.js";

test("a changed reloadable key is applied; any other changed key keeps its running value and is named", () => {
  const running = { port: 7600, logLevel: "info", admins: ["a"], quotas: { m: new Map([["x", 1n]]) } };
  const next = { port: 7700, logLevel: "debug", admins: ["a", "b"], quotas: { m: new Map([["x", 2n]]) } };
  const plan = planReload(running, next, ["admins"]);
  assert.deepEqual(plan.applied, ["admins", "logLevel"]);
  assert.deepEqual(plan.needsRestart, ["port", "quotas"]);
  assert.equal(plan.config.port, 7600);
  assert.deepEqual(plan.config.admins, ["a", "b"]);
  assert.equal(plan.config.logLevel, "debug");
  assert.equal(plan.config.quotas, running.quotas);
  // Nothing changed: nothing applied, nothing named.
  const same = planReload(running, { ...running, quotas: { m: new Map([["x", 1n]]) } }, []);
  assert.deepEqual([same.applied, same.needsRestart], [[], []]);
});

test("a new log level reaches the loggers the components made from the root", () => {
  const root = createLogger({ name: "t", level: "info" });
  const component = root.child({ component: "c" });
  const nested = component.child({ part: "p" });
  assert.equal(component.isLevelEnabled("debug"), false);
  setLogLevel(root, "debug");
  assert.equal(root.isLevelEnabled("debug"), true);
  assert.equal(component.isLevelEnabled("debug"), true);
  assert.equal(nested.isLevelEnabled("debug"), true);
  setLogLevel(root, "warn");
  assert.equal(nested.isLevelEnabled("info"), false);
  assert.throws(() => setLogLevel(root, "loud"), /unknown log level "loud"/);
});

test("an admin set is replaced in place, so the handler holding it sees the new members", () => {
  const admins = new Set(["a", "b"]);
  const held: ReadonlySet<string> = admins;
  reloadAdmins(admins, ["b", "c"], createLogger({ name: "t", level: "silent" }));
  assert.deepEqual([...held].sort(), ["b", "c"]);
});
