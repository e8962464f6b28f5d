// Reloading a running server's configuration (SIGHUP), the way Unbound and Knot reload: the
// file is read and validated again in full; a file that does not parse changes nothing. Keys
// that can change in a running process (the log level, the TLS files, the lame-duck period,
// and what each server names: admins, limits) are applied; every other changed key is kept at
// its running value and named in the log as needing a restart, so a reload never half-applies
// a listening address or a data folder.

import { setLogLevel } from "@mimi/core";
import type { TlsPaths } from "@mimi/rpc";
import type { Logger } from "pino";
import type { TlsFiles, TlsReload } from "./tls-files.js";

/** Keys of the parsed config that every server applies on reload. */
const RELOADED_BY_EVERY_SERVER = ["logLevel", "tls", "lameDuckMs"] as const;

/** What a reload would change. */
export interface ReloadPlan<C> {
  /** The config to run with: the new file's values for reloadable keys, the running ones elsewhere. */
  readonly config: C;
  /** Reloadable keys whose value changed. */
  readonly applied: readonly string[];
  /** Keys that changed in the file but take effect only after a restart. */
  readonly needsRestart: readonly string[];
}

/** A parsed config's value as comparable text (Maps, Sets, bigints and bytes included). */
function stable(value: unknown): string {
  return JSON.stringify(value, (_k, v: unknown) => {
    if (typeof v === "bigint") return `${v}n`;
    if (v instanceof Map) return [...v.entries()];
    if (v instanceof Set) return [...v];
    if (v instanceof Uint8Array) return Buffer.from(v).toString("hex");
    return v;
  });
}

/** Compares the running config with the file's, key by key; `reloadable` names the server's own keys. */
export function planReload<C extends object>(
  running: C,
  next: C,
  reloadable: readonly string[],
): ReloadPlan<C> {
  const live = new Set<string>([...RELOADED_BY_EVERY_SERVER, ...reloadable]);
  const merged: Record<string, unknown> = { ...(next as Record<string, unknown>) };
  const applied: string[] = [];
  const needsRestart: string[] = [];
  const keys = new Set([...Object.keys(running), ...Object.keys(next)]);
  for (const key of [...keys].sort()) {
    const before = (running as Record<string, unknown>)[key];
    if (stable(before) === stable((next as Record<string, unknown>)[key])) continue;
    if (live.has(key)) {
      applied.push(key);
    } else {
      needsRestart.push(key);
      merged[key] = before;
    }
  }
  return { config: merged as C, applied, needsRestart };
}

/** What a reload touches in runServer. */
export interface ReloadTarget<C> {
  readonly log: Logger;
  readonly tls: TlsFiles;
  /** Overrides the config's log level (LOG_LEVEL), or undefined. */
  readonly levelOverride: string | undefined;
  /** The server's own reload (admins, limits), given the new config and the keys that changed. */
  apply?(config: C, applied: readonly string[]): void;
}

/**
 * Applies a new config to a running server: TLS files are read again whether or not their
 * paths changed (a rotation replaces the files in place), then the log level, then the
 * server's own keys. Returns the config now in force. Never throws: a part that fails is
 * logged and keeps its running value.
 */
export function applyReload<C extends { tls: TlsPaths; logLevel: string }>(
  running: C,
  next: C,
  reloadable: readonly string[],
  target: ReloadTarget<C>,
): C {
  const { log } = target;
  const plan = planReload(running, next, reloadable);
  let config = plan.config;
  const applied = [...plan.applied];
  try {
    const r = target.tls.reload(config.tls);
    if (r.changed) {
      logTlsReload(log, r, config.tls.caFile);
      if (!applied.includes("tls")) applied.push("tls");
    }
  } catch (err) {
    log.error(
      { err: (err as Error).message },
      "reload: new TLS material refused; the material in use stays in use",
    );
    config = { ...config, tls: running.tls };
    const i = applied.indexOf("tls");
    if (i >= 0) applied.splice(i, 1);
  }
  try {
    setLogLevel(log, target.levelOverride ?? config.logLevel);
  } catch (err) {
    log.error({ err: (err as Error).message }, "reload: log level not changed");
    config = { ...config, logLevel: running.logLevel };
  }
  try {
    target.apply?.(config, applied);
  } catch (err) {
    // What the server could not apply keeps its running value, so the next reload tries again.
    log.error({ err: (err as Error).message }, "reload: the server could not apply its own keys");
    const kept: Record<string, unknown> = { ...config };
    for (const key of reloadable) kept[key] = (running as Record<string, unknown>)[key];
    config = kept as C;
    applied.splice(0, applied.length, ...applied.filter((k) => !reloadable.includes(k)));
  }
  // Said whatever the level, as the listening line: an operator who reloads wants to see it.
  log
    .child({}, { level: "info" })
    .info({ changed: applied, needsRestart: plan.needsRestart }, "configuration reloaded");
  if (plan.needsRestart.length > 0) {
    log.warn({ keys: plan.needsRestart }, "reload: these changes take effect at the next restart");
  }
  return config;
}

/** Replaces the members of a live admin set (a reload of `admins`) and logs who was added or removed. */
export function reloadAdmins(admins: Set<string>, next: readonly string[], log: Logger): void {
  const added = next.filter((a) => !admins.has(a));
  const removed = [...admins].filter((a) => !next.includes(a));
  admins.clear();
  for (const a of next) admins.add(a);
  log.info({ added, removed }, "admins reloaded");
}

/** Logs what a reload of the TLS files changed (SIGHUP and the file watch alike). */
export function logTlsReload(log: Logger, r: TlsReload, caFile: string): void {
  if (!r.changed) return;
  if (r.rotated) log.info({ before: r.before, after: r.after }, "TLS certificate rotated");
  // Whom the server trusts changed: said louder, with what came and went.
  if (r.ca) log.warn({ caFile, ...r.ca }, "trusted CAs changed");
  if (r.crl !== undefined) log.warn({ crl: r.crl }, "certificate revocation lists changed");
  if (r.refused !== undefined) {
    log.error({ err: r.refused }, "part of the new TLS material refused; what passed is in use");
  }
}
