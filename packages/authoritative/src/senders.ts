// Delivers proof-of-possession codes to a CSI over its own channel: email through SMTP, SMS
// through an HTTP gateway, or files in a local outbox for development and tests.
import { randomUUID } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import { mkdir, rename, rm, writeFile } from "node:fs/promises";
import { Agent as HttpAgent, request as httpRequest } from "node:http";
import { Agent as HttpsAgent, request as httpsRequest } from "node:https";
import { join } from "node:path";
import { type Clock, csiHash, DiscoveryError, type Logger, parseCsi, systemClock } from "@mimi/core";
import { createTransport } from "nodemailer";
import { type DeliveryConfig, type EmailDelivery, fromDomain, type TelDelivery } from "./delivery-config.js";

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

/** Sends codes; one instance per process, closed on shutdown. */
export interface CodeSender {
  send(msg: CodeMessage): Promise<void>;
  /** Codes handed to each channel, and those a channel could not take, by channel name (metrics). */
  readonly counts: { readonly sent: Record<string, number>; readonly failed: Record<string, number> };
  close(): void;
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
        csi: csiHash(canonicalUri(msg)),
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

/** The CSI a message goes to, as the DP's other log lines name it (its hash is logged). */
function canonicalUri(msg: CodeMessage): string {
  try {
    return parseCsi(msg.to).uri;
  } catch {
    return `${msg.csiType}:${msg.to}`;
  }
}

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
    // Longer than the phases before the session (connect, greeting, TLS), so a relay that stalls
    // there fails on that phase's timeout, when nothing can have been sent; a socket timeout then
    // means a stall mid-session, perhaps after the message went out.
    socketTimeout: 2 * c.timeoutMs,
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
          // The socket timeouts reset on every reply; this bounds a relay that trickles them
          // (longer than every phase timeout, so it fires mid-session only).
          signal: AbortSignal.timeout(3 * c.timeoutMs),
        });
      } catch (err) {
        const e = err as { code?: string; responseCode?: number; timeoutType?: string };
        if (e.code === "EMAXRECIPIENTS") {
          throw new DiscoveryError("invalid_argument", "the email address is not a single address");
        }
        // A relay that stopped answering mid-session may have taken the message before it did;
        // one that never connected, greeted or finished TLS cannot have.
        const midSession =
          (e.code === "ETIMEDOUT" && e.timeoutType === "SOCKET_TIMEOUT") || e.code === "EABORT";
        throw (midSession ? uncertain : unavailable)(smtpReason(e, c.timeoutMs));
      }
    },
    close() {
      transport.close();
    },
  };
}

function smtpReason(
  err: { code?: string; responseCode?: number; timeoutType?: string },
  timeoutMs: number,
): string {
  const code = err.code ?? "unknown";
  const reply = err.responseCode !== undefined ? ` (SMTP ${err.responseCode})` : "";
  switch (code) {
    case "ECONNECTION":
    case "ESOCKET":
    case "EDNS":
      return `cannot reach the mail server (${code}); check delivery.email.host and port`;
    case "ETIMEDOUT":
      return `the mail server did not answer within ${err.timeoutType === "SOCKET_TIMEOUT" ? 2 * timeoutMs : timeoutMs} ms`;
    case "EABORT":
      return `the mail server took longer than ${3 * timeoutMs} ms over the message`;
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
  const url = new URL(c.url);
  const https = url.protocol === "https:";
  // Kept-alive connections, reused across codes as fetch's pool did.
  const agent = https ? new HttpsAgent({ keepAlive: true }) : new HttpAgent({ keepAlive: true });
  return {
    name: "sms-http",
    deliver: (msg, sentAtMs) =>
      new Promise<void>((resolveSent, reject) => {
        const body = JSON.stringify({ to: msg.to, text: smsText(msg, sentAtMs) });
        // Whether the whole request went out: a failure after that may have sent the SMS.
        let handedOver = false;
        // node:http follows no redirect: one would resend the code, and maybe the token, to a
        // URL nobody configured.
        const req = (https ? httpsRequest : httpRequest)(
          url,
          {
            method: "POST",
            agent,
            headers: {
              "content-type": "application/json",
              "content-length": Buffer.byteLength(body),
              ...(c.token !== undefined && { authorization: `Bearer ${c.token}` }),
            },
            signal: AbortSignal.timeout(c.timeoutMs),
          },
          (res) => {
            // Drained, so the keep-alive connection returns to the pool.
            res.resume();
            res.on("error", () => reject(uncertain("the SMS gateway's answer broke off")));
            res.on("end", () => {
              const code = res.statusCode ?? 0;
              if (code >= 200 && code <= 299) resolveSent();
              // An answer other than 2xx: not taken. (A gateway that fails after taking a
              // message and says so with an error would bill a code nobody is told of; the
              // attempt budgets, never given back, bound what such failures cost.)
              else reject(unavailable(`SMS gateway answered HTTP ${code}`));
            });
          },
        );
        req.on("finish", () => {
          handedOver = true;
        });
        req.on("error", (err: Error & { code?: string }) => {
          const timedOut = err.name === "AbortError" || err.code === "ABORT_ERR";
          if (handedOver) {
            reject(
              uncertain(
                timedOut
                  ? `SMS gateway did not answer within ${c.timeoutMs} ms`
                  : `the connection to the SMS gateway broke (${err.code ?? "error"})`,
              ),
            );
          } else if (timedOut) {
            reject(unavailable(`SMS gateway did not take the request within ${c.timeoutMs} ms`));
          } else {
            reject(unavailable(`cannot reach the SMS gateway (${err.code ?? "error"})`));
          }
        });
        req.end(body);
      }),
    close() {
      agent.destroy();
    },
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
