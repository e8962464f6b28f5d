// The resolver's private lookups against a DP that cheats: one that evaluates with another key
// than it published (it could then tell this resolver's lookups apart, or answer at will), one
// whose bucket is not the one asked or not signed, one whose parameters are not signed by its
// registry key. Each is refused VERIFICATION_FAILED; an honest DP's answer comes back private.
import assert from "node:assert/strict";
import { after, test } from "node:test";
import { create, toBinary } from "@bufbuild/protobuf";
import {
  DiscoveryError,
  type DpInfo,
  encodeBucket,
  generateOprfKeys,
  generateSigningKey,
  keyIdOf,
  type OprfKeys,
  oprfBlindEvaluate,
  oprfEvaluate,
  PRIVATE_SUITE,
  pb,
  sealEntry,
  signBucket,
  signPrivateParams,
  slotOf,
  type TableLayout,
} from "@mimi/core";
import type { Channel } from "@mimi/rpc";
import { createOprfPool } from "./oprf-pool.js";
import { createPrivateLookups } from "./private-lookups.js";

// One worker thread: blinding and finalizing run as a resolver runs them.
const pool = createOprfPool({ threads: 1 });
after(() => pool.close());

const NOW = Date.UTC(2026, 11, 4);
const CSI = "tel:+447700900123";

/** A DP serving PrivateLookupService from memory, with ways to cheat. */
function fakeDp(
  cheat: {
    evaluateWith?: OprfKeys;
    bucketOffset?: number;
    paramsKey?: boolean;
    unpublished?: boolean;
    /** Its parameters are refused with this error. */
    paramsRefused?: DiscoveryError;
  } = {},
  /** Whether the resolver follows the DP's change stream (buckets are kept only then), and its clock. */
  env: {
    following?: { on: boolean };
    clock?: { now: number };
    /** The log and event the DP says its table had applied, and where the resolver's stream is. */
    applied?: { logId: string; seq: number };
    position?: { logId: string; seq: number };
  } = {},
) {
  let fetches = 0;
  const signing = generateSigningKey();
  const keys = generateOprfKeys();
  const layout: TableLayout = { epoch: 3, keyId: keyIdOf(keys.publicKey), bucketBits: 2, bucketBytes: 4096 };
  const slot = slotOf(oprfEvaluate(keys.secretKey, CSI), layout);
  const answer = toBinary(
    pb.AnswerSchema,
    create(pb.AnswerSchema, { status: pb.LookupStatus.OPTED_OUT, dpIds: ["eu"], ttlSeconds: 60 }),
  );
  const entries = new Map([[slot.bucket, [sealEntry(layout, slot, answer)]]]);
  const paramsSigner = cheat.paramsKey ? generateSigningKey() : signing;
  const service = {
    getPrivateParameters: async () => {
      if (cheat.paramsRefused) throw cheat.paramsRefused;
      return signPrivateParams(
        {
          dpId: "eu",
          suite: PRIVATE_SUITE,
          publicKey: keys.publicKey,
          epoch: 3,
          bucketBits: 2,
          bucketBytes: 4096,
          signedAtMs: NOW,
        },
        paramsSigner,
      );
    },
    evaluate: async (req: { blinded: Uint8Array[] }) =>
      oprfBlindEvaluate(cheat.evaluateWith ?? keys, req.blinded),
    getBucket: async (req: { bucket: number }) => {
      fetches++;
      const data = encodeBucket(layout, entries.get(req.bucket) ?? []);
      const bucket = (req.bucket + (cheat.bucketOffset ?? 0)) % 4;
      return {
        data,
        logId: env.applied?.logId ?? "",
        appliedSeq: BigInt(env.applied?.seq ?? 0),
        ...signBucket(
          {
            dpId: "eu",
            epoch: 3,
            keyId: layout.keyId,
            bucketBits: 2,
            bucket,
            signedAtMs: NOW,
            expiresAtMs: NOW + 3_600_000,
          },
          data,
          signing,
        ),
      };
    },
  };
  const dp: DpInfo = {
    id: "eu",
    endpoints: ["dp:1"],
    tlsIdentity: "dp-eu",
    jurisdiction: "EU",
    signingPublicKey: signing.publicKey,
    // The root-signed registry's word on the DP's key (another key when the DP is not published).
    privateLookupKeys: [
      { epoch: 3, publicKey: cheat.unpublished ? generateOprfKeys().publicKey : keys.publicKey },
    ],
  };
  const channel = { client: () => service } as unknown as Channel;
  /** Adds an entry for `csi` (a claim at the DP), in whatever bucket it falls. */
  const claim = (csi: string) => {
    const s = slotOf(oprfEvaluate(keys.secretKey, csi), layout);
    entries.set(s.bucket, [...(entries.get(s.bucket) ?? []), sealEntry(layout, s, answer)]);
    return s.bucket;
  };
  return {
    dp,
    claim,
    bucketOf: (csi: string) => slotOf(oprfEvaluate(keys.secretKey, csi), layout).bucket,
    fetches: () => fetches,
    lookups: createPrivateLookups({
      channel: () => channel,
      now: () => env.clock?.now ?? NOW,
      timeoutMs: 1_000,
      negativeTtlSeconds: 60,
      pool,
      ...(env.following && { following: () => env.following?.on === true }),
      ...(env.position && { position: () => env.position }),
    }),
  };
}

