// Certificate revocation lists on a server (host crl.ts, TlsFiles, rpc sessions.ts): a revoked
// client certificate is refused at the handshake, and a connection it already holds is ended
// when the list that revokes it arrives; a list that would refuse every peer, or take a
// revocation back, is refused and the one in use kept. Real mutual TLS over loopback.
import "reflect-metadata";
import assert from "node:assert/strict";
import { type KeyObject, webcrypto, X509Certificate } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { serialKey, TlsFiles } from "@mimi/host";
import {
  channelCredentials,
  createGrpcServer,
  endUntrustedSessions,
  listen,
  loadTls,
  serverCredentials,
  silenceIpServernameWarning,
  type TlsMaterial,
  trackSessions,
} from "@mimi/rpc";
import * as x509 from "@peculiar/x509";
import { devTlsPaths } from "./paths.js";
import { ensureDevPki, writeDevCrl } from "./pki.js";
import { bytesMethod } from "./testing.js";

silenceIpServernameWarning(process);
const dir = mkdtempSync(join(tmpdir(), "mimi-revocation-"));
const stranger = join(dir, "stranger");
const crlFile = join(dir, "crl.pem");
const cleanups: (() => void)[] = [() => rmSync(dir, { recursive: true, force: true })];
after(() => {
  for (const c of cleanups.reverse()) c();
});
const HOUR = 3_600_000;

const ECHO = bytesMethod("/test.Echo/Echo");
const EchoClient = grpc.makeGenericClientConstructor({ Echo: ECHO }, "Echo");

const certOf = (identity: string, pki = dir) =>
  new X509Certificate(readFileSync(devTlsPaths(pki, identity).certFile));
const caOf = (pki = dir) => new X509Certificate(readFileSync(join(pki, "ca.pem")));
const serverFiles = (now?: () => number) =>
  new TlsFiles({ ...devTlsPaths(dir, "server"), crlFile }, now ? { now } : {});

/** Paths of a copy of the server's pair (`name`.pem and `name`-key.pem) that a test may rewrite, with the CRL file. */
function serverCopy(name: string) {
  const paths = {
    ...devTlsPaths(dir, "server"),
    crlFile,
    certFile: join(dir, `${name}.pem`),
    keyFile: join(dir, `${name}-key.pem`),
  };
  writeFileSync(paths.certFile, readFileSync(devTlsPaths(dir, "server").certFile));
  writeFileSync(paths.keyFile, readFileSync(devTlsPaths(dir, "server").keyFile));
  return paths;
}

/** A server answering Echo with `files`' material, and its port. */
async function echoServer(files: TlsFiles): Promise<{ server: grpc.Server; port: number }> {
  const server = createGrpcServer();
  server.addService(
    { Echo: ECHO },
    {
      Echo: (call: grpc.ServerUnaryCall<Buffer, Buffer>, done: grpc.sendUnaryData<Buffer>) =>
        done(null, call.request),
    },
  );
  const port = await listen(server, "127.0.0.1", 0, serverCredentials(files));
  cleanups.push(() => server.forceShutdown());
  return { server, port };
}

/** One Echo call of "hi" on `c`'s connection. */
function echo(c: grpc.Client): Promise<string> {
  return new Promise<string>((resolve, reject) =>
    c.makeUnaryRequest(
      ECHO.path,
      (b: Buffer) => b,
      (b: Buffer) => b,
      Buffer.from("hi"),
      { deadline: Date.now() + 10_000 },
      (err, res) => (err || !res ? reject(err) : resolve(res.toString())),
    ),
  );
}

/** One Echo call on a new connection made with `tls`. */
async function askOnce(port: number, tls: TlsMaterial): Promise<string> {
  const c = new EchoClient(`127.0.0.1:${port}`, channelCredentials(tls, "server"), {
    "grpc.use_local_subchannel_pool": 1,
  });
  try {
    return await echo(c);
  } finally {
    c.close();
  }
}

