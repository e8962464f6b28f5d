// Delivers proof-of-possession codes to a CSI over its own channel: email through SMTP, SMS
// through an HTTP gateway, or files in a local outbox for development and tests.
import { randomUUID } from "node:crypto";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { mkdir, rename, rm, writeFile } from "node:fs/promises";
import { platform } from "node:os";
import { join, resolve } from "node:path";
import {
  type Clock,
  ConfigError,
  type ConfigReader,
  csiHash,
  DiscoveryError,
  deepFreeze,
  type Logger,
  systemClock,
} from "@mimi/core";
import { createTransport } from "nodemailer";

/** One code to deliver. `to` is the bare address: "+447700900123" for tel, "alice@example.org" for mailto. */
export interface CodeMessage {
  readonly csiType: "tel" | "mailto";
  readonly to: string;
  readonly code: string;
  readonly expiresAtMs: number;
  /** Shown in the text, so the holder can tell who sends it. */
  readonly dpId: string;
  readonly purpose: "claim" | "invalidate" | "opt_out";
  readonly challengeId: string;
}

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

/** Sends codes; one instance per process, closed on shutdown. */
export interface CodeSender {
  send(msg: CodeMessage): Promise<void>;
  /** Codes handed to each channel, and those a channel could not take, by channel name (metrics). */
  readonly counts: { readonly sent: Record<string, number>; readonly failed: Record<string, number> };
  close(): void;
}

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
function fromDomain(from: string): string | undefined {
  return /@([A-Za-z0-9.-]+\.[A-Za-z0-9-]+)>?\s*$/.exec(from)?.[1];
}

interface Channel {
  readonly name: "smtp" | "sms-http" | "outbox";
  /** Rejects with a DiscoveryError whose message names neither the address nor the code. */
  deliver(msg: CodeMessage, sentAtMs: number): Promise<void>;
  close(): void;
}

/**
 * Dispatches by csiType to the configured channel.
 *
 * Errors are thrown as DiscoveryError("upstream_unavailable", ...) with an actionable message
 * that holds neither the address nor the code. The underlying error is not attached as `cause`:
 * pino appends causes to logged messages, and SMTP replies often quote the recipient.
 */
export function createCodeSender(
  config: DeliveryConfig,
  log: Logger,
  clock: Clock = systemClock,
): CodeSender {
  const slog = log.child({ component: "code-sender" });
  const outbox = outboxChannel(config.outboxDir);
  const email = config.email.kind === "smtp" ? smtpChannel(config.email, slog) : outbox;
  const tel = config.tel.kind === "http" ? httpSmsChannel(config.tel) : outbox;
  const counts = { sent: {} as Record<string, number>, failed: {} as Record<string, number> };
  const count = (by: Record<string, number>, name: string) => {
    by[name] = (by[name] ?? 0) + 1;
  };
  return {
    counts,
    async send(msg) {
      const channel = msg.csiType === "tel" ? tel : email;
      const fields = {
        channel: channel.name,
        csi: csiHash(`${msg.csiType}:${msg.to}`),
        challengeId: msg.challengeId,
        purpose: msg.purpose,
      };
      try {
        await channel.deliver(msg, clock());
      } catch (err) {
        // Logged here rather than at the gRPC boundary, which reports refusals at debug only:
        // an operator must see a broken mail relay or SMS gateway.
        const reason = err instanceof DiscoveryError ? err.message : "unexpected error";
        count(counts.failed, channel.name);
        slog.warn({ ...fields, reason }, "code delivery failed");
        slog.debug({ ...fields, to: msg.to, err }, "code delivery failure detail");
        if (err instanceof DiscoveryError) throw err;
        throw new DiscoveryError("upstream_unavailable", `could not send the code over ${channel.name}`);
      }
      count(counts.sent, channel.name);
      slog.info(fields, "code sent");
    },
    close() {
      email.close();
      tel.close();
    },
  };
}

const unavailable = (message: string) => new DiscoveryError("upstream_unavailable", message);

/** The reason of a failed send that may still have delivered the code (a timeout after it went out). */
export const DELIVERY_UNKNOWN = "DELIVERY_UNKNOWN";

/**
 * A send that gave up while the gateway or relay may already have taken the message: the code
 * may arrive (and an SMS be billed), so its budgets stay spent (claims/challenges.ts).
 */
const uncertain = (message: string) =>
  new DiscoveryError("upstream_unavailable", `${message}; the code may still arrive`, {
    details: { reason: DELIVERY_UNKNOWN },
  });

