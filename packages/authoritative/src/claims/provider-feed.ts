// Provider feeds (R16, D2, D3): an operator's reports of disconnected, reassigned and ported
// identifiers remove the mappings each makes outdated, in one transaction per message.
import { DiscoveryError, invalidArgument, parseRequestCsi } from "@mimi/core";
import type { ClaimsContext } from "./context.js";
import { removeRows, settleDefault } from "./effects.js";
import { MAX_CLOCK_SKEW_MS } from "./input.js";
import { eventClearsOptOut, outdatedBy } from "./rules.js";
import type { FeedEntry } from "./types.js";

/** Applies one message's entries; returns the mappings removed. */
export function ingestFeed(ctx: ClaimsContext, entries: readonly FeedEntry[]): number {
  const { store } = ctx;
  const checked = entries.map((e, i) => {
    try {
      if (!Number.isSafeInteger(e.effectiveAtMs) || e.effectiveAtMs <= 0) {
        throw invalidArgument("effective_at_ms must be a time in ms since 1970", "effective_at_ms");
      }
      // A scheduled event must not remove today's mappings; feed it once it has happened.
      if (e.effectiveAtMs > ctx.clock() + MAX_CLOCK_SKEW_MS) {
        throw invalidArgument(
          "effective_at_ms lies in the future; send the entry once the event has happened",
          "effective_at_ms",
        );
      }
      if (e.event === "ported" && e.donorMspId.length > 128)
        throw invalidArgument("donor_msp_id is too long", "donor_msp_id");
      return { e, csi: ctx.requireDelegated(parseRequestCsi(e.csi)) };
    } catch (err) {
      if (!(err instanceof DiscoveryError)) throw err;
      // The entry's fields, named from the request (entries[i].csi).
      const d = err.details;
      const fields = d?.fields?.map((f) => ({
        field: `entries[${i}].${f.field}`,
        description: f.description,
      }));
      throw new DiscoveryError(err.code, `entry ${i}: ${err.message}`, {
        ...(d && { details: { ...d, ...(fields && { fields }) } }),
      });
    }
  });
  return ctx.tx(() => {
    let removed = 0;
    for (const { e, csi } of checked) {
      const rows = outdatedBy(store.mappings(csi.uri), e);
      const date = new Date(e.effectiveAtMs).toISOString().slice(0, 10);
      const reason =
        e.event === "ported"
          ? `the number was ported away from this operator on ${date}`
          : `the identifier's provider reports it ${e.event} on ${date}`;
      removeRows(ctx, rows, reason);
      removed += rows.length;
      if (eventClearsOptOut(e, store.optedOutAt(csi.uri))) store.clearOptOut(csi.uri);
      settleDefault(ctx, csi.uri);
    }
    return removed;
  });
}