test("a CRL file that would refuse every peer, or that no CA of the CA file signed, is refused", async () => {
  await ensureDevPki(dir, ["server", "good", "bad"]);
  await ensureDevPki(stranger, ["server"], {}, "CN=Stranger CA");
  const now = Date.now();
  const refused = async (write: () => Promise<void> | void, why: RegExp) => {
    await write();
    assert.throws(() => serverFiles(), why);
  };
  await refused(
    () =>
      writeDevCrl(dir, crlFile, { thisUpdate: new Date(now - 2 * HOUR), nextUpdate: new Date(now - HOUR) }),
    /CRL file .*crl\.pem has a CRL from CN=MIMI Development CA that expired at/,
  );
  await refused(() => writeDevCrl(dir, crlFile, { thisUpdate: new Date(now + HOUR) }), /not valid before/);
  const unsigned =
    /has no CRL from CN=MIMI Development CA: .*\(1 list\(s\) in the file are signed by no CA of the CA file/;
  await refused(() => writeDevCrl(stranger, crlFile), unsigned);
  // A CA of the same name with another key (anyone can name a CA so) did not sign it either.
  const sameName = join(dir, "same-name");
  await ensureDevPki(sameName, []);
  await refused(() => writeDevCrl(sameName, crlFile), unsigned);
  await refused(
    () => writeFileSync(crlFile, readFileSync(join(dir, "ca.pem"))),
    /holds a PEM block that is not a CRL/,
  );
  await refused(
    () => writeFileSync(crlFile, "-----BEGIN X509 CRL-----\nAAAA\n"),
    /holds a CRL block cut short/,
  );
  // Lists OpenSSL would not take as a plain full list, which would refuse every peer of the CA.
  const delta = new x509.Extension("2.5.29.27", true, Uint8Array.from([2, 1, 1]));
  await refused(() => writeDevCrl(dir, crlFile, { extensions: [delta] }), /is a delta or partial list/);
  const unknown = new x509.Extension("1.2.3.4", true, Uint8Array.from([5, 0]));
  await refused(
    () => writeDevCrl(dir, crlFile, { extensions: [unknown] }),
    /critical extension OpenSSL does not take/,
  );
  // OpenSSL handles no critical cRLNumber either.
  const criticalNumber = new x509.Extension("2.5.29.20", true, Uint8Array.from([2, 1, 9]));
  await refused(
    () => writeDevCrl(dir, crlFile, { extensions: [criticalNumber] }),
    /critical extension OpenSSL does not take \(2\.5\.29\.20\)/,
  );
  // A list whose authority key identifier names another key is not the CA's, to OpenSSL.
  const otherKeyId = new x509.AuthorityKeyIdentifierExtension("0102030405060708090a0b0c0d0e0f1011121314");
  await refused(() => writeDevCrl(dir, crlFile, { extensions: [otherKeyId] }), unsigned);
  await refused(
    () => writeFileSync(crlFile, "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n"),
    /does not parse/,
  );
  // With two CAs in the CA file, a list from one alone would refuse the other's peers.
  await writeDevCrl(dir, crlFile);
  const both = join(dir, "both-cas.pem");
  writeFileSync(
    both,
    Buffer.concat([readFileSync(join(dir, "ca.pem")), readFileSync(join(stranger, "ca.pem"))]),
  );
  assert.throws(
    () => new TlsFiles({ ...devTlsPaths(dir, "server"), caFile: both, crlFile }),
    /has no CRL from CN=Stranger CA: .*every CA of the CA file needs a current one/,
  );
  assert.equal(serverFiles().summary.crl?.lists, 1);
  // A list from a CA not (yet) in the CA file is left out, and said.
  writeFileSync(join(dir, "extra.pem"), Buffer.concat([readFileSync(crlFile), await crlOf(stranger)]));
  assert.equal(serverFiles().summary.crl?.skipped, undefined);
  assert.deepEqual(
    new TlsFiles({ ...devTlsPaths(dir, "server"), crlFile: join(dir, "extra.pem") }).summary.crl?.skipped,
    1,
  );
});

/** The PEM of a new list of the CA in `pki`. */
async function crlOf(pki: string, o: Parameters<typeof writeDevCrl>[2] = {}): Promise<Buffer> {
  const file = join(pki, `crl-${Math.random().toString(36).slice(2)}.pem`);
  await writeDevCrl(pki, file, o);
  return readFileSync(file);
}

test("with two CAs and a list from each, the peers of both connect, and each list revokes its own", async () => {
  await ensureDevPki(dir, ["server", "good", "bad"]);
  await ensureDevPki(stranger, ["server", "outsider", "outcast"], {}, "CN=Stranger CA");
  const both = join(dir, "both-cas.pem");
  writeFileSync(
    both,
    Buffer.concat([readFileSync(join(dir, "ca.pem")), readFileSync(join(stranger, "ca.pem"))]),
  );
  const lists = join(dir, "two-lists.pem");
  writeFileSync(
    lists,
    Buffer.concat([await crlOf(dir, { revoke: ["bad"] }), await crlOf(stranger, { revoke: ["outcast"] })]),
  );
  const files = new TlsFiles({ ...devTlsPaths(dir, "server"), caFile: both, crlFile: lists });
  assert.deepEqual([files.summary.crl?.lists, files.summary.crl?.revoked], [2, 2]);
  const { port } = await echoServer(files);
  const ask = (pki: string, identity: string) =>
    askOnce(port, { ...loadTls(devTlsPaths(pki, identity)), ca: readFileSync(both) });
  assert.equal(await ask(dir, "good"), "hi");
  // Node reads one list per buffer: given the two as one, the second CA's peers were all refused.
  assert.equal(await ask(stranger, "outsider"), "hi");
  await assert.rejects(ask(dir, "bad"), (err: grpc.ServiceError) => err.code === grpc.status.UNAVAILABLE);
  await assert.rejects(
    ask(stranger, "outcast"),
    (err: grpc.ServiceError) => err.code === grpc.status.UNAVAILABLE,
  );
});

test("a peer is trusted along signatures only: certificates that merely name a trusted CA do not anchor it", async () => {
  await ensureDevPki(dir, ["server", "bad"]);
  await ensureDevPki(stranger, ["server", "outsider"], {}, "CN=Stranger CA");
  // The server trusts the stranger CA alone (the development CA was removed from its CA file).
  const files = new TlsFiles(devTlsPaths(stranger, "server"));
  assert.equal(files.trustsPeer([certOf("outsider", stranger), caOf(stranger)]), true);
  assert.equal(files.trustsPeer([certOf("outsider", stranger)]), true, "Node did not complete the chain");
  // A leaf of the removed CA, with a certificate naming the removed CA (and carrying its key, so
  // the leaf's signature checks out) as issued by the trusted one, and the trusted CA itself.
  const removed = new x509.X509Certificate(readFileSync(join(dir, "ca.pem")));
  const trusted = new x509.X509Certificate(readFileSync(join(stranger, "ca.pem")));
  const alg = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" } as const;
  const forger = await webcrypto.subtle.generateKey(alg, true, ["sign", "verify"]);
  const fake = await x509.X509CertificateGenerator.create({
    serialNumber: "7f01",
    subject: removed.subject,
    issuer: trusted.subject,
    notBefore: new Date(Date.now() - HOUR),
    notAfter: new Date(Date.now() + HOUR),
    publicKey: await removed.publicKey.export(alg, ["verify"]),
    signingKey: forger.privateKey,
    signingAlgorithm: alg,
    extensions: [new x509.BasicConstraintsExtension(true, undefined, true)],
  });
  const forged = [certOf("bad"), new X509Certificate(Buffer.from(fake.rawData)), caOf(stranger)];
  assert.equal(
    forged[0]?.verify(forged[1]?.publicKey as KeyObject),
    true,
    "the leaf checks out under the fake",
  );
  assert.equal(files.trustsPeer(forged), false);
  assert.equal(files.trustsPeer([certOf("bad"), caOf(stranger)]), false);
});

test("a revoked peer is refused at the handshake and loses the connection it held; an older list is refused", async () => {
  await ensureDevPki(dir, ["server", "good", "bad"]);
  await ensureDevPki(stranger, ["server"], {}, "CN=Stranger CA");
  await writeDevCrl(dir, crlFile, { thisUpdate: new Date(Date.now() - 2 * HOUR) });
  let now = Date.now();
  const files = serverFiles(() => now);
  assert.deepEqual(
    files.summary.crl && { lists: files.summary.crl.lists, revoked: files.summary.crl.revoked },
    {
      lists: 1,
      revoked: 0,
    },
  );
  const { server, port } = await echoServer(files);
  trackSessions(server, (chain) => files.trustsPeer(chain), 10_000);
  let ended = 0;
  files.onTrustChange(() => {
    ended += endUntrustedSessions(server, 60_000);
  });

  // One client each, kept: its calls share one connection.
  const clientOf = (identity: string) => {
    const c = new EchoClient(
      `127.0.0.1:${port}`,
      channelCredentials(loadTls(devTlsPaths(dir, identity)), "server"),
      {
        "grpc.use_local_subchannel_pool": 1,
      },
    );
    cleanups.push(() => c.close());
    return c;
  };
  const ask = echo;
  const good = clientOf("good");
  const bad = clientOf("bad");
  assert.equal(await ask(good), "hi");
  assert.equal(await ask(bad), "hi");
  assert.equal(files.trustsPeer([certOf("bad"), caOf()]), true);

  // The CA revokes "bad": the watch (or a reload) takes the new list.
  await writeDevCrl(dir, crlFile, { revoke: ["bad"], thisUpdate: new Date(Date.now() - HOUR) });
  const r = files.reload(undefined, { ca: false });
  assert.equal(r.changed, true);
  assert.equal(r.changed && r.rotated, false, "the certificate did not change");
  assert.equal(r.changed && r.crl?.revoked, 1);
  assert.equal(ended, 1, "the revoked peer's connection, and only it, is ended");
  assert.equal(files.trustsPeer([certOf("bad"), caOf()]), false);
  assert.equal(files.trustsPeer([certOf("bad")]), false, "also when Node did not complete the chain");
  assert.equal(files.trustsPeer([certOf("good"), caOf()]), true);
  assert.equal(files.trustsPeer([certOf("server", stranger), caOf(stranger)]), false, "a CA not in the file");
  assert.equal(await ask(good), "hi", "the other peer's connection goes on");
  // The revoked peer's next connection fails its handshake.
  await assert.rejects(ask(bad), (err: grpc.ServiceError) => err.code === grpc.status.UNAVAILABLE);
  const fresh = clientOf("bad");
  await assert.rejects(ask(fresh), (err: grpc.ServiceError) => err.code === grpc.status.UNAVAILABLE);
  assert.equal(await ask(clientOf("good")), "hi", "a new connection of a peer still trusted is made");

  // A list older than the one in use would take the revocation back: refused, the list kept.
  await writeDevCrl(dir, crlFile, { thisUpdate: new Date(Date.now() - 2 * HOUR) });
  assert.throws(() => files.reload(undefined, { ca: false }), /older than the one in use/);
  assert.equal(files.trustsPeer([certOf("bad"), caOf()]), false);
  await assert.rejects(
    ask(clientOf("bad")),
    (err: grpc.ServiceError) => err.code === grpc.status.UNAVAILABLE,
  );

  // Past the list's next update every handshake fails (OpenSSL): the server says why it is not ready.
  assert.equal(files.problem(), undefined);
  now = Date.parse(files.summary.crl?.nextUpdate ?? "") + 1;
  assert.match(files.problem() ?? "", /a CRL in .*crl\.pem expired at .*; handshakes are refused/);
});

test("new lists are used though a certificate beside them is refused; cRLNumber orders lists; a due list is said", async () => {
  await ensureDevPki(dir, ["server", "good", "bad"]);
  const paths = serverCopy("server-copy");
  const t0 = Date.now();
  await writeDevCrl(dir, crlFile, {
    number: 5,
    thisUpdate: new Date(t0 - 2 * HOUR),
    nextUpdate: new Date(t0 + 6 * HOUR),
  });
  let now = t0;
  const files = new TlsFiles(paths, { now: () => now });
  assert.equal(files.crlWarning(), undefined);
  // A certificate job left a key that does not match, and the CA published a new list: the list
  // is taken, the certificate in use stays, and the refusal is told.
  writeFileSync(paths.keyFile, readFileSync(devTlsPaths(dir, "good").keyFile));
  await writeDevCrl(dir, crlFile, { number: 6, revoke: ["bad"], thisUpdate: new Date(t0 - HOUR) });
  const r = files.reload();
  assert.equal(r.changed, true);
  assert.equal(r.changed && r.rotated, false);
  assert.equal(r.changed && r.crl?.revoked, 1);
  assert.match((r.changed && r.refused) || "", /key values mismatch/);
  assert.equal(files.trustsPeer([certOf("bad"), caOf()]), false);
  writeFileSync(paths.keyFile, readFileSync(devTlsPaths(dir, "server").keyFile));
  // A list issued later but numbered lower is older: refused.
  await writeDevCrl(dir, crlFile, { number: 4, thisUpdate: new Date(t0 - HOUR / 2) });
  assert.throws(() => files.reload(), /older than the one in use/);
  // A list in its last quarter (or last hour) is said, before OpenSSL starts refusing.
  await writeDevCrl(dir, crlFile, {
    number: 7,
    revoke: ["bad"],
    thisUpdate: new Date(t0 - HOUR),
    nextUpdate: new Date(t0 + 7 * HOUR),
  });
  assert.equal(files.reload().changed, true);
  now = t0 + 4.9 * HOUR;
  assert.equal(files.crlWarning(), undefined, "2.1 hours left of eight: not yet");
  // An hour and a half left of eight: in the last quarter, though more than an hour is left.
  now = t0 + 5.5 * HOUR;
  assert.match(files.crlWarning() ?? "", /is due again at .*; publish a newer one before then/);
});

test("serial numbers compare without their sign byte or case", () => {
  assert.equal(serialKey("00FF01"), serialKey("ff01"));
  assert.equal(serialKey("0"), "0");
});

test("after a change of trust, a connection whose handshake began before it is judged as it arrives", async () => {
  await ensureDevPki(dir, ["server", "good"]);
  const files = new TlsFiles(devTlsPaths(dir, "server"));
  const { server, port } = await echoServer(files);
  // What the server trusts, as a switch: OpenSSL's context is not changed, as for a handshake
  // that was already checked under the old trust when the change came.
  let trusted = true;
  trackSessions(server, () => trusted, 60_000);
  const good = loadTls(devTlsPaths(dir, "good"));
  assert.equal(await askOnce(port, good), "hi");
  trusted = false;
  endUntrustedSessions(server, 60_000);
  await assert.rejects(askOnce(port, good), (err: grpc.ServiceError) => err.code === grpc.status.UNAVAILABLE);
  trusted = true;
  assert.equal(await askOnce(port, good), "hi");
});

const ALG = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" } as const;

/** A key pair and certificate made here, for chains the development PKI does not make. */
interface Made {
  readonly cert: x509.X509Certificate;
  readonly keys: webcrypto.CryptoKeyPair;
}

/** A certificate of `subject` for a new key, issued by `by` (self-signed without). */
async function make(
  subject: string,
  o: { by?: Made; serial: string; extensions?: x509.Extension[] },
): Promise<Made> {
  const keys = (await webcrypto.subtle.generateKey(ALG, true, ["sign", "verify"])) as webcrypto.CryptoKeyPair;
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: o.serial,
    subject,
    issuer: o.by ? o.by.cert.subject : subject,
    notBefore: new Date(Date.now() - HOUR),
    notAfter: new Date(Date.now() + 48 * HOUR),
    publicKey: keys.publicKey,
    signingKey: (o.by ?? { keys }).keys.privateKey,
    signingAlgorithm: ALG,
    extensions: o.extensions ?? [],
  });
  return { cert, keys };
}

