// gRPC binding of the resolver: parse each request once (INVALID_ARGUMENT here), resolve,
// shape the answer for the caller's parameters. The only resolver file that serves gRPC.
import { performance } from "node:perf_hooks";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import type * as grpc from "@grpc/grpc-js";
import {
  answerToProto,
  type Csi,
  createRateLimiter,
  csiHash,
  DEFAULT_PARAMS,
  type Detection,
  DiscoveryError,
  type DpInfo,
  encodeAnswerWithoutTtl,
  encodeResolveResponse,
  encodeResolveStreamItem,
  federatedResponseToProto,
  federationFromProto,
  invalidArgument,
  type Logger,
  paramsFromProto,
  parseCsi,
  parseRequestCsi,
  pb,
  planFederation,
  readVarintField,
  sleepUnlessAborted,
} from "@mimi/core";
import { addService, type CallContext, itemError } from "@mimi/rpc";
import { bindResolverAdmin } from "./admin-server.js";
import {
  answerBound,
  answerInTime,
  chargedAnyway,
  clocksNow,
  overloadRefusal,
  waitBound,
} from "./call-bounds.js";
import { explanation, withExplanation } from "./explain.js";
import { createFastPaths, STREAM_REQUEST_ID } from "./fast-paths.js";
import { resolveFederated } from "./federation.js";
import { createHeldRefusals } from "./held-refusals.js";
import type { ExplainTrace } from "./lookup-context.js";
import { earnedRefusal, isCallerRefusal } from "./refusals.js";
import type { ResolverServerOptions } from "./server-options.js";
import type { MissCaller, Resolution, ResolverService } from "./service.js";

/** The method whose items' errors are logged under its name. */
const RESOLVE_STREAM = `/${pb.ResolverService.typeName}/ResolveStream`;

/** Items of one ResolveStream worked on at once; the stream is not read further until one completes. */
const MAX_STREAM_INFLIGHT = 1_024;

/** Refusals one caller gets at full speed each second; past it, its calls are slowed. */
const REFUSALS_PER_SECOND = 100;
/** The longest one refusal holds a caller back. */
const MAX_REFUSAL_PAUSE_MS = 1_000;
/** Callers whose refusals are counted at once (an evicted one starts afresh). */
const MAX_REFUSING_KEYS = 100_000;

/**
 * Registers ResolverService (any caller with a certificate from the CA may resolve) and
 * ResolverAdminService (admins only) on `server`.
 */
