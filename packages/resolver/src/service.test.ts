import assert from "node:assert/strict";
import { test } from "node:test";
import { status } from "@grpc/grpc-js";
import {
  changeHashHex,
  createLogger,
  DiscoveryError,
  type DpInfo,
  type LookupOutcome,
  parseCsi,
  RegistryView,
} from "@mimi/core";
import { getterOnPrototype, until } from "@mimi/core/testing";
import type { AdaptiveGate } from "./adaptive-gate.js";
import { createTtlCache } from "./cache.js";
import { notSentForBound } from "./gate-refusals.js";
import { answerIndex, type CachedAnswer, createResolverService, type MissCaller } from "./service.js";
import { heldWindow } from "./testing.js";
import type { Upstream } from "./upstream.js";

const DP: DpInfo = {
  id: "eu",
  endpoints: ["127.0.0.1:1"],
  tlsIdentity: "dp-eu",
  jurisdiction: "EU",
  signingPublicKey: new Uint8Array(32),
};

function registry(): RegistryView {
  const v = new RegistryView();
  v.replace({
    serial: 1n,
    delegations: [{ id: "e164:44", key: { kind: "e164", prefix: "44" }, dpId: "eu", ttlSeconds: 3600 }],
    dps: [DP],
    msps: [],
  });
  return v;
}

/** An upstream whose answers the test controls; it counts calls and can be held open or failed. */
function fakeUpstream() {
  const state = {
    calls: 0,
    fail: false,
    outcome: { kind: "answer", mappings: [], dpId: "eu", ttlSeconds: 60 } as LookupOutcome,
    gate: undefined as Promise<void> | undefined,
    /** When set, verification refuses every answer with this reason. */
    verifyRefuses: undefined as string | undefined,
    /** When set, only this outcome is refused (the others verify). */
    refusesOnly: undefined as LookupOutcome | undefined,
    verified: [] as [string, LookupOutcome][],
    /** The endpoint each lookup asked to go to first. */
    preferred: [] as (string | undefined)[],
    /** When set, verification reports a seal that expires at this time. */
    sealExpiresAtMs: undefined as number | undefined,
    /** Whether the DP endpoint's answer came from a bucket older than a change the resolver saw. */
    predates: false,
    /** Why the registry copy may not be used now, when set. */
    registryProblem: undefined as string | undefined,
    /** What a private lookup finds, when set (else `outcome`). */
    privateOutcome: undefined as LookupOutcome | undefined,
    /** Whether each lookup was made privately. */
    privately: [] as boolean[],
    /** The first byte of each lookup's rate-limit context. */
    contexts: [] as (number | undefined)[],
    /** The DP's refusal of a lookup under this rate-limit context, if any. */
    refuses: undefined as ((rateContext: Uint8Array | undefined) => DiscoveryError | undefined) | undefined,
    /** The gate's verdict on a miss refused before it is asked (refusedMiss). */
    refusalNow: undefined as ((dpId: string, waitUntilMs?: number) => DiscoveryError | undefined) | undefined,
    /** When set, every lookup first passes this gate with its wait bound (refused ones are not counted). */
    window: undefined as AdaptiveGate | undefined,
    /** The wait bound of each lookup the gate let through. */
    waits: [] as (number | undefined)[],
  };
  const upstream: Upstream = {
    async lookup(_dp, _csi, how) {
      if (state.window) {
        await state.window.run(
          async () => {},
          () => false,
          how?.waitUntilMs,
        );
        state.waits.push(how?.waitUntilMs);
      }
      state.calls++;
      state.preferred.push(how?.prefer);
      how?.answeredBy?.("127.0.0.1:1");
      if (state.predates) how?.predates?.();
      if (state.gate) await state.gate;
      state.privately.push(how?.privately === true);
      state.contexts.push(how?.rateContext?.[0]);
      if (state.fail) throw new DiscoveryError("upstream_unavailable", "down");
      const refusal = state.refuses?.(how?.rateContext);
      if (refusal) throw refusal;
      return (how?.privately && state.privateOutcome) || state.outcome;
    },
    channel() {
      throw new Error("no channels in unit tests");
    },
    refusalNow: (dpId, waitUntilMs) => state.refusalNow?.(dpId, waitUntilMs),
    windows: () => [],
    retain: () => 0,
    close() {},
  };
  return { state, upstream };
}

/** The change-hash key DP eu sends with its log. */
const KEY = new Uint8Array(32).fill(7);

function setup(prefetch = { minHits: 0, remainingFraction: 0.1 }) {
  const clock = { now: 1_000_000 };
  const changeKeys = new Map<string, Uint8Array>([["eu", KEY]]);
  const cache = createTtlCache<CachedAnswer>({
    maxEntries: 100,
    minTtlSeconds: 0,
    maxTtlSeconds: 3600,
    staleWindowSeconds: 600,
    now: () => clock.now,
    indexKey: answerIndex(changeKeys),
  });
  const { state, upstream } = fakeUpstream();
  const reg = registry();
  const service = createResolverService({
    cache,
    registry: reg,
    registryProblem: () => state.registryProblem,
    upstream,
    log: createLogger({ name: "test", level: "silent" }),
    negativeMaxTtlSeconds: 30,
    staleAnswerTtlSeconds: 30,
    verify(csi, outcome) {
      state.verified.push([csi.uri, outcome]);
      if (state.verifyRefuses && (state.refusesOnly === undefined || state.refusesOnly === outcome)) {
        throw new DiscoveryError("verification_failed", state.verifyRefuses);
      }
      if (state.sealExpiresAtMs === undefined) return undefined;
      return {
        csi: csi.uri,
        dpId: outcome.dpId,
        status: outcome.kind,
        signedAtMs: 0,
        expiresAtMs: state.sealExpiresAtMs,
        entries: [],
        optOutDigest: new Uint8Array(0),
      };
    },
    prefetch,
    now: () => clock.now,
    changeKeys,
  });
  return { clock, state, service, reg, changeKeys };
}

