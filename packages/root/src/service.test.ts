import assert from "node:assert/strict";
import { test } from "node:test";
import {
  DiscoveryError,
  type DpInfo,
  generateOprfKeys,
  generateSigningKey,
  jurisdictionOfEndpoint,
  parseDelegationKeyText,
  type RegistrySeal,
  RegistryView,
  registrySignatureValid,
  type SigningKey,
} from "@mimi/core";
import { createRootService } from "./service.js";
import { openRegistryStore, type RegistryStore } from "./store.js";

const EMPTY = new Uint8Array(0);
const dpEuKey = generateSigningKey().publicKey;
const EU: DpInfo = {
  id: "eu",
  endpoints: ["127.0.0.1:7501"],
  tlsIdentity: "dp-eu",
  jurisdiction: "EU",
  signingPublicKey: dpEuKey,
};
const US: DpInfo = {
  id: "us",
  endpoints: ["127.0.0.1:7502"],
  tlsIdentity: "dp-us",
  jurisdiction: "US",
  signingPublicKey: EMPTY,
};
const rootKey = generateSigningKey();

function setup(
  store: RegistryStore = openRegistryStore(":memory:"),
  signingKey: SigningKey = rootKey,
  maxRegistryBytes?: number,
) {
  let now = 1_000;
  const service = createRootService({
    store,
    clock: () => now++,
    defaultDelegationTtlSeconds: 3600,
    signingKey,
    ...VALIDITY,
    ...(maxRegistryBytes !== undefined && { maxRegistryBytes }),
  });
  return { store, service };
}

const key = parseDelegationKeyText;
/** Signatures valid for a day, re-signed when half a day is left. */
const VALIDITY = { signatureValidityMs: 86_400_000, signatureRefreshMs: 43_200_000 };

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
    [() => service.putMsp("a", "x", "", EMPTY), "invalid_argument"],
    [() => service.putMsp("a", "x", "X", new Uint8Array(31)), "invalid_argument"],
    [() => service.putMsp("a", "x", "X", new Uint8Array(33)), "invalid_argument"],
    [() => service.putDp("a", { ...US, signingPublicKey: new Uint8Array(31) }), "invalid_argument"],
    [() => service.putDp("a", { ...US, signingPublicKey: new Uint8Array(64) }), "invalid_argument"],
    // Another DP's certificate identity or endpoint; an endpoint twice.
    [() => service.putDp("a", { ...US, tlsIdentity: EU.tlsIdentity }), "already_exists"],
    [() => service.putDp("a", { ...US, endpoints: [...US.endpoints, ...EU.endpoints] }), "already_exists"],
    [() => service.putDp("a", { ...US, endpoints: [...US.endpoints, ...US.endpoints] }), "invalid_argument"],
    [
      () => service.putDp("a", { ...US, endpoints: ["LOCALHOST:7502", "localhost:07502"] }),
      "invalid_argument",
    ],
    [() => service.putDp("a", { ...US, endpoints: ["127.0.0.1:07501"] }), "already_exists"],
  ];
  for (const [f, code] of cases) {
    assert.throws(f, (e: unknown) => e instanceof DiscoveryError && e.code === code, code);
  }
  assert.equal(service.serial(), before);
});

test("MSP indexes are assigned once and survive renames and restarts", () => {
  const { store, service } = setup();
  assert.equal(service.putMsp("a", "one.example", "One", EMPTY).msp.index, 0);
  assert.equal(service.putMsp("a", "two.example", "Two", EMPTY).msp.index, 1);
  assert.equal(service.putMsp("a", "one.example", "One renamed", EMPTY).msp.index, 0);
  const again = createRootService({
    store,
    clock: () => 0,
    defaultDelegationTtlSeconds: 1,
    signingKey: rootKey,
    ...VALIDITY,
  });
  assert.equal(again.putMsp("a", "three.example", "Three", EMPTY).msp.index, 2);
  assert.equal(again.snapshot().msps.find((m) => m.id === "one.example")?.name, "One renamed");
});

