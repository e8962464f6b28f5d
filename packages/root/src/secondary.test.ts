import assert from "node:assert/strict";
import { test } from "node:test";
import {
  createLogger,
  DiscoveryError,
  type DpInfo,
  generateSigningKey,
  parseDelegationKeyText,
  type RegistryChange,
  type RegistryData,
  type RegistrySeal,
  RegistryView,
} from "@mimi/core";
import { createSecondaryService } from "./secondary.js";
import { createRootService } from "./service.js";
import { openRegistryStore, type RegistryStore } from "./store.js";

const log = createLogger({ name: "test", level: "silent" });
const rootKey = generateSigningKey();
const PRIMARY = ["10.0.0.1:7400", "10.0.0.2:7400"];
const EU: DpInfo = {
  id: "eu",
  endpoints: ["127.0.0.1:7501"],
  tlsIdentity: "dp-eu",
  jurisdiction: "EU",
  signingPublicKey: generateSigningKey().publicKey,
};
const key = parseDelegationKeyText;
/** Signatures valid for a day, re-signed when half a day is left. */
const VALIDITY = { signatureValidityMs: 86_400_000, signatureRefreshMs: 43_200_000 };

function primary() {
  let now = 1_000;
  return createRootService({
    store: openRegistryStore(":memory:"),
    clock: () => now++,
    defaultDelegationTtlSeconds: 3600,
    signingKey: rootKey,
    ...VALIDITY,
  });
}

function secondary(store: RegistryStore = openRegistryStore(":memory:"), publicKey = rootKey.publicKey) {
  return createSecondaryService({
    store,
    clock: () => 5_000,
    log,
    rootPublicKey: publicKey,
    primaryEndpoints: PRIMARY,
  });
}

/** Feeds changes the way registry-sync does: each verified, with the follower's view after it. */
function follow(s: ReturnType<typeof secondary>, changes: RegistryChange[], view: RegistryView): void {
  for (const c of changes) {
    view.apply(c);
    s.changeReceived(c, () => view.snapshot());
  }
}

test("a secondary serves the primary's registry, serials, signatures and backlog unchanged", () => {
  const p = primary();
  p.putDp("admin", EU);
  const base = p.snapshot();
  p.createDelegation("admin", key("+44"), "eu", 0);
  p.createDelegation("admin", key("+33"), "eu", 60);

  const s = secondary();
  const view = new RegistryView();
  view.replace(base);
  s.snapshotReceived(base);
  // Read once before the changes: the snapshot is kept per serial and each change drops it.
  assert.equal(s.snapshot().serial, base.serial);
  follow(s, p.changesSince(base.serial, 100), view);

  assert.deepEqual(s.snapshot(), p.snapshot());
  assert.equal(s.snapshot(), s.snapshot(), "one snapshot object per serial");
  assert.equal(s.serial(), 3n);
  // Changes before the snapshot were never received: a watcher behind it needs a snapshot.
  assert.equal(s.backlogStart(), base.serial);
  assert.deepEqual(s.changesSince(base.serial, 100), p.changesSince(base.serial, 100));
  assert.equal(s.refer("tel:+447700900123")?.delegation.id, "e164:44");
  assert.equal(s.refer("tel:+447700900123")?.dp?.id, "eu");
});

test("edits and the audit log are refused with FAILED_PRECONDITION naming the primary", () => {
  const s = secondary();
  const refusals: (() => unknown)[] = [
    () => s.checkWritable(),
    () => s.createDelegation("admin", key("+44"), "eu", 0),
    () => s.updateDelegation("admin", key("+44"), "eu", 0),
    () => s.deleteDelegation("admin", key("+44")),
    () => s.putDp("admin", EU),
    () => s.deleteDp("admin", "eu"),
    () => s.putMsp("admin", "m.example", "M", new Uint8Array(0)),
    () => s.audit(10),
  ];
  for (const call of refusals) {
    assert.throws(
      call,
      (err) =>
        err instanceof DiscoveryError &&
        err.code === "failed_precondition" &&
        err.message.includes("read-only secondary") &&
        err.message.includes("10.0.0.1:7400, 10.0.0.2:7400"),
    );
  }
});

test("without a verified copy the secondary is not ready rather than serving an unsigned registry", () => {
  const s = secondary();
  assert.equal(s.copy(), undefined);
  const notReady = (err: unknown) => err instanceof DiscoveryError && err.code === "not_ready";
  assert.throws(() => s.snapshot(), notReady);
  assert.throws(() => s.refer("tel:+447700900123"), notReady);
});

