// The root's snapshot responses: encoded once per registry serial and shared by every call.
import assert from "node:assert/strict";
import { after, test } from "node:test";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { createLogger, DiscoveryError, generateSigningKey, pb } from "@mimi/core";
import { startInProcess } from "@mimi/devnet/in-process";
import { auditPage, bindRootServer, SNAPSHOT_RATE, snapshotBudget, snapshotEncoder } from "./server.js";
import { createRootService } from "./service.js";
import { openRegistryStore } from "./store.js";

/** A root service over an empty store in memory, on a clock of its own. */
function newService() {
  let now = 1_000;
  return createRootService({
    store: openRegistryStore(":memory:"),
    clock: () => now++,
    defaultDelegationTtlSeconds: 3600,
    signingKey: generateSigningKey(),
    signatureValidityMs: 86_400_000,
    signatureRefreshMs: 43_200_000,
  });
}

// GetSnapshot and WatchRegistry rebuilt, sorted, converted and encoded the whole registry for
// every call: each follower that starts, reconnects or falls behind cost the root that work again.
test("the snapshot is encoded once per serial, and again after a change", () => {
  const service = newService();
  service.putDp("admin", {
    id: "eu",
    endpoints: ["127.0.0.1:7501"],
    tlsIdentity: "dp-eu",
    jurisdiction: "EU",
    signingPublicKey: generateSigningKey().publicKey,
  });
  const encoded = snapshotEncoder(service);
  const first = encoded();
  assert.equal(encoded(), first, "the same bytes for every call at one serial");
  assert.equal(service.snapshot(), service.snapshot(), "one snapshot object per serial");
  const got = fromBinary(pb.GetSnapshotResponseSchema, first.getSnapshot).snapshot;
  const watched = fromBinary(pb.WatchRegistryResponseSchema, first.watchRegistry).event;
  assert.equal(got?.serial, 1n);
  assert.deepEqual(
    got?.dps.map((d) => d.id),
    ["eu"],
  );
  assert.equal(watched.case, "snapshot");
  assert.deepEqual(watched.value, got, "both responses carry the same snapshot");
  assert.ok(Object.isFrozen(service.snapshot().dps), "a shared snapshot cannot be changed by a caller");

  service.createDelegation("admin", { kind: "e164", prefix: "44" }, "eu", 0);
  const second = encoded();
  assert.notEqual(second, first);
  const after = fromBinary(pb.GetSnapshotResponseSchema, second.getSnapshot).snapshot;
  assert.equal(after?.serial, 2n);
  assert.deepEqual(
    after?.delegations.map((d) => d.id),
    ["e164:44"],
  );
  assert.equal(encoded(), second);
});

test("ListAudit holds as many records as fit its byte bound, newest first, and says it left some out", () => {
  const service = newService();
  for (let i = 0; i < 10; i++) {
    service.putDp("admin", {
      id: `dp${i}`,
      // Long hosts, each DP its own.
      endpoints: Array.from({ length: 16 }, (_, k) => `${"h".repeat(200)}${i}-${k}:7501`),
      tlsIdentity: `dp-${i}`,
      jurisdiction: "EU",
      signingPublicKey: generateSigningKey().publicKey,
    });
  }
  const all = auditPage(service.audit(100));
  assert.equal(all.truncated, false);
  assert.equal(all.records?.length, 10);
  const some = auditPage(service.audit(100), 10_000);
  assert.equal(some.truncated, true);
  assert.deepEqual(
    some.records?.map((r) => r.serial),
    [10n, 9n],
    "each put_dp of 16 long endpoints is over 3 KB: the two newest fit",
  );
  const bytes = toBinary(pb.ListAuditResponseSchema, create(pb.ListAuditResponseSchema, some));
  assert.ok(bytes.length <= 10_000, `${bytes.length} bytes`);
});

test("snapshot bytes are budgeted per identity, and a snapshot larger than the budget still goes once a minute", () => {
  let now = 0;
  const charge = snapshotBudget(() => now, 1_000);
  for (let i = 0; i < 4; i++) charge("resolver-a", 250);
  const e = (() => {
    try {
      charge("resolver-a", 250);
    } catch (err) {
      return err as DiscoveryError;
    }
    assert.fail("a snapshot past the budget was sent");
  })();
  assert.equal(e.code, "resource_exhausted");
  assert.equal(e.details?.reason, SNAPSHOT_RATE);
  assert.match(
    e.message,
    /identity "resolver-a" was sent .* of registry snapshots in the last minute; try again in 15 s/,
  );
  assert.equal(e.details?.retryAfterMs, 15_000);
  charge("resolver-b", 250);
  now += 15_000;
  charge("resolver-a", 250);
  // Larger than the whole budget: once a minute.
  charge("big", 5_000);
  assert.throws(() => charge("big", 5_000), DiscoveryError);
  now += 60_000;
  charge("big", 5_000);
});

test("GetSnapshot and a watch from serial 0 are charged to the caller's snapshot budget", async () => {
  const service = newService();
  const root = await startInProcess((server) =>
    bindRootServer(server, service, {
      log: createLogger({ name: "test", level: "silent" }),
      admins: new Set(),
      now: () => 0,
      snapshotBytesPerMinute: 1,
    }),
  );
  after(() => root.close());
  const client = root.channel().client(pb.RootService);
  await client.getSnapshot({});
  const refused = (err: unknown) =>
    err instanceof DiscoveryError &&
    err.code === "resource_exhausted" &&
    err.details?.reason === SNAPSHOT_RATE;
  await assert.rejects(client.getSnapshot({}), refused);
  await assert.rejects(async () => {
    for await (const _ of client.watchRegistry({ sinceSerial: 0n })) break;
  }, refused);
  // A watch from ahead of the root (as after it was restored) gets its snapshot from the root's
  // own check: the first snapshot of a watch is charged whatever sends it.
  await assert.rejects(async () => {
    for await (const _ of client.watchRegistry({ sinceSerial: 1_000n })) break;
  }, refused);
});
