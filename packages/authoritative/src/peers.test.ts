// Delivery of first-mapping requests (R18) to a peer DP played by an in-process gRPC server:
// delivered requests leave the queue, failures are retried with a doubling backoff on the
// injected clock, a dead endpoint fails over to the next, and requests that can no longer
// matter (the mapping went, or a week passed) are dropped.
import assert from "node:assert/strict";
import { after, test } from "node:test";
import { createLogger, DiscoveryError, encodeMappingRecord, pb, RegistryView } from "@mimi/core";
import { until } from "@mimi/core/testing";
import { type InProcessServer, startInProcess } from "@mimi/devnet/in-process";
import { addService } from "@mimi/rpc";
import { createPeerSender } from "./peers.js";
import { openMappingStore } from "./store/store.js";

const log = createLogger({ name: "test", level: "silent" });
const DAY = 86_400_000;
const CSI = "tel:+447700900321";
const servers: InProcessServer[] = [];
after(async () => {
  for (const s of servers) await s.close();
});

/** A peer whose InvalidateOlder runs `answer`, recording every request. */
async function peer(answer: () => pb.InvalidateOlderResponse | Promise<never>) {
  const seen: pb.InvalidateOlderRequest[] = [];
  const server = await startInProcess((s) =>
    addService(
      s,
      pb.PeerService,
      {
        async invalidateOlder(req) {
          seen.push(req);
          return answer();
        },
      },
      { log },
    ),
  );
  servers.push(server);
  return { server, seen };
}

function setup(endpoints: string[], createdAtMs = Date.UTC(2026, 10, 1)) {
  const clock = { now: createdAtMs };
  const store = openMappingStore(":memory:");
  const record = encodeMappingRecord({
    csi: CSI,
    mspId: "bluebird.example",
    ssi: "@new",
    defaultRequested: true,
    tags: [],
    createdAtMs,
    proofMethod: "sms-code",
    proofId: "ch_1",
    userPublicKey: new Uint8Array(32).fill(1),
    dpId: "eu",
    expiresAtMs: createdAtMs + 365 * DAY,
  });
  store.putMapping({
    csi: CSI,
    mspId: "bluebird.example",
    ssi: "@new",
    isDefault: true,
    precedence: createdAtMs,
    expiresAtMs: createdAtMs + 365 * DAY,
    record,
    userSig: new Uint8Array(64).fill(2),
    mspSig: new Uint8Array(64).fill(3),
    dpSig: new Uint8Array(64).fill(4),
  });
  store.addPeerRequest({
    peerDp: "us",
    csi: CSI,
    mspId: "bluebird.example",
    ssi: "@new",
    createdAtMs,
    nextAtMs: createdAtMs,
  });
  const registry = new RegistryView();
  registry.replace({
    serial: 1n,
    delegations: [],
    dps: [
      { id: "us", endpoints, tlsIdentity: "dp-us", jurisdiction: "US", signingPublicKey: new Uint8Array(0) },
    ],
    msps: [],
  });
  /** A sender over this queue, connecting through `server`'s pool. */
  const senderVia = (server: InProcessServer, timeoutMs?: number) =>
    createPeerSender({
      store,
      registry,
      channels: server.pool(),
      clock: () => clock.now,
      log,
      ...(timeoutMs !== undefined && { timeoutMs }),
    });
  return { clock, store, registry, record, senderVia };
}

/** The queued request, as the store holds it now. */
const queued = (store: ReturnType<typeof openMappingStore>) =>
  store.duePeerRequests(Number.MAX_SAFE_INTEGER, 10);

test("a delivered request carries the signed mapping and leaves the queue", async () => {
  const { server, seen } = await peer(() => ({ removed: 1, contested: 0 }) as pb.InvalidateOlderResponse);
  const { store, record, senderVia } = setup([server.address]);
  const sender = senderVia(server);
  await sender.kick();
  assert.equal(seen.length, 1);
  assert.equal(seen[0]?.csi, CSI);
  assert.ok(
    Buffer.from(record).equals(seen[0]?.mapping?.signed?.record ?? new Uint8Array()),
    "the record as stored",
  );
  assert.equal(store.peerRequestCount(), 0);
  sender.close();
});