const caExtensions = (pathLength?: number) => [
  new x509.BasicConstraintsExtension(true, pathLength, true),
  new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
];
const pem = (m: Made) => `${m.cert.toString("pem")}\n`;
async function keyPem(m: Made): Promise<string> {
  const der = Buffer.from(await webcrypto.subtle.exportKey("pkcs8", m.keys.privateKey));
  return `-----BEGIN PRIVATE KEY-----\n${der.toString("base64")}\n-----END PRIVATE KEY-----\n`;
}
/** Puts `m` in `folder` as writeDevCrl's CA (ca.pem, ca-key.pem). */
async function asCa(folder: string, m: Made): Promise<void> {
  mkdirSync(folder, { recursive: true });
  writeFileSync(join(folder, "ca.pem"), pem(m));
  writeFileSync(join(folder, "ca-key.pem"), await keyPem(m));
}

test("a peer under an intermediate is judged link by link, as OpenSSL judges its handshakes", async () => {
  const rootDir = join(dir, "own-root");
  const interDir = join(dir, "own-inter");
  const root = await make("CN=Own Root CA", { serial: "3a01", extensions: caExtensions() });
  const inter = await make("CN=Own Intermediate CA", {
    by: root,
    serial: "3a02",
    extensions: caExtensions(0),
  });
  const server = await make("CN=server", {
    by: root,
    serial: "3a03",
    extensions: [new x509.SubjectAlternativeNameExtension([{ type: "ip", value: "127.0.0.1" }])],
  });
  const leaf = await make("CN=under-inter", { by: inter, serial: "3a04" });
  await asCa(rootDir, root);
  await asCa(interDir, inter);
  writeFileSync(join(rootDir, "inter.pem"), pem(inter));
  const paths = {
    caFile: join(rootDir, "root-and-inter.pem"),
    certFile: join(rootDir, "server.pem"),
    keyFile: join(rootDir, "server-key.pem"),
    crlFile: join(rootDir, "lists.pem"),
  };
  writeFileSync(paths.caFile, pem(root) + pem(inter));
  writeFileSync(paths.certFile, pem(server));
  writeFileSync(paths.keyFile, await keyPem(server));
  const t0 = Date.now();
  const lists = async (o: { revokeInter: boolean; at: number }) =>
    writeFileSync(
      paths.crlFile,
      Buffer.concat([
        await crlOf(rootDir, {
          ...(o.revokeInter && { revoke: ["inter"] }),
          thisUpdate: new Date(o.at),
          // As openssl ca writes them: the issuer's key identifier, here critical.
          extensions: [await x509.AuthorityKeyIdentifierExtension.create(root.cert, true)],
        }),
        await crlOf(interDir, { thisUpdate: new Date(o.at) }),
      ]),
    );
  await lists({ revokeInter: false, at: t0 - 2 * HOUR });
  const files = new TlsFiles(paths);
  const { port } = await echoServer(files);
  const client: TlsMaterial = {
    ca: Buffer.from(pem(root)),
    cert: Buffer.from(pem(leaf) + pem(inter)),
    key: Buffer.from(await keyPem(leaf)),
  };
  const chain = [leaf, inter, root].map((m) => new X509Certificate(Buffer.from(m.cert.rawData)));
  assert.equal(await askOnce(port, client), "hi", "OpenSSL takes the chain");
  assert.equal(files.trustsPeer(chain), true, "and so does the judge of open connections");
  // The root revokes the intermediate: OpenSSL refuses the next handshake, and the judge agrees.
  await lists({ revokeInter: true, at: t0 - HOUR });
  assert.equal(files.reload(undefined, { ca: false }).changed, true);
  await assert.rejects(
    askOnce(port, client),
    (err: grpc.ServiceError) => err.code === grpc.status.UNAVAILABLE,
  );
  assert.equal(files.trustsPeer(chain), false);
  assert.equal(files.trustsPeer(chain.slice(0, 2)), false, "whether or not Node added the root");
  // With lists, an intermediate the peer brought (not in the CA file) has none: OpenSSL refuses.
  writeFileSync(paths.caFile, pem(root));
  writeFileSync(paths.crlFile, await crlOf(rootDir));
  const rootOnly = new TlsFiles(paths);
  assert.equal(rootOnly.trustsPeer(chain), false);
  const { crlFile: _, ...withoutLists } = paths;
  assert.equal(new TlsFiles(withoutLists).trustsPeer(chain), true, "without lists it chains");
});

