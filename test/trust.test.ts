// The chain of trust, across real processes (the findings of the trust audit): a follower never
// goes back to an older registry (a fake root replaying one, also after a restart), only a
// certificate with the root role can serve a registry, a registry past its signature's validity
// is refused until the root re-signs, each service admits only the roles it serves, a server
// refuses the development CA unless its config allows it, and an MSP signs nothing a DP made up.
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after } from "node:test";
import { status } from "@grpc/grpc-js";
import {
  createLogger,
  DiscoveryError,
  encodeMappingRecord,
  generateSigningKey,
  pb,
  signingKeyPem,
} from "@mimi/core";
import { devTlsPaths, type ServerProcess, startResolver } from "@mimi/devnet";
import { addService, createGrpcServer, listen, loadTls, serverCredentials, shutdown } from "@mimi/rpc";
import { eventually, rejectsWith, scenario, useNetwork } from "./harness.js";

const t = useNetwork();
const DAY_MS = 86_400_000;

const extras: ServerProcess[] = [];
const fakes: (() => Promise<void>)[] = [];
after(async () => {
  await Promise.all(fakes.map((f) => f()));
  await Promise.all(extras.map((p) => p.stop()));
});

const snapshot = async () => {
  const r = await t.net.channel(t.net.root.address, "cli").client(pb.RootService).getSnapshot({});
  if (!r.snapshot) throw new Error("the root sent no snapshot");
  return r.snapshot;
};

/** A root server in this process, presenting `identity`'s certificate and serving `held` to every watcher. */
async function fakeRoot(identity: string, held: pb.RegistrySnapshot): Promise<string> {
  const server = createGrpcServer();
  addService(
    server,
    pb.RootService,
    {
      async getSnapshot() {
        return { snapshot: held };
      },
      async watchRegistry(_req, ctx, send) {
        await send({ event: { case: "snapshot", value: held } });
        await send({ event: { case: "caughtUp", value: { serial: held.serial } } });
        await new Promise<void>((r) => ctx.signal.addEventListener("abort", () => r(), { once: true }));
      },
      async refer() {
        throw new DiscoveryError("not_found", "this fake root refers nothing");
      },
    },
    { log: createLogger({ name: "fake-root", level: "silent" }) },
  );
  const creds = serverCredentials(loadTls(devTlsPaths(t.net.pkiDir, identity)));
  const port = await listen(server, "127.0.0.1", 0, creds);
  fakes.push(() => shutdown(server, 1_000));
  return `127.0.0.1:${port}`;
}

/** What `proc` answers for `csi`, once `ok` holds. */
async function resolvedVia(proc: ServerProcess, csi: string, ok: (r: pb.ResolveResponse) => boolean) {
  const client = t.net.channel(proc.address, "msp-parrot").client(pb.ResolverService);
  return eventually(async () => {
    const r = await client.resolve({ csi }, { timeoutMs: 2_000 });
    if (!ok(r)) throw new Error(`${proc.name} answered ${JSON.stringify(r.answer)} for ${csi}`);
    return r;
  });
}

const delegatedToEu = (r: pb.ResolveResponse) => r.answer?.dpIds.includes("eu") === true;

scenario(
  t,
  "a fake root with an MSP's certificate is refused, and a root replaying an older signed registry cannot take a restarted resolver back",
  async () => {
    const before = await snapshot();
    const added = await t.cli([
      "root",
      "delegation",
      "add",
      "+81",
      "--dp",
      "eu",
      "--root",
      t.net.root.address,
    ]);
    assert.equal(added.code, 0, added.stderr);

    const name = "resolver-rollback";
    let resolver = await startResolver(t.net, { name, rootEndpoints: [t.net.root.address] });
    extras.push(resolver);
    await resolvedVia(resolver, "tel:+81312345678", delegatedToEu);
    await resolver.stop(); // saves its copy: the newer serial is its high-water mark

    // Both fakes serve the registry from before +81 was delegated, under the root's genuine
    // signature: one presents an MSP's certificate, the other a real root certificate.
    const withMspCert = await fakeRoot("msp-bluebird", before);
    const replaying = await fakeRoot("root", before);
    resolver = await startResolver(t.net, { name, rootEndpoints: [withMspCert, replaying] });
    extras.push(resolver);
    await t.logged(
      new RegExp(`^${name}: .*"root":"${withMspCert}".*without role root`, "m"),
      "the resolver names the fake root that is no root",
    );
    await t.logged(
      new RegExp(`^${name}: .*"root":"${replaying}".*serial ${before.serial} is older than serial`, "m"),
      "the resolver refuses the older registry and says why",
    );
    // Still the newer registry: +81 is delegated to eu.
    await resolvedVia(resolver, "tel:+81312345678", delegatedToEu);
    await resolver.stop();
  },
);

