// What the workers of one resolver share (host cluster.ts runs them; `workers` in the config).
// Connections land on workers in turn, so a caller with several connections is served by
// several workers; without sharing, each worker would grant it a whole budget and watch only
// its own share of its lookups for enumeration.
//
// - Budgets: each worker charges its own limiters as before (the call path stays synchronous)
//   and sends the charges and refunds it made to the primary every FLUSH_MS. The primary keeps
//   a copy of every budget and sends all workers' charges to every worker once per FLUSH_MS;
//   each takes the others' charges even past the budget (rate-limit force: the caller goes into
//   debt, at most one budget per worker), so all workers together grant one budget, overspent
//   by at most what the others granted within about two flush intervals.
// - Enumeration: one detector, in the primary, judges every worker's observations (a number
//   block and a 32-bit hash each: it needs no more of the CSI), logs each detection once and
//   sends it to every worker, which refuses from its copy of the blocks.
// - A worker that starts (or restarts) gets the primary's budgets and blocks as they are.
// Batches are bounded (MAX_BATCH entries, then sent at once); everything stays in memory.
import {
  createEnumerationDetector,
  csiBlockOf,
  csiHash32,
  type Detection,
  type EnumerationDetector,
  type EnumerationPolicy,
  setNewest,
} from "@mimi/core";
import type { ClusterLink, PrimaryContext, PrimaryPart } from "@mimi/host";
import type { Logger } from "pino";
import { createQuotas, type QuotaPolicy, type QuotaState, type Quotas } from "./quotas.js";

/** How often workers and the primary send what they have gathered. */
export const FLUSH_MS = 20;
/** Entries a batch holds before it is sent early. */
const MAX_BATCH = 4_096;
const RECENT = 32;
const MAX_BLOCKS = 100_000;

/** Charges and refunds: [identity, dpId, cost, net count, the worker that made them]. */
type ChargeItem = [string, string, number, number, number];
/** Observations: [subject, number block, csiHash32, notFound]. */
type ObservationItem = [string, string, number, boolean];

type Shared =
  | { kind: "charges"; items: ChargeItem[] }
  | { kind: "observations"; items: ObservationItem[] }
  | { kind: "detections"; items: { d: Detection; by: number }[] }
  | { kind: "welcome"; budgets: QuotaState; blocks: Detection[] };

function isShared(body: unknown): body is Shared {
  const b = body as { kind?: unknown } | null;
  return typeof b === "object" && b !== null && typeof b.kind === "string";
}

/** Charges gathered by (identity, DP, fan-out, origin), their counts netted. */
function chargeBatch(send: (items: ChargeItem[]) => void) {
  const pending = new Map<string, ChargeItem>();
  const flush = () => {
    if (pending.size === 0) return;
    const items = [...pending.values()].filter((c) => c[3] !== 0);
    pending.clear();
    if (items.length > 0) send(items);
  };
  return {
    add(identity: string, dpId: string, cost: number, n: number, from: number) {
      const key = `${identity}\0${dpId}\0${cost}\0${from}`;
      const c = pending.get(key);
      if (c) c[3] += n;
      else pending.set(key, [identity, dpId, cost, n, from]);
      if (pending.size >= MAX_BATCH) flush();
    },
    flush,
  };
}

/** Applies charges another process made to `quotas`: charges as debt, refunds given back. */
function absorbAll(quotas: Quotas, items: readonly ChargeItem[], nowMs: number, skip?: number): void {
  for (const [identity, dpId, cost, n, from] of items) {
    if (from === skip) continue;
    if (n > 0) quotas.absorb(identity, dpId, nowMs, cost, n);
    else for (let i = 0; i < Math.min(-n, MAX_BATCH); i++) quotas.refund(identity, dpId, nowMs, cost);
  }
}

/** A worker's side: budgets that tell the other workers, and the enumeration detector's copy. */
export interface WorkerShare {
  readonly quotas: Quotas;
  readonly enumeration: EnumerationDetector;
  /** Sends what is pending now (tests; the timer does it every FLUSH_MS). */
  flush(): void;
  close(): void;
}