const CSI = parseCsi("tel:+447700900123");
const nextTurn = () => new Promise((resolve) => setImmediate(resolve));

test("a second lookup is a cache hit with a decreasing ttl", async () => {
  const { clock, state, service } = setup();
  assert.equal((await service.resolve(CSI)).source, "upstream");
  clock.now += 10_000;
  const r = await service.resolve(CSI);
  assert.equal(r.source, "cache");
  assert.equal(r.ttlSeconds, 50);
  assert.equal(state.calls, 1);
});

test("concurrent misses for one CSI share one upstream request", async () => {
  const { state, service } = setup();
  let open: () => void = () => {};
  state.gate = new Promise((r) => {
    open = r;
  });
  const all = Promise.all(Array.from({ length: 20 }, () => service.resolve(CSI)));
  open();
  const results = await all;
  assert.equal(state.calls, 1);
  assert.ok(results.every((r) => r.outcome === results[0]?.outcome));
});

test("NOT_FOUND is cached, bounded by the negative maximum", async () => {
  const { clock, state, service } = setup();
  state.outcome = { kind: "not_found", dpId: "eu", ttlSeconds: 3600 };
  assert.equal((await service.resolve(CSI)).ttlSeconds, 30);
  clock.now += 29_000;
  assert.equal((await service.resolve(CSI)).source, "cache");
  clock.now += 2_000;
  assert.equal((await service.resolve(CSI)).source, "upstream");
  assert.equal(state.calls, 2);
});

test("an expired answer is served stale when the DP is down, and never without one", async () => {
  const { clock, state, service } = setup();
  await service.resolve(CSI);
  clock.now += 61_000;
  state.fail = true;
  const r = await service.resolve(CSI);
  assert.equal(r.stale, true);
  assert.equal(r.ttlSeconds, 30);
  // The failure recheck timer: within the stale TTL the failed DP is not asked again.
  const again = await service.resolve(CSI);
  assert.equal(again.stale, true);
  assert.equal(state.calls, 2);
  await assert.rejects(service.resolve(parseCsi("tel:+447700900999")), /down/);
});

test("a lookup its caller's deadline failed before it reached the DP is served stale, but nothing is kept stale for the others", async () => {
  // A window of one, held throughout: what else comes waits, or is refused.
  const gate = (maxWaitMs: number) => heldWindow({ maxWaitMs }).gate;
  const caller = (waitUntilMs?: number) => () => ({
    key: "msp-a",
    contextFor: () => new Uint8Array(0),
    ...(waitUntilMs !== undefined && { waitUntilMs }),
  });
  for (const [why, maxWaitMs, waitUntilMs, kept] of [
    // Its deadline left no time to wait: a short deadline must not keep a CSI stale for everyone.
    ["no time left by its deadline", 10_000, 0, false],
    // No deadline: the gate's default wait (1 ms here) ran out, as a DP that does not answer.
    ["the default wait ran out", 1, undefined, true],
  ] as const) {
    const { clock, state, service } = setup();
    await service.resolve(CSI);
    clock.now += 61_000; // expired, within the stale window
    state.window = gate(maxWaitMs);
    const r = await service.resolve(CSI, caller(waitUntilMs));
    assert.equal(r.source, "stale", why);
    assert.equal(service.stats.stale, 1, why);
    // The next caller, with the DP's window free: the kept stale answer (RFC 8767's failure
    // recheck timer), or the DP.
    state.window = undefined;
    const next = await service.resolve(CSI, caller());
    assert.equal(next.source, kept ? "stale" : "upstream", why);
    assert.equal(state.calls, kept ? 1 : 2, why);
  }
});

test("when a short deadline fails a shared lookup, its callers and the joiners it outlasts are served stale, and a joiner allowing longer is asked for again", async () => {
  const { clock, state, service } = setup();
  await service.resolve(CSI);
  clock.now += 61_000; // expired, within the stale window
  // A window of one, held until the test lets go: a lookup that may not wait is refused.
  const { gate, held: holder, letGo } = heldWindow();
  state.window = gate;
  const caller = (key: string, waitUntilMs: number) => () => ({
    key,
    contextFor: () => new Uint8Array(0),
    waitUntilMs,
  });
  const first = service.resolve(CSI, caller("msp-a", 0)); // no time to wait
  const same = service.resolve(CSI, caller("msp-b", 0));
  const longer = service.resolve(CSI, caller("msp-c", 5_000));
  assert.equal((await first).source, "stale");
  assert.equal((await same).source, "stale");
  assert.equal(service.cached(CSI.uri), undefined, "no stale answer kept for the others");
  letGo();
  await holder;
  const r = await longer;
  assert.equal(r.source, "upstream", "asked again under its own deadline, and answered fresh");
  assert.equal(r.stale, false);
  assert.equal(
    service.stats.stale,
    1,
    "one stale answer (one verification), for the callers the failure reached",
  );
  assert.equal(state.calls, 2, "the DP asked once before, and once for the joiner allowing longer");
  state.window = undefined;
});

test("one failure for a deadline that ends the lookups of two CSIs serves each its own stale answer", async () => {
  const { clock, state, service } = setup();
  const other = parseCsi("tel:+447700900124");
  await service.resolve(CSI);
  state.outcome = { kind: "not_found", dpId: "eu", ttlSeconds: 60 };
  await service.resolve(other);
  clock.now += 61_000; // both expired, within the stale window
  // One refusal for a deadline, as a private batch fails every lookup in it with one error.
  const shared = notSentForBound(new DiscoveryError("upstream_unavailable", "no time left to wait"));
  state.refuses = () => shared;
  const caller = () => ({ key: "msp-a", contextFor: () => new Uint8Array(0), waitUntilMs: 1 });
  const [a, b] = await Promise.all([service.resolve(CSI, caller), service.resolve(other, caller)]);
  assert.equal(a.source, "stale");
  assert.equal(a.outcome.kind, "answer");
  assert.equal(b.source, "stale");
  assert.equal(b.outcome.kind, "not_found", "its own stale answer, not the other CSI's");
  assert.equal(service.stats.stale, 2);
});

