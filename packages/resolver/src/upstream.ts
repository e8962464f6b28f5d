// Calls to authoritative DPs: one long-lived channel per endpoint carrying one long-lived
// LookupStream (lookup-mux.ts); lookups spread per call across a DP's endpoints, with failover
// (endpoint-picker.ts); gRPC failures become DiscoveryError. The resolver authenticates as
// itself; nothing about the querying MSP is forwarded (R9, P2).

import { performance } from "node:perf_hooks";
import { status } from "@grpc/grpc-js";
import { DiscoveryError, type DpInfo, type Logger, type LookupOutcome, type RegistryView } from "@mimi/core";
import { type Channel, type ChannelPool, statusName } from "@mimi/rpc";
import { AdaptiveGate, DEFAULT_GATE } from "./adaptive-gate.js";
import { outcomeFromAnswer } from "./cached-answer.js";
import { callerGone, isCallerGone } from "./call-bounds.js";
import { EndpointPicker } from "./endpoint-picker.js";
import { refusedUnsent } from "./gate-refusals.js";
import { type LateReply, LookupMux, STREAM_ENDED, UPSTREAM_TIMEOUT, unansweredAtDp } from "./lookup-mux.js";
import type { PrivateLookups } from "./private-lookups.js";
import { dpRefusal, ENDPOINT_REASONS } from "./refusals.js";

const NO_CONTEXT: Uint8Array = new Uint8Array(0);
/** Attempts of one lookup at most: the first and two more after timeouts (as the caller's time allows). */
const MAX_ATTEMPTS = 3;

/** A late reply, and the endpoint it came from. */
type FromEndpoint = { endpoint: string; reply: NonNullable<LateReply> };

/**
 * For a lookup whose attempt timed out at endpoints: the DP's first late reply to it, and when
 * the DP is done with all of them (true when any reply came).
 */
interface Late {
  first: Promise<FromEndpoint | undefined>;
  done: Promise<boolean>;
}
const lateOf = new WeakMap<DiscoveryError, Late>();
const lateFor = (err: unknown) => (err instanceof DiscoveryError ? lateOf.get(err) : undefined);

/** The first of `replies` that came, or undefined once none did. */
function firstReply(replies: Promise<FromEndpoint | undefined>[]): Promise<FromEndpoint | undefined> {
  return new Promise((resolve) => {
    let left = replies.length;
    if (left === 0) resolve(undefined);
    for (const r of replies) {
      void r.then((reply) => {
        left--;
        if (reply || left === 0) resolve(reply);
      });
    }
  });
}

/** How one lookup at a DP goes. */
export interface UpstreamLookup {
  /** The pseudonymous rate-limit context of the party asked for (empty: the resolver's own). */
  rateContext?: Uint8Array;
  /** Waits for the DP's window no later than this (ms on the gate's clock). */
  waitUntilMs?: number;
  /** Asked when the window lets the lookup go: its caller has gone, so it fails unsent. */
  abandoned?: () => boolean;
  /** Look it up privately (private-lookups.ts): the DP does not learn the CSI. */
  privately?: boolean;
  /** The endpoint to try first when it is up (the one that delivered the CSI's latest change). */
  prefer?: string;
  /** Hears the endpoint that answered. */
  answeredBy?: (endpoint: string) => void;
  /**
   * Hears that the answer may predate a change the resolver has already seen (a private answer
   * from a bucket the endpoint read before applying it): it is served, but not cached.
   */
  predates?: () => void;
}