/** Runs one edit of each kind, in an order that keeps every edit valid. */
function editAll(service: ReturnType<typeof setup>["service"]) {
  const mspKey = generateSigningKey().publicKey;
  return [
    () => service.putDp("admin", EU),
    () => service.putDp("admin", US),
    () => service.putMsp("admin", "one.example", "One", mspKey).change,
    () => service.createDelegation("admin", key("+44"), "eu", 0),
    () => service.createDelegation("admin", key("email:0-7fffffffffffffff"), "us", 600),
    () => service.updateDelegation("admin", key("+44"), "us", 60),
    () => service.putMsp("admin", "one.example", "One renamed", EMPTY).change,
    () => service.putDp("admin", { ...EU, endpoints: ["127.0.0.1:7509", "127.0.0.1:7501"] }),
    () => service.deleteDelegation("admin", key("+44")),
  ];
}

test("every change carries the root's signature over the registry right after it", () => {
  const { service } = setup();
  const signatures = new Set<string>();
  for (const edit of editAll(service)) {
    const change = edit();
    const snapshot = service.snapshot();
    assert.equal(snapshot.serial, change.serial);
    assert.ok(snapshot.seal, `serial ${change.serial}: the snapshot is signed`);
    assert.equal(registrySignatureValid(snapshot, snapshot.seal, rootKey.publicKey), true);
    assert.deepEqual(change.seal, snapshot.seal, "the returned change carries the same signature");
    const [stored] = service.changesSince(change.serial - 1n, 1);
    assert.deepEqual(stored?.seal, snapshot.seal, "and so does the stored change");
    signatures.add(Buffer.from(snapshot.seal.signature).toString("hex"));
  }
  assert.equal(signatures.size, editAll(service).length, "each registry state has its own signature");
  assert.equal(
    registrySignatureValid(
      service.snapshot(),
      service.snapshot().seal as RegistrySeal,
      generateSigningKey().publicKey,
    ),
    false,
    "not valid under another root key",
  );
});

test("a follower replaying changesSince(0) can check every change's signature", () => {
  // This is what registry-sync does: apply a change, then check its signature over the result.
  const { service } = setup();
  for (const edit of editAll(service)) edit();
  const follower = new RegistryView();
  const changes = service.changesSince(0n, 100);
  assert.equal(changes.length, editAll(service).length);
  for (const change of changes) {
    follower.apply(change);
    assert.equal(
      registrySignatureValid(follower.snapshot(), change.seal as RegistrySeal, rootKey.publicKey),
      true,
      `serial ${change.serial}`,
    );
  }
  assert.deepEqual(changes.at(-1)?.seal, service.snapshot().seal);
});

test("a restart over the same store and key re-signs the registry identically", () => {
  const { store, service } = setup();
  for (const edit of editAll(service)) edit();
  const before = service.snapshot();
  const changesBefore = service.changesSince(0n, 100);
  const restarted = setup(store).service;
  assert.deepEqual(restarted.snapshot(), before);
  assert.deepEqual(restarted.changesSince(0n, 100), changesBefore);
  // After a restart the next edit still yields a verifiable signature.
  const change = restarted.deleteDelegation("admin", key("email:0-7fffffffffffffff"));
  assert.equal(
    registrySignatureValid(restarted.snapshot(), change.seal as RegistrySeal, rootKey.publicKey),
    true,
  );
});

test("a root that stopped between commit and signing signs the last change at start", () => {
  const { store, service } = setup();
  service.putDp("admin", EU);
  // The change is committed but the process stops before service.ts stores its signature.
  store.commit("admin", 5, (serial) => ({ serial, kind: "put_dp", dp: US }));
  assert.equal(store.changesSince(1n, 1)[0]?.seal, undefined);
  const restarted = setup(store).service;
  const [last] = restarted.changesSince(1n, 1);
  const snapshot = restarted.snapshot();
  assert.equal(snapshot.serial, 2n);
  assert.equal(registrySignatureValid(snapshot, last?.seal as RegistrySeal, rootKey.publicKey), true);
  assert.deepEqual(last?.seal, snapshot.seal);
  assert.equal(restarted.backlogStart(), 0n, "every change can be replayed");
});