test("a self-signed peer certificate listed in the CA file is trusted; an issuer the peer brings must be a CA", async () => {
  await ensureDevPki(dir, ["server"]);
  // A client's own self-signed certificate, without keyCertSign, listed in the server's CA file.
  const own = await make("CN=self-signed-client", {
    serial: "4b01",
    extensions: [new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true)],
  });
  const caFile = join(dir, "ca-and-own.pem");
  writeFileSync(caFile, Buffer.concat([readFileSync(join(dir, "ca.pem")), Buffer.from(pem(own))]));
  const files = new TlsFiles({ ...devTlsPaths(dir, "server"), caFile });
  const ownCert = new X509Certificate(Buffer.from(own.cert.rawData));
  assert.equal(files.trustsPeer([ownCert]), true);
  // An end-entity certificate of the trusted CA, without key usage, does not issue.
  const devCa: Made = {
    cert: new x509.X509Certificate(readFileSync(join(dir, "ca.pem"))),
    keys: {
      privateKey: await importCaKey(readFileSync(join(dir, "ca-key.pem"), "utf8")),
      publicKey: await new x509.X509Certificate(readFileSync(join(dir, "ca.pem"))).publicKey.export(ALG, [
        "verify",
      ]),
    },
  };
  const endEntity = await make("CN=end-entity", {
    by: devCa,
    serial: "4b02",
    extensions: [new x509.BasicConstraintsExtension(false, undefined, true)],
  });
  const underIt = await make("CN=under-end-entity", { by: endEntity, serial: "4b03" });
  const chain = [underIt, endEntity, devCa].map((m) => new X509Certificate(Buffer.from(m.cert.rawData)));
  assert.equal(chain[0]?.verify(chain[1]?.publicKey as KeyObject), true);
  assert.equal(files.trustsPeer(chain), false);
});