test("a restarted secondary serves its stored copy and backlog", () => {
  const p = primary();
  p.putDp("admin", EU);
  const base = p.snapshot();
  p.createDelegation("admin", key("+44"), "eu", 0);
  const store = openRegistryStore(":memory:");
  const view = new RegistryView();
  view.replace(base);
  const first = secondary(store);
  first.snapshotReceived(base);
  follow(first, p.changesSince(base.serial, 100), view);

  const again = secondary(store);
  assert.deepEqual(again.copy(), p.snapshot());
  assert.deepEqual(again.snapshot(), p.snapshot());
  assert.deepEqual(again.changesSince(base.serial, 100), p.changesSince(base.serial, 100));
});

test("a stored copy that does not verify is discarded at start", () => {
  const p = primary();
  p.putDp("admin", EU);
  p.createDelegation("admin", key("+44"), "eu", 0);
  const signed = p.snapshot();
  const cases: { name: string; stored: RegistryData & { seal: RegistrySeal }; publicKey?: Uint8Array }[] = [
    {
      name: "a delegation moved to another DP, the signature kept",
      stored: {
        ...signed,
        seal: signed.seal as RegistrySeal,
        delegations: signed.delegations.map((d) => ({ ...d, ttlSeconds: d.ttlSeconds + 1 })),
      },
    },
    {
      name: "a copy signed by another key",
      stored: { ...signed, seal: signed.seal as RegistrySeal },
      publicKey: generateSigningKey().publicKey,
    },
  ];
  for (const c of cases) {
    const store = openRegistryStore(":memory:");
    store.replace(c.stored);
    const s = secondary(store, c.publicKey);
    assert.equal(s.copy(), undefined, c.name);
    assert.ok(store.isEmpty(), c.name);
    assert.equal(store.serial(), 0n, c.name);
  }
});

test("a change that does not follow the stored copy stores the whole registry instead", () => {
  // Regression guard: a failed store write must not leave the copy behind for good, so the
  // next change (whose signature covers the whole registry) replaces it.
  const p = primary();
  p.putDp("admin", EU);
  const base = p.snapshot();
  p.createDelegation("admin", key("+44"), "eu", 0);
  p.createDelegation("admin", key("+33"), "eu", 0);
  const s = secondary();
  s.snapshotReceived(base);
  const view = new RegistryView();
  view.replace(base);
  const [skipped, next] = p.changesSince(base.serial, 100) as [RegistryChange, RegistryChange];
  view.apply(skipped);
  follow(s, [next], view);
  assert.deepEqual(s.snapshot(), p.snapshot());
  assert.equal(s.backlogStart(), next.serial);
});

test("the store refuses a received change that does not follow, and keeps serials across a snapshot", () => {
  const store = openRegistryStore(":memory:");
  const p = primary();
  p.putDp("admin", EU);
  const snap = p.snapshot();
  store.replace({ ...snap, seal: snap.seal as RegistrySeal });
  assert.equal(store.serial(), 1n);
  assert.equal(store.baseSerial(), 1n);
  assert.ok(!store.isEmpty());
  const gap: RegistryChange & { seal: RegistrySeal } = {
    serial: 3n,
    kind: "delete_dp",
    id: "eu",
    seal: { signature: new Uint8Array(64), signedAtMs: 0, expiresAtMs: 1 },
  };
  assert.throws(
    () => store.append(gap, 0, "primary"),
    (err) => err instanceof DiscoveryError && err.code === "store_failure",
  );
  assert.equal(store.serial(), 1n);
});

test("a secondary's store promoted to a primary (same key) continues at the next serial", () => {
  const p = primary();
  p.putDp("admin", EU);
  p.createDelegation("admin", key("+44"), "eu", 0);
  const store = openRegistryStore(":memory:");
  secondary(store).snapshotReceived(p.snapshot());
  const promoted = createRootService({
    store,
    clock: () => 9_000,
    defaultDelegationTtlSeconds: 3600,
    signingKey: rootKey,
    ...VALIDITY,
  });
  assert.deepEqual(promoted.snapshot(), p.snapshot());
  assert.equal(promoted.createDelegation("admin", key("+33"), "eu", 0).serial, 3n);
  assert.equal(promoted.backlogStart(), 2n);
});
