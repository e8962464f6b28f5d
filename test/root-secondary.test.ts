// Root secondaries (H1: root failure must not stop resolution): a read-only root follows the
// primary, serves the same signed registry, refuses edits, keeps serving while the primary is
// down, and neither it nor a resolver accepts a registry that the pinned root key did not sign.
import assert from "node:assert/strict";
import { join } from "node:path";
import { after } from "node:test";
import { status } from "@grpc/grpc-js";
import { createLogger, DiscoveryError, pb } from "@mimi/core";
import {
  devTlsPaths,
  type ServerProcess,
  startResolver,
  startRootSecondary,
  waitUntilServing,
} from "@mimi/devnet";
import { addService, createGrpcServer, listen, loadTls, serverCredentials, shutdown } from "@mimi/rpc";
import Database from "better-sqlite3";
import { eventually, rejectsWith, scenario, useNetwork } from "./harness.js";

const t = useNetwork();

// The processes started here are not the network's, so this file stops them; their logs are
// the network's (and printed with them when a scenario fails).
const extras: ServerProcess[] = [];
after(async () => {
  await Promise.all(extras.map((p) => p.stop()));
});

/** A scenario that starts from the secondary (started by whichever scenario runs first). */
function check(name: string, fn: () => Promise<void>): void {
  scenario(t, name, async () => {
    await withSecondary();
    await fn();
  });
}

// Every scenario starts with a secondary that follows the primary and serves its copy: the
// first one to run starts it, so each scenario can also run alone.
let secondary: ServerProcess;
let primaryAddress: string;
let started: Promise<void> | undefined;
const withSecondary = () => {
  started ??= (async () => {
    primaryAddress = t.net.root.address;
    secondary = await startRootSecondary(t.net);
    extras.push(secondary);
    await waitUntilServing(t.net, secondary);
  })();
  return started;
};

const snapshotAt = async (address: string) => {
  const r = await t.net.channel(address, "cli").client(pb.RootService).getSnapshot({}, { timeoutMs: 2_000 });
  if (!r.snapshot) throw new Error(`${address} sent no snapshot`);
  return r.snapshot;
};

/** Asserts that the secondary serves exactly the primary's registry: serial, content, signature. */
const sameAsPrimary = async () => {
  const [p, s] = await Promise.all([snapshotAt(primaryAddress), snapshotAt(secondary.address)]);
  assert.equal(s.serial, p.serial);
  assert.deepEqual(s, p);
  assert.ok(s.signature.length === 64);
};

/** Resolves through `proc` until the answer passes `ok` (a new resolver first syncs its registry). */
const resolvedVia = async (
  proc: ServerProcess,
  csi: string,
  ok: (r: pb.ResolveResponse) => boolean,
): Promise<pb.ResolveResponse> => {
  const client = t.net.channel(proc.address, "msp-parrot").client(pb.ResolverService);
  let last: pb.ResolveResponse | undefined;
  await eventually(async () => {
    last = await client.resolve({ csi }, { timeoutMs: 2_000 });
    if (!ok(last)) throw new Error(`${proc.name} answered ${JSON.stringify(last.answer?.dpIds)} for ${csi}`);
  });
  return last as pb.ResolveResponse;
};

/** The first `n` events of a watch from `since`. */
const watchEvents = async (address: string, since: bigint, n: number) => {
  const abort = new AbortController();
  const events: pb.WatchRegistryResponse["event"][] = [];
  try {
    const stream = t.net
      .channel(address, "cli")
      .client(pb.RootService)
      .watchRegistry({ sinceSerial: since }, { signal: abort.signal });
    for await (const msg of stream) {
      events.push(msg.event);
      if (events.length === n) break;
    }
  } finally {
    abort.abort();
  }
  return events;
};

