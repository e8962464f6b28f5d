import assert from "node:assert/strict";
import { test } from "node:test";
import { DiscoveryError, RegistryView } from "@mimi/core";
import { checkTags, createAuthoritativeService } from "./service.js";
import { openMappingStore } from "./store.js";

function setup() {
  const registry = new RegistryView();
  registry.replace({
    serial: 3n,
    delegations: [
      { id: "e164:44", key: { kind: "e164", prefix: "44" }, dpId: "eu", ttlSeconds: 3600 },
      { id: "e164:1", key: { kind: "e164", prefix: "1" }, dpId: "us", ttlSeconds: 3600 },
    ],
    dps: [],
    msps: [{ id: "bluebird.example", name: "Bluebird", index: 0 }],
  });
  const store = openMappingStore(":memory:");
  const service = createAuthoritativeService({
    dpId: "eu",
    store,
    registry,
    registryReady: () => true,
    clock: () => 5_000,
    answerTtlSeconds: 300,
    negativeTtlSeconds: 60,
  });
  service.enrolMsp("bluebird.example", "msp-bluebird", 10);
  return { service, store };
}

const mapping = (csi: string, over: object = {}) => ({
  csi,
  mapping: {
    mspId: "bluebird.example",
    ssi: "@a:bluebird.example",
    isDefault: true,
    tags: ["Personal"],
    ...over,
  },
});

test("imported mappings are answered; a re-import is idempotent", () => {
  const { service } = setup();
  assert.deepEqual(service.importMappings([mapping("tel:+44 7700 900123")]), { imported: 1, unchanged: 0 });
  assert.deepEqual(service.importMappings([mapping("tel:+447700900123")]), { imported: 0, unchanged: 1 });
  const out = service.lookup("tel:+447700900123");
  assert.equal(out.kind, "answer");
  assert.equal(out.kind === "answer" && out.mappings[0]?.createdAtMs, 5_000);
  assert.equal(out.ttlSeconds, 300);
  const none = service.lookup("tel:+447700900999");
  assert.deepEqual(none, { kind: "not_found", dpId: "eu", ttlSeconds: 60 });
});

test("CSIs outside this DP's delegations are refused", () => {
  const { service } = setup();
  for (const csi of ["tel:+12025550142", "tel:+4915123456789", "mailto:alice@example.org"]) {
    assert.throws(
      () => service.lookup(csi),
      (e: unknown) => e instanceof DiscoveryError && e.code === "not_authoritative",
      csi,
    );
  }
});

test("a bad record refuses the whole batch and stores nothing", () => {
  const { service, store } = setup();
  const cases: [object, RegExp][] = [
    [mapping("tel:+12025550142"), /mapping 1 of the batch: .*delegated to DP "us"/],
    [mapping("tel:+447700900124", { mspId: "other.example" }), /not enrolled/],
    [mapping("tel:+447700900124", { ssi: "" }), /ssi must be/],
    [mapping("tel:+447700900124", { tags: ["Default"] }), /is_default/],
    [mapping("nonsense"), /cannot tell the type/],
    [mapping("tel:+447700900124", { ssi: "   " }), /not all blank/],
    [mapping("tel:+447700900124", { ssi: "a\u0000b\u001b[31m" }), /control characters/],
    [mapping("tel:+447700900124", { createdAtMs: -5 }), /created_at_ms/],
    [mapping("tel:+447700900124", { createdAtMs: 5_000 + 2 * 86_400_000 }), /created_at_ms/],
    [mapping("tel:+447700900124", { createdAtMs: Number.NaN }), /created_at_ms/],
  ];
  for (const [bad, reason] of cases) {
    assert.throws(
      () => service.importMappings([mapping("tel:+447700900123"), bad as ReturnType<typeof mapping>]),
      reason,
    );
  }
  assert.equal(store.count(), 0);
});

test("tags: bounded, distinct, never Default", () => {
  assert.deepEqual(checkTags(["Business", "Personal"]), ["Business", "Personal"]);
  for (const tags of [["default"], ["a", "A"], Array(9).fill("x"), ["x".repeat(33)], ["<b>"]]) {
    assert.throws(() => checkTags(tags), DiscoveryError, JSON.stringify(tags));
  }
});

test("enrolment needs an MSP the root knows", () => {
  const { service } = setup();
  assert.throws(() => service.enrolMsp("ghost.example", "x", 1), /not in the root's MSP registry/);
});
