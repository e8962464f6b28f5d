// A DP's replication in one process: a primary store served by serveFollow and a secondary
// store following it through startReplica, joined by an in-memory stream that the tests can
// hold and cut. The copy (paged, resumable), the changes with the primary's numbers, times and
// hash key, rows that do not verify, roles and epochs, the durability wait, promotion, and the
// private-lookup keys.
import assert from "node:assert/strict";
import { afterEach, test } from "node:test";
import { create, fromBinary, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import {
  bulkRecord,
  createLogger,
  DiscoveryError,
  dpSignedParts,
  generateOprfKeys,
  generateSigningKey,
  pb,
  RegistryView,
  registryKeys,
  SIGNING_CONTEXT,
  signWith,
} from "@mimi/core";
import { until } from "@mimi/core/testing";
import type { Channel } from "@mimi/rpc";
import { type ChangeLog, createChangeLog } from "../change-log.js";
import type { EpochKeys } from "../private-table.js";
import type { MappingRow } from "../store/rows.js";
import { type MappingStore, openMappingStore } from "../store/store.js";
import { createFollowers, type Followers } from "./acks.js";
import { writerSubscriptions } from "./index.js";
import { promote } from "./promote.js";
import { type Replica, startReplica } from "./replica.js";
import { openRole, type ReplicationRole } from "./role.js";
import { answerFence, COPY_PAGE, type ReplicationServerOptions, serveFollow } from "./source.js";

const log = createLogger({ name: "test", level: "silent" });
const DAY = 86_400_000;
const NOW = Date.UTC(2026, 11, 1);
const dpKey = generateSigningKey();
const mspKey = generateSigningKey();
const registry = new RegistryView();
registry.replace({
  serial: 1n,
  delegations: [],
  dps: [
    { id: "eu", endpoints: [], tlsIdentity: "dp-eu", jurisdiction: "EU", signingPublicKey: dpKey.publicKey },
  ],
  msps: [{ id: "bluebird.example", name: "b", index: 0, signingPublicKey: mspKey.publicKey }],
});
const keys = registryKeys(registry);

/** A bulk mapping of `csi` signed by the MSP and the DP, as a claim would store it. */
function signedRow(csi: string, ssi = "@a", isDefault = true): MappingRow {
  const { record, mspSignature } = bulkRecord(
    {
      csi,
      mspId: "bluebird.example",
      ssi,
      defaultRequested: isDefault,
      tags: [],
      createdAtMs: NOW - DAY,
      dpId: "eu",
      expiresAtMs: NOW + 30 * DAY,
    },
    mspKey,
  );
  return {
    csi,
    mspId: "bluebird.example",
    ssi,
    isDefault,
    precedence: NOW - DAY, // a time, as claims set it: beyond 32 bits
    expiresAtMs: NOW + 30 * DAY,
    record,
    userSig: new Uint8Array(0),
    mspSig: mspSignature,
    dpSig: signWith(dpKey, SIGNING_CONTEXT.mappingDp, ...dpSignedParts(isDefault, record)),
  };
}

const csiOf = (i: number) => `tel:+44${String(7_000_000 + i)}`;

interface Endpoint {
  store: MappingStore;
  changeLog: ChangeLog;
  role: ReplicationRole;
  followers: Followers;
  server: ReplicationServerOptions;
}

function endpoint(role: "primary" | "secondary", fill = 0): Endpoint {
  const store = openMappingStore(":memory:");
  for (let i = 0; i < fill; i++) store.putMapping(signedRow(csiOf(i)));
  const changeLog = createChangeLog({
    store,
    clock: () => NOW,
    retentionMs: DAY,
    hashKey: new Uint8Array(32).fill(role === "primary" ? 1 : 2),
    log,
  });
  const r = openRole(store, role, { log, peers: ["primary:1"] });
  const followers = createFollowers({ now: () => NOW, timeoutMs: 1_000, freshMs: 15_000 });
  const server: ReplicationServerOptions = {
    store,
    changeLog,
    role: r,
    followers,
    dpId: "eu",
    allowed: () => new Set(["dp-eu"]),
    heartbeatMs: 3_600_000,
    now: () => NOW,
    log,
    subscribeWriter: writerSubscriptions(store),
    jurisdiction: () => "EU",
    placesEndpoints: () => false,
  };
  return { store, changeLog, role: r, followers, server };
}

/**
 * A channel whose Follow runs serveFollow at `source` in this process. `holdAfter` stops the
 * stream after that many messages until `release()`; `starts` records each FollowStart.
 */
function link(source: () => Endpoint, o: { holdAfter?: number } = {}) {
  const starts: pb.FollowStart[] = [];
  /** What each message sent was (its case), in order, over every stream. */
  const sentKinds: string[] = [];
  let release: () => void = () => {};
  const held = new Promise<void>((r) => {
    release = r;
  });
  let streams = 0;
  const channel = {
    client: () => ({
      follow(reqs: AsyncIterable<pb.FollowRequest>, { signal }: { signal: AbortSignal }) {
        const queue: pb.FollowResponse[] = [];
        let wake: (() => void) | undefined;
        let space: (() => void) | undefined;
        let ended = false;
        let failure: unknown;
        let sent = 0;
        const stream = streams++;
        const requests = reqs[Symbol.asyncIterator]();
        const tap: AsyncIterator<pb.FollowRequest> = {
          async next() {
            const r = await requests.next();
            if (!r.done && r.value.message.case === "start") starts.push(r.value.message.value);
            return r;
          },
        };
        const send = async (m: MessageInitShape<typeof pb.FollowResponseSchema>) => {
          if (o.holdAfter !== undefined && stream === 0 && sent >= o.holdAfter) await held;
          sent++;
          sentKinds.push(m.message?.case ?? "");
          // Through the wire format, as gRPC would carry it.
          const wire = toBinary(pb.FollowResponseSchema, create(pb.FollowResponseSchema, m));
          queue.push(fromBinary(pb.FollowResponseSchema, wire));
          wake?.();
          while (queue.length > 4 && !signal.aborted) await new Promise<void>((r) => (space = r));
        };
        // A cancelled call ends its stream at once, as a gRPC call does.
        signal.addEventListener(
          "abort",
          () => {
            failure = new Error("cancelled");
            ended = true;
            wake?.();
            space?.(); // a send waiting for room sees the abort
          },
          { once: true },
        );
        serveFollow(source().server, "dp-eu", tap, signal, send).then(
          () => {
            ended = true;
            wake?.();
          },
          (err) => {
            failure = err;
            ended = true;
            wake?.();
          },
        );
        return {
          async *[Symbol.asyncIterator]() {
            for (;;) {
              const m = queue.shift();
              if (m) {
                space?.();
                yield m;
                continue;
              }
              if (ended) {
                if (failure) throw failure;
                return;
              }
              await new Promise<void>((r) => (wake = r));
              wake = undefined;
            }
          },
        };
      },
      fence(req: MessageInitShape<typeof pb.FenceRequestSchema>) {
        return Promise.resolve(
          create(
            pb.FenceResponseSchema,
            answerFence(source().server, create(pb.FenceRequestSchema, req), "dp-eu"),
          ),
        );
      },
    }),
  } as unknown as Channel;
  return { channel, starts, release, sentKinds };
}

/** Replicas a test started, closed after it whatever its outcome. */
const running = new Set<Replica>();
afterEach(async () => {
  for (const r of running) {
    r.close();
    await r.done;
  }
  running.clear();
});

function follow(
  secondary: Endpoint,
  channel: Channel,
  more: Partial<Parameters<typeof startReplica>[0]> = {},
) {
  const replica = startReplica({
    store: secondary.store,
    role: secondary.role,
    dpId: "eu",
    endpoints: () => ["primary:1"],
    channel: () => channel,
    keys,
    onHashKey: (k) => secondary.changeLog.setHashKey(k),
    currentHashKey: () => secondary.changeLog.hashKey,
    now: () => NOW,
    log,
    maxBackoffMs: 1,
    // A turn of the event loop, not a time: a reconnecting follower lets the test run.
    pause: () => new Promise<void>((r) => setImmediate(r)),
    ...more,
  });
  running.add(replica);
  return replica;
}

const caughtUp = (p: Endpoint, s: Endpoint) => () =>
  s.store.logBounds().latest === p.store.logBounds().latest && s.store.meta("replica_copy") === undefined;

test("a secondary copies the store in pages, then applies each change with the primary's number, time and hash key", async () => {
  const p = endpoint("primary", 2 * COPY_PAGE + 10);
  p.store.setOptOut("tel:+447700999999", NOW - DAY);
  const s = endpoint("secondary");
  const { channel } = link(() => p);
  const replica = follow(s, channel);
  assert.match(replica.problem() ?? "", /not yet reached|copying/);
  await until(() => replica.problem() === undefined && caughtUp(p, s)(), "copy done and caught up");
  assert.equal(s.store.count(), p.store.count());
  assert.equal(s.store.logId(), p.store.logId(), "the primary's log identity");
  assert.deepEqual(s.changeLog.hashKey, p.changeLog.hashKey, "the primary's change-hash key");
  assert.deepEqual(s.store.mappings(csiOf(300)), p.store.mappings(csiOf(300)));
  assert.equal(s.store.optedOutAt("tel:+447700999999"), NOW - DAY);
  assert.equal(s.store.logBounds().latest, p.store.logBounds().latest);

  // Changes after the copy: an update, a new CSI, a removal, an opt-out lifted.
  const before = p.store.logBounds().latest;
  p.store.putMapping(signedRow(csiOf(5), "@b", false));
  p.store.putMapping(signedRow("tel:+447700900011"));
  p.store.deleteMapping(csiOf(7), "bluebird.example", "@a");
  p.store.clearOptOut("tel:+447700999999");
  await until(caughtUp(p, s), "changes applied");
  assert.deepEqual(
    s.store.changesSince(before, 10),
    p.store.changesSince(before, 10),
    "same numbers and times",
  );
  assert.deepEqual(s.store.mappings(csiOf(5)), p.store.mappings(csiOf(5)));
  assert.equal(s.store.mappings(csiOf(7)).length, 0);
  assert.equal(s.store.optedOutAt("tel:+447700999999"), undefined);
  assert.equal(replica.status().state, "following");
  assert.equal(p.followers.list()[0]?.ackedSeq, p.store.logBounds().latest, "the secondary acknowledged");
  replica.close();
  await replica.done;
});

test("a secondary cut off mid-copy goes on from its last page, and one behind the retention window copies again", async () => {
  const p = endpoint("primary", 2 * COPY_PAGE + 10);
  const s = endpoint("secondary");
  // Stream 0 stops after its start, the writer tables (none here) and the first page of CSIs;
  // the secondary then reconnects.
  const l = link(() => p, { holdAfter: 3 });
  const first = follow(s, l.channel);
  await until(() => (s.store.meta("replica_copy") ?? "").includes(csiOf(COPY_PAGE - 1)), "first page stored");
  first.close();
  await first.done;
  l.release();
  // A CSI of a later page that the secondary held from elsewhere goes: the copy is exact.
  s.store.applyReplicated(() => s.store.putMapping(signedRow("tel:+447999999")));
  const second = follow(s, l.channel);
  await until(caughtUp(p, s), "copy finished");
  const resumed = l.starts.at(-1) as pb.FollowStart;
  assert.equal(resumed.copying, true);
  assert.equal(resumed.copyAfterCsi, csiOf(COPY_PAGE - 1), "went on after the last CSI stored");
  assert.equal(s.store.count(), p.store.count());
  assert.equal(s.store.mappings("tel:+447999999").length, 0);
  second.close();
  await second.done;

  // The primary's log moves on and is pruned past the secondary's position: a new copy.
  p.store.putMapping(signedRow("tel:+447700900012"));
  p.store.pruneChangesBefore(Number.MAX_SAFE_INTEGER, 1_000_000);
  p.store.putMapping(signedRow("tel:+447700900013"));
  const third = follow(s, l.channel);
  await until(caughtUp(p, s), "copied again");
  assert.equal(third.status().copies, 1);
  assert.equal(s.store.mappings("tel:+447700900013").length, 1);
  third.close();
  await third.done;
});

test("rows that do not verify are not stored: a secondary serves only what the MSP and the DP signed", async () => {
  const p = endpoint("primary", 3);
  const forged = { ...signedRow(csiOf(1), "@forged"), mspSig: new Uint8Array(64).fill(9) };
  p.store.putMapping(forged);
  const otherDp = { ...signedRow(csiOf(2), "@x"), record: signedRow("tel:+447700900000").record };
  p.store.putMapping(otherDp);
  p.store.setOptOut("tel:+4499", NOW - DAY); // not a canonical CSI: nothing of it is stored
  const s = endpoint("secondary");
  const replica = follow(s, link(() => p).channel);
  await until(caughtUp(p, s), "copied");
  assert.deepEqual(
    s.store.mappings(csiOf(1)).map((m) => m.ssi),
    ["@a"],
    "the forged row is left out, its CSI's good row kept",
  );
  assert.deepEqual(
    s.store.mappings(csiOf(2)).map((m) => m.ssi),
    ["@a"],
  );
  assert.equal(replica.status().refusedRows, 3);
  assert.equal(s.store.optedOutAt("tel:+4499"), undefined);
  replica.close();
  await replica.done;
});

test("roles: a secondary refuses writes naming the primary; a later epoch fences a primary, which then follows", () => {
  const s = endpoint("secondary");
  assert.throws(
    () => s.role.requirePrimary(),
    (e: DiscoveryError) =>
      e.code === "failed_precondition" && e.details?.reason === "NOT_PRIMARY" && /primary:1/.test(e.message),
  );
  const p = endpoint("primary");
  assert.equal(p.role.name(), "primary");
  p.role.observeEpoch(1, "x"); // not later: nothing
  assert.equal(p.role.isPrimary(), true);
  p.role.observeEpoch(3, "x");
  assert.equal(p.role.name(), "fenced");
  assert.equal(p.role.isSource(), true, "a fenced primary still serves Follow");
  assert.throws(() => p.role.requirePrimary(), /epoch 3/);
  // The trigger-quiet mark is set only once it follows the new primary.
  p.store.putMapping(signedRow("tel:+447700900015"));
  assert.equal(p.store.logBounds().latest, 1);
  p.role.following(3, "new:1");
  assert.equal(p.role.name(), "secondary");
  // A secondary's store takes only replicated changes: a local write is refused, not lost.
  assert.throws(
    () => p.store.putMapping(signedRow("tel:+447700900016")),
    (e: DiscoveryError) => e.code === "failed_precondition",
  );
  p.store.applyReplicated(() => p.store.putMapping(signedRow("tel:+447700900016")));
  assert.equal(p.store.logBounds().latest, 1, "replicated rows log nothing of their own");
});

test("a follower that knows a later epoch fences the primary it reaches; a replica refuses a primary of an older epoch", async () => {
  const p = endpoint("primary", 2);
  const s = endpoint("secondary");
  s.role.observeEpoch(2, "promotion");
  const replica = follow(s, link(() => p).channel);
  // The primary hears epoch 2 from the follower and stops writing, but still serves the stream.
  await until(caughtUp(p, s), "followed the fenced primary");
  assert.equal(p.role.name(), "fenced");
  replica.close();
  await replica.done;

  const old = endpoint("primary", 1);
  const newer = endpoint("secondary");
  newer.role.observeEpoch(5, "promotion");
  // The old primary does not learn epoch 5 here (its start message carried it, but the test's
  // source ignores it by answering as epoch 1): the replica itself must refuse.
  const l = link(() => ({
    ...old,
    server: { ...old.server, role: { ...old.role, observeEpoch: () => {} } },
  }));
  const r2 = follow(newer, l.channel);
  await until(() => l.starts.length >= 2, "tried again after refusing");
  assert.equal(newer.store.count(), 0, "nothing taken from a primary of an older epoch");
  r2.close();
  await r2.done;
});

test("writes wait for the configured number of followers to hold them, and say so when they do not in time", async () => {
  let wake: (() => void) | undefined;
  const followers = createFollowers({
    now: () => NOW,
    timeoutMs: 5_000,
    freshMs: 15_000,
    sleep: (_ms, signal) =>
      new Promise<void>((r) => {
        wake = r;
        signal.addEventListener("abort", () => r(), { once: true });
      }),
  });
  await followers.waitFor(10, 3, 0); // 0: the primary's disk is enough
  const a = followers.join("dp-eu", "follower-a");
  const held = followers.waitFor(10, 3, 1);
  a.ack(10, 2);
  let settled = false;
  void held.then(() => {
    settled = true;
  });
  await new Promise((r) => setImmediate(r));
  assert.equal(settled, false, "writer event 2 does not hold a write that logged 3");
  a.ack(10, 3);
  await held;
  const late = followers.waitFor(11, 3, 1);
  await until(() => wake !== undefined, "waiting");
  wake?.(); // the wait's time is up
  await assert.rejects(late, (e: DiscoveryError) => e.details?.reason === "NOT_REPLICATED");
  a.leave();
  assert.equal(followers.available(), 0);
});

test("promotion takes the next epoch with a majority of votes, once per epoch, and never from behind", async () => {
  // Three endpoints: the old primary P (down), secondaries A and B. A promotes.
  const a = endpoint("secondary");
  const b = endpoint("secondary");
  const down = {
    client: () => ({
      fence: () => Promise.reject(new DiscoveryError("upstream_unavailable", "unreachable")),
    }),
  } as unknown as Channel;
  const channels: Record<string, Channel> = { "p:1": down, "b:1": link(() => b).channel };
  const opts = (self: Endpoint) => ({
    store: self.store,
    role: self.role,
    peers: ["p:1", "b:1"],
    channel: (e: string) => channels[e] as Channel,
    ackFollowers: 1,
    log,
    catchUpMs: 0,
    pause: async () => {},
  });
  // B holds a change A lacks: A may not be promoted, and is told to promote B.
  b.store.applyReplicated(() => b.store.logChangeAt(1, "tel:+441", NOW));
  b.store.setMeta("log_id", a.store.logId());
  await assert.rejects(promote(opts(a), false), (e: DiscoveryError) => e.details?.reason === "BEHIND_PEER");
  assert.equal(a.role.isPrimary(), false);
  // The votes were spent on epoch 2: B now knows it, and grants epoch 2 to nobody else.
  assert.equal(b.role.epoch(), 2);
  assert.equal(b.role.vote(2, "someone-else", "x"), false);
  // Once A holds what B holds, it is promoted at epoch 3 with B's vote (P is down: 2 of 3).
  a.store.applyReplicated(() => a.store.logChangeAt(1, "tel:+441", NOW));
  const r = await promote(opts(a), false);
  assert.equal(r.epoch, 3);
  assert.equal(a.role.name(), "primary");
  assert.equal(b.role.epoch(), 3);
  // Alone (B down too), a further promotion would need force.
  channels["b:1"] = down;
  const c = endpoint("secondary");
  await assert.rejects(promote(opts(c), false), (e: DiscoveryError) => e.details?.reason === "NO_MAJORITY");
  // The refused attempt spent epoch 2 (its own vote), so the forced one takes 3.
  assert.equal((await promote(opts(c), true)).epoch, 3);
  assert.equal(c.role.name(), "primary");
});

test("the writer's own state follows too: enrolments, notices, challenges, with the primary's numbers", async () => {
  const p = endpoint("primary", 2);
  const msp = {
    mspId: "bluebird.example",
    tlsIdentity: "msp-bluebird",
    enrolledUsers: 10,
    enrolledAtMs: NOW,
    signingPublicKey: mspKey.publicKey,
    mayBulk: true,
  };
  p.store.enrol(msp);
  const body = { kind: "mapping_removed" as const, csi: csiOf(1), ssi: "@a", reason: "test" };
  p.store.addNotice("bluebird.example", NOW, body);
  p.store.addNotice("bluebird.example", NOW, body);
  p.store.deleteNoticesBefore(NOW + 1); // pruned: the copy holds none, but numbers go on
  p.store.insertChallenge({
    id: "ch_1",
    mspId: "bluebird.example",
    csi: csiOf(1),
    action: "claim",
    params: "{}",
    statement: new Uint8Array([1, 2, 3]),
    codeHash: new Uint8Array(32).fill(5),
    attempts: 0,
    expiresAtMs: NOW + 600_000,
    state: "open",
  });
  const s = endpoint("secondary");
  s.store.applyReplicated(() => s.store.enrol({ ...msp, mspId: "stale.example" })); // held before the copy: it goes
  const replica = follow(s, link(() => p).channel);
  const inSync = () => caughtUp(p, s)() && s.store.writer.latest() === p.store.writer.latest();
  await until(inSync, "copied");
  assert.deepEqual(s.store.listEnrolled(), p.store.listEnrolled());
  assert.deepEqual(s.store.challenge("ch_1"), p.store.challenge("ch_1"));
  assert.deepEqual(s.store.writer.sequences(), p.store.writer.sequences(), "notice numbers are not reused");
  // Later writes arrive as events with the primary's numbers.
  const seq = p.store.addNotice("bluebird.example", NOW, body);
  p.store.updateChallenge("ch_1", 1, "used");
  await until(inSync, "events applied");
  assert.deepEqual(
    s.store.noticesSince("bluebird.example", 0, 10),
    p.store.noticesSince("bluebird.example", 0, 10),
  );
  assert.equal(s.store.noticesSince("bluebird.example", 0, 10)[0]?.seq, seq);
  assert.equal(s.store.challenge("ch_1")?.state, "used");
  assert.deepEqual(
    s.store.writer.changesSince(0, 10),
    p.store.writer.changesSince(p.store.writer.latest() - 2, 10),
  );
  assert.equal(p.followers.list()[0]?.ackedWriterSeq, p.store.writer.latest());
  replica.close();
  await replica.done;
});

test("a vote for a later epoch ends the stream to the old primary at once, which is fenced by the next one", async () => {
  const p = endpoint("primary", 2);
  const s = endpoint("secondary");
  const l = link(() => p);
  follow(s, l.channel);
  await until(caughtUp(p, s), "following");
  const generation = s.store.logGeneration();
  assert.ok(generation >= 1, "the copy replaced the log: watchers of the old one stop");
  assert.equal(s.role.vote(2, "candidate-x", "a promotion"), true);
  await until(() => p.role.name() === "fenced", "the old primary fenced by the follower's next stream");
  assert.equal(l.starts.at(-1)?.epoch, 2n);
  // A fenced source is followed only until the primary of the later epoch is found.
  assert.equal(s.role.vote(2, "candidate-y", "another promotion"), false, "one grant per epoch");
});

test("a follower's new stream replaces its old one, and only followers that acked lately count", () => {
  let now = NOW;
  const followers = createFollowers({ now: () => now, timeoutMs: 1_000, freshMs: 15_000 });
  const first = followers.join("dp-eu", "f1");
  first.ack(5, 1);
  const second = followers.join("dp-eu", "f1");
  assert.equal(followers.list().length, 1, "the same follower counts once");
  first.ack(9, 9); // the replaced stream's acks count for nothing
  assert.equal(followers.list()[0]?.ackedSeq, 0);
  second.ack(9, 9);
  assert.equal(followers.available(), 1);
  now += 16_000;
  assert.equal(followers.available(), 0, "silent for three heartbeats: not counted");
});

test("a secondary without a whole copy, or behind another in the writer log, is not promoted", async () => {
  const a = endpoint("secondary");
  const b = endpoint("secondary");
  const opts = (self: Endpoint, problem?: string) => ({
    store: self.store,
    role: self.role,
    peers: ["b:1"],
    channel: () => link(() => b).channel,
    ackFollowers: 0,
    log,
    catchUpMs: 0,
    pause: async () => {},
    storeProblem: () => problem,
  });
  await assert.rejects(
    promote(opts(a, "still copying"), false),
    (e: DiscoveryError) => e.details?.reason === "INCOMPLETE_COPY",
  );
  b.store.setMeta("log_id", a.store.logId());
  b.store.writer.logAt(1, "enrolled_msps", '["x"]', NOW);
  await assert.rejects(promote(opts(a), false), (e: DiscoveryError) => e.details?.reason === "BEHIND_PEER");
});

test("a row whose MSP key the registry copy lacks yet is not left out for good: the secondary waits for it", async () => {
  const p = endpoint("primary", 3);
  const s = endpoint("secondary");
  const lagging = new RegistryView();
  lagging.replace({ ...registry.snapshot(), msps: [] });
  const replica = follow(s, link(() => p).channel, { keys: registryKeys(lagging) });
  await until(() => (s.store.meta("replica_copy") ?? "") !== "", "copy started");
  for (let i = 0; i < 50; i++) await new Promise((r) => setImmediate(r));
  assert.equal(s.store.count(), 0, "nothing stored, nothing skipped");
  assert.equal(replica.status().refusedRows, 0);
  lagging.replace(registry.snapshot()); // the registry copy catches up
  await until(caughtUp(p, s), "copied once the key is known");
  assert.equal(s.store.count(), 3);
});

test("a secondary follows and serves only a DP the registry places in its jurisdiction (H2)", async () => {
  const p = endpoint("primary", 2);
  const s = endpoint("secondary");
  let published = "US";
  const l = link(() => p);
  const replica = follow(s, l.channel, { jurisdiction: { configured: "EU", published: () => published } });
  for (let i = 0; i < 50; i++) await new Promise((r) => setImmediate(r));
  assert.equal(l.starts.length, 0, "no stream opened");
  assert.match(replica.problem() ?? "", /jurisdiction "EU".*"US"/);
  published = "EU";
  await until(caughtUp(p, s), "follows once the registry agrees");
  assert.equal(replica.problem(), undefined);
  assert.equal(l.starts.at(-1)?.jurisdiction, "EU");
  // The primary's own check: a follower configured elsewhere gets nothing.
  const other = { ...p.server, jurisdiction: () => "US" };
  const start = create(pb.FollowRequestSchema, { message: { case: "start", value: { jurisdiction: "EU" } } });
  await assert.rejects(
    serveFollow(
      other,
      "dp-eu",
      [start][Symbol.iterator]() as unknown as AsyncIterator<pb.FollowRequest>,
      new AbortController().signal,
      async () => {},
    ),
    (e: DiscoveryError) => e.code === "permission_denied" && e.details?.reason === "JURISDICTION",
  );
});

test("with its endpoint configured, a secondary is checked against that endpoint's jurisdiction in the registry (H2)", async () => {
  const p = endpoint("primary", 2);
  const s = endpoint("secondary");
  // The registry's placement of each endpoint: undefined while it is not listed.
  const places = new Map<string, string>();
  const l = link(() => p);
  const replica = follow(s, l.channel, {
    endpoint: "dp-eu-2:7500",
    jurisdiction: { configured: "EU", published: () => places.get("dp-eu-2:7500") },
    heartbeatMs: 1,
  });
  for (let i = 0; i < 50; i++) await new Promise((r) => setImmediate(r));
  assert.equal(l.starts.length, 0, "no stream while the registry does not list this endpoint");
  assert.match(replica.problem() ?? "", /does not list this secondary's endpoint dp-eu-2:7500/);
  places.set("dp-eu-2:7500", "CH");
  assert.match(replica.problem() ?? "", /places its endpoint dp-eu-2:7500 in "CH"/);
  places.set("dp-eu-2:7500", "EU");
  await until(caughtUp(p, s), "follows once the registry places the endpoint in the EU");
  assert.equal(l.starts.at(-1)?.endpoint, "dp-eu-2:7500", "the primary is told which endpoint follows");
  // The registry moves it elsewhere: the stream it holds is dropped, and it serves no more.
  const streams = l.starts.length;
  places.set("dp-eu-2:7500", "US");
  await until(() => replica.status().state === "disconnected", "the stream dropped");
  assert.match(replica.problem() ?? "", /"US"/);
  for (let i = 0; i < 50; i++) await new Promise((r) => setImmediate(r));
  assert.equal(l.starts.length, streams, "and none opened again");
  places.set("dp-eu-2:7500", "EU");
  // The primary's check, by the endpoint the follower names.
  const at = { ...p.server, jurisdiction: (e: string) => places.get(e) };
  const refusal = (value: { jurisdiction?: string; endpoint?: string }, server = at) =>
    serveFollow(
      server,
      "dp-eu",
      [create(pb.FollowRequestSchema, { message: { case: "start", value } })][
        Symbol.iterator
      ]() as unknown as AsyncIterator<pb.FollowRequest>,
      new AbortController().signal,
      async () => {},
    );
  await assert.rejects(
    refusal({ jurisdiction: "EU", endpoint: "dp-eu-9:7500" }),
    (e: DiscoveryError) => e.code === "permission_denied" && e.details?.reason === "UNLISTED_ENDPOINT",
  );
  // A registry that places endpoints one by one: a follower that does not name its own gets nothing.
  await assert.rejects(
    refusal({ jurisdiction: "E U", endpoint: "dp-eu-2:7500" }),
    (e: DiscoveryError) => e.code === "invalid_argument" && /short code/.test(e.message),
  );
  await assert.rejects(
    refusal({ endpoint: "x".repeat(301) }),
    (e: DiscoveryError) => e.code === "invalid_argument",
  );
  await assert.rejects(
    refusal({ jurisdiction: "EU" }, { ...at, placesEndpoints: () => true }),
    (e: DiscoveryError) => e.code === "permission_denied" && e.details?.reason === "ENDPOINT_REQUIRED",
  );
  places.set("dp-eu-3:7500", "US");
  await assert.rejects(
    refusal({ jurisdiction: "EU", endpoint: "dp-eu-3:7500" }),
    (e: DiscoveryError) =>
      e.code === "permission_denied" &&
      e.details?.reason === "JURISDICTION" &&
      /dp-eu-3:7500/.test(e.message),
  );
});

test("a secondary that voted for a candidate naming its address follows it before the others", async () => {
  const s = endpoint("secondary");
  const granted: [number, string][] = [];
  const server = { ...s.server, onGranted: (epoch: number, e: string) => granted.push([epoch, e]) };
  const fence = (epoch: bigint, candidate: string, e: string) =>
    answerFence(server, create(pb.FenceRequestSchema, { epoch, candidate, endpoint: e }), "dp-eu");
  assert.equal(fence(2n, "c1", "dp-eu-3:7500").granted, true);
  assert.equal(fence(2n, "c2", "dp-eu-2:7500").granted, false, "one candidate per epoch");
  assert.equal(fence(3n, "c3", "").granted, true);
  assert.deepEqual(granted, [[2, "dp-eu-3:7500"]], "heard only for a granted vote that named an address");
  // The replica tries the preferred endpoint instead of the one in turn.
  const p = endpoint("primary", 1);
  const opened: string[] = [];
  const l = link(() => p);
  const channelAt = (e: string) => {
    opened.push(e);
    return l.channel;
  };
  follow(s, l.channel, {
    endpoints: () => ["dp-eu-1:7500", "dp-eu-3:7500"],
    channel: channelAt,
    prefer: () => "dp-eu-3:7500",
  });
  await until(caughtUp(p, s), "following");
  assert.deepEqual([...new Set(opened)], ["dp-eu-3:7500"]);
});

test("a stream that says nothing for three heartbeats is dropped and the next endpoint tried", async () => {
  const p = endpoint("primary", 1);
  const s = endpoint("secondary");
  let now = NOW;
  const opened: string[] = [];
  const l = link(() => p);
  // The first endpoint accepts the stream and never answers (a host cut off by the network).
  const silent = {
    client: () => ({
      follow: (_reqs: unknown, { signal }: { signal: AbortSignal }) => ({
        async *[Symbol.asyncIterator]() {
          await new Promise<void>((_, fail) =>
            signal.addEventListener("abort", () => fail(new Error("cancelled")), { once: true }),
          );
        },
      }),
    }),
  } as unknown as Channel;
  follow(s, l.channel, {
    endpoints: () => ["gone:1", "primary:1"],
    channel: (e) => {
      opened.push(e);
      return e === "gone:1" ? silent : l.channel;
    },
    now: () => now,
    heartbeatMs: 1,
  });
  await until(() => opened.length === 1, "the first attempt");
  for (let i = 0; i < 200; i++) await new Promise((r) => setImmediate(r));
  assert.deepEqual(opened, ["gone:1"], "kept while the clock does not move");
  now += 4;
  await until(caughtUp(p, s), "following the next endpoint");
  assert.deepEqual(opened.slice(0, 2), ["gone:1", "primary:1"]);
});

test("a secondary is out of touch until a primary says it caught up, and again once that is three heartbeats old", async () => {
  const p = endpoint("primary", 1);
  const s = endpoint("secondary");
  let now = NOW;
  let open = false;
  const l = link(() => p);
  const replica = follow(s, l.channel, {
    now: () => now,
    heartbeatMs: 1_000,
    endpoints: () => (open ? ["primary:1"] : []),
  });
  assert.equal(replica.outOfTouch(), true, "a copy from before a restart is not known to be current");
  open = true;
  await until(() => replica.status().state === "following", "caught up");
  assert.equal(replica.outOfTouch(), false);
  // The primary's heartbeat (an hour in these tests) is longer than ours: silence is measured by
  // it, up to the longest a config allows (300 s), so a source cannot make silence look alive.
  now += 3 * 300_000;
  assert.equal(replica.outOfTouch(), false);
  now += 1;
  assert.equal(replica.outOfTouch(), true);
});

test("caught up with a fenced primary is not in touch: a new primary writes elsewhere", async () => {
  const p = endpoint("primary", 1);
  const s = endpoint("secondary");
  assert.equal(p.role.vote(2, "candidate-elsewhere", "a promotion"), true);
  assert.equal(p.role.name(), "fenced");
  const l = link(() => p);
  const replica = follow(s, l.channel);
  await until(() => replica.status().state === "following", "caught up with the fenced source");
  assert.equal(replica.outOfTouch(), true);
});

test("a primary's private-lookup keys go to a follower that asks for them, at the start and again when they change, only where the registry places it, and never from a fenced primary", async () => {
  const p = endpoint("primary", 3);
  const s = endpoint("secondary");
  const key = (epoch: number) => ({ epoch, ...generateOprfKeys() });
  let held: readonly EpochKeys[] = [key(100)];
  const wakes = new Set<() => void>();
  p.server.privateKeys = {
    held: () => held,
    subscribe(wake) {
      wakes.add(wake);
      return () => wakes.delete(wake);
    },
  };
  const received: EpochKeys[][] = [];
  const { channel } = link(() => p);
  const replica = follow(s, channel, { onPrivateKeys: (k) => received.push(k) });
  await until(() => received.length === 1 && caughtUp(p, s)(), "keys sent with the start");
  const hex = (ks: readonly EpochKeys[]) =>
    ks.map(
      (k) =>
        `${k.epoch}:${Buffer.from(k.secretKey).toString("hex")}:${Buffer.from(k.publicKey).toString("hex")}`,
    );
  assert.deepEqual(hex(received[0] as EpochKeys[]), hex(held), "the secret and public halves, as held");
  // A roll: the stream wakes and sends the new set; a set sent once is not sent again.
  held = [...held, key(200)];
  for (const w of wakes) w();
  await until(() => received.length === 2, "the new set sent");
  assert.deepEqual(hex(received[1] as EpochKeys[]), hex(held));
  p.store.putMapping(signedRow(csiOf(50)));
  await until(caughtUp(p, s), "a change after the keys");
  assert.equal(received.length, 2, "unchanged keys are not sent again");
  replica.close();
  await replica.done;

  // A follower that serves no private lookups does not ask for the keys, and is sent none.
  const u = endpoint("secondary");
  const l1 = link(() => p);
  const plain = follow(u, l1.channel);
  await until(caughtUp(p, u), "a follower without private lookups caught up");
  assert.equal(l1.starts[0]?.privateKeys, false);
  assert.ok(!l1.sentKinds.includes("privateKeys"), "no keys sent to it");
  plain.close();
  await plain.done;

  // A fenced primary sends no keys: the new primary's may differ.
  const f = endpoint("primary", 1);
  f.server.privateKeys = p.server.privateKeys;
  assert.equal(f.role.vote(2, "candidate-elsewhere", "a promotion"), true);
  const v = endpoint("secondary");
  const fromFenced: EpochKeys[][] = [];
  const l3 = link(() => f);
  const behindFence = follow(v, l3.channel, { onPrivateKeys: (k) => fromFenced.push(k) });
  await until(() => behindFence.status().state === "following", "caught up with the fenced source");
  assert.ok(!l3.sentKinds.includes("privateKeys"), "the fenced source sent none");
  assert.equal(fromFenced.length, 0);
  behindFence.close();
  await behindFence.done;

  // A follower the registry does not place where it says it is gets nothing, keys included.
  const q = endpoint("primary", 1);
  q.server.privateKeys = p.server.privateKeys;
  q.server.jurisdiction = () => "CH";
  const t = endpoint("secondary");
  const got: EpochKeys[][] = [];
  const l2 = link(() => q);
  const refused = follow(t, l2.channel, {
    onPrivateKeys: (k) => got.push(k),
    jurisdiction: { configured: "EU", published: () => "EU" },
  });
  await until(() => l2.starts.length >= 2, "the follower tried and was refused");
  assert.equal(got.length, 0);
  assert.equal(t.store.count(), 0);
  refused.close();
  await refused.done;
});