test("a CSI no delegation covers is NOT_FOUND without asking any DP", async () => {
  const { state, service } = setup();
  const r = await service.resolve(parseCsi("tel:+4915123456789"));
  assert.equal(r.outcome.kind, "not_found");
  assert.equal(state.calls, 0);
});

test("a miss refused before it is asked gets its DP's gate's verdict, unless resolve would do anything else with it", async () => {
  const { state, service } = setup();
  const saturated = new DiscoveryError("resource_exhausted", "saturated", {
    details: { reason: "UPSTREAM_SATURATED" },
  });
  let verdict: DiscoveryError | undefined = saturated;
  const judged: [string, number | undefined][] = [];
  state.refusalNow = (dpId, waitUntilMs) => {
    judged.push([dpId, waitUntilMs]);
    return verdict;
  };
  const checkedAt: string[] = [];
  const refusesCaller = (dpId: string) => {
    checkedAt.push(dpId);
    return false;
  };
  assert.equal(
    service.refusedMiss(CSI, { waitUntilMs: 1_234, privateAt: () => false, refusesCaller }),
    saturated,
  );
  assert.deepEqual(judged, [["eu", 1_234]], "judged at the CSI's DP, with the caller's bound");
  assert.deepEqual(checkedAt, ["eu"], "the caller's own checks asked at its DP");
  const { misses, upstreamRequests, upstreamFailures } = service.stats;
  assert.deepEqual([misses, upstreamRequests, upstreamFailures], [1, 1, 1], "counted as resolve counts it");
  assert.equal(state.calls, 0, "no DP was asked");
  // Each of these takes the full path, unjudged: another caller's lookup of the CSI is in
  // flight (this one would join it), ...
  let open: () => void = () => {};
  state.gate = new Promise((r) => {
    open = r;
  });
  const first = service.resolve(CSI);
  assert.equal(service.refusedMiss(CSI, {}), undefined);
  open();
  await first;
  // ... no DP holds the range (resolve answers NOT_FOUND), the lookup is private there (private
  // lookups are not judged), the caller's own checks refuse it (it hears its own refusal), the
  // registry copy is unusable (resolve says so).
  assert.equal(service.refusedMiss(parseCsi("tel:+4915123456789"), {}), undefined);
  assert.equal(service.refusedMiss(CSI, { privateAt: (dpId) => dpId === "eu" }), undefined);
  assert.equal(service.refusedMiss(CSI, { refusesCaller: (dpId) => dpId === "eu" }), undefined);
  state.registryProblem = "no registry copy yet";
  assert.equal(service.refusedMiss(CSI, {}), undefined);
  state.registryProblem = undefined;
  assert.equal(judged.length, 1, "none of them judged");
  // The gate takes it: not refused, and not counted (the full path counts it).
  verdict = undefined;
  assert.equal(service.refusedMiss(parseCsi("tel:+447700900124"), {}), undefined);
  assert.equal(judged.length, 2);
  assert.equal(service.stats.misses, 2, "the refusal and the lookup");
  // The resolver's own overload refuses any miss first, as resolve's onMiss does: one to join
  // and one no DP holds included, neither the caller's checks nor the gate asked. Counted as a
  // miss only.
  const late = new DiscoveryError("resource_exhausted", "loop late", {
    details: { reason: "RESOLVER_OVERLOADED" },
  });
  const overloaded = () => late;
  const notAsked = () => assert.fail("the caller's checks come after the overload's");
  state.gate = new Promise((r) => {
    open = r;
  });
  const again = service.resolve(parseCsi("tel:+447700900125"));
  assert.equal(
    service.refusedMiss(parseCsi("tel:+447700900125"), { overloaded, refusesCaller: notAsked }),
    late,
  );
  assert.equal(
    service.refusedMiss(parseCsi("tel:+4915123456789"), { overloaded, refusesCaller: notAsked }),
    late,
  );
  assert.equal(
    service.refusedMiss(parseCsi("tel:+447700900126"), { overloaded, refusesCaller: notAsked }),
    late,
  );
  open();
  await again;
  assert.equal(judged.length, 2, "the gate not asked");
  assert.deepEqual(
    [service.stats.misses, service.stats.upstreamRequests, service.stats.upstreamFailures],
    [6, 3, 1],
  );
});

test("registry changes evict cached answers whose delegation moved, appeared or vanished", async () => {
  const { state, service, reg } = setup();
  const uk = parseCsi("tel:+447700900123");
  const jp = parseCsi("tel:+81312345678");
  await service.resolve(uk);
  assert.equal((await service.resolve(jp)).outcome.dpId, "", "undelegated: answered from the registry alone");
  // +81 appears at eu: the cached "no DP" answer must go, the +44 answer stays.
  const add = {
    serial: 2n,
    kind: "put_delegation" as const,
    delegation: { id: "e164:81", key: { kind: "e164" as const, prefix: "81" }, dpId: "eu", ttlSeconds: 60 },
  };
  reg.apply(add);
  service.registryChanged(add);
  await nextTurn(); // eviction runs once per batch of changes, on the next turn
  assert.equal(service.stats.evictedByRegistry, 1);
  assert.equal((await service.resolve(uk)).source, "cache");
  assert.equal((await service.resolve(jp)).source, "upstream");
  // +44 is removed: its answer from eu no longer stands.
  const del = { serial: 3n, kind: "delete_delegation" as const, id: "e164:44" };
  reg.apply(del);
  service.registryChanged(del);
  await nextTurn();
  const after = await service.resolve(uk);
  assert.equal(after.outcome.dpId, "");
  assert.equal(state.calls, 2);
});

test("a stale answer is not served once its range belongs to another DP", async () => {
  const { clock, state, service, reg } = setup();
  await service.resolve(CSI);
  clock.now += 61_000;
  state.fail = true;
  reg.replace({
    serial: 9n,
    delegations: [{ id: "e164:44", key: { kind: "e164", prefix: "44" }, dpId: "uk", ttlSeconds: 60 }],
    dps: [DP, { ...DP, id: "uk" }],
    msps: [],
  });
  await assert.rejects(service.resolve(CSI), /down/);
});

