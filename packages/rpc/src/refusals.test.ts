// Callers refused for their identity are said at warn, once a minute per identity and service.
import assert from "node:assert/strict";
import { test } from "node:test";
import { DiscoveryError } from "@mimi/core";
import pino from "pino";
import { refusalLog } from "./refusals.js";

test("a refused identity is logged at warn once a minute per service, with the refusals between", () => {
  const lines: Record<string, unknown>[] = [];
  const log = pino({ level: "info" }, { write: (s: string) => lines.push(JSON.parse(s)) });
  let now = 0;
  const refused = refusalLog(log, () => now);
  const denied = new DiscoveryError("permission_denied", 'identity "msp-x" is not an admin of this DP');
  const path = "/mimi.discovery.v1.DpAdminService/RollKey";
  refused(() => "msp-x", path, denied);
  for (let i = 0; i < 5; i++) refused(() => "msp-x", path, denied);
  assert.equal(lines.length, 1);
  assert.equal(lines[0]?.level, 40);
  assert.equal(lines[0]?.identity, "msp-x");
  assert.equal(lines[0]?.method, path);
  assert.equal(lines[0]?.refusedSince, undefined);
  // Another identity, or another service, is said at once.
  refused(() => "msp-y", path, denied);
  refused(() => "msp-x", "/mimi.discovery.v1.RootAdminService/PutDp", denied);
  assert.equal(lines.length, 3);
  // A minute on, the next is said with how many were not.
  now = 60_000;
  refused(() => "msp-x", path, denied);
  assert.equal(lines.length, 4);
  assert.equal(lines[3]?.refusedSince, 5);
  // Other errors are not refusals of an identity.
  refused(() => "msp-z", path, new DiscoveryError("invalid_argument", "bad"));
  refused(() => "msp-z", path, new Error("boom"));
  assert.equal(lines.length, 4);
});