/** Asks DPs for answers. */
export interface Upstream {
  /**
   * Looks up a canonical CSI at the DP within its adaptive window of lookups in flight
   * (adaptive-gate.ts), at one of its endpoints, failing over to the others.
   */
  lookup(dp: DpInfo, csi: string, how?: UpstreamLookup): Promise<LookupOutcome>;
  /**
   * The refusal a plain lookup at DP `dpId` that may wait until `waitUntilMs` would get from its
   * gate now for being late (AdaptiveGate.refusalNow), or undefined.
   */
  refusalNow(dpId: string, waitUntilMs?: number): DiscoveryError | undefined;
  /** The window of each DP asked so far (GetStats), and the lookups its gate refused unsent. */
  windows(): { dpId: string; inflight: number; window: number; queued: number; refused: number }[];
  /** The channel to one of a DP's endpoints (shared with lookups; change watches use it too). */
  channel(dp: DpInfo, endpoint: string): Channel;
  /**
   * The registry now lists `dps`: the streams and channels to endpoints no DP lists any longer
   * end (what they were sent is still answered), and what was kept of DPs that left is dropped.
   * Returns how many channels were closed.
   */
  retain(dps: readonly DpInfo[]): number;
  close(): void;
}

/** Options of the upstream pool. */
export interface UpstreamOptions {
  /** Channels to DP endpoints, authenticated as this resolver (closed with the upstream). */
  channels: ChannelPool;
  log: Logger;
  /** Deadline of one attempt at one endpoint. */
  attemptTimeoutMs: number;
  /** How long past its deadline an attempt's late answer is waited for (default four deadlines). */
  lateAnswerMs?: number;
  /** Hears how long each lookup at a DP took (window wait included) and whether it failed. */
  observe?: (dpId: string, seconds: number, failed: boolean) => void;
  /** Clock of the windows and hold-downs (ms; tests pass one they move). */
  now?: () => number;
  /** Private lookups, for lookups asked privately; they go through the same windows and failover. */
  privateLookups?: (channel: (dp: DpInfo, endpoint: string) => Channel) => PrivateLookups;
  /**
   * The registry copy: a DP's endpoints as it lists them now. A lookup that began before a change
   * goes to the endpoints listed now, and no channel is opened to one no longer listed. Unset
   * (tests): every endpoint a lookup names is listed.
   */
  registry?: Pick<RegistryView, "dp">;
}