test("an unreachable peer is retried with a doubling backoff on the clock, then reached", async () => {
  let up = false;
  const { server, seen } = await peer(() => {
    if (!up) return Promise.reject(new DiscoveryError("upstream_unavailable", "peer restarting"));
    return { removed: 0, contested: 1 } as pb.InvalidateOlderResponse;
  });
  const { clock, store, senderVia } = setup([server.address]);
  const sender = senderVia(server);
  await sender.kick();
  let [r] = queued(store);
  assert.equal(r?.attempts, 1);
  assert.equal(r?.nextAtMs, clock.now + 1_000);
  assert.match(r?.lastError ?? "", /peer restarting/);
  await sender.kick(); // not due yet: nothing is sent
  assert.equal(seen.length, 1);
  clock.now += 1_000;
  await sender.kick();
  [r] = queued(store);
  assert.equal(r?.attempts, 2);
  assert.equal(r?.nextAtMs, clock.now + 2_000);
  up = true;
  clock.now += 2_000;
  await sender.kick();
  assert.equal(seen.length, 3);
  assert.equal(store.peerRequestCount(), 0);
  sender.close();
});

test("a dead endpoint fails over to the peer's next one; a refusal is retried later, not failed over", async () => {
  const { server, seen } = await peer(() => ({ removed: 0, contested: 0 }) as pb.InvalidateOlderResponse);
  const ok = setup(["127.0.0.1:1", server.address]);
  const sender = ok.senderVia(server, 2_000);
  await sender.kick();
  assert.equal(seen.length, 1);
  assert.equal(ok.store.peerRequestCount(), 0);
  sender.close();

  const refusing = await peer(() =>
    Promise.reject(new DiscoveryError("permission_denied", "not delegated to you yet")),
  );
  const second = await peer(() => ({ removed: 0, contested: 0 }) as pb.InvalidateOlderResponse);
  const r = setup([refusing.server.address, second.server.address]);
  const s2 = r.senderVia(refusing.server);
  await s2.kick();
  assert.equal(refusing.seen.length, 1);
  assert.equal(second.seen.length, 0, "a refusal is an answer: the next endpoint is not asked");
  assert.match(queued(r.store)[0]?.lastError ?? "", /not delegated to you yet/);
  s2.close();

  // A replica listed first answers that only its primary writes: the primary, next, is asked.
  const replica = await peer(() =>
    Promise.reject(
      new DiscoveryError("failed_precondition", "this endpoint is a replica", {
        details: { reason: "NOT_PRIMARY", metadata: { primary: "elsewhere", epoch: "2" } },
      }),
    ),
  );
  const primary = await peer(() => ({ removed: 1, contested: 0 }) as pb.InvalidateOlderResponse);
  const p = setup([replica.server.address, primary.server.address]);
  const s3 = p.senderVia(replica.server);
  await s3.kick();
  assert.deepEqual([replica.seen.length, primary.seen.length], [1, 1]);
  assert.equal(p.store.peerRequestCount(), 0, "delivered to the primary");
  s3.close();
});

test("a request whose mapping went, or that failed for a week, is dropped", async () => {
  const { server, seen } = await peer(() =>
    Promise.reject(new DiscoveryError("upstream_unavailable", "peer down")),
  );
  const gone = setup([server.address]);
  gone.store.deleteMapping(CSI, "bluebird.example", "@new");
  const s1 = gone.senderVia(server);
  await s1.kick();
  assert.equal(seen.length, 0, "nothing to ask for a mapping that is gone");
  assert.equal(gone.store.peerRequestCount(), 0);
  s1.close();

  const old = setup([server.address]);
  old.clock.now += 8 * DAY;
  const s2 = old.senderVia(server);
  await s2.kick();
  assert.equal(seen.length, 1, "one last try");
  assert.equal(old.store.peerRequestCount(), 0, "then it is abandoned");
  s2.close();
});

