// Where the registry lets a DP's store be kept (H2), checked at both ends of a Follow stream:
// the primary sends nothing to a follower the registry does not place where the follower says
// it is (checkPlacement), and a secondary neither follows nor serves while the registry places
// it outside the jurisdiction it is configured for (placementProblem).
import { DiscoveryError, jurisdictionCode, type pb } from "@mimi/core";

/** The registry's placement of the DP's endpoints, as the primary reads it. */
export interface Placement {
  /** Where the registry places endpoint `endpoint` ("": the DP), undefined when it does not list it. */
  jurisdiction: (endpoint: string) => string | undefined;
  /** Whether the registry places any of the DP's endpoints individually (endpoint_jurisdictions). */
  placesEndpoints: () => boolean;
}

/**
 * Whether the registry lets this follower hold the DP's store (H2): an endpoint it names must be
 * listed, and placed in the jurisdiction it says it is in; when the registry places any of the
 * DP's endpoints individually, a follower must name its own.
 */
export function checkPlacement(o: Placement, req: pb.FollowStart): void {
  if (req.endpoint === "" && o.placesEndpoints()) {
    throw new DiscoveryError(
      "permission_denied",
      "the registry places this DP's endpoints one by one: a follower must name its own (replication.endpoint) (H2)",
      { details: { reason: "ENDPOINT_REQUIRED" } },
    );
  }
  const published = o.jurisdiction(req.endpoint);
  if (req.endpoint !== "" && published === undefined) {
    throw new DiscoveryError(
      "permission_denied",
      `the follower names itself ${req.endpoint}, which the registry does not list among this DP's endpoints: the DP's store is copied only to endpoints the registry publishes, with their jurisdiction (H2); list it first (mimi root dp put)`,
      { details: { reason: "UNLISTED_ENDPOINT" } },
    );
  }
  if (
    req.jurisdiction !== "" &&
    (published === undefined || jurisdictionCode(req.jurisdiction) !== jurisdictionCode(published))
  ) {
    const where = req.endpoint === "" ? "this DP" : `the follower's endpoint ${req.endpoint}`;
    throw new DiscoveryError(
      "permission_denied",
      `the follower is configured for jurisdiction "${req.jurisdiction}" and the registry places ${where} in "${published ?? "none"}": its store stays in its jurisdiction (H2)`,
      { details: { reason: "JURISDICTION" } },
    );
  }
}

/**
 * Why this secondary may neither follow nor serve DP `dpId` (H2), if so: the registry places the
 * DP, or this secondary's `endpoint` when given, outside the jurisdiction it is configured for.
 */
export function placementProblem(
  dpId: string,
  jurisdiction: { readonly configured: string; readonly published: () => string | undefined } | undefined,
  endpoint: string | undefined,
): string | undefined {
  if (!jurisdiction) return undefined;
  const { configured } = jurisdiction;
  const published = jurisdiction.published();
  if (published !== undefined && jurisdictionCode(published) === jurisdictionCode(configured))
    return undefined;
  if (endpoint === undefined) {
    return `this secondary is configured for jurisdiction "${configured}" but the registry places DP "${dpId}" in "${published ?? "none"}": it neither follows nor serves it (H2)`;
  }
  if (published === undefined) {
    return `the registry does not list this secondary's endpoint ${endpoint} among DP "${dpId}"'s endpoints: it neither follows nor serves the DP until the registry publishes it, with its jurisdiction (H2)`;
  }
  return `this secondary is configured for jurisdiction "${configured}" but the registry places its endpoint ${endpoint} in "${published}": it neither follows nor serves DP "${dpId}" (H2)`;
}