const refused = (pattern: RegExp) => (err: unknown) =>
  err instanceof DiscoveryError && err.code === "verification_failed" && pattern.test(err.message);

test("an honest DP's entry comes back as its answer, marked private; a CSI without one is a NOT_FOUND", async () => {
  const { dp, lookups } = fakeDp();
  const found = await lookups.lookup(dp, "dp:1", CSI, new Uint8Array(16));
  assert.equal(found.kind, "opted_out");
  assert.equal(found.private, true);
  const missing = await lookups.lookup(dp, "dp:1", "tel:+447700900999", new Uint8Array(16));
  assert.deepEqual({ kind: missing.kind, private: missing.private }, { kind: "not_found", private: true });
  assert.equal(lookups.stats.evaluations, 2);
});

test("a DP that evaluates with another key than it published is refused", async () => {
  const { dp, lookups } = fakeDp({ evaluateWith: generateOprfKeys() });
  await assert.rejects(lookups.lookup(dp, "dp:1", CSI, new Uint8Array(16)), refused(/published key/));
});

test("a bucket signed as another bucket, or parameters not signed by the DP's registry key, are refused", async () => {
  const shifted = fakeDp({ bucketOffset: 1 });
  await assert.rejects(
    shifted.lookups.lookup(shifted.dp, "dp:1", CSI, new Uint8Array(16)),
    refused(/another bucket/),
  );
  const forged = fakeDp({ paramsKey: true });
  await assert.rejects(
    forged.lookups.lookup(forged.dp, "dp:1", CSI, new Uint8Array(16)),
    refused(/not signed by its registry key/),
  );
});

test("only the key the registry publishes as current is used, though the DP signed another", async () => {
  const precondition = (pattern: RegExp) => (err: unknown) =>
    err instanceof DiscoveryError && err.code === "failed_precondition" && pattern.test(err.message);
  const { dp, lookups } = fakeDp({ unpublished: true });
  await assert.rejects(
    lookups.lookup(dp, "dp:1", CSI, new Uint8Array(16)),
    precondition(/not the one the registry publishes as current/),
  );
  // Two published keys: the newer epoch is the current one, so a DP still on the older one is
  // refused (it cannot split resolvers between the two).
  const honest = fakeDp();
  const older = honest.dp.privateLookupKeys?.[0];
  assert.ok(older);
  const both = {
    ...honest.dp,
    privateLookupKeys: [older, { epoch: 4, publicKey: generateOprfKeys().publicKey }],
  };
  await assert.rejects(
    honest.lookups.lookup(both, "dp:1", CSI, new Uint8Array(16)),
    precondition(/epoch 3, not the one the registry publishes as current \(4\)/),
  );
  const none = { ...honest.dp, privateLookupKeys: [] };
  await assert.rejects(
    honest.lookups.lookup(none, "dp:1", CSI, new Uint8Array(16)),
    precondition(/publishes no private-lookup key/),
  );
  // The published one works.
  assert.equal((await honest.lookups.lookup(honest.dp, "dp:1", CSI, new Uint8Array(16))).kind, "opted_out");
});

