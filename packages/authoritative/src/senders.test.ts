import assert from "node:assert/strict";
import { once } from "node:events";
import { chmodSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from "node:http";
import { type AddressInfo, createServer as createTcpServer, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type TestContext, test } from "node:test";
import { ConfigError, ConfigReader, createLogger, csiHash, DiscoveryError, type Logger } from "@mimi/core";
import { SMTPServer } from "smtp-server";
import {
  type DeliveryConfig,
  type EmailDelivery,
  readDeliverySection,
  type TelDelivery,
} from "./delivery-config.js";
import { type CodeMessage, createCodeSender, readOutbox } from "./senders.js";

const log = createLogger({ name: "test", level: "silent" });
const NOW = 1_700_000_000_000;

const message = (over: Partial<CodeMessage> = {}): CodeMessage => ({
  csiType: "mailto",
  to: "alice@example.org",
  code: "483920",
  expiresAtMs: NOW + 10 * 60_000,
  dpId: "eu.dp.example",
  purpose: "claim",
  challengeId: "ch-1",
  ...over,
});

function tempDir(t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), "mimi-senders-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function sender(t: TestContext, delivery: { email?: EmailDelivery; tel?: TelDelivery; outboxDir?: string }) {
  const config: DeliveryConfig = {
    email: delivery.email ?? { kind: "outbox" },
    tel: delivery.tel ?? { kind: "outbox" },
    outboxDir: delivery.outboxDir ?? join(tmpdir(), "mimi-senders-unused"),
  };
  const s = createCodeSender(config, log, () => NOW);
  t.after(() => s.close());
  return s;
}

const port = (server: { address(): unknown }) => (server.address() as AddressInfo).port;

/** Checks the rejection is the unavailable error, with a message that leaks neither address nor code. */
/**
 * A failure of `reason`; `mayHaveGone` when it came after the request went out, so the code may
 * still arrive (DELIVERY_UNKNOWN: its budgets stay spent).
 */
function unavailable(reason: RegExp, msg = message(), mayHaveGone = false) {
  return (e: unknown) => {
    assert.ok(e instanceof DiscoveryError, String(e));
    assert.equal(e.code, "upstream_unavailable");
    assert.match(e.message, reason);
    assert.equal(e.details?.reason === "DELIVERY_UNKNOWN", mayHaveGone, `${e.message}: ${e.details?.reason}`);
    assert.equal(/the code may still arrive$/.test(e.message), mayHaveGone, e.message);
    assert.ok(!e.message.includes(msg.to) && !e.message.includes(msg.code), e.message);
    return true;
  };
}

const smtp = (p: number, over: Partial<Extract<EmailDelivery, { kind: "smtp" }>> = {}): EmailDelivery => ({
  kind: "smtp",
  host: "127.0.0.1",
  port: p,
  secure: false,
  requireTls: false,
  from: "MIMI discovery <codes@dp.example>",
  timeoutMs: 2_000,
  ...over,
});

/** A local SMTP server; with `stallAfterData` it takes the message and never acknowledges it. */
async function startSmtpServer(t: TestContext, { stallAfterData = false } = {}) {
  const received: { rcpt: string[]; user: string | undefined; data: string }[] = [];
  const server = new SMTPServer({
    authOptional: true,
    allowInsecureAuth: true,
    // Plain SMTP: the built-in test certificate would fail verification.
    disabledCommands: ["STARTTLS"],
    logger: false,
    onAuth(auth, _session, cb) {
      cb(null, { user: auth.username });
    },
    onData(stream, session, cb) {
      const chunks: Buffer[] = [];
      stream.on("data", (c: Buffer) => chunks.push(c));
      stream.on("end", () => {
        received.push({
          rcpt: session.envelope.rcptTo.map((a) => a.address),
          user: typeof session.user === "string" ? session.user : undefined,
          data: Buffer.concat(chunks).toString("utf8"),
        });
        if (!stallAfterData) cb();
      });
    },
  });
  server.listen(0, "127.0.0.1");
  await once(server.server, "listening");
  t.after(() => server.close());
  return { port: port(server.server), received };
}

/** A port nothing listens on: bound, then released. */
async function closedPort(): Promise<number> {
  const s = createTcpServer().listen(0, "127.0.0.1");
  await once(s, "listening");
  const p = port(s);
  s.close();
  await once(s, "close");
  return p;
}