check(
  "a secondary serves the primary's signed registry, and a primary edit reaches a resolver that knows only the secondary",
  async () => {
    await eventually(sameAsPrimary);

    const viaSecondary = await startResolver(t.net, {
      name: "resolver-via-secondary",
      rootEndpoints: [secondary.address],
    });
    extras.push(viaSecondary);
    await resolvedVia(viaSecondary, "tel:+447700900123", (r) => r.answer?.status === pb.LookupStatus.FOUND);

    const added = await t.cli(["root", "delegation", "add", "+81", "--dp", "eu", "--root", primaryAddress]);
    assert.equal(added.code, 0, added.stderr);
    const serial = BigInt(/serial (\d+)/.exec(added.stdout)?.[1] ?? "0");
    // +81 was undelegated; once the change arrives through the secondary it names eu.
    const r = await resolvedVia(
      viaSecondary,
      "tel:+81312345678",
      (x) => x.answer?.dpIds.includes("eu") === true,
    );
    assert.equal(r.answer?.status, pb.LookupStatus.NOT_FOUND);
    await eventually(sameAsPrimary);

    // The backlog of a watcher one change behind is the same change, with the same signature.
    const [fromPrimary, fromSecondary] = await Promise.all([
      watchEvents(primaryAddress, serial - 1n, 2),
      watchEvents(secondary.address, serial - 1n, 2),
    ]);
    assert.equal(fromSecondary[0]?.case, "change");
    assert.deepEqual(fromSecondary, fromPrimary);
    // A watcher from nothing gets a snapshot first, as from the primary. So does one behind the
    // snapshot the secondary started from: it never received the changes before it.
    for (const since of [0n, 1n]) {
      const [first] = await watchEvents(secondary.address, since, 1);
      assert.equal(first?.case, "snapshot");
      assert.equal(first?.case === "snapshot" ? first.value.serial : 0n, serial);
    }
    const [fromOne] = await watchEvents(primaryAddress, 1n, 1);
    assert.equal(fromOne?.case === "change" ? fromOne.value.serial : 0n, 2n);
  },
);

check(
  "registry edits sent to the secondary are refused with FAILED_PRECONDITION naming the primary",
  async () => {
    const naming = new RegExp(`read-only secondary; send registry edits to the primary at ${primaryAddress}`);
    const cli = await t.cli(["root", "delegation", "add", "+82", "--dp", "eu", "--root", secondary.address]);
    assert.notEqual(cli.code, 0);
    assert.match(cli.stderr, naming);
    // Reads of the admin service included: the audit log is the primary's.
    const admin = t.net.channel(secondary.address, "admin").client(pb.RegistryAdminService);
    await rejectsWith(
      admin.putMsp({ id: "m.example", name: "M", signingPublicKey: new Uint8Array(0) }),
      status.FAILED_PRECONDITION,
      naming,
    );
    await rejectsWith(admin.listAudit({}), status.FAILED_PRECONDITION, naming);
    // A certificate without the admin role is refused before the service is asked at all.
    await rejectsWith(
      t.net.channel(secondary.address, "cli").client(pb.RegistryAdminService).listAudit({}),
      status.PERMISSION_DENIED,
      /needs a certificate with role admin/,
    );
    // Nothing changed anywhere.
    await sameAsPrimary();
  },
);

check(
  "with the primary stopped, a new resolver syncs through the secondary, and a restarted secondary serves its copy",
  async () => {
    // An edit the secondary received before the primary went down.
    const added = await t.cli(["root", "delegation", "add", "+86", "--dp", "eu", "--root", primaryAddress]);
    assert.equal(added.code, 0, added.stderr);
    await eventually(sameAsPrimary);
    const held = await snapshotAt(primaryAddress);
    // The DP that now serves +86 has the edit too (DPs follow the primary).
    const eu = t.net.channel(t.net.dps.eu.address, "admin").client(pb.AuthoritativeAdminService);
    await eventually(async () => assert.ok((await eu.getStatus({})).registrySerial >= held.serial));
    await t.net.root.stop();
    try {
      await withPrimaryDown(held);
    } finally {
      await t.net.root.start({ samePort: true });
    }
  },
);