scenario(
  t,
  "each service admits only the certificate roles it serves, before reading the request",
  async () => {
    const eu = t.net.dps.eu.address;
    // An MSP's certificate can neither look up at a DP directly nor follow its changes.
    const asMsp = t.net.channel(eu, "msp-bluebird");
    await rejectsWith(
      asMsp.client(pb.AuthoritativeService).lookup({ csi: "tel:+447700900123" }),
      status.PERMISSION_DENIED,
      /identity "msp-bluebird" \(role msp\) may not call mimi\.discovery\.v1\.AuthoritativeService: it needs a certificate with role resolver$/,
    );
    const watch = asMsp
      .client(pb.AuthoritativeService)
      .watchChanges({ logId: "", sinceSeq: 0n, sinceAtMs: 0n });
    await rejectsWith(
      (async () => {
        for await (const _ of watch) {
          // Never reached: the call is refused before anything is sent.
        }
      })(),
      status.PERMISSION_DENIED,
      /needs a certificate with role resolver$/,
    );
    // Nor can a DP's: no DP is a client of another's lookups or changes (DPs call each other's
    // PeerService and ReplicationService only), so a DP certificate is no way around a resolver.
    const asDp = t.net.channel(eu, "dp-us").client(pb.AuthoritativeService);
    const dpRefused =
      /identity "dp-us" \(role dp\) may not call mimi\.discovery\.v1\.AuthoritativeService: it needs a certificate with role resolver$/;
    await rejectsWith(asDp.lookup({ csi: "tel:+447700900123" }), status.PERMISSION_DENIED, dpRefused);
    const drain = async (stream: AsyncIterable<unknown>) => {
      for await (const _ of stream) {
        // Never reached: the call is refused before anything is sent.
      }
    };
    await rejectsWith(
      drain(
        asDp.lookupStream(
          (async function* () {
            yield { requestId: 1n, csi: "tel:+447700900123" };
          })(),
        ),
      ),
      status.PERMISSION_DENIED,
      dpRefused,
    );
    await rejectsWith(
      drain(asDp.watchChanges({ logId: "", sinceSeq: 0n, sinceAtMs: 0n })),
      status.PERMISSION_DENIED,
      dpRefused,
    );
    // Only DPs call PeerService; only MSPs claim; only admins administer.
    await rejectsWith(
      t.net.channel(eu, "resolver").client(pb.PeerService).invalidateOlder({ csi: "tel:+447700900123" }),
      status.PERMISSION_DENIED,
      /needs a certificate with role dp/,
    );
    await rejectsWith(
      t.net.channel(eu, "resolver").client(pb.ClaimService).startChallenge({ csi: "tel:+447700900123" }),
      status.PERMISSION_DENIED,
      /needs a certificate with role msp/,
    );
    await rejectsWith(
      t.net.channel(eu, "msp-bluebird").client(pb.AuthoritativeAdminService).getStatus({}),
      status.PERMISSION_DENIED,
      /needs a certificate with role admin/,
    );
    // The resolver's own certificate still looks up.
    const ok = await t.net
      .channel(eu, "resolver")
      .client(pb.AuthoritativeService)
      .lookup({ csi: "tel:+447700900123" });
    assert.equal(ok.answer?.status, pb.LookupStatus.FOUND);
  },
);