export function bindResolverServer(
  server: grpc.Server,
  service: ResolverService,
  opts: ResolverServerOptions,
): void {
  const { log, registry, enumeration } = opts;
  const indexOf = (mspId: string) => registry.msp(mspId)?.index;

  // A response reuses the encoding of the cache entry it came from or was made into (redone
  // there when the registry's MSP indexes change); only an answer that raced a delegation move,
  // which has no entry, is encoded for the one response.
  const encodedAnswer = (r: Resolution) =>
    r.answer ? r.answer.encoded(registry.serial, indexOf) : encodeAnswerWithoutTtl(r.outcome, indexOf);

  // A caller that ignores retry-after would keep the resolver busy refusing it (a refusal costs
  // about what a cache hit does: the message round trip). Past REFUSALS_PER_SECOND refusals a
  // second, its calls are slowed instead: a refused unary call is answered only after a pause,
  // and a ResolveStream reads no further request until the pause is over (HTTP/2 flow control
  // then holds the sender).
  const held = createHeldRefusals();
  const refusals = createRateLimiter({ limit: REFUSALS_PER_SECOND, windowMs: 1_000 }, MAX_REFUSING_KEYS);
  const fast = createFastPaths(service, { ...opts, held, encodedAnswer });
  const refusalPause = (identity: string, answerBy?: number): number => {
    const over = refusals.take(identity, opts.now());
    const pause = over ? Math.min(over.retryAfterMs, MAX_REFUSAL_PAUSE_MS) : 0;
    // Over before the caller's deadline: it hears the refusal instead of cancelling the call
    // (each cancellation is a stream reset, of which a connection takes only so many).
    return answerBy === undefined ? pause : Math.min(pause, Math.max(0, answerBy - performance.now()));
  };

  /**
   * Resolves one CSI for the caller under its parameters: at the CSI's DP, or federated (R10,
   * federation.ts), one lookup (lookupOne) at each DP asked.
   */
  const resolveOne = async (
    req: Pick<pb.ResolveRequest, "csi" | "options" | "federation" | "privacy">,
    ctx: CallContext,
    onRefused?: (err: DiscoveryError) => void,
    trace?: ExplainTrace,
  ) => {
    const csi = parseRequestCsi(req.csi);
    const params = paramsFromProto(req.options);
    const privateAt = privacyOf(req.privacy, opts.privateByDefault);
    // A caller that asks PLAIN gets what a plain lookup gives: a DP's sealed denial, never a
    // private lookup's NOT_FOUND (the resolver's word alone), even from the cache.
    const sealedDenial = req.privacy === pb.PrivacyMode.PLAIN;
    // A query federates when it asks to, or when the range's DP publishes that as its default (R11).
    const query = federationFromProto(req.federation);
    const delegation = registry.find(csi.key);
    const plan = delegation && planFederation(registry, delegation, query, opts.maxFederatedDps);
    if (plan) {
      const ask = (dp?: DpInfo) => lookupOne(csi, ctx, { privateAt, sealedDenial, onRefused, dp });
      const f = await resolveFederated(
        plan,
        params,
        registry,
        ask,
        (dpId) => query.ignoreFilters === true || opts.mayHold(dpId, csi.uri),
        opts.federationCounts,
      );
      return federatedResponseToProto(f.merged, f.sources, params, indexOf, f.ttlSeconds, f.stale);
    }
    const r = await lookupOne(csi, ctx, { privateAt, sealedDenial, onRefused, trace });
    if (params === DEFAULT_PARAMS) {
      return encodeResolveResponse<pb.ResolveResponse>(encodedAnswer(r), r.ttlSeconds, r.stale);
    }
    return { answer: answerToProto(r.outcome, params, indexOf, r.ttlSeconds), stale: r.stale };
  };

  /**
   * One lookup for the caller: of the CSI's DP, or with `dp` of that federated DP. A stream
   * passes `onRefused`, which hears each RESOURCE_EXHAUSTED failure and holds the stream (it
   * reads at most one more request before the hold applies); a unary call refused too often
   * waits here before it hears so.
   */
  const lookupOne = async (
    csi: Csi,
    ctx: CallContext,
    how: {
      privateAt: (dpId: string) => boolean;
      sealedDenial?: boolean;
      onRefused?: (err: DiscoveryError) => void;
      trace?: ExplainTrace;
      dp?: DpInfo;
    },
  ): Promise<Resolution> => {
    const { privateAt, onRefused, trace, dp } = how;
    // Everything about the caller happens on a miss only: a cache hit costs nobody a lookup and
    // reads nothing of the call. The caller's identity (read once per connection, core
    // rpc/grpc.ts) is charged the miss unless an enforced enumeration detection or a DP's
    // refusal holds it; a lookup that got no answer (DP down, resolver not ready) is given back.
    let charged: { identity: string; dpId: string; cost: number } | undefined;
    // When a miss is answered, whatever its DP has done: set by charge() if the caller has a deadline.
    let answerBy: number | undefined;
    const charge = (): MissCaller => {
      // Overload first: it is nobody's doing, so nobody is charged or held for it.
      if (!opts.loop.admit()) throw overloadRefusal(opts.loop.delayMs);
      const identity = ctx.peer.name;
      const now = opts.now();
      const block = enumeration.blocked(identity, csi.uri, now);
      if (block) throw enumerationRefusal(block, now);
      const dpId = dp?.id ?? registry.find(csi.key)?.dpId ?? "";
      const dpRefused = held.check(identity, dpId, csi.uri, now);
      if (dpRefused) throw dpRefused;
      // A federated DP's part of a fanned-out query draws harder on the budgets (R12).
      const cost = dp ? opts.quotas.extraDpCost() : 1;
      opts.quotas.charge(identity, dpId, now, cost);
      charged = { identity, dpId, cost };
      const clocks = clocksNow();
      const waitUntilMs = waitBound(ctx.deadlineMs, clocks);
      answerBy = answerBound(ctx.deadlineMs, clocks);
      // The DP gets a pseudonym of the caller, never its identity (P2), made for the DP asked.
      return {
        key: identity,
        contextFor: (dp) => opts.rateContexts.of(identity, dp, now),
        ...(waitUntilMs !== undefined && { waitUntilMs }),
        gone: () => ctx.signal.aborted || Date.now() >= ctx.deadlineMs,
        privateAt,
        ...(how.sealedDenial && { sealedDenial: true }),
      };
    };
    // Only what a DP answered counts towards enumeration (cached answers are free to fake),
    // counted when it comes, whether or not the caller was answered before it.
    const observed = (r: Resolution) => {
      if (r.source !== "upstream") return r;
      const notFound = r.outcome.kind === "not_found";
      const identity = charged?.identity ?? ctx.peer.name;
      for (const d of enumeration.observe(identity, csi.uri, notFound, opts.now()))
        logDetection(log, d, enumeration.policy.mode);
      return r;
    };
    let r: Resolution;
    try {
      const sealedDenial = how.sealedDenial === true;
      const resolving = dp
        ? service.part(dp, csi, charge, sealedDenial)
        : service.resolve(csi, charge, trace, sealedDenial);
      // charge() ran (synchronously) only on a miss: a hit has nothing to observe.
      const pending = charged ? resolving.then(observed) : resolving;
      r = await (answerBy === undefined ? pending : answerInTime(pending, answerBy - performance.now()));
    } catch (err) {
      if (charged) {
        // A DP refusing the caller's own context is the caller's doing: it stays charged, and
        // its next lookups there are refused here until the DP's retry-after. So does a lookup
        // the DP did, or one asked with too short a deadline; others are given back.
        const { identity, dpId } = charged;
        if (isCallerRefusal(err)) held.hold(identity, dpId, csi.uri, err, opts.now());
        else if (!chargedAnyway(err)) opts.quotas.refund(identity, dpId, opts.now(), charged.cost);
      }
      // Capacity (the resolver's or a DP's) is not the caller's doing: no pause for it.
      if (earnedRefusal(err)) {
        if (onRefused) onRefused(err);
        else {
          const pause = refusalPause(ctx.peerName, answerBy ?? answerBound(ctx.deadlineMs, clocksNow()));
          if (pause > 0) await sleepUnlessAborted(pause, ctx.signal);
        }
      }
      throw err;
    }
    if (trace) Object.assign(trace, { outcome: r.outcome, ttlSeconds: r.ttlSeconds });
    if (log.isLevelEnabled("debug")) {
      log.debug(
        { peer: ctx.peerName, csi: csiHash(csi.uri), source: r.source, outcome: r.outcome.kind },
        "resolve",
      );
    }
    return r;
  };

  /** Resolve with `explain`: the same lookup, traced, and the explanation in the answer or the error. */
  const explained = async (req: pb.ResolveRequest, ctx: CallContext): Promise<pb.ResolveResponse> => {
    // Cache state tells whether someone asked for the CSI lately (DNS's cache snooping), so
    // only the resolver's operators may see it.
    if (!ctx.peer.roles.has("admin") || !opts.admins.has(ctx.peer.name)) {
      throw new DiscoveryError(
        "permission_denied",
        `explain is for this resolver's admins (a certificate with the admin role, listed in admins); identity "${ctx.peer.name}" is not one (the cache state it shows would tell a caller what others looked up)`,
      );
    }
    const trace: ExplainTrace = {};
    const t0 = performance.now();
    const explain = (failure?: string) => {
      const csi = parseCsi(req.csi);
      return create(pb.ExplanationSchema, {
        ...explanation(registry, opts.now(), {
          csi,
          trace,
          ...(trace.outcome && { outcome: trace.outcome }),
          ...(trace.ttlSeconds !== undefined && { ttlSeconds: trace.ttlSeconds }),
          totalMs: performance.now() - t0,
          ...(failure !== undefined && { failure }),
        }),
      });
    };
    try {
      const res = await resolveOne(req, ctx, undefined, trace);
      const message = res instanceof Uint8Array ? fromBinary(pb.ResolveResponseSchema, res) : res;
      return { ...message, explanation: explain() } as pb.ResolveResponse;
    } catch (err) {
      // A CSI that does not parse has nothing to explain: its INVALID_ARGUMENT says it all.
      if (err instanceof DiscoveryError && err.code === "invalid_argument") throw err;
      // The status message says why; the explanation says where (its failure only when it adds to it).
      throw withExplanation(err, toBinary(pb.ExplanationSchema, explain("")));
    }
  };

  addService(
    server,
    pb.ResolverService,
    {
      resolve: (req, ctx) => (req.explain ? explained(req, ctx) : resolveOne(req, ctx)),
      async resolveStream(reqs, ctx, send) {
        let inflight = 0;
        let slotFree: (() => void) | undefined;
        let allDone: (() => void) | undefined;
        let pauseUntil = 0;
        const onRefused = (_err: DiscoveryError) => {
          const pause = refusalPause(ctx.peerName);
          if (pause > 0) pauseUntil = Math.max(pauseUntil, performance.now() + pause);
        };
        for await (const req of reqs) {
          inflight++;
          void resolveOne(req, ctx, onRefused)
            .then(
              (response) =>
                send(
                  response instanceof Uint8Array
                    ? encodeResolveStreamItem<pb.ResolveStreamResponse>(req.requestId, response)
                    : { requestId: req.requestId, result: { case: "response", value: response } },
                ),
              (err: unknown) =>
                send({
                  requestId: req.requestId,
                  result: { case: "error", value: itemError(err, log, ctx.method) },
                }),
            )
            // A failed send means the caller went away; the item has nobody to go to, and a
            // rejection left unhandled here would end the process.
            .catch(() => {})
            .finally(() => {
              inflight--;
              slotFree?.();
              if (inflight === 0) allDone?.();
            });
          // Refused too often: take nothing more until the pause is over (the fast path still
          // answers hits that come before the next item for this handler).
          const wait = pauseUntil - performance.now();
          if (wait > 0) await sleepUnlessAborted(wait, ctx.signal);
          if (inflight >= MAX_STREAM_INFLIGHT) {
            await new Promise<void>((resolve) => {
              slotFree = resolve;
            });
            slotFree = undefined;
          }
        }
        if (inflight > 0) {
          await new Promise<void>((resolve) => {
            allDone = resolve;
          });
        }
      },
      async getQuota(_req, ctx) {
        const dpIds = registry.allDps().map((d) => d.id);
        const q = opts.quotas.report(ctx.peer.name, dpIds, opts.now());
        return {
          identity: q.identity,
          enrolledUsers: BigInt(q.enrolledUsers),
          dps: q.dps.map((d) => ({
            dpId: d.dpId,
            dailyLimit: BigInt(d.dailyLimit),
            remaining: BigInt(d.remaining),
          })),
          perMinuteLimit: BigInt(q.perMinuteLimit),
          perMinuteRemaining: BigInt(q.perMinuteRemaining),
        };
      },
    },
    {
      log,
      fast,
      // An item that does not decode (a CSI that is not UTF-8, say) fails alone, as a bad CSI
      // does, when its request id can be read.
      itemErrors: {
        resolveStream(bytes, err) {
          const requestId = readVarintField(bytes, STREAM_REQUEST_ID);
          if (requestId === undefined) return undefined;
          return toBinary(
            pb.ResolveStreamResponseSchema,
            create(pb.ResolveStreamResponseSchema, {
              requestId,
              result: { case: "error", value: itemError(err, log, RESOLVE_STREAM) },
            }),
          );
        },
      },
    },
  );

  bindResolverAdmin(server, service, opts);
}

