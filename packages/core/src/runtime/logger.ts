// Logger factory and the privacy helper for identifiers in logs.
import { createHmac, randomBytes } from "node:crypto";
import { type LevelWithSilent, type Logger, pino } from "pino";

export type { Logger } from "pino";

/** Log levels accepted in configuration and LOG_LEVEL. */
export const LOG_LEVELS: readonly LevelWithSilent[] = [
  "fatal",
  "error",
  "warn",
  "info",
  "debug",
  "trace",
  "silent",
];

/** Child loggers by root logger, so that setLogLevel reaches the components' loggers too. */
const childrenOf = new WeakMap<Logger, WeakRef<Logger>[]>();
/** Past this many tracked children, the ones collected are dropped from the list. */
const PRUNE_CHILDREN_AT = 1_024;

/** Creates a process's root logger, writing JSON lines to stdout; `pid`, when given, goes on every line. */
export function createLogger(options: { name: string; level: string; pid?: number }): Logger {
  if (!(LOG_LEVELS as readonly string[]).includes(options.level)) {
    throw new Error(`unknown log level "${options.level}"; use one of ${LOG_LEVELS.join(", ")}`);
  }
  let children: WeakRef<Logger>[] = [];
  const root = pino({
    name: options.name,
    level: options.level,
    base: { name: options.name, ...(options.pid !== undefined && { pid: options.pid }) },
    // pino gives each child its own level at creation; keep them, so a new level reaches all.
    onChild: (child) => {
      children.push(new WeakRef(child));
      if (children.length > PRUNE_CHILDREN_AT) children = children.filter((c) => c.deref());
      childrenOf.set(root, children);
    },
  });
  childrenOf.set(root, children);
  return root;
}

/**
 * Sets the level of a root logger made by createLogger and of every child made from it (the
 * components' loggers), as a reload does.
 */
export function setLogLevel(root: Logger, level: string): void {
  if (!(LOG_LEVELS as readonly string[]).includes(level)) {
    throw new Error(`unknown log level "${level}"; use one of ${LOG_LEVELS.join(", ")}`);
  }
  root.level = level;
  for (const c of childrenOf.get(root) ?? []) {
    const child = c.deref();
    if (child) child.level = level;
  }
}

/**
 * Logs the `listening` line whatever the configured level: supervisors and the test
 * harness read the bound port from it, so it must appear even at level warn or silent.
 */
export function logListening(log: Logger, fields: Record<string, unknown>): void {
  log.child({}, { level: "info" }).info(fields, "listening");
}

/**
 * Keys the CSI hashes in logs. It lives only in this process's memory: a hash of a phone
 * number without a key is reversible by hashing the whole number space, so logs must not
 * carry one; with the key unknown outside the process they cannot be reversed.
 */
const LOG_HASH_KEY = randomBytes(32);

/**
 * A short hash of a CSI for logs, stable for the life of the process, so an operator can
 * follow one CSI through the lines of a run. Logs never hold raw phone numbers or email
 * addresses above debug level, nor a hash anyone could reverse (see LOG_HASH_KEY).
 */
export function csiHash(csi: string): string {
  return createHmac("sha256", LOG_HASH_KEY).update(csi).digest("hex").slice(0, 12);
}