scenario(
  t,
  "the mimi CLI, as an MSP, refuses to sign a record a DP made for another number or lifetime",
  async () => {
    // A DP with a genuine dp certificate that hands out a record for another number, expiring in
    // the year 275760, and counts what it is sent afterwards.
    let completions = 0;
    const server = createGrpcServer();
    const refuse = async () => {
      throw new DiscoveryError("failed_precondition", "this fake DP only starts challenges");
    };
    addService(
      server,
      pb.ClaimService,
      {
        async startChallenge(req) {
          const userKey = req.action.case === "claim" ? req.action.value.userPublicKey : new Uint8Array(0);
          const statement = encodeMappingRecord({
            csi: "tel:+447700900999",
            mspId: "bluebird.example",
            ssi: "@victim",
            defaultRequested: false,
            tags: [],
            createdAtMs: Date.now(),
            proofMethod: "sms-code",
            proofId: "ch-fake",
            userPublicKey: userKey,
            dpId: "eu",
            expiresAtMs: 8_640_000_000_000_000,
          });
          return {
            challengeId: "ch-fake",
            expiresAtMs: BigInt(Date.now() + 600_000),
            proofMethod: "sms-code",
            statement,
          };
        },
        async completeChallenge() {
          completions++;
          return refuse();
        },
        contestConflict: refuse,
        watchNotices: refuse,
        bulkRegister: refuse,
      },
      { log: createLogger({ name: "fake-dp", level: "silent" }) },
    );
    const port = await listen(
      server,
      "127.0.0.1",
      0,
      serverCredentials(loadTls(devTlsPaths(t.net.pkiDir, "dp-eu"))),
    );
    fakes.push(() => shutdown(server, 1_000));
    const run = await t.cli([
      "claim",
      "run",
      "tel:+447700900123",
      "--ssi",
      "@me",
      "--as",
      "msp-bluebird",
      "--dp",
      `127.0.0.1:${port}`,
      "--dp-id",
      "eu",
      "--code",
      "123456",
    ]);
    assert.notEqual(run.code, 0);
    assert.match(
      run.stderr,
      /the DP returned a record whose CSI is "tel:\+447700900999", not "tel:\+447700900123" as asked; not signing it/,
    );
    assert.equal(completions, 0, "nothing signed ever reached the DP");
  },
);

/** Claims `csi` at eu through the CLI as `msp`, proving possession with a fresh holder key. */
async function claimAtEu(msp: string, csi: string, ssi: string): Promise<string> {
  const keyFile = holderKeyFile();
  const r = await t.cli([
    ...["claim", "run", csi, "--ssi", ssi, "--as", msp, "--user-key", keyFile],
    ...["--dp", t.net.dps.eu.address, "--dp-id", "eu", "--outbox", join(t.net.dir, "dp-eu", "outbox")],
  ]);
  assert.equal(r.code, 0, r.stderr);
  return keyFile;
}

/** A fresh holder key in a file of its own. */
function holderKeyFile(): string {
  const keyFile = join(mkdtempSync(join(tmpdir(), "mimi-holder-")), "holder.pem");
  writeFileSync(keyFile, signingKeyPem(generateSigningKey()), { mode: 0o600 });
  return keyFile;
}