/** A TCP server that accepts connections and never says anything. */
async function silentServer(t: TestContext): Promise<number> {
  const sockets = new Set<Socket>();
  const s = createTcpServer((sock) => sockets.add(sock)).listen(0, "127.0.0.1");
  await once(s, "listening");
  t.after(() => {
    for (const sock of sockets) sock.destroy();
    s.close();
  });
  return port(s);
}

test("email goes through SMTP with the code, purpose, expiry and sender in plain text", async (t) => {
  const { port: p, received } = await startSmtpServer(t);
  const s = sender(t, { email: smtp(p, { user: "dp", password: "secret" }) });
  await s.send(message());
  assert.equal(received.length, 1);
  const [mail] = received;
  assert.deepEqual(mail?.rcpt, ["alice@example.org"]);
  assert.equal(mail?.user, "dp");
  const data = mail?.data ?? "";
  assert.match(data, /^Subject: Your MIMI discovery code$/m);
  assert.match(data, /^Message-ID: <[0-9a-f-]+@dp\.example>$/im);
  assert.match(data, /^Auto-Submitted: auto-generated$/m);
  assert.match(data, /^Content-Type: text\/plain/m);
  assert.match(data, /483920/);
  assert.match(data, /expires in 10 minutes/);
  assert.match(data, /link this email address/);
  assert.match(data, /eu\.dp\.example/);
  assert.match(data, /If you did not ask for this, ignore it/);
});

test("the pooled transport is reused for later codes", async (t) => {
  const { port: p, received } = await startSmtpServer(t);
  const s = sender(t, { email: smtp(p) });
  await s.send(message({ purpose: "opt_out", expiresAtMs: NOW + 60_000 }));
  await s.send(message({ to: "bob@example.org", challengeId: "ch-2" }));
  assert.deepEqual(
    received.map((m) => m.rcpt),
    [["alice@example.org"], ["bob@example.org"]],
  );
  assert.match(received[0]?.data ?? "", /expires in 1 minute\./);
  assert.match(received[0]?.data ?? "", /stop messaging services from finding you/);
});

test("an address that parses as a list is refused before anything is sent", async (t) => {
  const { port: p, received } = await startSmtpServer(t);
  await assert.rejects(
    sender(t, { email: smtp(p) }).send(message({ to: "alice@example.org, mallory@evil.example" })),
    (e: unknown) => e instanceof DiscoveryError && e.code === "invalid_argument",
  );
  assert.deepEqual(received, []);
});

test("SMTP failures reject with upstream_unavailable and say what to check", async (t) => {
  const cases: [string, () => Promise<EmailDelivery>, RegExp][] = [
    ["server down", async () => smtp(await closedPort()), /cannot reach the mail server/],
    ["server silent", async () => smtp(await silentServer(t), { timeoutMs: 300 }), /within 300 ms/],
    [
      "STARTTLS required but not offered",
      async () => smtp((await startSmtpServer(t)).port, { requireTls: true }),
      /TLS with the mail server failed/,
    ],
  ];
  // The reason names the sender's own limit (or the refusal): it gave up by itself; a sender
  // that hung instead would fail this test by its timeout.
  for (const [name, email, reason] of cases) {
    await assert.rejects(sender(t, { email: await email() }).send(message()), unavailable(reason), name);
  }
  // A relay that took the message and then went silent may deliver it: DELIVERY_UNKNOWN.
  const stalling = await startSmtpServer(t, { stallAfterData: true });
  await assert.rejects(
    sender(t, { email: smtp(stalling.port, { timeoutMs: 300 }) }).send(message()),
    unavailable(/did not answer within 600 ms/, message(), true),
  );
  assert.equal(stalling.received.length, 1, "the relay had the message");
});

async function startGateway(
  t: TestContext,
  handle: (body: unknown, req: IncomingMessage, res: ServerResponse) => void,
) {
  const server = createHttpServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => handle(JSON.parse(Buffer.concat(chunks).toString("utf8")), req, res));
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  t.after(() => {
    server.closeAllConnections();
    server.close();
  });
  return `http://127.0.0.1:${port(server)}/sms`;
}

