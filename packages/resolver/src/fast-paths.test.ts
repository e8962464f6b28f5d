import assert from "node:assert/strict";
import { performance } from "node:perf_hooks";
import { test } from "node:test";
import { create, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import {
  createLogger,
  DiscoveryError,
  type DpInfo,
  type EnumerationDetector,
  encodeResolveResponse,
  type LookupOutcome,
  pb,
  RegistryView,
} from "@mimi/core";
import type { FastCall } from "@mimi/rpc";
import { createFastPaths } from "./fast-paths.js";
import { createQuotas, DEFAULT_QUOTA_POLICY } from "./quotas.js";
import type { MissRefusals, Resolution, ResolverService } from "./service.js";

const dp = (id: string, federate = false): DpInfo => ({
  id,
  endpoints: ["127.0.0.1:1"],
  tlsIdentity: `dp-${id}`,
  jurisdiction: "EU",
  signingPublicKey: new Uint8Array(32),
  ...(federate && { federation: { defaultMode: "federate", preferredDpIds: [] } }),
});

/** eu holds +44, fed (federating by default) holds +49. */
function registry(): RegistryView {
  const v = new RegistryView();
  v.replace({
    serial: 1n,
    delegations: [
      { id: "e164:44", key: { kind: "e164", prefix: "44" }, dpId: "eu", ttlSeconds: 3600 },
      { id: "e164:49", key: { kind: "e164", prefix: "49" }, dpId: "fed", ttlSeconds: 3600 },
    ],
    dps: [dp("eu"), dp("fed", true)],
    msps: [],
  });
  return v;
}

const ENCODED = Uint8Array.of(8, 1);
const CACHED = "tel:+447700900001";
const saturated = new DiscoveryError("resource_exhausted", "saturated", {
  details: { retryAfterMs: 500, reason: "UPSTREAM_SATURATED" },
});

/**
 * The fast paths over a service that has CACHED cached and whose gate refuses every other miss
 * (mirroring refusedMiss: the overload first, then the caller's checks at eu, then the verdict).
 */
function setup() {
  const seen: { uri: string; caller: MissRefusals }[] = [];
  const hit: Resolution = {
    outcome: { kind: "not_found", dpId: "eu", ttlSeconds: 60 } as LookupOutcome,
    ttlSeconds: 42,
    stale: false,
    source: "cache",
  };
  const service = {
    cached: (uri: string) => (uri === CACHED ? hit : undefined),
    refusedMiss(csi, caller) {
      seen.push({ uri: csi.uri, caller });
      const overloaded = caller.overloaded?.();
      if (overloaded) return overloaded;
      return caller.refusesCaller?.("eu") ? undefined : saturated;
    },
  } as Pick<ResolverService, "cached" | "refusedMiss"> as ResolverService;
  const log = createLogger({ name: "test", level: "silent" });
  const loop = { admitting: true, delayMs: 150, admit: () => loop.admitting };
  // A day's budget of 50 lookups per DP, and no minute's to speak of: msp-spent has spent its
  // day at eu (the DP of +44), msp-spent-elsewhere its day at us.
  const quotas = createQuotas({
    ...DEFAULT_QUOTA_POLICY,
    lookupsPerUserPerDay: 50,
    perMinuteFloor: 1_000_000,
  });
  for (let i = 0; i < 50; i++) {
    quotas.charge("msp-spent", "eu", 0);
    quotas.charge("msp-spent-elsewhere", "us", 0);
  }
  const enumeration = {
    blocked(subject: string, _csi: string, _nowMs: number, count?: boolean) {
      // Only the full path's check refuses, and counts (GetStats' enumeration refusals).
      assert.equal(count, false, "a look ahead of the full path counts no refusal");
      return subject === "crawler" ? { subject, scope: "x", blockedUntilMs: 1 } : undefined;
    },
  } as unknown as EnumerationDetector;
  const reg = registry();
  const fast = createFastPaths(service, {
    log,
    registry: reg,
    loop,
    enumeration,
    quotas,
    privateByDefault: (dpId) => dpId === "private",
    now: () => 0,
    held: { check: (identity) => (identity === "msp-held" ? saturated : undefined) },
    encodedAnswer: () => ENCODED,
  });
  return { fast, seen, log, loop, registry: reg };
}

type Extra = Pick<MessageInitShape<typeof pb.ResolveRequestSchema>, "options" | "explain" | "privacy">;
const request = (csi: string, more: Extra = {}) =>
  Buffer.from(toBinary(pb.ResolveRequestSchema, create(pb.ResolveRequestSchema, { csi, ...more })));
const call = (name = "msp-a", deadlineMs = Date.now() + 1_000): FastCall => ({ deadlineMs, peer: { name } });

test("a cached answer is sent from the request's bytes; a miss is refused when the service says so, judged by the caller's deadline", () => {
  const { fast, seen } = setup();
  assert.deepEqual(fast.resolve(request(CACHED), call()), encodeResolveResponse(ENCODED, 42, false));
  assert.equal(seen.length, 0, "a hit is not judged");
  const t0 = performance.now();
  const deadline = Date.now() + 1_000;
  assert.equal(fast.resolve(request("tel:+447700900002"), call("msp-a", deadline)), saturated);
  const [t1, w1] = [performance.now(), Date.now()];
  const judged = seen[0];
  assert.equal(judged?.uri, "tel:+447700900002");
  // Nine tenths of what is left of the deadline, on the monotonic clock (call-bounds.ts waitBound):
  // at most nine tenths of a second from t1, at least nine tenths of what was left at w1 from t0.
  const until = judged?.caller.waitUntilMs ?? Number.NaN;
  assert.ok(
    until <= t1 + 900 && until >= t0 + 0.9 * (deadline - w1) - 1,
    `waits until ${until - t0} ms from t0`,
  );
  assert.equal(judged?.caller.privateAt?.("private"), true, "the configured private DPs");
  assert.equal(judged?.caller.privateAt?.("eu"), false);
  // No deadline: the gate's own bound.
  assert.equal(
    fast.resolve(request("tel:+447700900003"), call("msp-a", Number.POSITIVE_INFINITY)),
    saturated,
  );
  assert.equal(seen.length, 2);
  assert.equal(seen[1]?.caller.waitUntilMs, undefined);
});

test("a stream's item, a request with options, a CSI not written canonically, a federating range and debug logging take the full path", () => {
  const { fast, seen, log } = setup();
  const item = Buffer.from(
    toBinary(
      pb.ResolveStreamRequestSchema,
      create(pb.ResolveStreamRequestSchema, { requestId: 7n, csi: "tel:+447700900002" }),
    ),
  );
  assert.equal(fast.resolveStream(item), undefined, "a stream's miss is not refused here");
  for (const more of [{ explain: true }, { privacy: pb.PrivacyMode.PLAIN }, { options: {} }]) {
    assert.equal(fast.resolve(request("tel:+447700900002", more), call()), undefined, JSON.stringify(more));
  }
  assert.equal(fast.resolve(request("tel:+44-7700-900002"), call()), undefined);
  assert.equal(fast.resolve(request("tel:+497700900002"), call()), undefined, "its DP federates by default");
  assert.equal(
    fast.resolve(request("tel:447"), call()),
    undefined,
    "a CSI that does not parse: the full path says why",
  );
  // (Here a DP federates by default, so the CSI was parsed to find its range; with none, the
  // fast path parses it to judge it and throws, a decline too: rpc's tryFast.)
  assert.equal(seen.length, 0, "none of them judged");
  log.level = "debug";
  assert.equal(fast.resolve(request(CACHED), call()), undefined, "debug logging logs every lookup");
  assert.equal(fast.resolve(request("tel:+447700900002"), call()), undefined);
  assert.equal(seen.length, 0);
});

test("while the event loop runs late every miss is refused RESOLVER_OVERLOADED; hits are still answered", () => {
  const { fast, loop } = setup();
  loop.admitting = false;
  const refusal = fast.resolve(request("tel:+447700900002"), call("msp-spent"));
  assert.ok(refusal instanceof DiscoveryError);
  assert.equal(refusal.details?.reason, "RESOLVER_OVERLOADED");
  assert.ok((refusal.details?.retryAfterMs ?? 0) >= 150, "retry after the loop's delay at least");
  assert.deepEqual(fast.resolve(request(CACHED), call()), encodeResolveResponse(ENCODED, 42, false));
});

test("a caller its own checks would refuse (a block, a held context, a spent budget) is left to the full path, which says so", () => {
  const { fast } = setup();
  for (const name of ["crawler", "msp-held", "msp-spent"]) {
    assert.equal(fast.resolve(request("tel:+447700900002"), call(name)), undefined, name);
  }
  assert.equal(fast.resolve(request("tel:+447700900002"), call("msp-fresh")), saturated);
  // A budget spent at another DP is no reason (the day's budget is per DP).
  assert.equal(fast.resolve(request("tel:+447700900002"), call("msp-spent-elsewhere")), saturated);
  // A caller whose certificate names nobody: reading the peer throws, a decline (the full path
  // answers UNAUTHENTICATED).
  const anonymous: FastCall = {
    deadlineMs: Date.now() + 1_000,
    get peer(): { name: string } {
      throw new DiscoveryError("unauthenticated", "no common name");
    },
  };
  assert.throws(() => fast.resolve(request("tel:+447700900002"), anonymous), /no common name/);
});

test("with no DP federating, a CSI that does not parse throws in the fast path: a decline", () => {
  const { fast, seen, registry: reg } = setup();
  reg.replace({
    serial: 2n,
    delegations: [{ id: "e164:44", key: { kind: "e164", prefix: "44" }, dpId: "eu", ttlSeconds: 3600 }],
    dps: [dp("eu")],
    msps: [],
  });
  assert.throws(() => fast.resolve(request("tel:447"), call()), /international form/);
  assert.equal(fast.resolve(request("tel:+447700900002"), call()), saturated, "a CSI that parses is judged");
  assert.equal(seen.length, 1);
});