test("an answer that arrives after its range moved is not cached; the new DP is asked", async () => {
  const { state, service, reg } = setup();
  let open: () => void = () => {};
  state.gate = new Promise((r) => {
    open = r;
  });
  const pending = service.resolve(CSI);
  // While eu's lookup is in flight, +44 moves to uk.
  reg.replace({
    serial: 2n,
    delegations: [{ id: "e164:44", key: { kind: "e164", prefix: "44" }, dpId: "uk", ttlSeconds: 60 }],
    dps: [DP, { ...DP, id: "uk" }],
    msps: [],
  });
  state.outcome = { kind: "answer", mappings: [], dpId: "uk", ttlSeconds: 60 };
  open();
  const r = await pending;
  assert.equal(r.outcome.dpId, "uk");
  assert.equal(state.calls, 2, "asked eu, then uk");
  assert.equal((await service.resolve(CSI)).source, "cache");
});

const isVerificationFailure = (e: unknown) =>
  e instanceof DiscoveryError && e.code === "verification_failed" && /forged/.test(e.message);

test("every upstream answer is verified for the CSI asked, before it is used", async () => {
  const { state, service } = setup();
  await service.resolve(CSI);
  assert.deepEqual(state.verified, [[CSI.uri, state.outcome]]);
  await service.resolve(CSI);
  assert.equal(state.verified.length, 1, "a cache hit is not verified again");
});

test("an answer that fails verification surfaces as verification_failed, is counted and never cached", async () => {
  const { state, service } = setup();
  state.verifyRefuses = "forged MSP signature";
  await assert.rejects(service.resolve(CSI), isVerificationFailure);
  assert.equal(service.stats.verificationFailures, 1);
  // Not cached: the next lookup asks the DP again, and fails again.
  await assert.rejects(service.resolve(CSI), isVerificationFailure);
  assert.equal(state.calls, 2);
  assert.equal(service.stats.verificationFailures, 2);
  // Once the DP answers correctly, that answer is used and cached.
  state.verifyRefuses = undefined;
  assert.equal((await service.resolve(CSI)).source, "upstream");
  assert.equal((await service.resolve(CSI)).source, "cache");
  assert.equal(state.calls, 3);
  assert.equal(service.stats.verificationFailures, 2);
});

test("a failed verification is not cached as NOT_FOUND either", async () => {
  const { state, service } = setup();
  state.outcome = { kind: "not_found", dpId: "eu", ttlSeconds: 60 };
  state.verifyRefuses = "forged";
  await assert.rejects(service.resolve(CSI), isVerificationFailure);
  state.verifyRefuses = undefined;
  const r = await service.resolve(CSI);
  assert.equal(r.source, "upstream");
  assert.equal(r.outcome.kind, "not_found");
  assert.equal(state.calls, 2);
});

test("concurrent misses share one failed verification", async () => {
  const { state, service } = setup();
  state.verifyRefuses = "forged";
  const all = await Promise.allSettled(Array.from({ length: 5 }, () => service.resolve(CSI)));
  assert.ok(all.every((r) => r.status === "rejected" && isVerificationFailure(r.reason)));
  assert.equal(state.calls, 1);
  assert.equal(service.stats.verificationFailures, 1);
});

test("a verified answer gone stale is served when the DP's new answer fails verification", async () => {
  // Same rule as a DP that is down (RFC 8767): the earlier, verified answer is served stale;
  // the answer that failed is never served or cached.
  const { clock, state, service } = setup();
  const verified = (await service.resolve(CSI)).outcome;
  clock.now += 61_000;
  state.outcome = { kind: "answer", mappings: [], dpId: "eu", ttlSeconds: 600 };
  state.verifyRefuses = "forged";
  state.refusesOnly = state.outcome; // the earlier answer still verifies (it is checked again)
  const r = await service.resolve(CSI);
  assert.equal(r.stale, true);
  assert.equal(r.source, "stale");
  // Rebuilt from the cache's bytes: equal to the earlier answer, not the same object.
  assert.deepEqual(r.outcome, verified, "the earlier answer, not the one that failed");
  assert.equal(r.ttlSeconds, 30);
  assert.equal(service.stats.verificationFailures, 1);
  assert.equal(service.stats.stale, 1);
  // Within the stale TTL the DP is not asked again.
  assert.deepEqual((await service.resolve(CSI)).outcome, verified);
  assert.equal(state.calls, 2);
  // After it, the DP is asked again; a good answer replaces the stale one.
  clock.now += 31_000;
  state.verifyRefuses = undefined;
  const fresh = await service.resolve(CSI);
  assert.equal(fresh.source, "upstream");
  assert.equal(fresh.outcome, state.outcome);
  assert.equal(fresh.ttlSeconds, 600);
});

test("an answer is cached no longer than its seal, whatever the TTLs say, and never served stale past it", async () => {
  // Regression: a cached answer outliving its seal would be served, then fail every verifier.
  const { clock, state, service } = setup();
  state.outcome = { kind: "not_found", dpId: "eu", ttlSeconds: 3600 };
  state.sealExpiresAtMs = clock.now + 20_500;
  const first = await service.resolve(CSI);
  assert.equal(first.ttlSeconds, 20, "the seal's 20 s, not the negative TTL's 30");
  clock.now += 21_000;
  state.fail = true;
  // The seal has expired: the stale copy no longer verifies (the verifier says so), and goes.
  state.verifyRefuses = "its seal expired";
  await assert.rejects(service.resolve(CSI), (e: unknown) => e instanceof DiscoveryError);
  assert.equal(service.stats.stale, 0);
  // A seal about to expire: served stale for what is left of it, not the full stale TTL.
  state.fail = false;
  state.verifyRefuses = undefined;
  state.sealExpiresAtMs = clock.now + 10_000;
  await service.resolve(CSI);
  clock.now += 31_000;
  state.fail = true;
  state.sealExpiresAtMs = clock.now + 5_000;
  const stale = await service.resolve(CSI);
  assert.equal(stale.stale, true);
  assert.equal(stale.ttlSeconds, 5);
  // A seal already past: nothing is cached at all, and the answer goes out with TTL 0.
  state.fail = false;
  service.flush("all");
  state.sealExpiresAtMs = clock.now;
  assert.equal((await service.resolve(CSI)).ttlSeconds, 0);
  assert.equal(service.cacheSize, 0);
});

