// Following the registry over real gRPC streams in this process: a root made of serveLog over
// an in-memory signed log, and startRegistrySync as the follower. The follower resumes from its
// serial after the stream breaks, refetches after a gap, fails over to the next root, and
// refuses what the pinned key did not sign, anything older than what it already accepted (also
// after a restart), and any registry whose seal has expired.
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import {
  changeToProto,
  createLogger,
  DiscoveryError,
  generateSigningKey,
  type RegistryChange,
  type RegistryData,
  RegistryView,
  type SigningKey,
  serveLog,
  signRegistry,
  snapshotToProto,
} from "@mimi/core";
import { RootService } from "@mimi/core/pb";
import { until } from "@mimi/core/testing";
import { addService, createGrpcServer, listen } from "@mimi/rpc";
import { startRegistrySync } from "./registry-sync.js";

const log = createLogger({ name: "test", level: "silent" });
/** The followers' clock; tests move it. */
let nowMs = 1_800_000_000_000;
const clock = () => nowMs;
/** Every registry signature in these tests is valid for a day from the clock's start. */
const PERIOD = { signedAtMs: nowMs - 1_000, expiresAtMs: nowMs + 86_400_000 };
const cleanups: (() => void)[] = [];
after(() => {
  for (const c of cleanups) c();
});

/** A signed log of `n` changes (one MSP each) after an empty registry at serial 0. */
function signedLog(key: SigningKey, n: number): RegistryChange[] {
  const view = new RegistryView();
  const out: RegistryChange[] = [];
  for (let i = 1; i <= n; i++) {
    const change: RegistryChange = {
      serial: BigInt(i),
      kind: "put_msp",
      msp: { id: `m${i}.example`, name: `M${i}`, index: i - 1, signingPublicKey: new Uint8Array(0) },
    };
    view.apply(change);
    out.push({ ...change, seal: signRegistry(view.snapshot(), key, PERIOD) });
  }
  return out;
}

/** The registry after the first `serial` changes, signed. */
function stateAt(changes: readonly RegistryChange[], serial: number, key: SigningKey): RegistryData {
  const view = new RegistryView();
  for (const c of changes.slice(0, serial)) view.apply(c);
  return { ...view.snapshot(), seal: signRegistry(view.snapshot(), key, PERIOD) };
}

interface FakeRoot {
  address: string;
  /** The since_serial of every watch, in order. */
  watches: bigint[];
  /** Changes the root holds now; appending and calling commit() reaches watchers. */
  held: RegistryChange[];
  commit(): void;
}

/**
 * A root serving `held` through serveLog. `breakAfter` ends the first watch with UNAVAILABLE
 * after that many changes; `skip` leaves out one serial on the first watch (a lost message);
 * `replay` answers every watch with a snapshot of everything held, whatever the follower holds
 * (a root replaying an old registry); `unsigned` holds that change without its seal (a root that
 * stored it so), and answers a later watch from 0 with the snapshot of all it holds.
 */