test("SMS goes to the HTTP gateway as JSON with the bearer token", async (t) => {
  const seen: {
    body: unknown;
    auth: string | undefined;
    type: string | undefined;
    method: string | undefined;
  }[] = [];
  const url = await startGateway(t, (body, req, res) => {
    seen.push({
      body,
      auth: req.headers.authorization,
      type: req.headers["content-type"],
      method: req.method,
    });
    res.writeHead(202).end("{}");
  });
  const s = sender(t, { tel: { kind: "http", url, token: "tok-1", timeoutMs: 2_000 } });
  await s.send(message({ csiType: "tel", to: "+447700900123", purpose: "invalidate" }));
  assert.equal(seen.length, 1);
  const [req] = seen;
  assert.equal(req?.method, "POST");
  assert.equal(req?.auth, "Bearer tok-1");
  assert.equal(req?.type, "application/json");
  const body = req?.body as { to: string; text: string };
  assert.deepEqual(Object.keys(body).sort(), ["text", "to"]);
  assert.equal(body.to, "+447700900123");
  assert.match(body.text, /^483920 /);
  assert.match(body.text, /remove links between this phone number/);
  assert.match(body.text, /Expires in 10 min/);
  assert.match(body.text, /eu\.dp\.example/);
  assert.match(body.text, /If you did not ask for this, ignore it/);
});

test("SMS without a token sends no Authorization header", async (t) => {
  let auth: string | undefined = "unset";
  const url = await startGateway(t, (_body, req, res) => {
    auth = req.headers.authorization;
    res.writeHead(200).end();
  });
  await sender(t, { tel: { kind: "http", url, timeoutMs: 2_000 } }).send(
    message({ csiType: "tel", to: "+447700900123" }),
  );
  assert.equal(auth, undefined);
});

test("SMS gateway failures reject with upstream_unavailable, saying whether the code may have gone (only when no answer came)", async (t) => {
  const tel = message({ csiType: "tel", to: "+447700900123" });
  const answering = (code: number) => startGateway(t, (_b, _req, res) => res.writeHead(code).end("boom"));
  const redirecting = await startGateway(t, (_b, _req, res) =>
    res.writeHead(307, { location: "http://127.0.0.1:1/elsewhere" }).end(),
  );
  // Never answers; the sender's own timeout must end the request.
  const hanging = await startGateway(t, () => {});
  const cases: [string, string, RegExp, boolean][] = [
    // An answer other than 2xx: not taken (refused, not now, or set wrong).
    ["HTTP 500", await answering(500), /^SMS gateway answered HTTP 500$/, false],
    ["HTTP 504", await answering(504), /^SMS gateway answered HTTP 504$/, false],
    ["HTTP 400", await answering(400), /^SMS gateway answered HTTP 400$/, false],
    ["HTTP 502", await answering(502), /^SMS gateway answered HTTP 502$/, false],
    ["HTTP 503", await answering(503), /^SMS gateway answered HTTP 503$/, false],
    ["HTTP 429", await answering(429), /^SMS gateway answered HTTP 429$/, false],
    ["HTTP 401", await answering(401), /^SMS gateway answered HTTP 401$/, false],
    ["redirect not followed", redirecting, /^SMS gateway answered HTTP 307$/, false],
    // The request went out and no answer came: the gateway may have sent the SMS.
    ["hanging gateway", hanging, /did not answer within 200 ms/, true],
    [
      "gateway down",
      `http://127.0.0.1:${await closedPort()}/sms`,
      /cannot reach the SMS gateway \(ECONNREFUSED\)/,
      false,
    ],
  ];
  for (const [name, url, reason, mayHaveGone] of cases) {
    // A gateway that answers has 2 s (a busy machine must not turn its answer into a timeout).
    const timeoutMs = url === hanging ? 200 : 2_000;
    await assert.rejects(
      sender(t, { tel: { kind: "http", url, timeoutMs } }).send(tel),
      unavailable(reason, tel, mayHaveGone),
      name,
    );
  }
});