/** A queue of requests to two peers, "us" (three) and "ap" (one), each peer at `endpoints`. */
function twoPeers(endpoints: { us: string; ap: string }) {
  const t = setup([endpoints.us]);
  for (const ssi of ["@second", "@third"]) {
    const row = t.store.mapping(CSI, "bluebird.example", "@new");
    assert.ok(row);
    t.store.putMapping({ ...row, ssi, isDefault: false });
    t.store.addPeerRequest({
      peerDp: "us",
      csi: CSI,
      mspId: "bluebird.example",
      ssi,
      createdAtMs: t.clock.now,
      nextAtMs: t.clock.now,
    });
  }
  t.store.addPeerRequest({
    peerDp: "ap",
    csi: CSI,
    mspId: "bluebird.example",
    ssi: "@new",
    createdAtMs: t.clock.now,
    nextAtMs: t.clock.now,
  });
  const dp = (id: string, endpoint: string) => ({
    id,
    endpoints: [endpoint],
    tlsIdentity: `dp-${id}`,
    jurisdiction: "US",
    signingPublicKey: new Uint8Array(0),
  });
  t.registry.replace({
    serial: 2n,
    delegations: [],
    dps: [dp("us", endpoints.us), dp("ap", endpoints.ap)],
    msps: [],
  });
  return t;
}

test("a peer that does not answer costs a round one call, and holds up no other peer's requests", async () => {
  let release = () => {};
  const held = new Promise<never>((_, reject) => {
    release = () => reject(new DiscoveryError("upstream_unavailable", "peer down"));
  });
  const us = await peer(() => held);
  const ap = await peer(() => ({ removed: 0, contested: 0 }) as pb.InvalidateOlderResponse);
  const t = twoPeers({ us: us.server.address, ap: ap.server.address });
  const sender = t.senderVia(us.server);
  const round = sender.kick();
  // "us" has not answered its first request; "ap"'s is delivered meanwhile.
  await until(() => ap.seen.length === 1 && t.store.peerRequestCount() === 3, "ap's request delivered");
  assert.equal(us.seen.length, 1);
  release();
  await round;
  assert.equal(us.seen.length, 1, "its other requests were put off without a call");
  const left = queued(t.store);
  assert.deepEqual(
    left.map((r) => [r.peerDp, r.attempts, r.nextAtMs - t.clock.now]),
    [
      ["us", 1, 1_000],
      ["us", 1, 1_000],
      ["us", 1, 1_000],
    ],
  );
  assert.equal(left.filter((r) => /^not asked: DP "us" did not answer/.test(r.lastError ?? "")).length, 2);
  sender.close();
});

test("a peer that asks us to slow down (PEER_RATE) is waited for as it says, its requests' attempts unspent", async () => {
  let slow = true;
  const { server, seen } = await peer(() => {
    if (slow) {
      return Promise.reject(
        new DiscoveryError("resource_exhausted", "too many", {
          details: { reason: "PEER_RATE", retryAfterMs: 30_000 },
        }),
      );
    }
    return { removed: 0, contested: 0 } as pb.InvalidateOlderResponse;
  });
  const { clock, store, senderVia } = setup([server.address]);
  // A second request for the same peer in the round.
  store.addPeerRequest({
    peerDp: "us",
    csi: CSI,
    mspId: "bluebird.example",
    ssi: "@new",
    createdAtMs: clock.now,
    nextAtMs: clock.now,
  });
  const sender = senderVia(server);
  await sender.kick();
  assert.equal(seen.length, 1, "the round's other request waits without a call");
  const waiting = queued(store);
  assert.equal(waiting.length, 2);
  for (const r of waiting) {
    assert.equal(r.attempts, 0, "no attempt spent");
    assert.equal(r.nextAtMs, clock.now + 30_000);
  }
  clock.now += 29_999;
  await sender.kick();
  assert.equal(seen.length, 1, "not before the time the peer gave");
  slow = false;
  clock.now += 1;
  await sender.kick();
  assert.equal(seen.length, 3);
  assert.equal(store.peerRequestCount(), 0);
  sender.close();
});

test("a week-old request is given up even while its peer keeps asking us to slow down", async () => {
  const { server, seen } = await peer(() =>
    Promise.reject(
      new DiscoveryError("resource_exhausted", "too many", {
        details: { reason: "PEER_RATE", retryAfterMs: 30_000 },
      }),
    ),
  );
  const old = setup([server.address]);
  old.clock.now += 8 * DAY;
  const sender = old.senderVia(server);
  await sender.kick();
  assert.equal(seen.length, 1, "one last try");
  assert.equal(old.store.peerRequestCount(), 0, "then it is abandoned, not put off again");
  sender.close();
});