async function fakeRoot(
  key: SigningKey,
  all: readonly RegistryChange[],
  opts: { breakAfter?: number; skip?: bigint; replay?: boolean; unsigned?: bigint } = {},
): Promise<FakeRoot> {
  const listeners = new Set<() => void>();
  const root: FakeRoot = {
    address: "",
    watches: [],
    held: [...all],
    commit: () => {
      for (const l of listeners) l();
    },
  };
  const server = createGrpcServer();
  addService(
    server,
    RootService,
    {
      async getSnapshot() {
        return { snapshot: snapshotToProto(stateAt(root.held, root.held.length, key)) };
      },
      async watchRegistry(req, ctx, send) {
        const first = root.watches.length === 0;
        root.watches.push(req.sinceSerial);
        let from = req.sinceSerial;
        if (from === 0n || opts.replay) {
          const latest = opts.replay || (opts.unsigned !== undefined && !first);
          const snap = stateAt(root.held, latest ? root.held.length : 0, key);
          await send({ event: { case: "snapshot", value: snapshotToProto(snap) } });
          from = snap.serial;
        }
        let sent = 0;
        await serveLog<RegistryChange, bigint>(from, {
          signal: ctx.signal,
          subscribe: (wake) => {
            listeners.add(wake);
            return () => listeners.delete(wake);
          },
          pageSize: 2,
          read: (since, limit) =>
            root.held
              .filter((c) => c.serial > since && !(first && c.serial === opts.skip))
              .slice(0, limit)
              .map((c) => (c.serial === opts.unsigned ? { ...c, seal: undefined } : c)),
          async send(c) {
            if (first && opts.breakAfter !== undefined && sent === opts.breakAfter) {
              throw new DiscoveryError("upstream_unavailable", "the root went away");
            }
            await send({ event: { case: "change", value: changeToProto(c) } });
            sent++;
            return c.serial;
          },
          caughtUp: (serial) => send({ event: { case: "caughtUp", value: { serial } } }),
        });
      },
      async refer() {
        throw new DiscoveryError("not_found", "not in this test");
      },
    },
    { log },
  );
  const port = await listen(server, "127.0.0.1", 0, grpc.ServerCredentials.createInsecure());
  root.address = `127.0.0.1:${port}`;
  cleanups.push(() => server.forceShutdown());
  return root;
}

function follow(key: SigningKey, endpoints: string[], persistPath?: string) {
  const sync = startRegistrySync({
    rootEndpoints: endpoints,
    credentials: grpc.credentials.createInsecure(),
    log,
    clock,
    rootPublicKey: key.publicKey,
    maxBackoffMs: 50,
    ...(persistPath ? { persistPath } : {}),
  });
  cleanups.push(() => sync.close());
  return sync;
}

test("a follower gets the snapshot and every change, then live changes as they commit", async () => {
  const key = generateSigningKey();
  const changes = signedLog(key, 8);
  const root = await fakeRoot(key, changes.slice(0, 5));
  const sync = follow(key, [root.address]);
  await sync.ready;
  await until(() => sync.view.serial === 5n, "the backlog is applied");
  root.held.push(...changes.slice(5));
  root.commit();
  await until(() => sync.view.serial === 8n, "the live changes are applied");
  assert.equal(sync.view.msp("m8.example")?.index, 7);
  assert.deepEqual(root.watches, [0n], "one watch was enough");
});

test("after a broken stream the follower resumes from the serial it holds, without a snapshot", async () => {
  const key = generateSigningKey();
  const root = await fakeRoot(key, signedLog(key, 6), { breakAfter: 3 });
  const sync = follow(key, [root.address]);
  await until(() => sync.view.serial === 6n, "all changes are applied");
  assert.deepEqual(root.watches, [0n, 3n]);
});

test("a gap in the changes makes the follower watch again from what it holds", async () => {
  const key = generateSigningKey();
  const root = await fakeRoot(key, signedLog(key, 5), { skip: 3n });
  const sync = follow(key, [root.address]);
  await until(() => sync.view.serial === 5n, "all changes are applied");
  assert.deepEqual(root.watches, [0n, 2n], "the second watch starts after serial 2, before the gap");
});

test("a change that fails to verify makes the follower ask for the whole registry, not the same change again", async () => {
  const key = generateSigningKey();
  const root = await fakeRoot(key, signedLog(key, 5), { unsigned: 3n });
  const sync = follow(key, [root.address]);
  await until(() => sync.view.serial === 5n, "the follower gets past the change through a snapshot");
  assert.deepEqual(root.watches.slice(0, 2), [0n, 0n], "the second watch asks from 0, not from 2");
  assert.equal(sync.view.msp("m5.example")?.index, 4);
});

test("a dead first root is skipped; changes another key signed are refused and never applied", async () => {
  const key = generateSigningKey();
  const other = generateSigningKey();
  const good = await fakeRoot(key, signedLog(key, 3));
  const forged = await fakeRoot(other, signedLog(other, 3));
  const sync = follow(key, ["127.0.0.1:1", forged.address, good.address]);
  await until(() => sync.view.serial === 3n && sync.connected(), "the follower syncs from the good root");
  assert.ok(forged.watches.length >= 1, "the forged root was asked");
  assert.equal(sync.view.msp("m1.example")?.name, "M1");
});