test("the outbox holds one private file per message; readOutbox filters and sorts newest first", async (t) => {
  const outboxDir = join(tempDir(t), "data", "outbox");
  let now = NOW;
  const s = createCodeSender(
    { email: { kind: "outbox" }, tel: { kind: "outbox" }, outboxDir },
    log,
    () => now,
  );
  t.after(() => s.close());
  await s.send(message({ challengeId: "a1" }));
  now += 1_000;
  await s.send(message({ csiType: "tel", to: "+447700900123", challengeId: "b2" }));
  now += 1_000;
  await s.send(message({ challengeId: "c3", code: "111222" }));

  assert.deepEqual(readdirSync(outboxDir).sort(), [
    `${NOW}-a1.json`,
    `${NOW + 1_000}-b2.json`,
    `${NOW + 2_000}-c3.json`,
  ]);
  assert.equal(statSync(outboxDir).mode & 0o777, 0o700);
  assert.equal(statSync(join(outboxDir, `${NOW}-a1.json`)).mode & 0o777, 0o600);

  const alice = readOutbox(outboxDir, "alice@example.org");
  assert.deepEqual(
    alice.map((m) => [m.challengeId, m.code, m.sentAtMs]),
    [
      ["c3", "111222", NOW + 2_000],
      ["a1", "483920", NOW],
    ],
  );
  assert.deepEqual(alice[1], {
    ...message({ challengeId: "a1" }),
    sentAtMs: NOW,
    file: join(outboxDir, `${NOW}-a1.json`),
  });
  assert.deepEqual(
    readOutbox(outboxDir).map((m) => m.challengeId),
    ["c3", "b2", "a1"],
  );
  assert.deepEqual(readOutbox(outboxDir, "nobody@example.org"), []);
  assert.deepEqual(readOutbox(join(outboxDir, "missing")), []);
});

test("the outbox refuses a challenge id that is not a plain file name", async (t) => {
  const outboxDir = tempDir(t);
  const s = sender(t, { outboxDir });
  await assert.rejects(
    s.send(message({ challengeId: "../escape" })),
    (e: unknown) => e instanceof DiscoveryError && e.code === "invalid_argument",
  );
  assert.deepEqual(readdirSync(outboxDir), []);
});

test("delivery section: absent or empty means both outboxes under dataDir", () => {
  const expected = { email: { kind: "outbox" }, tel: { kind: "outbox" }, outboxDir: "/srv/dp/data/outbox" };
  const parsed = readDeliverySection(ConfigReader.of({}, "config.delivery"), "/etc/mimi", "/srv/dp/data");
  assert.deepEqual(parsed, expected);
  assert.ok(Object.isFrozen(parsed.email));
  assert.equal(
    readDeliverySection(ConfigReader.of({ outboxDir: "outbox" }), "/etc/mimi", "/srv/dp/data").outboxDir,
    "/etc/mimi/outbox",
  );
});

test("delivery section: smtp and http channels with their defaults", () => {
  const read = (raw: object) =>
    readDeliverySection(ConfigReader.of(raw, "config.delivery"), "/etc/mimi", "/data");
  const full = read({
    email: {
      kind: "smtp",
      host: "smtp.example.org",
      from: "MIMI <codes@dp.example>",
      user: "dp",
      password: "pw",
    },
    tel: { kind: "http", url: "https://sms.example.org/send", token: "t" },
  });
  assert.deepEqual(full.email, {
    kind: "smtp",
    host: "smtp.example.org",
    port: 587,
    secure: false,
    requireTls: true,
    from: "MIMI <codes@dp.example>",
    user: "dp",
    password: "pw",
    timeoutMs: 10_000,
  });
  assert.deepEqual(full.tel, {
    kind: "http",
    url: "https://sms.example.org/send",
    token: "t",
    timeoutMs: 5_000,
  });

  const tlsCases: [object, { secure: boolean; requireTls: boolean }][] = [
    [{ port: 465 }, { secure: true, requireTls: false }],
    [
      { port: 25, tls: "opportunistic" },
      { secure: false, requireTls: false },
    ],
    [
      { port: 2525, tls: "implicit" },
      { secure: true, requireTls: false },
    ],
  ];
  for (const [over, want] of tlsCases) {
    const email = read({ email: { kind: "smtp", host: "h.example", from: "c@dp.example", ...over } }).email;
    assert.equal(email.kind, "smtp");
    assert.deepEqual(email.kind === "smtp" && { secure: email.secure, requireTls: email.requireTls }, want);
    assert.ok(email.kind === "smtp" && email.user === undefined && !("password" in email));
  }
});

