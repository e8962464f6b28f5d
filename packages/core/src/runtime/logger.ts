// Logger factory and the privacy helper for identifiers in logs.
import { createHash } from "node:crypto";
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

/** Creates a process's root logger, writing JSON lines to stdout; `pid`, when given, goes on every line. */
export function createLogger(options: { name: string; level: string; pid?: number }): Logger {
  if (!(LOG_LEVELS as readonly string[]).includes(options.level)) {
    throw new Error(`unknown log level "${options.level}"; use one of ${LOG_LEVELS.join(", ")}`);
  }
  return pino({
    name: options.name,
    level: options.level,
    base: { name: options.name, ...(options.pid !== undefined && { pid: options.pid }) },
  });
}

/**
 * Logs the `listening` line whatever the configured level: supervisors and the test
 * harness read the bound port from it, so it must appear even at level warn or silent.
 */
export function logListening(log: Logger, fields: Record<string, unknown>): void {
  log.child({}, { level: "info" }).info(fields, "listening");
}

/**
 * A short, stable hash of a CSI for logs. Logs above debug level never hold raw phone
 * numbers or email addresses; this lets an operator correlate lines about the same CSI.
 */
export function csiHash(csi: string): string {
  return createHash("sha256").update(csi).digest("hex").slice(0, 12);
}
