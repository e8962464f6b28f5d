// Certificate revocation lists on a server (host crl.ts, TlsFiles, rpc sessions.ts): a revoked
// client certificate is refused at the handshake, and a connection it already holds is ended
// when the list that revokes it arrives; a list that would refuse every peer, or take a
// revocation back, is refused and the one in use kept. Real mutual TLS over loopback.
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { TlsFiles } from "@mimi/host";
import {
  channelCredentials,
  createGrpcServer,
  endUntrustedSessions,
  listen,
  loadTls,
  serverCredentials,
  silenceIpServernameWarning,
  trackSessions,
} from "@mimi/rpc";
import { devTlsPaths } from "./paths.js";
import { ensureDevPki, writeDevCrl } from "./pki.js";

silenceIpServernameWarning(process);
const dir = mkdtempSync(join(tmpdir(), "mimi-revocation-"));
const stranger = join(dir, "stranger");
const crlFile = join(dir, "crl.pem");
const cleanups: (() => void)[] = [() => rmSync(dir, { recursive: true, force: true })];
after(() => {
  for (const c of cleanups.reverse()) c();
});
const HOUR = 3_600_000;

const ECHO: grpc.MethodDefinition<Buffer, Buffer> = {
  path: "/test.Echo/Echo",
  requestStream: false,
  responseStream: false,
  requestSerialize: (b) => b,
  requestDeserialize: (b) => b,
  responseSerialize: (b) => b,
  responseDeserialize: (b) => b,
};
const EchoClient = grpc.makeGenericClientConstructor({ Echo: ECHO }, "Echo");

const certOf = (identity: string, pki = dir) =>
  new X509Certificate(readFileSync(devTlsPaths(pki, identity).certFile));
const caOf = (pki = dir) => new X509Certificate(readFileSync(join(pki, "ca.pem")));
const serverFiles = (now?: () => number) =>
  new TlsFiles({ ...devTlsPaths(dir, "server"), crlFile }, now ? { now } : {});

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
  await refused(() => writeDevCrl(stranger, crlFile), /has a CRL 1 that no CA of the CA file signed/);
  // A CA of the same name with another key (anyone can name a CA so) did not sign it either.
  const sameName = join(dir, "same-name");
  await ensureDevPki(sameName, []);
  await refused(() => writeDevCrl(sameName, crlFile), /has a CRL 1 that no CA of the CA file signed/);
  await refused(() => writeFileSync(crlFile, readFileSync(join(dir, "ca.pem"))), /holds no CRL/);
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
  // Two lists, one from each, pass; and a file of one current list does.
  await writeDevCrl(stranger, join(dir, "stranger-crl.pem"));
  writeFileSync(
    join(dir, "two.pem"),
    Buffer.concat([readFileSync(crlFile), readFileSync(join(dir, "stranger-crl.pem"))]),
  );
  const two = new TlsFiles({ ...devTlsPaths(dir, "server"), caFile: both, crlFile: join(dir, "two.pem") });
  assert.equal(two.summary.crl?.lists, 2);
  assert.equal(serverFiles().summary.crl?.lists, 1);
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
  trackSessions(server);
  let ended = 0;
  files.onTrustChange(() => {
    ended += endUntrustedSessions(server, (chain) => files.trustsPeer(chain), 60_000);
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
  const ask = (c: grpc.Client) =>
    new Promise<string>((resolve, reject) =>
      c.makeUnaryRequest(
        ECHO.path,
        (b: Buffer) => b,
        (b: Buffer) => b,
        Buffer.from("hi"),
        { deadline: Date.now() + 10_000 },
        (err, res) => (err || !res ? reject(err) : resolve(res.toString())),
      ),
    );
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