scenario(
  t,
  "every open notice stream of an MSP gets every notice, and a stream from another log gets them all",
  async () => {
    const csi = "tel:+447700900601";
    const parrotHolder = await claimAtEu("msp-parrot", csi, "parrot-601");
    const api = t.net.channel(t.net.dps.eu.address, "msp-parrot").client(pb.ClaimService);
    const stop = new AbortController();
    const watch = (req: { sinceSeq: bigint; logId: string }) => {
      const seen: pb.Notice[] = [];
      const done = (async () => {
        try {
          for await (const r of api.watchNotices(req, { signal: stop.signal }))
            if (r.notice) seen.push(r.notice);
        } catch {
          // Cancelled at the end.
        }
      })();
      return { seen, done };
    };
    try {
      // Two streams of one MSP, open before the notice is written.
      const probe = watch({ sinceSeq: 0n, logId: "" });
      const streams = [probe, watch({ sinceSeq: 0n, logId: "" })];
      await claimAtEu("msp-bluebird", csi, "@blue-601");
      const opened = (s: { seen: pb.Notice[] }) =>
        s.seen.find((n) => n.kind === pb.NoticeKind.CONFLICT_OPENED && n.csi === csi);
      await eventually(async () => {
        for (const [i, s] of streams.entries())
          assert.ok(opened(s), `stream ${i + 1} got CONFLICT_OPENED live`);
      });
      const notice = opened(probe) as pb.Notice;
      assert.match(notice.logId, /^[0-9a-f]{32}$/, "notices name their log");
      // A position in another log (a store restored from backup reuses sequence numbers) is not
      // trusted: everything the DP holds comes again, the conflict notice included.
      const restored = watch({ sinceSeq: notice.seq + 1000n, logId: "0".repeat(32) });
      await eventually(async () => assert.ok(opened(restored), "the other-log stream got it"));
      // The same position in this log skips it.
      const same = watch({ sinceSeq: notice.seq, logId: notice.logId });
      const later = watch({ sinceSeq: 0n, logId: notice.logId });
      await eventually(async () => assert.ok(opened(later)));
      assert.equal(opened(same), undefined);

      // While the conflict is open the claim is withheld: no answer names bluebird.
      const dp = t.net.channel(t.net.dps.eu.address, "resolver").client(pb.AuthoritativeService);
      const served = async () => ((await dp.lookup({ csi })).answer?.mappings ?? []).map((m) => m.mspId);
      assert.deepEqual(await served(), ["parrot.example"]);
      // Parrot contests through the CLI: only with its holder's key, and only once.
      const contest = (keyFile: string) =>
        t.cli([
          ...[
            "claim",
            "contest",
            notice.conflictId,
            "--csi",
            csi,
            "--ssi",
            "parrot-601",
            "--as",
            "msp-parrot",
          ],
          ...["--dp", t.net.dps.eu.address, "--signer-key", keyFile],
        ]);
      const forged = await contest(holderKeyFile());
      assert.notEqual(forged.code, 0);
      assert.match(forged.stderr, /PERMISSION_DENIED: a contest needs the holder's fresh consent/);
      const ok = await contest(parrotHolder);
      assert.equal(ok.code, 0, ok.stderr);
      const again = await contest(parrotHolder);
      assert.match(again.stderr, /contested; a contest is final/);
      assert.deepEqual(await served(), ["parrot.example"], "the contested claim is not kept");
    } finally {
      stop.abort();
    }
  },
);

scenario(t, "a server refuses the development CA unless its config allows it", async () => {
  const strict = startResolver(t.net, {
    name: "resolver-strict",
    rootEndpoints: [t.net.root.address],
    overrides: { allowDevelopmentCa: false },
  });
  await assert.rejects(
    strict,
    /holds the development CA .*set allowDevelopmentCa: true for a development network/s,
  );
});

// Last: it leaves the servers' clocks apart and the root's signature in the others' future.
scenario(t, "a registry past its signature's validity is refused until the root re-signs", async () => {
  const resolver = t.net.resolver;
  const client = t.net.channel(resolver.address, "msp-parrot").client(pb.ResolverService);
  const held = (await t.stats()).registrySerial;
  t.advanceClock(resolver, 15 * DAY_MS);
  // An answer not in the cache needs the registry, which has expired for this resolver.
  await rejectsWith(
    client.resolve({ csi: "tel:+447700900999" }),
    status.UNAVAILABLE,
    /registry at serial \d+ expired at .*no root has re-signed it/,
  );
  // Its readiness says so, so a load balancer moves MSPs to a resolver that can answer.
  const ready = async (proc: typeof resolver) => {
    const res = await fetch(`http://127.0.0.1:${proc.opsPort}/readyz`);
    return { status: res.status, body: await res.text() };
  };
  const down = await ready(resolver);
  assert.equal(down.status, 503);
  assert.match(down.body, /^not ready: .*registry at serial \d+ expired/);
  // The root, seven days or more before its signature's expiry, re-signs under a new serial.
  // The DP's clock moves too: its answers are sealed with its own time, which the resolver checks.
  t.advanceClock(t.net.root, 15 * DAY_MS);
  t.advanceClock(t.net.dps.eu, 15 * DAY_MS);
  await t.logged(/^root: .*"registry re-signed"/m, "the root says it re-signed");
  await eventually(async () => assert.ok((await t.stats()).registrySerial > held, "the refresh arrived"));
  // The DP follows the same refresh; until it has, it says its copy expired.
  await eventually(async () => {
    const r = await client.resolve({ csi: "tel:+447700900999" });
    assert.equal(r.answer?.status, pb.LookupStatus.NOT_FOUND);
  });
  assert.equal((await ready(resolver)).status, 200);
  await eventually(async () => assert.equal((await ready(t.net.dps.eu)).status, 200));
});
