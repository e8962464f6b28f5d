// Signed answers, denials included (finding 8 of the trust audit), across real processes: every
// answer a DP gives carries its seal, so a DP or anything on the path that turns an answer into a
// denial, drops a mapping, or replays a denial for another CSI is caught by the resolver, which
// neither caches nor serves it; a denial replayed for the same CSI passes only until its seal
// expires; and an MSP checking on its side (`mimi resolve --verify`) catches a resolver doing the same.
import assert from "node:assert/strict";
import { after } from "node:test";
import { create, fromBinary } from "@bufbuild/protobuf";
import { status } from "@grpc/grpc-js";
import { createLogger, pb } from "@mimi/core";
import { devTlsPaths } from "@mimi/devnet";
import { addService, createGrpcServer, listen, loadTls, serverCredentials, shutdown } from "@mimi/rpc";
import { eventually, rejectsWith, scenario, useNetwork } from "./harness.js";

const t = useNetwork();
/** The DPs' answerSealSeconds: the local network keeps the default, an hour. */
const SEAL_MS = 3_600_000;
const TWO = "tel:+447700900123"; // demo: bluebird (default) and wirechat

const fakes: (() => Promise<void>)[] = [];
after(() => Promise.all(fakes.map((f) => f())));

/** What a tampering party does to an answer on its way; undefined passes it as it is. */
type Tamper = ((csi: string, a: pb.Answer) => pb.Answer) | undefined;

/**
 * A server in this process presenting `identity`'s certificate, offering `register`'s services;
 * returns its address.
 */
async function fakeServer(identity: string, register: (server: ReturnType<typeof createGrpcServer>) => void) {
  const server = createGrpcServer();
  register(server);
  const port = await listen(
    server,
    "127.0.0.1",
    0,
    serverCredentials(loadTls(devTlsPaths(t.net.pkiDir, identity))),
  );
  fakes.push(() => shutdown(server, 1_000));
  return `127.0.0.1:${port}`;
}

/** A DP on the path with eu's certificate: it forwards to the real eu and tampers as told. */
async function pathToEu(): Promise<{ address: string; set(tamper: Tamper): void }> {
  let tamper: Tamper;
  const real = t.net.channel(t.net.dps.eu.address, "resolver").client(pb.AuthoritativeService);
  const log = createLogger({ name: "fake-dp", level: "silent" });
  const address = await fakeServer("dp-eu", (server) =>
    addService(
      server,
      pb.AuthoritativeService,
      {
        async lookup(req) {
          const r = await real.lookup(req);
          return { answer: r.answer && tamper ? tamper(req.csi, r.answer) : r.answer };
        },
        async lookupStream(reqs, _ctx, send) {
          for await (const req of reqs) {
            const r = await real.lookup({ csi: req.csi, options: req.options });
            const answer = r.answer && tamper ? tamper(req.csi, r.answer) : r.answer;
            await send({
              requestId: req.requestId,
              result: { case: "response", value: create(pb.LookupResponseSchema, { answer }) },
            });
          }
        },
        async watchChanges(req, ctx, send) {
          for await (const m of real.watchChanges(req, { signal: ctx.signal })) await send(m);
        },
      },
      { log },
    ),
  );
  return {
    address,
    set: (x) => {
      tamper = x;
    },
  };
}

const resolver = () => t.net.channel(t.net.resolver.address, "msp-bluebird").client(pb.ResolverService);
const admin = () => t.net.channel(t.net.resolver.address, "admin").client(pb.ResolverAdminService);
const dpAnswer = async (csi: string) => {
  const r = await t.net
    .channel(t.net.dps.eu.address, "resolver")
    .client(pb.AuthoritativeService)
    .lookup({ csi });
  if (!r.answer) throw new Error("the DP sent no answer");
  return r.answer;
};

scenario(
  t,
  "a DP or path that drops an answer, a mapping, or swaps in another CSI's denial is refused and nothing is cached",
  async () => {
    const path = await pathToEu();
    const direct = t.net.dps.eu.address;
    const otherDenial = await dpAnswer("tel:+447700900998");
    assert.equal(otherDenial.status, pb.LookupStatus.NOT_FOUND);
    assert.ok(otherDenial.seal?.signature.length, "a DP's NOT_FOUND carries its seal");
    await t.resolverApplied(await t.putDp("eu", [path.address]));
    try {
      await admin().flush({ scope: { case: "all", value: true } });
      const refused = async (csi: string, reason: RegExp) => {
        const before = (await t.stats()).verificationFailures;
        await rejectsWith(resolver().resolve({ csi }), status.UNAVAILABLE, reason);
        assert.equal((await t.stats()).verificationFailures, before + 1n);
      };
      // Regression: a NOT_FOUND with nothing behind it used to be cached and served as real.
      path.set((_csi, a) =>
        create(pb.AnswerSchema, { status: pb.LookupStatus.NOT_FOUND, ttlSeconds: 60, dpIds: a.dpIds }),
      );
      await refused(TWO, /DP "eu" failed verification: the NOT_FOUND answer carries no DP seal/);
      // A genuine seal, but for another CSI.
      path.set(() => otherDenial);
      await refused(TWO, /its seal is for another CSI/);
      // One of two mappings dropped, the seal kept.
      path.set((_csi, a) => create(pb.AnswerSchema, { ...a, mappings: a.mappings.slice(0, 1) }));
      await refused(TWO, /holds 1 of the 2 mappings the seal lists/);
      // Explained, the failure says where it happened: the DP, the endpoint that answered, a miss.
      const failed = await rejectsWith(
        t.net
          .channel(t.net.resolver.address, "admin")
          .client(pb.ResolverService)
          .resolve({ csi: TWO, explain: true }, { timeoutMs: 10_000 }),
        status.UNAVAILABLE,
        /holds 1 of the 2 mappings/,
      );
      const e = fromBinary(pb.ExplanationSchema, failed.details?.explanation ?? new Uint8Array());
      assert.deepEqual([e.dpId, e.endpoint, e.cache], ["eu", path.address, pb.Explanation_CacheState.MISS]);
      assert.equal(e.failure, "", "the status message already says why");
      assert.deepEqual(
        e.steps.map((x) => x.name),
        ["upstream", "total"],
      );
      // An honest path again: the real answer, which was never replaced by a cached denial.
      path.set(undefined);
      const r = await resolver().resolve({ csi: TWO });
      assert.equal(r.answer?.mappings.length, 2);
      assert.ok(r.answer?.seal?.statement.length, "the resolver passes the seal on");
    } finally {
      await t.resolverApplied(await t.putDp("eu", [direct]));
    }
  },
);