test("delivery section: unknown keys and bad values are refused", () => {
  const cases: [object, RegExp][] = [
    [{ emial: {} }, /unknown key: emial/],
    [{ email: { kind: "outbox", host: "x" } }, /email has unknown key: host/],
    [{ email: { kind: "smtp", host: "h", from: "c@dp.example", secure: true } }, /unknown key: secure/],
    [{ email: { kind: "sendmail" } }, /kind must be "outbox" or "smtp"/],
    [{ email: { kind: "smtp", from: "c@dp.example" } }, /host must be/],
    [{ email: { kind: "smtp", host: "h", from: "nobody" } }, /from must be an address/],
    [{ email: { kind: "smtp", host: "h", from: "c@dp.example", tls: "maybe" } }, /tls must be one of/],
    [{ email: { kind: "smtp", host: "h", from: "c@dp.example", user: "u" } }, /set together/],
    [{ tel: { kind: "http", url: "ftp://x.example/" } }, /http or https URL/],
    [{ tel: { kind: "http", url: "https://x.example/", timeoutMs: 0 } }, /timeoutMs must be an integer/],
    [{ tel: { kind: "smpp" } }, /kind must be "outbox" or "http"/],
  ];
  for (const [raw, reason] of cases) {
    assert.throws(
      () => readDeliverySection(ConfigReader.of(raw, "config.delivery"), "/", "/data"),
      (e: unknown) => e instanceof ConfigError && reason.test(e.message),
      JSON.stringify(raw),
    );
  }
});

test("logs above debug hold neither the address nor the code", async (t) => {
  const lines: { level: string; fields: Record<string, unknown>; msg: string }[] = [];
  const record =
    (level: string) =>
    (fields: Record<string, unknown>, msg: string): void => {
      lines.push({ level, fields, msg });
    };
  const fake = {
    child: () => fake,
    debug: record("debug"),
    info: record("info"),
    warn: record("warn"),
    error: record("error"),
  };
  const outboxDir = tempDir(t);
  const config: DeliveryConfig = {
    email: smtp(await closedPort()),
    tel: { kind: "outbox" },
    outboxDir,
  };
  const s = createCodeSender(config, fake as unknown as Logger, () => NOW);
  t.after(() => s.close());
  await s.send(message({ csiType: "tel", to: "+447700900123" }));
  await assert.rejects(s.send(message()));

  assert.deepEqual(
    lines.map((l) => [l.level, l.msg]),
    [
      ["info", "code sent"],
      ["warn", "code delivery failed"],
      ["debug", "code delivery failure detail"],
    ],
  );
  assert.equal(lines[0]?.fields.csi, csiHash("tel:+447700900123"));
  assert.equal(lines[1]?.fields.csi, csiHash("mailto:alice@example.org"));
  for (const line of lines.filter((l) => l.level !== "debug")) {
    const text = JSON.stringify(line);
    for (const secret of ["+447700900123", "alice@example.org", "483920"]) {
      assert.ok(!text.includes(secret), `${line.msg} logs ${secret}`);
    }
  }
});

test("delivery secrets may come from files the process user alone can read", () => {
  const dir = mkdtempSync(join(tmpdir(), "mimi-secrets-"));
  try {
    writeFileSync(join(dir, "smtp-password"), "s3cret\n", { mode: 0o600 });
    writeFileSync(join(dir, "sms-token"), "tok", { mode: 0o600 });
    writeFileSync(join(dir, "open-token"), "tok", { mode: 0o644 });
    chmodSync(join(dir, "open-token"), 0o644);
    const read = (email: object, tel: object = {}) =>
      readDeliverySection(ConfigReader.of({ email, tel }, "config.delivery"), dir, "/data");
    const smtp = { kind: "smtp", host: "smtp.example.org", from: "MIMI <codes@dp.example>", user: "dp" };
    const parsed = read(
      { ...smtp, passwordFile: "smtp-password" },
      { kind: "http", url: "https://sms.example.org/send", tokenFile: "sms-token" },
    );
    assert.equal(parsed.email.kind === "smtp" && parsed.email.password, "s3cret");
    assert.equal(parsed.tel.kind === "http" && parsed.tel.token, "tok");
    assert.throws(() => read({ ...smtp, password: "x", passwordFile: "smtp-password" }), /not both/);
    assert.throws(
      () => read({}, { kind: "http", url: "https://sms.example.org/send", tokenFile: "open-token" }),
      /has mode 0644: group or others may read it; fix: chmod 600/,
    );
    assert.throws(() => read({ ...smtp, passwordFile: "missing" }), /cannot be read/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