test("a watcher from before a change stored without its seal is sent a snapshot, not that change", () => {
  const { store, service } = setup();
  service.putDp("admin", EU);
  // Two changes stored unsigned, by a root from before commits were signed in their transaction.
  store.commit("admin", 5, (serial) => ({ serial, kind: "put_dp", dp: US }));
  store.commit("admin", 6, (serial) => ({ serial, kind: "delete_dp", id: "us" }));
  const restarted = setup(store).service;
  // Start signs the last; the one before it stays unsealed, and no watcher is replayed it.
  assert.equal(restarted.backlogStart(), 2n);
  restarted.putDp("admin", US);
  assert.equal(restarted.backlogStart(), 2n);
  assert.ok(restarted.changesSince(2n, 10).every((c) => c.seal));
});

test("a change is stored with its seal or not at all: a write failing after the signature leaves the registry, its seal and its log as they were", () => {
  const store = openRegistryStore(":memory:");
  let failSealed = false;
  const failing: RegistryStore = {
    ...store,
    commit: (actor, atMs, make, check, seal) =>
      store.commit(actor, atMs, make, check, (c) => {
        const signed = seal?.(c);
        if (failSealed) throw new Error("disk I/O error");
        return signed as RegistrySeal;
      }),
  };
  const { service } = setup(failing);
  service.putDp("admin", EU);
  const before = service.snapshot();
  let woken = 0;
  service.subscribe(() => woken++);
  failSealed = true;
  assert.throws(() => service.putDp("admin", US), /registry write failed: disk I\/O error/);
  assert.deepEqual(service.snapshot(), before, "the view and the seal are the stored ones");
  assert.equal(service.serial(), 1n);
  assert.equal(store.serial(), 1n);
  assert.equal(woken, 0, "no watcher is woken for a change that was not stored");
  failSealed = false;
  const change = service.putDp("admin", US);
  assert.equal(change.serial, 2n);
  // Every change a follower can be replayed carries the seal of the registry it leaves.
  const log = service.changesSince(0n, 10);
  assert.deepEqual(
    log.map((c) => c.serial),
    [1n, 2n],
  );
  for (const c of log) assert.ok(c.seal, `change ${c.serial} has its seal`);
  assert.deepEqual(log[1]?.seal, service.snapshot().seal);
  assert.equal(
    registrySignatureValid(service.snapshot(), service.snapshot().seal as RegistrySeal, rootKey.publicKey),
    true,
  );
});

test("an edit that would take the encoded registry past what a follower receives is refused; removals still go through", () => {
  const { store, service } = setup(undefined, rootKey, 1_000);
  service.putDp("a", EU);
  let added = 0;
  const put = () => service.createDelegation("a", key(`+${100 + added}`), "eu", 0);
  for (; added < 100; added++) {
    try {
      put();
    } catch (e) {
      assert.ok(e instanceof DiscoveryError && e.code === "resource_exhausted", String(e));
      assert.equal(e.details?.reason, "REGISTRY_TOO_LARGE");
      assert.match(e.message, /more than the 1000 a follower takes in one message/);
      break;
    }
  }
  assert.ok(added > 3 && added < 100, `${added} delegations fit`);
  const serial = service.serial();
  assert.equal(store.serial(), serial, "the refused edit left nothing");
  assert.equal(service.snapshot().delegations.length, added);
  // Over the bound already (a lower bound after a restart): an edit that does not grow it passes.
  const lower = setup(store, rootKey, 500).service;
  assert.equal(lower.updateDelegation("a", key("+100"), "", 60).kind, "put_delegation");
  assert.throws(
    () => lower.createDelegation("a", key("+999"), "eu", 0),
    /REGISTRY_TOO_LARGE|more than the 500/,
  );
  lower.deleteDelegation("a", key("+100"));
  assert.equal(store.serial(), serial + 2n);
  // A host longer than DNS allows is refused, its echo cut short.
  assert.throws(
    () => service.putDp("a", { ...EU, endpoints: [`${"h".repeat(300)}:7501`] }),
    (e: unknown) =>
      e instanceof DiscoveryError &&
      e.code === "invalid_argument" &&
      /the host at most 253 characters/.test(e.message) &&
      e.message.length < 200,
  );
});

