// Root configuration: parsed by hand, unknown keys rejected, defaults in one place.
import { resolve } from "node:path";
import { ConfigReader, deepFreeze, LOG_LEVELS, readTlsSection, type TlsPaths } from "@mimi/core";

/** Validated root configuration. */
export interface RootConfig {
  readonly host: string;
  readonly port: number;
  /** Folder holding registry.sqlite. */
  readonly dataDir: string;
  readonly tls: TlsPaths;
  /** Certificate identities allowed to edit the registry. */
  readonly admins: readonly string[];
  readonly defaultDelegationTtlSeconds: number;
  readonly logLevel: string;
  /** PEM Ed25519 private key that signs the registry; resolvers pin its public key. */
  readonly signingKey: string;
}

const DEFAULTS = {
  host: "127.0.0.1",
  port: 7400,
  defaultDelegationTtlSeconds: 3600,
  logLevel: "info",
} as const;

/** Parses a root config; relative paths resolve against `baseDir`. */
export function parseConfig(raw: unknown, baseDir = "."): RootConfig {
  const r = ConfigReader.of(raw);
  const config: RootConfig = {
    host: r.string("host", DEFAULTS.host),
    port: r.integer("port", DEFAULTS.port, 0, 65535),
    dataDir: resolve(baseDir, r.string("dataDir")),
    tls: readTlsSection(r, baseDir),
    admins: r.stringList("admins", []),
    defaultDelegationTtlSeconds: r.integer(
      "defaultDelegationTtlSeconds",
      DEFAULTS.defaultDelegationTtlSeconds,
      1,
      604_800,
    ),
    logLevel: r.string("logLevel", DEFAULTS.logLevel),
    signingKey: resolve(baseDir, r.string("signingKey")),
  };
  r.done();
  if (!(LOG_LEVELS as readonly string[]).includes(config.logLevel)) {
    throw new Error(`config.logLevel must be one of ${LOG_LEVELS.join(", ")}`);
  }
  return deepFreeze(config);
}