test("a change event evicts the cached answer, a negative one included, and only that CSI's", async () => {
  const { state, service } = setup();
  const other = parseCsi("tel:+447700900999");
  state.outcome = { kind: "not_found", dpId: "eu", ttlSeconds: 60 };
  await service.resolve(CSI);
  await service.resolve(other);
  assert.equal((await service.resolve(CSI)).source, "cache");
  service.changed("eu", changeHashHex(KEY, CSI.uri));
  assert.equal(service.stats.invalidations, 1);
  state.outcome = { kind: "answer", mappings: [], dpId: "eu", ttlSeconds: 60 };
  const r = await service.resolve(CSI);
  assert.equal(r.source, "upstream");
  assert.equal(r.outcome.kind, "answer");
  assert.equal((await service.resolve(other)).source, "cache");
  // An event for a CSI nobody cached evicts nothing.
  service.changed("eu", changeHashHex(KEY, "tel:+447700900555"));
  assert.equal(service.stats.invalidations, 1);
});

test("a CSI whose change event came lately is asked first at the endpoint that delivered it", async () => {
  const { state, service } = setup();
  const other = parseCsi("tel:+447700900999");
  await service.resolve(CSI);
  service.changed("eu", changeHashHex(KEY, CSI.uri), "dp-eu-2:7500");
  await service.resolve(CSI);
  await service.resolve(other);
  // A secondary that lags could answer from before the change, and that answer would be cached.
  assert.deepEqual(state.preferred, [undefined, "dp-eu-2:7500", undefined]);
});

test("an answer whose lookup raced a change event for its CSI is asked again, not cached", async () => {
  const { state, service } = setup();
  let open: () => void = () => {};
  state.gate = new Promise((r) => {
    open = r;
  });
  state.outcome = { kind: "not_found", dpId: "eu", ttlSeconds: 60 };
  const pending = service.resolve(CSI);
  await nextTurn();
  // The mapping is created while the first lookup is out; its event overtakes the answer.
  service.changed("eu", changeHashHex(KEY, CSI.uri));
  state.gate = undefined;
  open();
  state.outcome = { kind: "answer", mappings: [], dpId: "eu", ttlSeconds: 60 };
  // The first answer (read before the change in a real DP) is replaced by a second lookup.
  const r = await pending;
  assert.equal(state.calls, 2);
  assert.equal(r.outcome.kind, "answer");
  assert.equal((await service.resolve(CSI)).outcome.kind, "answer");
});

test("a private answer that raced a change event is not asked again (a probe would see it), and not cached", async () => {
  const { state, service } = setup();
  let open: () => void = () => {};
  state.gate = new Promise((r) => {
    open = r;
  });
  state.outcome = { kind: "not_found", dpId: "eu", ttlSeconds: 60, private: true, privateUntilMs: 1_060_000 };
  const pending = service.resolve(CSI);
  await nextTurn();
  // The DP sends an event for the CSI while the private lookup is out (perhaps for a guess).
  service.changed("eu", changeHashHex(KEY, CSI.uri));
  state.gate = undefined;
  open();
  const r = await pending;
  assert.equal(state.calls, 1, "no second evaluation right after the event");
  assert.equal(r.outcome.kind, "not_found");
  assert.equal(r.ttlSeconds, 0);
  // Not cached: the next query asks again.
  await service.resolve(CSI);
  assert.equal(state.calls, 2);
});

test("a private answer read before a change the resolver has seen is served but not cached", async () => {
  const { state, service } = setup();
  const privately = () => ({ key: "m", contextFor: () => new Uint8Array(0), privateAt: () => true });
  state.predates = true;
  const first = await service.resolve(CSI, privately);
  assert.deepEqual([first.source, first.ttlSeconds], ["upstream", 0]);
  assert.equal((await service.resolve(CSI, privately)).source, "upstream", "asked again: nothing was cached");
  state.predates = false;
  await service.resolve(CSI, privately);
  assert.equal((await service.resolve(CSI, privately)).source, "cache");
  assert.equal(state.calls, 3);
  // A plain lookup is not told to listen: only private answers come from buckets.
  await service.flush({ csi: CSI });
  state.predates = true;
  await service.resolve(CSI);
  assert.equal((await service.resolve(CSI)).source, "cache");
});

test("a resync drops every answer from that DP and counts only when it is not a first subscription", async () => {
  const { service } = setup();
  await service.resolve(CSI);
  await service.resolve(parseCsi("tel:+447700900999"));
  assert.equal(service.cacheSize, 2);
  assert.equal(service.resync("eu", false), 2);
  assert.equal(service.stats.resyncs, 0);
  await service.resolve(CSI);
  assert.equal(service.resync("us", true), 0);
  assert.equal(service.resync("eu", true), 1);
  assert.equal(service.stats.resyncs, 2);
  assert.equal(service.cacheSize, 0);
});

test("flush drops one CSI, one DP's answers, or everything", async () => {
  const { service } = setup();
  const other = parseCsi("tel:+447700900999");
  await service.resolve(CSI);
  await service.resolve(other);
  assert.equal(service.flush({ csi: CSI }), 1);
  assert.equal(service.flush({ csi: CSI }), 0);
  assert.equal((await service.resolve(other)).source, "cache");
  assert.equal(service.flush({ dpId: "us" }), 0);
  assert.equal(service.flush({ dpId: "eu" }), 1);
  await service.resolve(CSI);
  assert.equal(service.flush("all"), 1);
  assert.equal(service.stats.flushed, 3);
  assert.equal(service.cacheSize, 0);
});

