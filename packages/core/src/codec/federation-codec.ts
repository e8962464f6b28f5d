// Federation on the wire (resolver.proto): the query's FederationOptions, and a federated
// ResolveResponse (the merged answer with each DP's source) both ways.
import type { MessageInitShape } from "@bufbuild/protobuf";
import { compactBits, type LookupParams, type OutcomeKind } from "../domain/answer.js";
import { clipped, invalidArgument } from "../domain/errors.js";
import { DEFAULT_FEDERATION, type FederationQuery, type MergedAnswer } from "../domain/federation.js";
import { MAX_FEDERATED_DPS } from "../domain/registry.js";
import type { ReceivedFederatedAnswer, ReceivedSource } from "../domain/verify-federated.js";
import { FederationMode, LookupStatus } from "../gen/generated/mimi/discovery/v1/common_pb.js";
import {
  DpSource_Outcome,
  type FederationOptions,
  FederationOptions_DpSelection,
  type ResolveResponse,
  type ResolveResponseSchema,
} from "../gen/generated/mimi/discovery/v1/resolver_pb.js";
import { kindOfStatus, mappingFromProto, mappingToProto, sealPartsFromProto } from "./convert.js";

const DP_ID = /^[a-z0-9][a-z0-9.-]{0,63}$/;

/** R10's federation parameters from a request; throws INVALID_ARGUMENT naming the problem. */
export function federationFromProto(
  o: Pick<FederationOptions, "mode" | "dps" | "dpIds" | "ignoreFilters"> | undefined,
): FederationQuery {
  if (!o) return DEFAULT_FEDERATION;
  const mode =
    o.mode === FederationMode.UNSPECIFIED
      ? undefined
      : o.mode === FederationMode.LOCAL
        ? "local"
        : o.mode === FederationMode.FEDERATE
          ? "federate"
          : undefined;
  if (o.mode !== FederationMode.UNSPECIFIED && mode === undefined) {
    throw invalidArgument(`unknown federation.mode ${o.mode}`, "federation.mode");
  }
  const dps =
    o.dps === FederationOptions_DpSelection.LISTED
      ? "listed"
      : o.dps === FederationOptions_DpSelection.ALL
        ? "all"
        : o.dps === FederationOptions_DpSelection.UNSPECIFIED
          ? "preferred"
          : undefined;
  if (!dps) throw invalidArgument(`unknown federation.dps ${o.dps}`, "federation.dps");
  if (dps === "listed" && o.dpIds.length === 0) {
    throw invalidArgument("federation.dps is LISTED but federation.dp_ids names no DP", "federation.dp_ids");
  }
  if (dps !== "listed" && o.dpIds.length > 0) {
    throw invalidArgument(
      "federation.dp_ids is only read with federation.dps = DP_SELECTION_LISTED",
      "federation.dp_ids",
    );
  }
  if (o.dpIds.length > MAX_FEDERATED_DPS) {
    throw invalidArgument(`federation.dp_ids names more than ${MAX_FEDERATED_DPS} DPs`, "federation.dp_ids");
  }
  for (const id of o.dpIds) {
    if (!DP_ID.test(id)) {
      throw invalidArgument(
        `federation.dp_ids entry "${clipped(id, 64)}" is not a DP id`,
        "federation.dp_ids",
      );
    }
  }
  if (mode === undefined && dps === "preferred" && !o.ignoreFilters) return DEFAULT_FEDERATION;
  return { ...(mode && { mode }), dps, dpIds: [...o.dpIds], ...(o.ignoreFilters && { ignoreFilters: true }) };
}

/** One DP of a federated query as the resolver reports it. */
export type SourceReport = ReceivedSource & {
  readonly failure?: string;
  readonly reason?: string;
  readonly retryAfterMs?: number;
};

const STATUS: Record<OutcomeKind, LookupStatus> = {
  answer: LookupStatus.FOUND,
  not_found: LookupStatus.NOT_FOUND,
  opted_out: LookupStatus.OPTED_OUT,
};
const OUTCOME = {
  answered: DpSource_Outcome.ANSWERED,
  failed: DpSource_Outcome.FAILED,
  over_limit: DpSource_Outcome.OVER_LIMIT,
  skipped: DpSource_Outcome.SKIPPED_BY_FILTER,
} as const;

const OUTCOME_OF = new Map<DpSource_Outcome, ReceivedSource["outcome"]>(
  Object.entries(OUTCOME).map(([k, v]) => [v, k as keyof typeof OUTCOME]),
);

/** The federated ResolveResponse: the merged answer in the query's format, and every source. */
/** Whether a federated answer is partial: a DP selected failed, or was over the fan-out limit. */
export function isPartial(sources: readonly Pick<SourceReport, "outcome">[]): boolean {
  return sources.some((s) => s.outcome === "failed" || s.outcome === "over_limit");
}

export function federatedResponseToProto(
  merged: MergedAnswer,
  sources: readonly SourceReport[],
  params: LookupParams,
  indexOf: (mspId: string) => number | undefined,
  ttlSeconds: number,
  stale: boolean,
): MessageInitShape<typeof ResolveResponseSchema> {
  const partial = isPartial(sources);
  return {
    answer: {
      status: STATUS[merged.kind],
      mappings:
        params.format === "verbose"
          ? merged.mappings.map((m) => ({ ...mappingToProto(m), dpId: m.dpId }))
          : [],
      compactMspBits: compactBits(merged.mappings, indexOf),
      ttlSeconds,
      dpIds: sources.filter((s) => s.outcome === "answered").map((s) => s.dpId),
    },
    stale,
    federation: {
      partial,
      sources: sources.map((s) => ({
        dpId: s.dpId,
        authoritative: s.authoritative,
        outcome: OUTCOME[s.outcome],
        ...(s.status && { status: STATUS[s.status] }),
        ...(s.seal && { seal: { ...s.seal } }),
        ...(s.optOut && { optOut: { ...s.optOut } }),
        failure: s.failure ?? "",
        reason: s.reason ?? "",
        retryAfterMs: BigInt(Math.max(0, Math.ceil(s.retryAfterMs ?? 0))),
      })),
    },
  };
}

/** A federated response as a client verifies it (federatedAnswerProblem); undefined when it did not federate. */
export function receivedFederatedFromProto(r: ResolveResponse): ReceivedFederatedAnswer | undefined {
  if (!r.federation || !r.answer) return undefined;
  const status = kindOfStatus(r.answer.status);
  if (!status) throw invalidArgument(`the answer has an unknown status ${r.answer.status}`);
  return {
    status,
    mappings: r.answer.mappings.map((m) => ({ ...mappingFromProto(m), dpId: m.dpId })),
    compactBits: r.answer.compactMspBits,
    partial: r.federation.partial,
    sources: r.federation.sources.map((s) => {
      const parts = sealPartsFromProto({ seal: s.seal, optOut: s.optOut } as Parameters<
        typeof sealPartsFromProto
      >[0]);
      const st = kindOfStatus(s.status);
      return {
        dpId: s.dpId,
        authoritative: s.authoritative,
        outcome: OUTCOME_OF.get(s.outcome) ?? "failed",
        ...(st && { status: st }),
        ...parts,
      };
    }),
  };
}