function minutesLeft(msg: CodeMessage, nowMs: number): number {
  return Math.max(1, Math.ceil((msg.expiresAtMs - nowMs) / 60_000));
}

function purposeText(msg: CodeMessage): string {
  const what = msg.csiType === "tel" ? "phone number" : "email address";
  switch (msg.purpose) {
    case "claim":
      return `link this ${what} to your account at a messaging service`;
    case "invalidate":
      return `remove links between this ${what} and messaging accounts`;
    case "opt_out":
      return `stop messaging services from finding you by this ${what}`;
  }
}

/** The email body: plain text, the code on its own line so it is easy to copy. */
function emailText(msg: CodeMessage, nowMs: number): string {
  const minutes = minutesLeft(msg, nowMs);
  return [
    "Your MIMI discovery code is:",
    "",
    `    ${msg.code}`,
    "",
    `Use it to ${purposeText(msg)}.`,
    `It expires in ${minutes} minute${minutes === 1 ? "" : "s"}. Type it only into your messaging app.`,
    "",
    `Sent by the MIMI discovery provider ${msg.dpId}.`,
    "If you did not ask for this, ignore it: nothing changes without the code.",
    "",
  ].join("\n");
}

/** The SMS text: the code first (phones offer leading codes for autofill), short enough for one or two segments. */
function smsText(msg: CodeMessage, nowMs: number): string {
  const minutes = minutesLeft(msg, nowMs);
  return (
    `${msg.code} is your MIMI discovery code to ${purposeText(msg)}. ` +
    `Expires in ${minutes} min. Sent by ${msg.dpId}. If you did not ask for this, ignore it.`
  );
}

function smtpChannel(c: Extract<EmailDelivery, { kind: "smtp" }>, log: Logger): Channel {
  const domain = fromDomain(c.from) ?? "localhost";
  // One pooled transport for the process: a relay that is already connected answers
  // StartChallenge faster, and the pool bounds how many connections we open.
  const transport = createTransport({
    pool: true,
    host: c.host,
    port: c.port,
    secure: c.secure,
    requireTLS: c.requireTls ?? false,
    ...(c.user !== undefined && { auth: { user: c.user, pass: c.password ?? "" } }),
    connectionTimeout: c.timeoutMs,
    greetingTimeout: c.timeoutMs,
    socketTimeout: c.timeoutMs,
    disableFileAccess: true,
    disableUrlAccess: true,
  });
  // An unheard 'error' event would end the process; sends report their own failures.
  transport.on("error", (err: { code?: string }) => log.warn({ code: err.code }, "smtp transport error"));
  return {
    name: "smtp",
    async deliver(msg, sentAtMs) {
      try {
        await transport.sendMail({
          from: c.from,
          to: msg.to,
          // An address that parsed as a list must not fan the code out to several mailboxes.
          maxRecipients: 1,
          subject: "Your MIMI discovery code",
          text: emailText(msg, sentAtMs),
          messageId: `<${randomUUID()}@${domain}>`,
          date: new Date(sentAtMs),
          // RFC 3834: keeps vacation responders from answering the DP.
          headers: { "Auto-Submitted": "auto-generated" },
          // The socket timeouts reset on every reply; this bounds a relay that trickles them.
          signal: AbortSignal.timeout(c.timeoutMs),
        });
      } catch (err) {
        const e = err as { code?: string; responseCode?: number };
        if (e.code === "EMAXRECIPIENTS") {
          throw new DiscoveryError("invalid_argument", "the email address is not a single address");
        }
        // A relay that stopped answering may have taken the message before it did.
        const timedOut = e.code === "ETIMEDOUT" || e.code === "EABORT";
        throw (timedOut ? uncertain : unavailable)(smtpReason(e, c.timeoutMs));
      }
    },
    close() {
      transport.close();
    },
  };
}

function smtpReason(err: { code?: string; responseCode?: number }, timeoutMs: number): string {
  const code = err.code ?? "unknown";
  const reply = err.responseCode !== undefined ? ` (SMTP ${err.responseCode})` : "";
  switch (code) {
    case "ECONNECTION":
    case "ESOCKET":
    case "EDNS":
      return `cannot reach the mail server (${code}); check delivery.email.host and port`;
    case "ETIMEDOUT":
    case "EABORT":
      return `the mail server did not answer within ${timeoutMs} ms`;
    case "ETLS":
    case "EREQUIRETLS":
      return `TLS with the mail server failed (${code}); check delivery.email.tls`;
    case "EAUTH":
    case "ENOAUTH":
      return `the mail server refused the DP's login${reply}; check delivery.email.user and password`;
    case "EENVELOPE":
      return `the mail server refused the sender or recipient${reply}`;
    default:
      return `the mail server refused the message (${code})${reply}`;
  }
}

