// Authoritative configuration: parsed by hand, unknown keys rejected, defaults in one place.
import { resolve } from "node:path";
import { ConfigReader, deepFreeze, LOG_LEVELS, readTlsSection, type TlsPaths } from "@mimi/core";

/** Validated authoritative configuration. */
export interface AuthoritativeConfig {
  readonly host: string;
  readonly port: number;
  /** This DP's id in the root registry; it answers for the ranges delegated to this id. */
  readonly dpId: string;
  /** Folder holding mappings.sqlite and the saved registry copy; keep it in the DP's jurisdiction (H2). */
  readonly dataDir: string;
  readonly tls: TlsPaths;
  readonly rootEndpoints: readonly string[];
  /** Certificate identities allowed to call AuthoritativeAdminService. */
  readonly admins: readonly string[];
  readonly answerTtlSeconds: number;
  readonly negativeTtlSeconds: number;
  readonly logLevel: string;
}

const DEFAULTS = {
  host: "127.0.0.1",
  port: 7500,
  answerTtlSeconds: 300,
  negativeTtlSeconds: 60,
  logLevel: "info",
} as const;

/** Parses an authoritative config; relative paths resolve against `baseDir`. */
export function parseConfig(raw: unknown, baseDir = "."): AuthoritativeConfig {
  const r = ConfigReader.of(raw);
  const config: AuthoritativeConfig = {
    host: r.string("host", DEFAULTS.host),
    port: r.integer("port", DEFAULTS.port, 0, 65535),
    dpId: r.string("dpId"),
    dataDir: resolve(baseDir, r.string("dataDir")),
    tls: readTlsSection(r, baseDir),
    rootEndpoints: r.stringList("rootEndpoints", undefined, { nonEmpty: true }),
    admins: r.stringList("admins", []),
    answerTtlSeconds: r.integer("answerTtlSeconds", DEFAULTS.answerTtlSeconds, 0, 86_400),
    negativeTtlSeconds: r.integer("negativeTtlSeconds", DEFAULTS.negativeTtlSeconds, 0, 3_600),
    logLevel: r.string("logLevel", DEFAULTS.logLevel),
  };
  r.done();
  if (!(LOG_LEVELS as readonly string[]).includes(config.logLevel)) {
    throw new Error(`config.logLevel must be one of ${LOG_LEVELS.join(", ")}`);
  }
  return deepFreeze(config);
}