/** The budgets and the enumeration detector of a worker of a cluster. */
export function shareWithCluster(
  link: ClusterLink,
  policy: { quotas: QuotaPolicy; enumeration: EnumerationPolicy },
  now: () => number,
): WorkerShare {
  const quotas = createQuotas(policy.quotas, link.workers);
  const charges = chargeBatch((items) => link.share({ kind: "charges", items }));
  let observations: ObservationItem[] = [];
  const flush = () => {
    charges.flush();
    if (observations.length > 0) {
      link.share({ kind: "observations", items: observations });
      observations = [];
    }
  };
  const shared: Quotas = {
    ...quotas,
    charge(identity, dpId, nowMs, cost = 1) {
      quotas.charge(identity, dpId, nowMs, cost);
      charges.add(identity, dpId, cost, 1, link.worker);
    },
    refund(identity, dpId, nowMs, cost = 1) {
      quotas.refund(identity, dpId, nowMs, cost);
      charges.add(identity, dpId, cost, -1, link.worker);
    },
    get refused() {
      return quotas.refused;
    },
  };

  let current = policy.enumeration;
  const blocks = new Map<string, Detection>();
  let recent: Detection[] = [];
  const counts = { detections: 0, refused: 0 };
  const block = (d: Detection) => {
    if (d.blockedUntilMs > 0) setNewest(blocks, `${d.subject}\0${d.scope}`, d, MAX_BLOCKS);
  };
  const observeParts = (subject: string, scope: string, hash: number, notFound: boolean) => {
    if (current.mode === "off") return [];
    observations.push([subject, scope, hash, notFound]);
    if (observations.length >= MAX_BATCH) flush();
    // The primary judges and logs; a block it sets arrives as a detection.
    return [];
  };
  const enumeration: EnumerationDetector = {
    get policy() {
      return current;
    },
    setPolicy(next) {
      current = next;
    },
    observe: (subject, csi, notFound) => observeParts(subject, csiBlockOf(csi), csiHash32(csi), notFound),
    observeParts,
    blocked(subject, csi, nowMs, count = true) {
      if (current.mode !== "enforce" || blocks.size === 0) return undefined;
      const key = `${subject}\0${csiBlockOf(csi)}`;
      const b = blocks.get(key);
      if (!b) return undefined;
      if (nowMs >= b.blockedUntilMs) {
        blocks.delete(key);
        return undefined;
      }
      if (count) counts.refused++;
      return b;
    },
    activeBlocks: (nowMs) => [...blocks.values()].filter((b) => nowMs < b.blockedUntilMs),
    counts,
    recent: () => recent.slice(),
  };

  link.onShare((body) => {
    if (!isShared(body)) return;
    const t = now();
    if (body.kind === "charges") absorbAll(quotas, body.items, t, link.worker);
    else if (body.kind === "detections") {
      for (const { d, by } of body.items) {
        // Counted by the worker whose lookups tripped it, so the workers' metrics add up.
        if (by === link.worker) counts.detections++;
        recent = [d, ...recent].slice(0, RECENT);
        block(d);
      }
    } else if (body.kind === "welcome") {
      quotas.adopt(body.budgets, t);
      for (const d of body.blocks) block(d);
    }
  });
  const timer = setInterval(flush, FLUSH_MS);
  timer.unref();
  return {
    quotas: shared,
    enumeration,
    flush,
    close() {
      clearInterval(timer);
      flush();
    },
  };
}

/**
 * The primary's side: a copy of every budget (for workers that start), all workers' charges
 * sent on to every worker once per FLUSH_MS, and the one enumeration detector.
 */
export function clusterPrimary<
  C extends { quotas: QuotaPolicy; enumeration: EnumerationPolicy; workers: number },
>(
  ctx: PrimaryContext<C>,
  logDetection: (log: Logger, d: Detection, mode: string) => void,
): PrimaryPart<C> & { flush(): void } {
  const quotas = createQuotas(ctx.config.quotas, ctx.config.workers);
  const detector = createEnumerationDetector(ctx.config.enumeration);
  const charges = chargeBatch((items) => ctx.broadcast({ kind: "charges", items }));
  const timer = setInterval(charges.flush, FLUSH_MS);
  timer.unref();
  const str = (v: unknown) => typeof v === "string";
  return {
    onShare(body, from) {
      if (!isShared(body) || !("items" in body) || !Array.isArray(body.items)) return;
      const t = ctx.clock();
      if (body.kind === "charges") {
        for (const [identity, dpId, cost, n] of body.items) {
          if (!str(identity) || !str(dpId) || !Number.isInteger(cost) || !Number.isInteger(n)) continue;
          charges.add(identity, dpId, cost, n, from);
          absorbAll(quotas, [[identity, dpId, cost, n, from]], t);
        }
        return;
      }
      if (body.kind === "observations") {
        const found: { d: Detection; by: number }[] = [];
        for (const [subject, scope, hash, notFound] of body.items) {
          if (!str(subject) || !str(scope) || typeof hash !== "number") continue;
          for (const d of detector.observeParts(subject, scope, hash, notFound === true, t)) {
            logDetection(ctx.log, d, detector.policy.mode);
            found.push({ d, by: from });
          }
        }
        if (found.length > 0) ctx.broadcast({ kind: "detections", items: found });
      }
    },
    welcome: () => ({
      kind: "welcome",
      budgets: quotas.state(),
      blocks: [...detector.activeBlocks(ctx.clock())],
    }),
    reload(config) {
      quotas.setPolicy(config.quotas);
      detector.setPolicy(config.enumeration);
    },
    flush: charges.flush,
    close() {
      clearInterval(timer);
    },
  };
}