function httpSmsChannel(c: Extract<TelDelivery, { kind: "http" }>): Channel {
  return {
    name: "sms-http",
    async deliver(msg, sentAtMs) {
      let res: Response;
      try {
        res = await fetch(c.url, {
          method: "POST",
          headers: {
            "content-type": "application/json",
            ...(c.token !== undefined && { authorization: `Bearer ${c.token}` }),
          },
          body: JSON.stringify({ to: msg.to, text: smsText(msg, sentAtMs) }),
          // A redirect would resend the code, and maybe the token, to a URL nobody configured.
          redirect: "manual",
          signal: AbortSignal.timeout(c.timeoutMs),
        });
      } catch (err) {
        if ((err as Error)?.name === "TimeoutError") {
          throw uncertain(`SMS gateway did not answer within ${c.timeoutMs} ms`);
        }
        const cause = (err as { cause?: { code?: unknown } })?.cause?.code;
        throw unavailable(
          `cannot reach the SMS gateway (${typeof cause === "string" ? cause : "fetch failed"})`,
        );
      }
      // Drain the body so the keep-alive connection returns to the pool.
      await res.arrayBuffer().catch(() => undefined);
      if (res.status < 200 || res.status > 299) throw unavailable(`SMS gateway answered HTTP ${res.status}`);
    },
    close() {},
  };
}

const OUTBOX_NAME = /^\d+-[A-Za-z0-9_-]+\.json$/;

function outboxChannel(dir: string): Channel {
  return {
    name: "outbox",
    async deliver(msg, sentAtMs) {
      // The challenge id becomes part of a file name: refuse anything that could leave the folder.
      if (!/^[A-Za-z0-9_-]{1,128}$/.test(msg.challengeId)) {
        throw new DiscoveryError("invalid_argument", "challenge id is not safe as a file name");
      }
      const name = `${sentAtMs}-${msg.challengeId}.json`;
      const tmp = join(dir, `.${name}.${randomUUID()}.tmp`);
      const body = `${JSON.stringify({ ...fieldsOf(msg), sentAtMs })}\n`;
      try {
        await mkdir(dir, { recursive: true, mode: 0o700 });
        await writeFile(tmp, body, { mode: 0o600, flag: "wx" });
        // Readers see a whole file or none: rename is atomic within one file system.
        await rename(tmp, join(dir, name));
      } catch (err) {
        await rm(tmp, { force: true }).catch(() => undefined);
        const code = (err as { code?: unknown })?.code;
        throw unavailable(
          `cannot write to the code outbox (${typeof code === "string" ? code : "error"}); check delivery.outboxDir`,
        );
      }
    },
    close() {},
  };
}

/** Copies exactly the CodeMessage fields, so nothing else a caller attached reaches the disk. */
function fieldsOf(m: CodeMessage): CodeMessage {
  return {
    csiType: m.csiType,
    to: m.to,
    code: m.code,
    expiresAtMs: m.expiresAtMs,
    dpId: m.dpId,
    purpose: m.purpose,
    challengeId: m.challengeId,
  };
}

/** Reads the outbox (for the `mimi claim` CLI and tests): messages for `to` (bare address), newest first. */
export function readOutbox(
  outboxDir: string,
  to?: string,
): Array<CodeMessage & { sentAtMs: number; file: string }> {
  let names: string[];
  try {
    names = readdirSync(outboxDir);
  } catch (err) {
    if ((err as { code?: unknown }).code === "ENOENT") return [];
    throw err;
  }
  const out: Array<CodeMessage & { sentAtMs: number; file: string }> = [];
  // Temporary files start with "." and do not match, so a write in progress is never read.
  for (const name of names.filter((n) => OUTBOX_NAME.test(n))) {
    const file = join(outboxDir, name);
    const m = JSON.parse(readFileSync(file, "utf8")) as CodeMessage & { sentAtMs: number };
    if (to === undefined || m.to === to) out.push({ ...m, file });
  }
  return out.sort((a, b) => b.sentAtMs - a.sentAtMs || b.file.localeCompare(a.file));
}