test("a restart with a new root key signs with the new key", () => {
  const { store, service } = setup();
  service.putDp("admin", EU);
  const newKey = generateSigningKey();
  const snapshot = setup(store, newKey).service.snapshot();
  assert.equal(registrySignatureValid(snapshot, snapshot.seal as RegistrySeal, newKey.publicKey), true);
  assert.equal(registrySignatureValid(snapshot, snapshot.seal as RegistrySeal, rootKey.publicKey), false);
});

test("putMsp with an empty key keeps the MSP's key; a new key replaces it", () => {
  const { service } = setup();
  const first = generateSigningKey().publicKey;
  const second = generateSigningKey().publicKey;
  assert.deepEqual(service.putMsp("a", "one.example", "One", first).msp.signingPublicKey, first);
  const renamed = service.putMsp("a", "one.example", "One renamed", EMPTY);
  assert.deepEqual(renamed.msp.signingPublicKey, first);
  assert.equal(renamed.change.kind === "put_msp" && renamed.change.msp.signingPublicKey.length, 32);
  assert.deepEqual(service.snapshot().msps[0]?.signingPublicKey, first);
  assert.deepEqual(service.putMsp("a", "one.example", "One", second).msp.signingPublicKey, second);
  assert.deepEqual(service.snapshot().msps[0]?.signingPublicKey, second);
  // An MSP registered without a key publishes none.
  assert.deepEqual(service.putMsp("a", "two.example", "Two", EMPTY).msp.signingPublicKey, EMPTY);
});

test("putDp with an empty key keeps the DP's key, so moving endpoints cannot unpublish it", () => {
  const { service } = setup();
  service.putDp("a", EU);
  service.putDp("a", { ...EU, endpoints: ["127.0.0.1:7599"], signingPublicKey: EMPTY });
  const dp = service.snapshot().dps.find((d) => d.id === "eu");
  assert.deepEqual(dp?.endpoints, ["127.0.0.1:7599"]);
  assert.deepEqual(dp?.signingPublicKey, dpEuKey);
});

test("a DP's endpoint jurisdictions are checked, published in one form, and kept across a restart", () => {
  const { store, service } = setup();
  const two = ["127.0.0.1:7501", "127.0.0.1:7511"];
  const at = (endpoint: string, jurisdiction: string) => ({ endpoint, jurisdiction });
  const refused: [DpInfo, RegExp][] = [
    [
      { ...EU, endpoints: two, endpointJurisdictions: [at("127.0.0.1:7599", "CH")] },
      /not one of the DP's endpoints/,
    ],
    [
      {
        ...EU,
        endpoints: two,
        endpointJurisdictions: [at("127.0.0.1:7511", "CH"), at("127.0.0.1:7511", "EU")],
      },
      /twice/,
    ],
    [{ ...EU, endpoints: two, endpointJurisdictions: [at("127.0.0.1:7511", "C H")] }, /short code/],
  ];
  for (const [dp, reason] of refused) {
    assert.throws(
      () => service.putDp("a", dp),
      (e: unknown) => e instanceof DiscoveryError && e.code === "invalid_argument" && reason.test(e.message),
    );
  }
  // Given out of order and naming an endpoint in the DP's own jurisdiction: published sorted,
  // with only the endpoint that is elsewhere.
  service.putDp("a", {
    ...EU,
    endpoints: two,
    endpointJurisdictions: [at("127.0.0.1:7511", "CH"), at("127.0.0.1:7501", "EU")],
  });
  const published = service.snapshot().dps.find((d) => d.id === "eu");
  assert.deepEqual(published?.endpointJurisdictions, [at("127.0.0.1:7511", "CH")]);
  assert.ok(published);
  assert.equal(jurisdictionOfEndpoint(published, "127.0.0.1:7511"), "CH");
  assert.equal(jurisdictionOfEndpoint(published, "127.0.0.1:7501"), "EU");
  assert.equal(jurisdictionOfEndpoint(published, "127.0.0.1:7599"), undefined, "not an endpoint of the DP");
  // The store and its change log keep them.
  assert.deepEqual(store.dp("eu")?.endpointJurisdictions, [at("127.0.0.1:7511", "CH")]);
  const change = store.changesSince(0n, 100).at(-1);
  assert.equal(change?.kind, "put_dp");
  if (change?.kind === "put_dp")
    assert.deepEqual(change.dp.endpointJurisdictions, [at("127.0.0.1:7511", "CH")]);
  // A put without them places every endpoint in the DP's jurisdiction again.
  service.putDp("a", { ...EU, endpoints: two });
  assert.equal(store.dp("eu")?.endpointJurisdictions, undefined);
});