test("a CRL file that cannot be read holds back no certificate rotation", async () => {
  await ensureDevPki(dir, ["server", "good"]);
  const paths = serverCopy("rot");
  await writeDevCrl(dir, crlFile);
  const files = new TlsFiles(paths);
  const before = files.summary.fingerprint;
  // A rotation (same identity, new key) while the CRL file is gone.
  const fresh = join(dir, "fresh");
  mkdirSync(fresh, { recursive: true });
  for (const f of ["ca.pem", "ca-key.pem"]) writeFileSync(join(fresh, f), readFileSync(join(dir, f)));
  await ensureDevPki(fresh, ["server"]);
  writeFileSync(paths.certFile, readFileSync(devTlsPaths(fresh, "server").certFile));
  writeFileSync(paths.keyFile, readFileSync(devTlsPaths(fresh, "server").keyFile));
  rmSync(crlFile);
  const r = files.reload(undefined, { ca: false });
  assert.equal(r.changed && r.rotated, true);
  assert.notEqual(files.summary.fingerprint, before);
  assert.match((r.changed && r.refused) || "", /cannot read TLS CRL file/);
  assert.equal(files.summary.crl?.lists, 1, "the lists in use stay");
  // Nothing else changed: the unreadable file is said as a refusal.
  assert.throws(() => files.reload(undefined, { ca: false }), /cannot read TLS CRL file/);
  // A config that names no CRL file any more (SIGHUP) drops the lists.
  const { crlFile: _, ...without } = paths;
  const dropped = files.reload(without);
  assert.equal(dropped.changed && dropped.crl, null);
  assert.equal(files.summary.crl, undefined);
  assert.equal(files.crl, undefined);
});

async function importCaKey(pem: string) {
  const der = Buffer.from(pem.replace(/-----[^-]+-----/g, "").replace(/\s+/g, ""), "base64");
  return webcrypto.subtle.importKey("pkcs8", der, { name: "ECDSA", namedCurve: "P-256" }, false, ["sign"]);
}