scenario(
  t,
  "an MSP verifying on its side catches a resolver that drops an answer or a mapping; honest answers verify",
  async () => {
    let tamper: Tamper;
    const upstream = resolver();
    const log = createLogger({ name: "fake-resolver", level: "silent" });
    const address = await fakeServer("resolver", (server) =>
      addService(
        server,
        pb.ResolverService,
        {
          async resolve(req) {
            const r = await upstream.resolve(req);
            return { ...r, answer: r.answer && tamper ? tamper(req.csi, r.answer) : r.answer };
          },
          async resolveStream() {
            throw new Error("not used");
          },
          async getQuota() {
            throw new Error("not used");
          },
        },
        { log },
      ),
    );
    const verify = (csi: string, ...flags: string[]) =>
      t.cli(["resolve", csi, "--verify", "--resolver", address, "--root", t.net.root.address, ...flags]);
    // Honest: FOUND, NOT_FOUND and a filtered or compact FOUND all verify.
    for (const [csi, flags, says] of [
      [TWO, [], /verified: 2 mapping\(s\) with valid holder\/MSP signatures, sealed by DP "eu"/],
      ["tel:+447700900997", [], /verified: NOT_FOUND sealed by DP "eu"/],
      [TWO, ["--msp", "wirechat.example"], /verified: 1 mapping\(s\)/],
      [TWO, ["--compact"], /verified: FOUND sealed by DP "eu"/],
      ["tel:+81312345678", [], /verified: no delegation covers this CSI/],
    ] as const) {
      const r = await verify(csi, ...flags);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, says);
    }
    // A resolver that turns FOUND into an unsigned NOT_FOUND, or drops the default mapping.
    tamper = (_csi, a) =>
      create(pb.AnswerSchema, {
        status: pb.LookupStatus.NOT_FOUND,
        ttlSeconds: a.ttlSeconds,
        dpIds: a.dpIds,
      });
    let r = await verify(TWO);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /verification failed: the NOT_FOUND answer carries no DP seal/);
    tamper = (_csi, a) => create(pb.AnswerSchema, { ...a, mappings: a.mappings.slice(1) });
    r = await verify(TWO);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /verification failed: it holds 1 of the 2 mappings the seal lists/);
    // The same mappings in another order (which one is first is what a client shows).
    tamper = (_csi, a) => create(pb.AnswerSchema, { ...a, mappings: [...a.mappings].reverse() });
    r = await verify(TWO);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /verification failed: mapping 2 \(MSP "[a-z.]+"\) is not in the seal as shown/);
    // Compact bits for an MSP the seal does not list.
    tamper = (_csi, a) => create(pb.AnswerSchema, { ...a, compactMspBits: Uint8Array.of(0xff) });
    r = await verify(TWO, "--compact");
    assert.equal(r.code, 1);
    assert.match(r.stderr, /compact bits differ from the MSPs the seal lists/);
  },
);

// Last: it moves the resolver's clock past a seal's validity (and puts it back).
scenario(t, "a denial replayed for the same CSI passes only until its seal expires", async () => {
  const csi = "tel:+447700900996";
  const old = await dpAnswer(csi);
  const path = await pathToEu();
  const direct = t.net.dps.eu.address;
  path.set(() => old);
  await t.resolverApplied(await t.putDp("eu", [path.address]));
  try {
    await admin().flush({ scope: { case: "all", value: true } });
    // Within its hour the old denial is as good as a new one: the residual replay window.
    assert.equal((await resolver().resolve({ csi })).answer?.status, pb.LookupStatus.NOT_FOUND);
    await admin().flush({ scope: { case: "all", value: true } });
    t.advanceClock(t.net.resolver, SEAL_MS + 60_000);
    await rejectsWith(resolver().resolve({ csi }), status.UNAVAILABLE, /its seal expired at/);
    // The DP's fresh denials still verify on the moved clock once they are signed on it too.
    t.advanceClock(t.net.dps.eu, SEAL_MS + 60_000);
    path.set(undefined);
    await eventually(async () =>
      assert.equal((await resolver().resolve({ csi })).answer?.status, pb.LookupStatus.NOT_FOUND),
    );
  } finally {
    t.resetClocks();
    await admin().flush({ scope: { case: "all", value: true } });
    await t.resolverApplied(await t.putDp("eu", [direct]));
  }
});
