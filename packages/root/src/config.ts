// Root configuration: parsed by hand, unknown keys rejected, defaults in one place.
import { resolve } from "node:path";
import { ConfigError, ConfigReader, deepFreeze, readServerBasics, type ServerBasics } from "@mimi/core";

/** Where a secondary follows the registry from, and the key everything it receives must verify with. */
export interface PrimaryConfig {
  /** Root endpoints ("host:port"), tried in order with failover; any root server will do. */
  readonly endpoints: readonly string[];
  /** File holding the pinned root public key. */
  readonly rootPublicKey: string;
}

/** Validated root configuration. */
export interface RootConfig extends ServerBasics {
  /** Folder holding registry.sqlite. */
  readonly dataDir: string;
  /** Certificate identities allowed to edit the registry. */
  readonly admins: readonly string[];
  readonly defaultDelegationTtlSeconds: number;
  /**
   * PEM Ed25519 private key that signs the registry; resolvers pin its public key. Set on the
   * primary only; exactly one of `signingKey` and `primary` is set.
   */
  readonly signingKey: string | undefined;
  /** Set on a read-only secondary, which follows the primary and never holds the private key. */
  readonly primary: PrimaryConfig | undefined;
}

const DEFAULTS = {
  host: "127.0.0.1",
  port: 7400,
  defaultDelegationTtlSeconds: 3600,
} as const;

/** Parses a root config; relative paths resolve against `baseDir`. */
export function parseConfig(raw: unknown, baseDir = "."): RootConfig {
  const r = ConfigReader.of(raw);
  const hasPrimary = (raw as Record<string, unknown>).primary !== undefined;
  const primary = hasPrimary ? readPrimary(r.object("primary"), baseDir) : undefined;
  const signingKey = r.optionalString("signingKey");
  if (primary && signingKey !== undefined) {
    // A secondary that held the key could sign a registry of its own; the key stays in one place.
    throw new ConfigError(
      "config.signingKey and config.primary exclude each other: a secondary never holds the root's " +
        "private key (remove signingKey to run as a read-only secondary, or primary to run as the primary)",
    );
  }
  if (!primary && signingKey === undefined) {
    throw new ConfigError(
      "config.signingKey must be a non-empty string (or give a primary section to run as a read-only secondary)",
    );
  }
  const config: RootConfig = {
    ...readServerBasics(r, baseDir, DEFAULTS),
    dataDir: resolve(baseDir, r.string("dataDir")),
    admins: r.stringList("admins", []),
    defaultDelegationTtlSeconds: r.integer(
      "defaultDelegationTtlSeconds",
      DEFAULTS.defaultDelegationTtlSeconds,
      1,
      604_800,
    ),
    signingKey: signingKey === undefined ? undefined : resolve(baseDir, signingKey),
    primary,
  };
  r.done();
  return deepFreeze(config);
}

function readPrimary(p: ConfigReader, baseDir: string): PrimaryConfig {
  const primary = {
    endpoints: p.stringList("endpoints", undefined, { nonEmpty: true }),
    rootPublicKey: resolve(baseDir, p.string("rootPublicKey")),
  };
  p.done();
  return primary;
}