test("a follower never goes back to an older registry, not even after a restart", async () => {
  const key = generateSigningKey();
  const changes = signedLog(key, 6);
  const path = join(mkdtempSync(join(tmpdir(), "mimi-sync-")), "registry.bin");
  const current = await fakeRoot(key, changes);
  const first = follow(key, [current.address], path);
  await until(() => first.view.serial === 6n, "the follower holds serial 6");
  first.close();

  // Serial 5 carries the root's genuine signature, as every old registry does.
  const replaying = await fakeRoot(key, changes.slice(0, 5), { replay: true });
  const again = follow(key, [replaying.address], path);
  await until(() => replaying.watches.length >= 2, "the replaying root was asked twice");
  assert.equal(again.view.serial, 6n, "the saved serial 6 is the high-water mark");
  assert.equal(again.view.msp("m6.example")?.name, "M6");
  assert.equal(again.problem(), undefined, "the saved copy is still in use");

  // Without the saved copy the same follower would have taken serial 5: the refusal is the mark's doing.
  const fresh = follow(key, [replaying.address]);
  await until(() => fresh.view.serial === 5n, "a follower without history accepts serial 5");
});

test("a registry whose seal expired is refused, and a held copy stops being usable when it expires", async () => {
  const key = generateSigningKey();
  const root = await fakeRoot(key, signedLog(key, 2));
  const start = nowMs;
  try {
    const sync = follow(key, [root.address]);
    await sync.ready;
    await until(() => sync.view.serial === 2n, "the follower holds serial 2");
    assert.equal(sync.problem(), undefined);
    nowMs = PERIOD.expiresAtMs;
    assert.match(sync.problem() ?? "", /serial 2 expired at .*no root has re-signed it/);

    // A new follower refuses the same, now expired, registry outright.
    const late = follow(key, [root.address]);
    await until(() => root.watches.length >= 3, "the late follower asked again after a refusal");
    assert.equal(late.view.serial, 0n);
    assert.match(late.problem() ?? "", /no verified copy/);
  } finally {
    nowMs = start;
  }
});

test("a follower offline longer than the validity catches up through the backlog to a fresh seal", async () => {
  const key = generateSigningKey();
  const start = nowMs;
  // Changes 1..3 were sealed long ago (their seals have expired); change 4 is fresh.
  const old = signedLog(key, 3);
  const view = new RegistryView();
  for (const c of old) view.apply(c);
  const change4: RegistryChange = { serial: 4n, kind: "refresh" };
  view.apply(change4);
  try {
    nowMs = PERIOD.expiresAtMs + 86_400_000;
    const fresh = { signedAtMs: nowMs - 1_000, expiresAtMs: nowMs + 86_400_000 };
    const all = [...old, { ...change4, seal: signRegistry(view.snapshot(), key, fresh) }];
    const path = join(mkdtempSync(join(tmpdir(), "mimi-sync-")), "registry.bin");
    // The saved copy at serial 1, sealed long ago, as a follower restarted after weeks holds it.
    const one = new RegistryView();
    one.apply(old[0] as RegistryChange);
    const { writeFileSync } = await import("node:fs");
    const { create, toBinary } = await import("@bufbuild/protobuf");
    const { RegistrySnapshotSchema } = await import("@mimi/core/pb");
    const saved = { ...one.snapshot(), seal: (old[0] as RegistryChange).seal };
    writeFileSync(
      path,
      toBinary(RegistrySnapshotSchema, create(RegistrySnapshotSchema, snapshotToProto(saved))),
    );
    const root = await fakeRoot(key, all);
    const sync = follow(key, [root.address], path);
    assert.match(sync.problem() ?? "", /expired/, "the saved copy alone is unusable");
    await sync.ready;
    await until(() => sync.view.serial === 4n, "the backlog up to the fresh seal is applied");
    assert.equal(sync.problem(), undefined);
    assert.deepEqual(root.watches, [1n], "it resumed from its saved serial, not from a snapshot");
  } finally {
    nowMs = start;
  }
});