test("a popular answer is refreshed in the background shortly before it expires", async () => {
  const { clock, state, service } = setup({ minHits: 2, remainingFraction: 0.1 });
  await service.resolve(CSI); // ttl 60 s
  assert.equal(state.calls, 1);
  clock.now += 30_000;
  await service.resolve(CSI); // hit 1, half the TTL left: nothing to do
  clock.now += 25_000;
  await service.resolve(CSI); // hit 2 with 5 s of 60 left: popular and near expiry
  await nextTurn();
  assert.equal(state.calls, 2, "refreshed once the answer is popular and near expiry");
  assert.equal(service.stats.prefetches, 1);
  assert.equal(service.stats.misses, 1);
  // The refreshed entry has its full TTL again, and was never missed.
  clock.now += 10_000;
  const r = await service.resolve(CSI);
  assert.equal(r.source, "cache");
  assert.equal(r.ttlSeconds, 50);
});

test("an answer asked once is left to expire; a failed prefetch keeps the fresh answer", async () => {
  const { clock, state, service } = setup({ minHits: 2, remainingFraction: 0.5 });
  await service.resolve(CSI);
  clock.now += 40_000;
  await service.resolve(CSI); // one hit: not popular
  await nextTurn();
  assert.equal(state.calls, 1);
  state.fail = true;
  await service.resolve(CSI); // second hit: prefetch, which fails
  await nextTurn();
  await nextTurn();
  assert.equal(state.calls, 2);
  const r = await service.resolve(CSI);
  assert.equal(r.source, "cache");
  assert.equal(r.stale, false);
});

test("an event that came before a lookup started does not make its answer be asked again", async () => {
  const { state, service } = setup();
  service.changed("eu", changeHashHex(KEY, CSI.uri)); // e.g. the event that evicted the entry
  let open: () => void = () => {};
  state.gate = new Promise((r) => {
    open = r;
  });
  const pending = service.resolve(CSI);
  await nextTurn();
  service.changed("eu", changeHashHex(KEY, "tel:+447700900999")); // another CSI changes meanwhile
  state.gate = undefined;
  open();
  await pending;
  assert.equal(state.calls, 1);
  assert.equal((await service.resolve(CSI)).source, "cache");
});

test("a change event evicts only the answers of the DP that sent it", async () => {
  const { service, changeKeys } = setup();
  await service.resolve(CSI);
  // DP us, with its own key, reports a change of the same CSI (it may hold it too): eu's answer stays.
  const usKey = new Uint8Array(32).fill(9);
  changeKeys.set("us", usKey);
  service.changed("us", changeHashHex(usKey, CSI.uri));
  service.changed("us", changeHashHex(KEY, CSI.uri)); // even with eu's hash
  assert.equal(service.stats.invalidations, 0);
  assert.equal((await service.resolve(CSI)).source, "cache");
  service.changed("eu", changeHashHex(KEY, CSI.uri));
  assert.equal(service.stats.invalidations, 1);
});

test("a new change-hash key from a DP drops its answers; the same key again drops nothing", async () => {
  const { service } = setup();
  await service.resolve(CSI);
  assert.equal(service.changeKey("eu", KEY), false);
  assert.equal(service.cacheSize, 1);
  assert.equal(service.changeKey("eu", new Uint8Array(32).fill(8)), true);
  assert.equal(service.cacheSize, 0);
});

test("a DP's or MSP's key change in the registry evicts the answers it signed, and nothing else", async () => {
  const { state, service, reg } = setup();
  const mapping = {
    mspId: "m.example",
    ssi: "s",
    isDefault: true,
    tags: [],
    createdAtMs: 1,
    proofMethod: "sms-code",
    expiresAtMs: 2,
  };
  const other = parseCsi("tel:+447700900999");
  const optedOut = parseCsi("tel:+447700900998");
  state.outcome = { kind: "answer", mappings: [mapping], dpId: "eu", ttlSeconds: 60 };
  await service.resolve(CSI);
  state.outcome = { kind: "answer", mappings: [], dpId: "eu", ttlSeconds: 60 };
  await service.resolve(other);
  state.outcome = { kind: "opted_out", dpId: "eu", ttlSeconds: 60 };
  await service.resolve(optedOut);
  const apply = (change: Parameters<RegistryView["apply"]>[0]) => {
    reg.apply(change);
    service.registryChanged(change);
  };
  // Another DP's entry, and an endpoint move that keeps eu's key: nothing evicted.
  apply({ serial: 2n, kind: "put_dp", dp: { ...DP, id: "us" } });
  apply({ serial: 3n, kind: "put_dp", dp: { ...DP, endpoints: ["127.0.0.1:2"] } });
  assert.equal(service.cacheSize, 3);
  // The MSP's key appears: the answer holding its mapping goes, and opt-outs (an MSP signed
  // each holder's opt-out, and they are few).
  const mspKey = new Uint8Array(32).fill(3);
  apply({
    serial: 4n,
    kind: "put_msp",
    msp: { id: "m.example", name: "M", index: 0, signingPublicKey: mspKey },
  });
  assert.equal(service.cacheSize, 1);
  assert.equal((await service.resolve(other)).source, "cache");
  // The DP's key rotates: everything it signed goes.
  apply({ serial: 5n, kind: "put_dp", dp: { ...DP, signingPublicKey: new Uint8Array(32).fill(4) } });
  assert.equal(service.cacheSize, 0);
  assert.equal(service.stats.evictedByRegistry, 3);
});

test("a stale answer is verified again before it is served, and dropped when it no longer verifies", async () => {
  const { clock, state, service } = setup();
  await service.resolve(CSI);
  clock.now += 61_000;
  state.fail = true;
  state.verifyRefuses = "the DP's countersignature does not verify";
  await assert.rejects(
    service.resolve(CSI),
    (e: unknown) => e instanceof DiscoveryError && e.code === "upstream_unavailable",
  );
  assert.equal(service.stats.stale, 0);
  assert.equal(service.cacheSize, 0, "the answer that no longer verifies is gone");
});