test("keys given as Buffers round-trip through the change log as the same bytes", () => {
  // Regression: grpc-js hands bytes over as Buffers, and Buffer.toJSON ran before the
  // JSON replacer saw the value, so keys were stored as {type:"Buffer",data:[...]} and came
  // back from changesSince as objects instead of bytes (breaking followers' signature checks).
  const { store, service } = setup();
  const dpKey = Buffer.from(generateSigningKey().publicKey);
  const mspKey = Buffer.from(generateSigningKey().publicKey);
  service.putDp("a", { ...EU, signingPublicKey: dpKey });
  service.putMsp("a", "one.example", "One", mspKey);
  const [putDp, putMsp] = service.changesSince(0n, 10);
  assert.equal(putDp?.kind, "put_dp");
  assert.equal(putMsp?.kind, "put_msp");
  const dpGot = putDp?.kind === "put_dp" ? putDp.dp.signingPublicKey : undefined;
  const mspGot = putMsp?.kind === "put_msp" ? putMsp.msp.signingPublicKey : undefined;
  assert.ok(dpGot instanceof Uint8Array && mspGot instanceof Uint8Array);
  assert.equal(Buffer.from(dpGot).toString("hex"), dpKey.toString("hex"));
  assert.equal(Buffer.from(mspGot).toString("hex"), mspKey.toString("hex"));
  // The audit trail reads the same bodies, and the tables the same keys after a restart.
  const audited = service.audit(10).find((a) => a.change.kind === "put_dp")?.change;
  assert.equal(audited?.kind === "put_dp" && Buffer.from(audited.dp.signingPublicKey).equals(dpKey), true);
  const loaded = setup(store).service.snapshot();
  assert.equal(Buffer.from(loaded.dps[0]?.signingPublicKey ?? EMPTY).equals(dpKey), true);
  assert.equal(Buffer.from(loaded.msps[0]?.signingPublicKey ?? EMPTY).equals(mspKey), true);
  // A follower replaying the log reaches a registry the root's signature covers.
  const follower = new RegistryView();
  for (const c of service.changesSince(0n, 10)) follower.apply(c);
  assert.equal(
    registrySignatureValid(follower.snapshot(), service.snapshot().seal as RegistrySeal, rootKey.publicKey),
    true,
  );
});

test("the root re-signs before its signature expires, under a new serial with the content unchanged", () => {
  let now = 10_000;
  const service = createRootService({
    store: openRegistryStore(":memory:"),
    clock: () => now,
    defaultDelegationTtlSeconds: 3600,
    signingKey: rootKey,
    ...VALIDITY,
  });
  service.putDp("admin", EU);
  const first = service.snapshot().seal as RegistrySeal;
  assert.deepEqual([first.signedAtMs, first.expiresAtMs], [10_000, 10_000 + VALIDITY.signatureValidityMs]);
  now = first.expiresAtMs - VALIDITY.signatureRefreshMs - 1;
  assert.equal(service.refreshIfDue(), undefined, "more than the refresh time is left");
  now += 1;
  const refresh = service.refreshIfDue();
  assert.equal(refresh?.kind, "refresh");
  assert.equal(refresh?.serial, 2n);
  const after = service.snapshot();
  assert.equal(after.seal?.expiresAtMs, now + VALIDITY.signatureValidityMs);
  assert.equal(registrySignatureValid(after, after.seal as RegistrySeal, rootKey.publicKey), true);
  assert.deepEqual(after.dps, [EU]);
  assert.equal(service.refreshIfDue(), undefined, "the new seal is fresh");
  assert.equal(service.audit(1)[0]?.actor, "(root re-sign)");
});

