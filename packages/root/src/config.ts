// Root configuration: parsed by hand, unknown keys rejected, defaults in one place.
import { resolve } from "node:path";
import { ConfigError, ConfigReader, deepFreeze } from "@mimi/core";
import { readServerBasics, type ServerBasics } from "@mimi/host";
import type { Durability } from "./store.js";

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
  /**
   * How long each registry signature is valid (like a DNSSEC RRSIG's validity period): a
   * follower refuses a registry past it, which bounds how long an old registry (with a since
   * rotated key) can be replayed, and how long followers ride out a root outage.
   */
  readonly signatureValiditySeconds: number;
  /** The primary re-signs (a refresh change) once less than this remains of the validity. */
  readonly signatureRefreshSeconds: number;
  /** "full" (default): a change is on disk before its serial is published; see Durability in store.ts. */
  readonly durability: Durability;
  /** Start even when the data folder or the store is open to group or others, or owned by another user. */
  readonly allowInsecureDataPermissions: boolean;
}

const DEFAULTS = {
  host: "127.0.0.1",
  port: 7400,
  defaultDelegationTtlSeconds: 3600,
  signatureValiditySeconds: 14 * 86_400,
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
    ...readSignaturePeriod(r),
    durability: r.oneOf<Durability>("durability", ["full", "normal"], "full"),
    allowInsecureDataPermissions: r.boolean("allowInsecureDataPermissions", false),
  };
  r.done();
  return deepFreeze(config);
}

function readSignaturePeriod(r: ConfigReader): {
  signatureValiditySeconds: number;
  signatureRefreshSeconds: number;
} {
  const validity = r.integer(
    "signatureValiditySeconds",
    DEFAULTS.signatureValiditySeconds,
    3_600,
    90 * 86_400,
  );
  const refresh = r.integer("signatureRefreshSeconds", Math.floor(validity / 2), 60, 90 * 86_400);
  if (refresh >= validity) {
    throw new ConfigError(
      "config.signatureRefreshSeconds must be below config.signatureValiditySeconds: the root re-signs " +
        "when less than the refresh time remains",
    );
  }
  return { signatureValiditySeconds: validity, signatureRefreshSeconds: refresh };
}

function readPrimary(p: ConfigReader, baseDir: string): PrimaryConfig {
  const primary = {
    endpoints: p.stringList("endpoints", undefined, { nonEmpty: true }),
    rootPublicKey: resolve(baseDir, p.string("rootPublicKey")),
  };
  p.done();
  return primary;
}