/** Creates the pool. */
export function createUpstream(o: UpstreamOptions): Upstream {
  const log = o.log.child({ component: "upstream" });
  const channels = o.channels;
  const now = o.now ?? (() => performance.now());
  const muxes = new Map<string, LookupMux>();
  // Muxes of endpoints the registry no longer lists, until their streams end (closed with the upstream).
  const retiring = new Set<LookupMux>();
  // The endpoint choice per DP (bounded by the registry's DPs, like the windows).
  const pickers = new Map<string, EndpointPicker>();
  const pickerFor = (dpId: string) => {
    let p = pickers.get(dpId);
    if (!p) {
      p = new EndpointPicker(now);
      pickers.set(dpId, p);
    }
    return p;
  };
  // One window per DP (bounded by the registry's DPs: retain drops a removed DP's idle gate).
  const gates = new Map<string, AdaptiveGate>();
  const gateFor = (dpId: string) => {
    let g = gates.get(dpId);
    if (!g) {
      g = new AdaptiveGate(dpId, {
        ...DEFAULT_GATE,
        decreaseEveryMs: o.attemptTimeoutMs,
        stillBusy: (err) => lateFor(err)?.done,
        now,
      });
      gates.set(dpId, g);
    }
    return g;
  };
  // Only items that timed out (alone, or with their stream when it said nothing for an attempt's
  // deadline) say the DP is overloaded; a refused connection, a stream cut (connection age) or
  // the gate's own refusals do not shrink the window or earn a retry (a stream cut earns the
  // lookup one more stream: onStream).
  const timedOut = (err: unknown) =>
    err instanceof DiscoveryError && err.details?.reason === UPSTREAM_TIMEOUT;

  const leftRegistry = (dpId: string) =>
    new DiscoveryError("upstream_unavailable", `DP "${dpId}" is no longer in the registry`);
  // Whether the registry lists `endpoint` for `dp` now: a lookup, retry or private lookup that
  // began before a change must not reopen what retain let go.
  const listedNow = (dp: DpInfo, endpoint: string) => {
    if (!o.registry) return true;
    const d = o.registry.dp(dp.id);
    return d !== undefined && d.tlsIdentity === dp.tlsIdentity && d.endpoints.includes(endpoint);
  };
  const channelFor = (dp: DpInfo, endpoint: string) => {
    if (!listedNow(dp, endpoint)) {
      throw new DiscoveryError(
        "upstream_unavailable",
        `${endpoint} is no longer an endpoint of DP "${dp.id}"`,
      );
    }
    return channels.get(endpoint, dp.tlsIdentity);
  };
  // Keyed as the channel pool keys its channels: a DP's endpoint and the identity it must show.
  const endpointKey = (identity: string, endpoint: string) => `${identity}|${endpoint}`;
  const muxKey = (dp: DpInfo, endpoint: string) => endpointKey(dp.tlsIdentity, endpoint);
  const muxFor = (dp: DpInfo, endpoint: string) => {
    const k = muxKey(dp, endpoint);
    let mux = muxes.get(k);
    if (!mux || mux.dead) {
      mux = new LookupMux(channelFor(dp, endpoint), {
        what: `LookupStream at ${endpoint}`,
        timeoutMs: o.attemptTimeoutMs,
        ...(o.lateAnswerMs !== undefined && { lateAnswerMs: o.lateAnswerMs }),
        // The rate the endpoint takes (R13): the DP's lookups leave its gate no faster than its
        // endpoints that are up take them together.
        onLimits: (rate) => {
          pickerFor(dp.id).setRate(endpoint, rate);
          repace(listed.get(dp.id) ?? dp);
        },
      });
      muxes.set(k, mux);
    }
    return mux;
  };

  // The DP as the last lookup saw it (the registry may have moved its endpoints since a stream opened).
  const listed = new Map<string, DpInfo>();
  const repace = (dp: DpInfo) => gateFor(dp.id).setRate(pickerFor(dp.id).rate(dp.endpoints));
  const busy = (dp: DpInfo) => (endpoint: string) => muxes.get(muxKey(dp, endpoint))?.pendingCount ?? 0;

  // A lookup at one endpoint, asked once more on a new stream when its stream ended under it
  // (a connection closed at its age, a DP restarting): the DP never answered it. A DP that is
  // down fails the second stream at once, and is held down for that.
  const onStream = async (dp: DpInfo, endpoint: string, csi: string, rateContext: Uint8Array) => {
    try {
      return await muxFor(dp, endpoint).lookup(csi, rateContext);
    } catch (err) {
      if (!(err instanceof DiscoveryError && err.details?.reason === STREAM_ENDED)) throw err;
      return await muxFor(dp, endpoint).lookup(csi, rateContext);
    }
  };

  // The DP's late reply to a lookup that failed with `err`, waited for until `waitUntilMs`.
  const lateReply = (err: unknown, waitUntilMs: number | undefined): Promise<FromEndpoint | undefined> => {
    const first = lateFor(err)?.first;
    if (!first) return Promise.resolve(undefined);
    if (waitUntilMs === undefined) return first;
    return new Promise((resolve) => {
      const bound = setTimeout(() => resolve(undefined), Math.max(0, waitUntilMs - now()));
      void first.then((reply) => {
        clearTimeout(bound);
        resolve(reply);
      });
    });
  };
  let closed = false;

  const privateLookups = o.privateLookups?.((dp, endpoint) => channelFor(dp, endpoint));
  const attempt = async (asked: DpInfo, csi: string, how: UpstreamLookup): Promise<LookupOutcome> => {
    // The DP as the registry lists it now (a retry may come after its endpoints moved).
    const current = o.registry?.dp(asked.id);
    if (o.registry && !current) throw leftRegistry(asked.id);
    const dp = current ?? asked;
    if (dp.endpoints.length === 0) {
      throw new DiscoveryError("upstream_unavailable", `DP "${dp.id}" has no endpoints in the registry`);
    }
    listed.set(dp.id, dp);
    const rateContext = how.rateContext ?? NO_CONTEXT;
    const privately = how.privately === true;
    const picker = pickerFor(dp.id);
    // Not for a private lookup: the DP would learn which CSI it was from where it arrives.
    const prefer = privately ? undefined : how.prefer;
    const order = picker.order(dp.endpoints, busy(dp), prefer);
    // Endpoints that timed out on this lookup: held down only if another answered in time
    // (that one is slow), not when all are slow (the DP is overloaded; spreading goes on).
    const slow: string[] = [];
    const answered = (endpoint: string) => {
      let changed = picker.answered(endpoint);
      for (const s of slow) {
        picker.failed(s);
        changed = true;
      }
      if (changed) repace(dp);
      how.answeredBy?.(endpoint);
    };
    let timeouts = 0;
    // The timed-out attempts' late replies: the DP is busy with them until then.
    const lates: Promise<FromEndpoint | undefined>[] = [];
    let refused: DiscoveryError | undefined;
    for (const endpoint of order) {
      // After a refusal only endpoints that are up are asked: one held down would cost a wait.
      if (refused && !picker.isUp(endpoint)) break;
      // The registry moved the DP meanwhile: not a failure of the endpoint, just not asked.
      if (!listedNow(dp, endpoint)) continue;
      try {
        if (privately) {
          if (!privateLookups)
            throw new DiscoveryError("failed_precondition", "this resolver does not make private lookups");
          const outcome = await privateLookups.lookup(dp, endpoint, csi, rateContext, how.predates);
          answered(endpoint);
          return outcome;
        }
        const answer = await onStream(dp, endpoint, csi, rateContext);
        answered(endpoint);
        return outcomeFromAnswer(dp.id, answer);
      } catch (err) {
        const e = err instanceof DiscoveryError ? err : new DiscoveryError("upstream_failed", String(err));
        if (timedOut(e)) {
          slow.push(endpoint);
          const late = unansweredAtDp(e);
          if (late) lates.push(late.then((reply) => reply && { endpoint, reply }));
        } else if (e.code === "upstream_unavailable") {
          picker.failed(endpoint);
          repace(dp);
        } else if (e.remoteStatus !== undefined && picker.answered(endpoint)) repace(dp);
        if (e.remoteStatus === status.RESOURCE_EXHAUSTED) {
          // An endpoint's own capacity is its own: the next endpoint may have room, and this one
          // is left alone until its retry-after (a minute at most). Anything else (the caller's
          // budget, which is one at the DP whichever endpoint; a reason we do not know; a private
          // lookup, whose evaluation may already be charged) is final.
          const refusal = dpRefusal(dp.id, e);
          const reason = refusal.details?.reason ?? "";
          if (privately || !ENDPOINT_REASONS.has(reason)) throw refusal;
          picker.holdFor(endpoint, refusal.details?.retryAfterMs ?? 0);
          repace(dp);
          refused = refusal;
          continue;
        }
        // A private lookup's own findings (no private lookups there, a proof or bucket that
        // does not verify) are the caller's to read as they are.
        if (privately && e.remoteStatus === undefined && e.code !== "upstream_unavailable") throw e;
        // Details (addresses, transport errors) go to our log; the MSP learns which DP failed. A
        // DP's own text may quote the CSI, so of a DP's refusal only its status is logged.
        const what = e.remoteStatus === undefined ? e.message : statusName(e.remoteStatus);
        log.warn({ dp: dp.id, endpoint, err: what }, "dp lookup failed");
        if (timedOut(e)) timeouts++;
        if (e.code !== "upstream_unavailable") {
          throw new DiscoveryError(
            "upstream_failed",
            `DP "${dp.id}" refused the lookup: ${e.remoteStatus === undefined ? e.code : statusName(e.remoteStatus)}`,
            {
              cause: e,
            },
          );
        }
      }
    }
    if (refused) throw refused;
    const failed = new DiscoveryError(
      "upstream_unavailable",
      `DP "${dp.id}" did not answer at any of its ${order.length} endpoint(s)`,
      // Every endpoint timed out: the DP is there but overloaded.
      timeouts === order.length ? { details: { reason: UPSTREAM_TIMEOUT } } : undefined,
    );
    // It is busy with those lookups until it replies late, and a late answer is still one.
    if (lates.length > 0) {
      lateOf.set(failed, {
        first: firstReply(lates),
        done: Promise.all(lates).then((replies) => replies.some((r) => r !== undefined)),
      });
    }
    throw failed;
  };

  return {
    channel: channelFor,
    async lookup(dp, csi, how = {}) {
      // A lookup begun before its DP left the registry (no gate or picker is made for it again).
      if (o.registry && !o.registry.dp(dp.id)) throw leftRegistry(dp.id);
      const gate = gateFor(dp.id);
      const t0 = performance.now();
      let failed = true;
      let observed = true;
      const { waitUntilMs, abandoned } = how;
      const send = () =>
        closed
          ? Promise.reject(new DiscoveryError("upstream_unavailable", "the resolver is shutting down"))
          : abandoned?.()
            ? Promise.reject(callerGone(false))
            : attempt(dp, csi, how);
      try {
        const answer = await gate.run(send, timedOut, waitUntilMs, abandoned, how.privately !== true);
        failed = false;
        return answer;
      } catch (err) {
        // A lookup dropped for nobody, or failed by the gate unsent, is not a lookup at the DP:
        // neither a failure nor a latency.
        if (isCallerGone(err) || refusedUnsent(err)) observed = false;
        // After a timeout the DP's late reply is waited for, and the lookup asked again only
        // when none came (its stream ended, or four deadlines passed): the DP answers a stream
        // in order, so what is sent again would be answered after the original anyway. Each
        // attempt needs a whole deadline within its caller's bound, three attempts at most; the
        // window has shrunk and the attempts that timed out keep their places in it until the DP
        // is done with them, so an overloaded DP is asked more slowly instead of the lookup failing.
        const timeForOne = () => waitUntilMs === undefined || waitUntilMs - now() > o.attemptTimeoutMs;
        const retryUntil = waitUntilMs === undefined ? undefined : waitUntilMs - o.attemptTimeoutMs;
        let last = err;
        for (let attempts = 1; timedOut(last) && gate.shrank && attempts < MAX_ATTEMPTS; attempts++) {
          const late = await lateReply(last, waitUntilMs);
          if (late && "answer" in late.reply) {
            how.answeredBy?.(late.endpoint);
            failed = false;
            return outcomeFromAnswer(dp.id, late.reply.answer);
          }
          if (!timeForOne()) break;
          // A retry the gate does not send (no time left, its queue full) fails with the last timeout.
          let resent = false;
          const resend = () => {
            resent = true;
            return send();
          };
          try {
            const answer = await gate.run(resend, timedOut, retryUntil, abandoned, false);
            failed = false;
            return answer;
          } catch (e) {
            if (!resent) throw last;
            last = e;
          }
        }
        throw last;
      } finally {
        if (observed) o.observe?.(dp.id, (performance.now() - t0) / 1000, failed);
      }
    },
    // A DP with no gate yet has answered nothing here and has no queue: nothing to judge by.
    refusalNow: (dpId, waitUntilMs) => gates.get(dpId)?.refusalNow(waitUntilMs),
    windows: () => [...gates].map(([dpId, g]) => ({ dpId, ...g.state, refused: g.refused })),
    retain(dps) {
      const keep = new Set(dps.flatMap((dp) => dp.endpoints.map((e) => muxKey(dp, e))));
      for (const [k, mux] of muxes) {
        if (keep.has(k)) continue;
        mux.retire();
        muxes.delete(k);
        retiring.add(mux);
        void mux.ended.then(() => retiring.delete(mux));
      }
      const ids = new Set(dps.map((dp) => dp.id));
      for (const id of [...pickers.keys(), ...listed.keys()]) {
        if (ids.has(id)) continue;
        pickers.delete(id);
        listed.delete(id);
      }
      for (const [id, g] of gates)
        if (!ids.has(id) && g.state.inflight === 0 && g.state.queued === 0) gates.delete(id);
      return channels.retain((address, identity) => keep.has(endpointKey(identity, address)));
    },
    close() {
      closed = true;
      for (const m of [...muxes.values(), ...retiring]) m.close();
      muxes.clear();
      retiring.clear();
      channels.close();
    },
  };
}
