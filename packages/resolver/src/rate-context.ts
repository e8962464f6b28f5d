// Pseudonymous rate-limit contexts (P2): what a resolver forwards to a DP instead of the
// querying MSP's identity, so the DP can hold one MSP behind a shared resolver to its limits
// without learning which MSP it is. A context is the first 16 bytes of HMAC-SHA256 under a
// key made at start and kept in memory only, over the UTC day, the DP and the caller's
// identity: the same all day for one caller at one DP, unrelated across days, across DPs (two
// DPs comparing notes cannot join one MSP's traffic) and across resolvers, and irreversible
// without the key (identities are few, so an unkeyed hash would not hide them). With a data
// folder the key is kept there (`rate-context.key`, 0600), so a restart keeps each caller's
// contexts: a crash loop would otherwise mint a new set at every start (fresh budgets at the
// DPs) and use up the contexts a DP allows one resolver a day. Without one it lasts the process.
import { createHmac, randomBytes } from "node:crypto";

const DAY_MS = 86_400_000;
/** Contexts remembered for the current day (callers are few; the bound is for safety). */
const MAX_CACHED = 100_000;

/** The contexts of one resolver process. */
export interface RateContexts {
  /** The context to forward to DP `dpId` for `identity`'s lookups at `nowMs`. */
  of(identity: string, dpId: string, nowMs: number): Uint8Array;
}

export const RATE_CONTEXT_KEY_BYTES = 32;

/** Creates the contexts under `key` (a new random one by default). */
export function createRateContexts(key: Uint8Array = randomBytes(RATE_CONTEXT_KEY_BYTES)): RateContexts {
  let day = -1;
  const cached = new Map<string, Uint8Array>();
  return {
    of(identity, dpId, nowMs) {
      const today = Math.floor(nowMs / DAY_MS);
      if (today !== day) {
        day = today;
        cached.clear();
      }
      const k = `${today}\0${dpId}\0${identity}`;
      let c = cached.get(k);
      if (!c) {
        c = new Uint8Array(
          createHmac("sha256", key).update(`MIMI-RATE-CONTEXT-v2\0${k}`).digest().subarray(0, 16),
        );
        if (cached.size >= MAX_CACHED) cached.clear();
        cached.set(k, c);
      }
      return c;
    },
  };
}