test("a range's federated DPs and a DP's federation default are published, signed and survive a restart", () => {
  const store = openRegistryStore(":memory:");
  const { service } = setup(store);
  service.putDp("a", EU);
  service.putDp("a", { ...US, federation: { defaultMode: "federate", preferredDpIds: ["eu"] } });
  service.createDelegation("a", key("+1"), "us", 0, ["eu"]);
  const d = () => service.snapshot().delegations.find((x) => x.id === "e164:1");
  assert.deepEqual(d()?.federatedDpIds, ["eu"]);
  // An update that does not name the list keeps it; one that names an empty list clears it.
  service.updateDelegation("a", key("+1"), "", 60);
  assert.deepEqual(d()?.federatedDpIds, ["eu"]);
  // A DP a delegation federates to cannot be removed.
  assert.throws(
    () => service.deleteDp("a", "eu"),
    (e: unknown) =>
      e instanceof DiscoveryError && e.code === "failed_precondition" && /federated DP/.test(e.message),
  );
  const snap = service.snapshot();
  assert.ok(snap.seal && registrySignatureValid(snap, snap.seal, rootKey.publicKey));
  const again = setup(store).service.snapshot();
  assert.deepEqual(again.dps.find((x) => x.id === "us")?.federation, {
    defaultMode: "federate",
    preferredDpIds: ["eu"],
  });
  assert.deepEqual(again.delegations.find((x) => x.id === "e164:1")?.federatedDpIds, ["eu"]);
  service.updateDelegation("a", key("+1"), "", 0, []);
  assert.equal(d()?.federatedDpIds, undefined);
  service.putDp("a", { ...US, federation: { defaultMode: "federate", preferredDpIds: [] } });
  service.deleteDp("a", "eu");
});