/** A new resolver syncs through the secondary, which also serves its copy after a restart. */
async function withPrimaryDown(held: pb.RegistrySnapshot): Promise<void> {
  const fresh = await startResolver(t.net, {
    name: "resolver-primary-down",
    rootEndpoints: [primaryAddress, secondary.address],
  });
  extras.push(fresh);
  const r = await resolvedVia(fresh, "tel:+447700900123", (x) => x.answer?.status === pb.LookupStatus.FOUND);
  assert.deepEqual(r.answer?.dpIds, ["eu"]);
  await resolvedVia(fresh, "tel:+8613812345678", (x) => x.answer?.dpIds.includes("eu") === true);
  await t.logged(
    new RegExp(`^resolver-primary-down: .*"root":"${secondary.address}".*"registry in sync"`, "m"),
    "the new resolver synced from the secondary",
  );

  await secondary.stop();
  await secondary.start(); // on a new port; the primary is still down
  await waitUntilServing(t.net, secondary);
  assert.deepEqual(await snapshotAt(secondary.address), held);
  await t.logged(
    /^root-secondary: .*"registry copy loaded"/m,
    "the restarted secondary loaded its stored copy",
  );
}

check(
  "a registry altered by a root server is refused, and the resolver resolves through the secondary",
  async () => {
    // A root server holding a real root certificate serves the genuine snapshot with one
    // delegation moved to another DP, under the genuine signature.
    const genuine = await snapshotAt(secondary.address);
    const altered = {
      ...genuine,
      delegations: genuine.delegations.map((d) => (d.id === "e164:44" ? { ...d, dpId: "us" } : d)),
    };
    assert.notDeepEqual(altered.delegations, genuine.delegations);
    const fake = createGrpcServer();
    const log = createLogger({ name: "fake-root", level: "silent" });
    addService(
      fake,
      pb.RootService,
      {
        async getSnapshot() {
          return { snapshot: altered };
        },
        async watchRegistry(_req, ctx, send) {
          await send({ event: { case: "snapshot", value: altered } });
          await send({ event: { case: "caughtUp", value: { serial: altered.serial } } });
          await new Promise<void>((r) => ctx.signal.addEventListener("abort", () => r(), { once: true }));
        },
        async refer() {
          throw new DiscoveryError("not_found", "this fake root refers nothing");
        },
      },
      { log },
    );
    const port = await listen(
      fake,
      "127.0.0.1",
      0,
      serverCredentials(loadTls(devTlsPaths(t.net.pkiDir, "root"))),
    );
    const fakeAddress = `127.0.0.1:${port}`;
    try {
      const resolver = await startResolver(t.net, {
        name: "resolver-fake-first",
        rootEndpoints: [fakeAddress, secondary.address],
      });
      extras.push(resolver);
      const r = await resolvedVia(
        resolver,
        "tel:+447700900123",
        (x) => x.answer?.status === pb.LookupStatus.FOUND,
      );
      assert.deepEqual(r.answer?.dpIds, ["eu"]);
      await t.logged(
        new RegExp(`^resolver-fake-first: .*"root":"${fakeAddress}".*not signed by the pinned root key`, "m"),
        "the resolver's log names the fake root and the refused signature",
      );
    } finally {
      await shutdown(fake, 1_000);
    }
  },
);

check("a secondary whose stored copy was altered on disk discards it on restart and refetches", async () => {
  await eventually(sameAsPrimary);
  await secondary.stop();
  // What an attacker with access to the disk (not to the root key) could do.
  const db = new Database(join(t.net.dir, "root-secondary", "registry.sqlite"));
  try {
    const moved = db.prepare("UPDATE delegations SET dp_id = 'us' WHERE id = 'e164:44'").run();
    assert.equal(moved.changes, 1);
  } finally {
    db.close();
  }
  const seen = secondary.lines.length;
  await secondary.start();
  await waitUntilServing(t.net, secondary, 20_000);
  const restartLines = secondary.lines.slice(seen);
  assert.ok(
    restartLines.some((l) => l.includes("stored registry copy does not verify with the pinned root key")),
    "the secondary warns that it discards its copy",
  );
  assert.ok(!restartLines.some((l) => l.includes('"registry copy loaded"')));
  await sameAsPrimary();
  const s = await snapshotAt(secondary.address);
  assert.equal(s.delegations.find((d) => d.id === "e164:44")?.dpId, "eu");
});