test("a DP without the published key is refused in the resolver's words, without the DP's own text", async () => {
  const dpText =
    "GetPrivateParameters at 10.1.2.3:7443: FAILED_PRECONDITION: no key for epoch 3 in /srv/dp/oprf-key.json";
  const { dp, lookups } = fakeDp({
    paramsRefused: new DiscoveryError("failed_precondition", dpText, {
      details: { reason: "EPOCH_CHANGED" },
    }),
  });
  await assert.rejects(lookups.lookup(dp, "dp:1", CSI, new Uint8Array(16)), (err: unknown) => {
    assert.ok(err instanceof DiscoveryError);
    assert.equal(err.code, "failed_precondition");
    assert.equal(err.details?.reason, "EPOCH_CHANGED");
    assert.match(
      err.message,
      /^DP "eu" does not hold the private-lookup key the registry publishes as its current one \(epoch 3\); try again later$/,
    );
    assert.equal((err.cause as Error).message, dpText, "kept as the cause");
    return true;
  });
});

test("a kept bucket serves later lookups in it until any change event of its DP, a minute, or the stream is not followed", async () => {
  const following = { on: true };
  const clock = { now: NOW };
  const { dp, lookups, fetches, claim, bucketOf } = fakeDp({}, { following, clock });
  const ctx = new Uint8Array(16);
  assert.equal((await lookups.lookup(dp, "dp:1", CSI, ctx)).kind, "opted_out");
  assert.equal(fetches(), 1);
  assert.equal((await lookups.lookup(dp, "dp:1", CSI, ctx)).kind, "opted_out");
  assert.equal(fetches(), 1, "the kept bucket served the second lookup");
  assert.equal(lookups.stats.bucketHits, 1);
  // A claim for another CSI of the same bucket, after the bucket was kept: its change event
  // drops the bucket, so the claim is seen at once.
  let other = 0;
  while (bucketOf(`tel:+4477009${String(10_000 + other)}`) !== bucketOf(CSI)) other++;
  const neighbour = `tel:+4477009${String(10_000 + other)}`;
  claim(neighbour);
  lookups.changed("eu");
  assert.equal((await lookups.lookup(dp, "dp:1", neighbour, ctx)).kind, "opted_out");
  assert.equal(fetches(), 2);
  // Not following the DP's stream: nothing would say the bucket changed, so it is fetched.
  following.on = false;
  await lookups.lookup(dp, "dp:1", CSI, ctx);
  assert.equal(fetches(), 3);
  // Followed again (a stream that resumes replays what it missed, each event dropping buckets),
  // the bucket fetched meanwhile serves.
  following.on = true;
  await lookups.lookup(dp, "dp:1", CSI, ctx);
  assert.equal(fetches(), 3);
  // A minute on, it is fetched again even with no event.
  clock.now += 60_000;
  await lookups.lookup(dp, "dp:1", CSI, ctx);
  assert.equal(fetches(), 4);
  // A registry change (a key, a range) drops every kept bucket.
  await lookups.lookup(dp, "dp:1", CSI, ctx);
  assert.equal(fetches(), 4);
  lookups.changedAll();
  await lookups.lookup(dp, "dp:1", CSI, ctx);
  assert.equal(fetches(), 5);
});

test("without a change stream to follow, no bucket is kept", async () => {
  const { dp, lookups, fetches } = fakeDp();
  await lookups.lookup(dp, "dp:1", CSI, new Uint8Array(16));
  await lookups.lookup(dp, "dp:1", CSI, new Uint8Array(16));
  assert.equal(fetches(), 2);
});

test("a bucket read before a change the resolver has seen is not kept, and its answer is marked so it is not cached", async () => {
  const following = { on: true };
  const applied = { logId: "log-a", seq: 7 };
  const position = { logId: "log-a", seq: 9 };
  const { dp, lookups, fetches } = fakeDp({}, { following, applied, position });
  const ctx = new Uint8Array(16);
  let predated = 0;
  const ask = () => lookups.lookup(dp, "dp:1", CSI, ctx, () => predated++);
  // The endpoint (a secondary that lags) had applied event 7; the resolver has seen 9.
  assert.equal((await ask()).kind, "opted_out", "the answer is still served");
  assert.equal(predated, 1);
  await ask();
  assert.equal(fetches(), 2, "not kept: fetched again");
  assert.equal(lookups.stats.bucketsBehind, 2);
  // Caught up with what the resolver has seen: kept, and not marked.
  applied.seq = 9;
  await ask();
  await ask();
  assert.equal(fetches(), 3);
  assert.equal(predated, 2);
  // Another log (the DP restored, or an endpoint that does not say): nothing to compare.
  applied.logId = "";
  applied.seq = 0;
  lookups.changed("eu");
  await ask();
  assert.equal(predated, 2);
});