test("bad federation edits are refused, naming the problem", () => {
  const { service } = setup();
  service.putDp("a", EU);
  service.putDp("a", US);
  const before = service.serial();
  const cases: [() => unknown, string, RegExp][] = [
    [() => service.createDelegation("a", key("+44"), "eu", 0, ["eu"]), "invalid_argument", /the range's DP/],
    [
      () => service.createDelegation("a", key("+44"), "eu", 0, ["nope"]),
      "failed_precondition",
      /not registered/,
    ],
    [() => service.createDelegation("a", key("+44"), "eu", 0, ["us", "us"]), "invalid_argument", /twice/],
    [
      () =>
        service.createDelegation(
          "a",
          key("+44"),
          "eu",
          0,
          Array.from({ length: 33 }, (_, i) => `d${i}`),
        ),
      "invalid_argument",
      /at most 32/,
    ],
    [
      () => service.putDp("a", { ...EU, federation: { defaultMode: "federate", preferredDpIds: ["eu"] } }),
      "invalid_argument",
      /prefer the DP itself/,
    ],
    [
      () => service.putDp("a", { ...EU, federation: { defaultMode: "local", preferredDpIds: ["Bad Id"] } }),
      "invalid_argument",
      /preferred DP id/,
    ],
    [
      () => service.putDp("a", { ...EU, federation: { defaultMode: "local", preferredDpIds: ["uss"] } }),
      "failed_precondition",
      /prefers DP "uss", which is not registered/,
    ],
  ];
  for (const [f, code, reason] of cases) {
    assert.throws(
      f,
      (e: unknown) => e instanceof DiscoveryError && e.code === code && reason.test(e.message),
      String(reason),
    );
  }
  assert.equal(service.serial(), before);
});

test("a DP preferred by another's policy is not deleted; PutDp at a stale serial is refused, at the current one applies", () => {
  const { service } = setup();
  service.putDp("a", EU);
  service.putDp("a", { ...US, federation: { defaultMode: "federate", preferredDpIds: ["eu"] } });
  assert.throws(
    () => service.deleteDp("a", "eu"),
    (e: unknown) =>
      e instanceof DiscoveryError && e.code === "failed_precondition" && /policy of DP "us"/.test(e.message),
  );
  // An admin read the registry at this serial to carry fields over; another edit came between.
  const read = service.serial();
  const rotated = generateSigningKey().publicKey;
  service.putDp("b", { ...EU, signingPublicKey: rotated });
  assert.throws(
    () =>
      service.putDp(
        "a",
        { ...EU, signingPublicKey: EMPTY, endpoints: ["127.0.0.1:7601"] },
        { ifSerial: read },
      ),
    (e: unknown) =>
      e instanceof DiscoveryError &&
      e.code === "failed_precondition" &&
      e.details?.reason === "REGISTRY_CHANGED" &&
      e.details.metadata?.serial === String(read + 1n),
  );
  const at = service.serial();
  service.putDp("a", { ...EU, signingPublicKey: EMPTY, endpoints: ["127.0.0.1:7601"] }, { ifSerial: at });
  const eu = service.snapshot().dps.find((d) => d.id === "eu");
  assert.deepEqual(eu?.endpoints, ["127.0.0.1:7601"]);
  assert.deepEqual(eu?.signingPublicKey, rotated, "an empty key keeps the rotated one");
  service.putDp("a", { ...US, federation: { defaultMode: "federate", preferredDpIds: [] } });
  service.deleteDp("a", "eu");
});

test("a DP's private-lookup keys are published and signed, kept when not given, cleared on request", () => {
  const store = openRegistryStore(":memory:");
  const { service } = setup(store);
  const k1 = { epoch: 1_700_000_000, publicKey: generateOprfKeys().publicKey };
  const k2 = { epoch: 1_800_000_000, publicKey: generateOprfKeys().publicKey };
  service.putDp("a", { ...EU, privateLookupKeys: [k1, k2] });
  const keys = () => service.snapshot().dps.find((x) => x.id === "eu")?.privateLookupKeys;
  assert.deepEqual(keys(), [k1, k2]);
  // Moving endpoints without naming keys keeps them; the change log and a restart keep them too.
  service.putDp("a", { ...EU, endpoints: ["127.0.0.1:7598"] });
  assert.deepEqual(keys(), [k1, k2]);
  const snap = service.snapshot();
  assert.ok(snap.seal && registrySignatureValid(snap, snap.seal, rootKey.publicKey));
  assert.deepEqual(
    setup(store)
      .service.snapshot()
      .dps.find((x) => x.id === "eu")?.privateLookupKeys,
    [k1, k2],
  );
  // The signature covers them: another key under the same epoch is another registry.
  const forged = {
    ...snap,
    dps: snap.dps.map((d) => (d.id === "eu" ? { ...d, privateLookupKeys: [k1] } : d)),
  };
  assert.equal(registrySignatureValid(forged, snap.seal, rootKey.publicKey), false);
  service.putDp("a", EU, { clearPrivateLookupKeys: true });
  assert.equal(keys(), undefined);
  const refused = (dp: DpInfo, pattern: RegExp) =>
    assert.throws(
      () => service.putDp("a", dp),
      (e: unknown) => e instanceof DiscoveryError && e.code === "invalid_argument" && pattern.test(e.message),
    );
  refused({ ...EU, privateLookupKeys: [k1, k2, { epoch: 3, publicKey: k1.publicKey }] }, /at most 2/);
  refused({ ...EU, privateLookupKeys: [k1, { ...k2, epoch: k1.epoch }] }, /same epoch/);
  refused(
    { ...EU, privateLookupKeys: [{ epoch: 5, publicKey: new Uint8Array(32).fill(0xff) }] },
    /ristretto255/,
  );
  refused({ ...EU, privateLookupKeys: [{ epoch: -1, publicKey: k1.publicKey }] }, /32-bit/);
});