/** RESOURCE_EXHAUSTED for a lookup an enforced enumeration detection refuses. */
function enumerationRefusal(d: Detection, nowMs: number): DiscoveryError {
  const retryAfterMs = Math.max(0, d.blockedUntilMs - nowMs);
  return new DiscoveryError(
    "resource_exhausted",
    `"${d.subject}": its lookups in number block ${d.scope} looked like enumeration (${d.distinct} distinct numbers asked of DPs in a ` +
      `window, ${d.notFound} of ${d.answers} not found), so lookups there that need a DP are ` +
      `refused for ${Math.ceil(retryAfterMs / 1000)} s; cached answers are still served`,
    {
      details: {
        retryAfterMs,
        reason: "ENUMERATION_SUSPECTED",
        quota: [{ subject: `identity:${d.subject}`, description: `enumeration detection, scope ${d.scope}` }],
      },
    },
  );
}

/** A detection is an operator's business: logged at warn with its counts (a block, never a number). */
/** Logs one enumeration detection (never the CSIs: the subject, the number block and counts). */
export function logDetection(log: Logger, d: Detection, mode: string): void {
  log.warn(
    {
      identity: d.subject,
      scope: d.scope,
      distinct: d.distinct,
      answers: d.answers,
      notFound: d.notFound,
      mode,
      ...(d.blockedUntilMs > 0 && { blockedUntilMs: d.blockedUntilMs }),
    },
    d.blockedUntilMs > 0
      ? "enumeration suspected; lookups in the block refused"
      : "enumeration suspected (logged, not refused)",
  );
}

/** Whether a query's lookups at a DP are private: as it asks, else as the configuration says for that DP. */
function privacyOf(mode: pb.PrivacyMode, byDefault: (dpId: string) => boolean): (dpId: string) => boolean {
  if (mode === pb.PrivacyMode.PRIVATE) return () => true;
  if (mode === pb.PrivacyMode.PLAIN) return () => false;
  if (mode !== pb.PrivacyMode.UNSPECIFIED) throw invalidArgument(`unknown privacy mode ${mode}`, "privacy");
  return byDefault;
}