test("only a miss is charged: a refused charge asks no DP, and cache hits cost nothing", async () => {
  const { state, service } = setup();
  let charged = 0;
  const refuse = () => {
    throw new DiscoveryError("resource_exhausted", "spent");
  };
  await assert.rejects(service.resolve(CSI, refuse), /spent/);
  assert.equal(state.calls, 0, "no DP was asked");
  await service.resolve(CSI, () => void charged++);
  assert.equal(charged, 1);
  const hit = await service.resolve(CSI, refuse);
  assert.equal(hit.source, "cache");
  assert.equal(state.calls, 1);
});

test("a lookup whose caller went away is neither verified nor cached, unless someone joined it", async () => {
  const { state, service } = setup();
  let release = () => {};
  const hold = () => {
    state.gate = new Promise<void>((r) => {
      release = r;
    });
  };
  let gone = false;
  const caller =
    (key: string, isGone = () => false) =>
    () => ({
      key,
      contextFor: () => new Uint8Array(0),
      gone: isGone,
    });

  // Alone: the caller goes while the DP is asked; the answer is dropped unverified.
  hold();
  const alone = service.resolve(
    CSI,
    caller("a", () => gone),
  );
  gone = true;
  release();
  await assert.rejects(alone, /nobody was waiting/);
  assert.equal(state.verified.length, 0, "nothing verified for nobody");
  assert.equal(service.stats.abandoned, 1);
  assert.equal(service.cached(CSI.uri), undefined, "nothing cached");

  // Joined: the first caller goes, the one that joined still waits; verified and cached.
  hold();
  gone = false;
  const first = service.resolve(
    CSI,
    caller("a", () => gone),
  );
  const second = service.resolve(CSI, caller("b"));
  gone = true;
  release();
  assert.equal((await second).source, "upstream");
  await first;
  assert.equal(state.verified.length, 1);
  assert.equal(service.stats.abandoned, 1);
  const hit = service.cached(CSI.uri);
  assert.ok(hit, "cached for the next caller");
  assert.equal(hit.source, "cache");
  // The hit's outcome is rebuilt when read, by a getter on its prototype (ARCHITECTURE.md,
  // "Hot paths").
  assert.ok(getterOnPrototype(hit, "outcome"));
  const stored = (await second).outcome;
  assert.equal(hit.outcome.kind, stored.kind);
  assert.equal(hit.outcome.dpId, stored.dpId);
});

test("a caller asking PLAIN gets the DP's sealed denial: it joins no private lookup, and a private NOT_FOUND in the cache is a miss for it", async () => {
  const { state, service, reg } = setup();
  const fed: DpInfo = { ...DP, id: "fed" };
  reg.replace({
    serial: 2n,
    delegations: [
      {
        id: "e164:44",
        key: { kind: "e164", prefix: "44" },
        dpId: "eu",
        ttlSeconds: 3600,
        federatedDpIds: ["fed"],
      },
    ],
    dps: [DP, fed],
    msps: [],
  });
  state.outcome = { kind: "not_found", dpId: "eu", ttlSeconds: 60 };
  state.privateOutcome = { kind: "not_found", dpId: "eu", ttlSeconds: 60, private: true };
  const caller = (key: string, privately: boolean) => () => ({
    key,
    contextFor: () => new Uint8Array(0),
    privateAt: () => privately,
  });
  let open = () => {};
  state.gate = new Promise<void>((r) => {
    open = r;
  });
  const privateAsk = service.resolve(CSI, caller("a", true));
  const plainAsk = service.resolve(CSI, caller("b", false), undefined, true);
  const privateJoiner = service.resolve(CSI, caller("c", true));
  open();
  state.gate = undefined;
  const [p, plain, joined] = await Promise.all([privateAsk, plainAsk, privateJoiner]);
  assert.deepEqual(state.privately, [true, false], "one private lookup and one plain one");
  assert.equal(p.outcome.private, true);
  assert.equal(plain.outcome.private, undefined);
  // The DP learns nothing more from a private ask joining a plain lookup, as from a cache hit.
  assert.equal(joined.outcome, plain.outcome, "a private ask joins the plain lookup in flight");

  // Cached: a private NOT_FOUND is served to a caller that did not ask PLAIN, and is a miss
  // for one that did; the plain answer then cached serves both.
  service.flush("all");
  state.privately = [];
  await service.resolve(CSI, caller("a", true));
  assert.equal((await service.resolve(CSI, caller("d", false))).source, "cache");
  const asked = await service.resolve(CSI, caller("b", false), undefined, true);
  assert.equal(asked.source, "upstream");
  assert.equal(asked.outcome.private, undefined);
  assert.equal((await service.resolve(CSI, caller("b", false), undefined, true)).source, "cache");
  assert.deepEqual(state.privately, [true, false]);

  // A federated DP's part the same way.
  state.privately = [];
  await service.part(fed, CSI, caller("a", true));
  assert.equal((await service.part(fed, CSI, caller("d", false))).source, "cache");
  const part = await service.part(fed, CSI, caller("b", false), true);
  assert.equal(part.source, "upstream");
  assert.equal(part.outcome.private, undefined);
  assert.deepEqual(state.privately, [true, false]);
});

