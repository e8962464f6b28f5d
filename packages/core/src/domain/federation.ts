// Federation (D4, R10-R12): which DPs a query asks, and how their answers merge into one.
// The merge is a pure function of the DPs' sealed answers and the query's parameters, so an
// MSP can recompute it from what a resolver sends (each DP's seal travels with the merged
// answer) and check that nothing was dropped, added or re-ranked on the way.
import {
  filterMappings,
  type LookupOutcome,
  type LookupParams,
  type Mapping,
  type OutcomeKind,
} from "./answer.js";
import { type DiscoveryError, invalidArgument } from "./errors.js";
import { type Delegation, type FederationMode, LOCAL_POLICY, type RegistryView } from "./registry.js";

/** R10's federation parameters of one query. */
export interface FederationQuery {
  /** Undefined: the authoritative DP's published default. */
  readonly mode?: FederationMode;
  /** "preferred": the authoritative DP's preferred list (all when it names none). */
  readonly dps: "preferred" | "listed" | "all";
  /** For "listed": the federated DPs to ask. */
  readonly dpIds: readonly string[];
  /** Ask every selected DP, whatever its CSI filter says. */
  readonly ignoreFilters?: boolean;
}

/** A query that says nothing about federation. */
export const DEFAULT_FEDERATION: FederationQuery = Object.freeze({
  dps: "preferred",
  dpIds: Object.freeze([]),
});

/** Which DPs a federated query asks, in order, and which it leaves out for the fan-out limit. */
export interface FederationPlan {
  readonly delegation: Delegation;
  /** Federated DPs to ask, after the authoritative DP (`delegation.dpId`), in order. */
  readonly federated: readonly string[];
  /** Federated DPs the query selected but the fan-out limit left out (the answer is partial). */
  readonly overLimit: readonly string[];
}

/**
 * The DPs a query for a CSI in `delegation`'s range asks, or undefined when it does not federate
 * (it asks the authoritative DP alone, as a local query). A listed DP that is not a federated DP
 * of the range fails INVALID_ARGUMENT naming it; `maxFederated` bounds the fan-out.
 */
export function planFederation(
  registry: Pick<RegistryView, "dp">,
  delegation: Delegation,
  q: FederationQuery,
  maxFederated: number,
): FederationPlan | undefined {
  const policy = registry.dp(delegation.dpId)?.federation ?? LOCAL_POLICY;
  const mode = q.mode ?? policy.defaultMode;
  const range = delegation.federatedDpIds ?? [];
  if (q.dps === "listed") {
    for (const id of q.dpIds) {
      if (id !== delegation.dpId && !range.includes(id)) {
        const problem = `DP "${id}" is not a federated DP of ${delegation.id} (its federated DPs: ${range.length > 0 ? range.join(", ") : "none"})`;
        throw badField(problem, "UNKNOWN_DP");
      }
    }
    if (q.dpIds.length > maxFederated) {
      const problem = `federation.dp_ids names ${q.dpIds.length} DPs; this resolver asks at most ${maxFederated} per query`;
      throw badField(problem, "FANOUT_LIMIT");
    }
  }
  if (mode !== "federate") return undefined;
  let selected: readonly string[];
  if (q.dps === "listed") selected = q.dpIds.filter((id) => id !== delegation.dpId);
  else if (q.dps === "all" || policy.preferredDpIds.length === 0) selected = range;
  // A preferred DP no longer federated for the range is not asked (the registry lists the range's DPs).
  else selected = policy.preferredDpIds.filter((id) => range.includes(id));
  const unique = [...new Set(selected)];
  return {
    delegation,
    federated: unique.slice(0, maxFederated),
    overLimit: unique.slice(maxFederated),
  };
}

/** INVALID_ARGUMENT for federation.dp_ids, with the field and a reason a client can act on. */
function badField(problem: string, reason: string): DiscoveryError {
  return invalidArgument(problem, "federation.dp_ids", reason);
}

/**
 * Every DP a query for a CSI in `delegation`'s range selects, in the order a resolver lists them
 * (the authoritative DP first), whatever its fan-out limit; undefined when the query is local.
 * What an MSP checks a federated answer's sources against.
 */
export function selectedDps(
  registry: Pick<RegistryView, "dp">,
  delegation: Delegation,
  q: FederationQuery,
): readonly string[] | undefined {
  const plan = planFederation(registry, delegation, q, Number.POSITIVE_INFINITY);
  return plan && [delegation.dpId, ...plan.federated];
}

/** Whether DP `dpId` may answer for a CSI in `delegation`'s range: its DP or a federated one. */
export function servesRange(delegation: Delegation, dpId: string): boolean {
  return delegation.dpId === dpId || (delegation.federatedDpIds ?? []).includes(dpId);
}

/** One DP's verified answer in a federated query, in the order the DPs are listed. */
export interface FederatedPart {
  readonly dpId: string;
  readonly outcome: LookupOutcome;
}

/** A mapping of a merged answer: which DP holds it. */
export interface FederatedMapping extends Mapping {
  readonly dpId: string;
}

/** The merge of several DPs' answers (the rules are in resolver.proto, DpSource). */
export interface MergedAnswer {
  readonly kind: OutcomeKind;
  readonly mappings: readonly FederatedMapping[];
  /** The shortest TTL of the parts. */
  readonly ttlSeconds: number;
}

/**
 * Merges the answers of the DPs that answered, under the query's parameters: OPTED_OUT if any
 * of them is; otherwise each DP's mappings in DP order, filtered by MSP and tag, with one
 * default: of the mappings a DP gave as its default, the one created last (GLADOS's timestamp
 * rule; the earlier DP on a tie), first in the answer. Under the "Default" tag that leaves each
 * DP's default, the answer's own first: every candidate is shown, so the choice can be checked.
 */
export function mergeFederated(parts: readonly FederatedPart[], params: LookupParams): MergedAnswer {
  const ttlSeconds = parts.reduce((t, p) => Math.min(t, p.outcome.ttlSeconds), Number.POSITIVE_INFINITY);
  const ttl = Number.isFinite(ttlSeconds) ? ttlSeconds : 0;
  if (parts.some((p) => p.outcome.kind === "opted_out"))
    return { kind: "opted_out", mappings: [], ttlSeconds: ttl };
  const all: FederatedMapping[] = [];
  for (const p of parts) {
    if (p.outcome.kind !== "answer") continue;
    for (const m of filterMappings(p.outcome.mappings, params)) all.push({ ...m, dpId: p.dpId });
  }
  let winner = -1;
  for (const [i, m] of all.entries()) {
    if (m.isDefault && (winner < 0 || m.createdAtMs > (all[winner] as Mapping).createdAtMs)) winner = i;
  }
  const ordered =
    winner < 0 ? all : [all[winner] as FederatedMapping, ...all.filter((_m, i) => i !== winner)];
  const mappings = ordered.map((m, i) =>
    m.isDefault === (i === 0 && winner >= 0) ? m : { ...m, isDefault: i === 0 && winner >= 0 },
  );
  return { kind: mappings.length > 0 ? "answer" : "not_found", mappings, ttlSeconds: ttl };
}
