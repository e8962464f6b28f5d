// The delivery section of a DP's config: where proof-of-possession codes go (SMTP, an HTTP SMS
// gateway, or a local outbox), read and checked at start (senders.ts delivers them).
import { readFileSync, statSync } from "node:fs";
import { platform } from "node:os";
import { resolve } from "node:path";
import { ConfigError, type ConfigReader, deepFreeze } from "@mimi/core";

/** Where codes go, per CSI type. */
export type DeliveryConfig = {
  readonly email: EmailDelivery;
  readonly tel: TelDelivery;
  readonly outboxDir: string;
};

/** Email channel: the outbox, or an SMTP relay (`secure` is TLS from the first byte, `requireTls` demands STARTTLS). */
export type EmailDelivery =
  | { kind: "outbox" }
  | {
      kind: "smtp";
      host: string;
      port: number;
      secure: boolean;
      from: string;
      user?: string;
      password?: string;
      requireTls?: boolean;
      /** Bounds connecting, each server reply, and the whole send. */
      timeoutMs: number;
    };

/** SMS channel: the outbox, or an HTTP gateway taking POST {"to","text"}. */
export type TelDelivery =
  | { kind: "outbox" }
  | { kind: "http"; url: string; token?: string; timeoutMs: number };

const DEFAULTS = {
  smtpPort: 587,
  smtpTimeoutMs: 10_000,
  httpTimeoutMs: 5_000,
} as const;

const SMTP_TLS_MODES = ["implicit", "starttls", "opportunistic"] as const;

/**
 * Parses the "delivery" config section; an absent (empty) section means both channels use the outbox.
 *
 * outboxDir defaults to join(dataDir, "outbox"); relative paths resolve against baseDir. The SMTP
 * TLS setting is one string, `tls`, because ConfigReader has no boolean field: "implicit" (secure),
 * "starttls" (requireTls, the default except on port 465) or "opportunistic" (a local relay).
 */
export function readDeliverySection(r: ConfigReader, baseDir: string, dataDir: string): DeliveryConfig {
  const defaultOutbox = resolve(baseDir, dataDir, "outbox");
  const outboxDir = resolve(baseDir, r.string("outboxDir", defaultOutbox));
  const email = readEmail(r.object("email", { optional: true }), baseDir);
  const tel = readTel(r.object("tel", { optional: true }), baseDir);
  r.done();
  return deepFreeze<DeliveryConfig>({ email, tel, outboxDir });
}

/**
 * A secret given inline (`key`) or in a file (`fileKey`, read now, trailing newline dropped), so
 * deployments can keep it out of the config (a mounted secret, a credentials file). The file
 * must be the process user's and closed to group and others.
 */
function readSecret(r: ConfigReader, key: string, fileKey: string, baseDir: string, what: string) {
  const inline = r.optionalString(key);
  const file = r.optionalString(fileKey);
  if (inline !== undefined && file !== undefined)
    throw new ConfigError(`${what}: set ${key} or ${fileKey}, not both`);
  if (file === undefined) return inline;
  const path = resolve(baseDir, file);
  let st: ReturnType<typeof statSync>;
  try {
    st = statSync(path);
  } catch {
    throw new ConfigError(`${what}.${fileKey}: ${path} cannot be read`);
  }
  if (platform() !== "win32" && (st.mode & 0o077) !== 0) {
    const mode = (st.mode & 0o777).toString(8).padStart(4, "0");
    throw new ConfigError(
      `${what}.${fileKey}: ${path} has mode ${mode}: group or others may read it; fix: chmod 600 ${path}`,
    );
  }
  const secret = readFileSync(path, "utf8").replace(/\r?\n$/, "");
  if (secret === "") throw new ConfigError(`${what}.${fileKey}: ${path} is empty`);
  return secret;
}

function readEmail(e: ConfigReader, baseDir: string): EmailDelivery {
  const kind = e.string("kind", "outbox");
  if (kind === "outbox") {
    e.done();
    return { kind };
  }
  if (kind !== "smtp") throw new ConfigError(`delivery.email.kind must be "outbox" or "smtp", not "${kind}"`);
  const host = e.string("host");
  const port = e.integer("port", DEFAULTS.smtpPort, 1, 65_535);
  const tls = e.string("tls", port === 465 ? "implicit" : "starttls");
  if (!(SMTP_TLS_MODES as readonly string[]).includes(tls)) {
    throw new ConfigError(`delivery.email.tls must be one of ${SMTP_TLS_MODES.join(", ")}`);
  }
  const from = e.string("from");
  if (fromDomain(from) === undefined) {
    throw new ConfigError('delivery.email.from must be an address such as "MIMI <codes@dp.example>"');
  }
  const user = e.optionalString("user");
  const password = readSecret(e, "password", "passwordFile", baseDir, "delivery.email");
  if ((user === undefined) !== (password === undefined)) {
    throw new ConfigError(
      "delivery.email.user and delivery.email.password (or passwordFile) must be set together",
    );
  }
  const timeoutMs = e.integer("timeoutMs", DEFAULTS.smtpTimeoutMs, 100, 120_000);
  e.done();
  return {
    kind,
    host,
    port,
    secure: tls === "implicit",
    requireTls: tls === "starttls",
    from,
    ...(user !== undefined && { user, password }),
    timeoutMs,
  };
}

function readTel(t: ConfigReader, baseDir: string): TelDelivery {
  const kind = t.string("kind", "outbox");
  if (kind === "outbox") {
    t.done();
    return { kind };
  }
  if (kind !== "http") throw new ConfigError(`delivery.tel.kind must be "outbox" or "http", not "${kind}"`);
  const url = t.string("url");
  if (!/^https?:$/.test(parseUrl(url)?.protocol ?? "")) {
    throw new ConfigError("delivery.tel.url must be an http or https URL");
  }
  const token = readSecret(t, "token", "tokenFile", baseDir, "delivery.tel");
  const timeoutMs = t.integer("timeoutMs", DEFAULTS.httpTimeoutMs, 100, 60_000);
  t.done();
  return { kind, url, ...(token !== undefined && { token }), timeoutMs };
}

function parseUrl(url: string): URL | undefined {
  try {
    return new URL(url);
  } catch {
    return undefined;
  }
}

/** The domain of the From address, used on the right of Message-IDs. */
export function fromDomain(from: string): string | undefined {
  return /@([A-Za-z0-9.-]+\.[A-Za-z0-9-]+)>?\s*$/.exec(from)?.[1];
}
