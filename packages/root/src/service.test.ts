import assert from "node:assert/strict";
import { test } from "node:test";
import { DiscoveryError, type DpInfo, parseDelegationKeyText } from "@mimi/core";
import { createRootService } from "./service.js";
import { openRegistryStore } from "./store.js";

const EU: DpInfo = { id: "eu", endpoints: ["127.0.0.1:7501"], tlsIdentity: "dp-eu", jurisdiction: "EU" };
const US: DpInfo = { id: "us", endpoints: ["127.0.0.1:7502"], tlsIdentity: "dp-us", jurisdiction: "US" };

function setup() {
  const store = openRegistryStore(":memory:");
  let now = 1_000;
  const service = createRootService({ store, clock: () => now++, defaultDelegationTtlSeconds: 3600 });
  return { store, service };
}

const key = parseDelegationKeyText;

test("every change bumps the serial and is audited with actor and time", () => {
  const { service } = setup();
  service.putDp("admin", EU);
  service.putDp("admin", US);
  service.createDelegation("alice", key("+44"), "eu", 0);
  service.updateDelegation("bob", key("+44"), "us", 60);
  service.deleteDelegation("alice", key("+44"));
  assert.equal(service.serial(), 5n);
  const audit = service.audit(10);
  assert.deepEqual(
    audit.map((a) => [a.change.serial, a.actor, a.change.kind]),
    [
      [5n, "alice", "delete_delegation"],
      [4n, "bob", "put_delegation"],
      [3n, "alice", "put_delegation"],
      [2n, "admin", "put_dp"],
      [1n, "admin", "put_dp"],
    ],
  );
  assert.deepEqual(
    service.changesSince(3n, 10).map((c) => c.serial),
    [4n, 5n],
  );
});

test("refer uses the longest prefix and names the DP", () => {
  const { service } = setup();
  service.putDp("a", EU);
  service.putDp("a", US);
  service.createDelegation("a", key("+1"), "us", 0);
  service.createDelegation("a", key("+1415"), "eu", 0);
  assert.equal(service.refer("tel:+14155550100")?.dp?.id, "eu");
  assert.equal(service.refer("tel:+12025550142")?.delegation.id, "e164:1");
  assert.equal(service.refer("tel:+447700900123"), undefined);
});

test("bad edits are refused and leave the registry unchanged", () => {
  const { service } = setup();
  service.putDp("a", EU);
  service.createDelegation("a", key("email:0-7fffffffffffffff"), "eu", 0);
  const before = service.serial();
  const cases: [() => unknown, string][] = [
    [() => service.createDelegation("a", key("+44"), "nope", 0), "failed_precondition"],
    [
      () => service.createDelegation("a", key("email:7000000000000000-8fffffffffffffff"), "eu", 0),
      "failed_precondition",
    ],
    [() => service.createDelegation("a", key("email:0-7fffffffffffffff"), "eu", 0), "already_exists"],
    [() => service.updateDelegation("a", key("+33"), "eu", 0), "not_found"],
    [() => service.deleteDelegation("a", key("+33")), "not_found"],
    [() => service.deleteDp("a", "eu"), "failed_precondition"],
    [() => service.putDp("a", { ...EU, id: "Bad Id" }), "invalid_argument"],
    [() => service.putDp("a", { ...EU, endpoints: ["nohost"] }), "invalid_argument"],
    [() => service.putMsp("a", "x", ""), "invalid_argument"],
  ];
  for (const [f, code] of cases) {
    assert.throws(f, (e: unknown) => e instanceof DiscoveryError && e.code === code, code);
  }
  assert.equal(service.serial(), before);
});

test("MSP indexes are assigned once and survive renames and restarts", () => {
  const { store, service } = setup();
  assert.equal(service.putMsp("a", "one.example", "One").msp.index, 0);
  assert.equal(service.putMsp("a", "two.example", "Two").msp.index, 1);
  assert.equal(service.putMsp("a", "one.example", "One renamed").msp.index, 0);
  const again = createRootService({ store, clock: () => 0, defaultDelegationTtlSeconds: 1 });
  assert.equal(again.putMsp("a", "three.example", "Three").msp.index, 2);
  assert.equal(again.snapshot().msps.find((m) => m.id === "one.example")?.name, "One renamed");
});
