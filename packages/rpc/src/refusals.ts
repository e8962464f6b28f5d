// Callers refused for who they are, logged where an operator looks. A certificate that calls a
// service it may not use (an admin service without being an admin, another role's methods) is a
// misconfiguration or a probe, and said at debug it went unseen. At warn, once a minute for each
// identity and service, with how many more were refused meanwhile, so a client retrying in a
// loop cannot flood the log.
import { DiscoveryError, setNewest } from "@mimi/core";
import type { Logger } from "pino";

/** How often one identity's refusals at one service are said. */
const WINDOW_MS = 60_000;
/** The identity and service pairs remembered (the oldest forgotten first). */
const MAX_PAIRS = 1_000;

/** Logs `err` when it refused `identity()` a call of `path`; anything else is left alone. */
export type RefusalLog = (identity: () => string, path: string, err: unknown) => void;

export function refusalLog(log: Logger, now: () => number = () => performance.now()): RefusalLog {
  const said = new Map<string, { at: number; more: number }>();
  return (identity, path, err) => {
    if (!(err instanceof DiscoveryError) || err.code !== "permission_denied") return;
    const name = identity();
    const service = path.split("/")[1] ?? path;
    const key = `${name}\n${service}`;
    const t = now();
    const last = said.get(key);
    if (last && t - last.at < WINDOW_MS) {
      last.more++;
      return;
    }
    setNewest(said, key, { at: t, more: 0 }, MAX_PAIRS);
    log.warn(
      { identity: name, method: path, reason: err.message, ...(last?.more && { refusedSince: last.more }) },
      "call refused for its caller's identity",
    );
  };
}