test("a caller asking PLAIN is not served a private NOT_FOUND stale either when the DP fails", async () => {
  const { clock, state, service } = setup();
  state.privateOutcome = { kind: "not_found", dpId: "eu", ttlSeconds: 60, private: true };
  const ask = (privately: boolean, sealedDenial?: boolean) => () => ({
    key: "msp-a",
    contextFor: () => new Uint8Array(0),
    privateAt: () => privately,
    ...(sealedDenial && { sealedDenial }),
  });
  await service.resolve(CSI, ask(true));
  state.fail = true;
  const unsealed = /holds only a NOT_FOUND found by a private lookup, which carries no DP seal/;
  // Fresh in the cache: a miss for the PLAIN ask, whose lookup fails; the private entry is not
  // served to it instead.
  await assert.rejects(service.resolve(CSI, ask(false, true), undefined, true), unsealed);
  // Expired: the same.
  clock.now += 61_000;
  await assert.rejects(service.resolve(CSI, ask(false, true), undefined, true), unsealed);
  // A caller that did not ask PLAIN is served it stale.
  const r = await service.resolve(CSI, ask(false));
  assert.equal(r.source, "stale");
  assert.equal(r.outcome.private, true);
  // A PLAIN ask that joins another caller's failing lookup is not served it either, while the
  // caller who made the lookup is.
  service.flush("all");
  state.fail = false;
  await service.resolve(CSI, ask(true));
  clock.now += 61_000;
  state.fail = true;
  let open = () => {};
  state.gate = new Promise<void>((resolve) => {
    open = resolve;
  });
  const first = service.resolve(CSI, ask(false));
  const joiner = service.resolve(CSI, () => ({ ...ask(false, true)(), key: "msp-b" }), undefined, true);
  open();
  assert.equal((await first).source, "stale");
  await assert.rejects(joiner, unsealed);
});

test("a caller that joined another's lookup is asked for again under its own context when the DP refused the first's", async () => {
  const { state, service } = setup();
  const fed: DpInfo = { ...DP, id: "fed" };
  const caller = (key: string, context: number) => () => ({
    key,
    contextFor: () => Uint8Array.of(context),
  });
  // The DP refuses context 1 (its budget there is spent) and answers context 2.
  state.refuses = (ctx) =>
    ctx?.[0] === 1
      ? new DiscoveryError("resource_exhausted", "spent", {
          remoteStatus: status.RESOURCE_EXHAUSTED,
          details: { reason: "DP_CONTEXT_LIMIT", retryAfterMs: 60_000 },
        })
      : undefined;
  for (const [what, ask] of [
    ["at the CSI's DP", (c: () => MissCaller) => service.resolve(CSI, c)],
    ["at a federated DP", (c: () => MissCaller) => service.part(fed, CSI, c)],
  ] as const) {
    service.flush("all");
    state.contexts = [];
    let open = () => {};
    state.gate = new Promise<void>((r) => {
      open = r;
    });
    const first = ask(caller("msp-a", 1));
    const joiner = ask(caller("msp-b", 2));
    open();
    await assert.rejects(first, /spent/, what);
    assert.equal((await joiner).source, "upstream", what);
    assert.deepEqual(state.contexts, [1, 2], `${what}: asked again under the joiner's own context`);
  }
});

test("a caller that joined a lookup the gate refused unsent for its first caller's short deadline is asked for again under its own", async () => {
  const { state, service } = setup();
  const fed: DpInfo = { ...DP, id: "fed" };
  const caller = (key: string, waitUntilMs: number) => () => ({
    key,
    contextFor: () => new Uint8Array(0),
    waitUntilMs,
  });
  for (const [what, ask] of [
    ["at the CSI's DP", (c: () => MissCaller) => service.resolve(CSI, c)],
    ["at a federated DP", (c: () => MissCaller) => service.part(fed, CSI, c)],
  ] as const) {
    service.flush("all");
    state.waits = [];
    // A window of one, held by a lookup the test answers: a lookup that may not wait is refused.
    const { gate, held: holder, letGo: answer } = heldWindow();
    state.window = gate;
    const first = ask(caller("msp-a", 0)); // no time to wait for the window
    const sameBound = ask(caller("msp-b", 0));
    const longer = ask(caller("msp-c", 5_000));
    await assert.rejects(first, /no time to wait/, what);
    await assert.rejects(
      sameBound,
      /no time to wait/,
      `${what}: a joiner allowing no longer shares the refusal`,
    );
    answer(); // the window has room again
    await holder;
    assert.equal((await longer).source, "upstream", what);
    assert.deepEqual(state.waits, [5_000], `${what}: asked again, with the joiner's own bound`);
  }
  state.window = undefined;
});

test("the resolver's own refresh, failed by the gate's wait, serves no stale answer and leaves the entry as it is", async () => {
  const { clock, state, service } = setup({ minHits: 2, remainingFraction: 0.1 });
  await service.resolve(CSI); // ttl 60 s
  clock.now += 30_000;
  await service.resolve(CSI);
  // A window of one, held: the refresh waits the gate's default (1 ms here) and fails unsent.
  const { gate } = heldWindow({ maxWaitMs: 1 });
  state.window = gate;
  clock.now += 25_000;
  const hit = await service.resolve(CSI); // popular and near expiry: refreshed in the background
  assert.equal(hit.source, "cache");
  assert.equal(service.stats.prefetches, 1);
  await until(() => service.stats.upstreamFailures === 1);
  for (let i = 0; i < 5; i++) await nextTurn();
  assert.equal(service.stats.stale, 0, "a refresh is nobody's answer: nothing served stale");
  const after = await service.resolve(CSI);
  assert.equal(after.source, "cache");
  assert.equal(after.stale, false, "the fresh entry is as it was");
  state.window = undefined;
});

test("a caller that joined the resolver's own refresh is served stale when the refresh fails", async () => {
  const { clock, state, service } = setup({ minHits: 2, remainingFraction: 0.1 });
  await service.resolve(CSI); // ttl 60 s
  clock.now += 30_000;
  await service.resolve(CSI);
  let open = () => {};
  state.gate = new Promise<void>((r) => {
    open = r;
  });
  state.fail = true;
  clock.now += 25_000;
  await service.resolve(CSI); // popular and near expiry: refreshed in the background
  assert.equal(service.stats.prefetches, 1);
  clock.now += 10_000; // expired while the refresh waits for the DP
  const joiner = service.resolve(CSI, () => ({ key: "msp-a", contextFor: () => new Uint8Array(0) }));
  open();
  const r = await joiner;
  assert.equal(r.source, "stale");
  assert.equal(r.stale, true);
  assert.equal(state.calls, 2, "the joiner was not asked for again: it shares the refresh's failure");
});
