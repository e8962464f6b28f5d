// Outgoing connections made with live TLS material (host's TlsFiles, rpc's channelCredentials):
// one TLS context per material, not one per connection, and a rotation reaches the next
// connection. Real mutual TLS over loopback, with certificates from the development PKI.
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import tls from "node:tls";
import * as grpc from "@grpc/grpc-js";
import { TlsFiles } from "@mimi/host";
import {
  channelCredentials,
  createGrpcServer,
  listen,
  loadTls,
  serverCredentials,
  silenceIpServernameWarning,
} from "@mimi/rpc";
import { devTlsPaths } from "./paths.js";
import { ensureDevPki } from "./pki.js";
import { bytesMethod } from "./testing.js";

silenceIpServernameWarning(process);
const dir = mkdtempSync(join(tmpdir(), "mimi-tls-context-"));
const cleanups: (() => void)[] = [() => rmSync(dir, { recursive: true, force: true })];
after(() => {
  for (const c of cleanups.reverse()) c();
});

/** A method that answers with the SHA-256 fingerprint of the certificate its caller presented. */
const WHO = bytesMethod("/test.Who/Who");
const WhoClient = grpc.makeGenericClientConstructor({ Who: WHO }, "Who");

/** A server presenting `identity`'s certificate, answering Who; its port. */
async function whoServer(identity: string): Promise<number> {
  const server = createGrpcServer();
  server.addService(
    { Who: WHO },
    {
      Who: (call: grpc.ServerUnaryCall<Buffer, Buffer>, done: grpc.sendUnaryData<Buffer>) =>
        done(null, Buffer.from(call.getAuthContext().sslPeerCertificate?.fingerprint256 ?? "")),
    },
  );
  const port = await listen(server, "127.0.0.1", 0, serverCredentials(loadTls(devTlsPaths(dir, identity))));
  cleanups.push(() => server.forceShutdown());
  return port;
}

test("a channel's connections share one TLS context until the material rotates", async () => {
  await ensureDevPki(dir, ["server", "client", "other"]);
  const port = await whoServer("server");
  const otherPort = await whoServer("other");

  const files = new TlsFiles(devTlsPaths(dir, "client"));
  const creds = channelCredentials(files, "server");
  // Contexts Node builds from here on: the server's was built when it listened.
  let built = 0;
  const build = tls.createSecureContext;
  tls.createSecureContext = (o) => {
    built++;
    return build(o);
  };
  cleanups.push(() => {
    tls.createSecureContext = build;
  });
  // Each call on a client of its own, with a subchannel pool of its own: a new connection.
  const connectAndAsk = async (to = port, using = creds): Promise<string> => {
    const client = new WhoClient(`127.0.0.1:${to}`, using, { "grpc.use_local_subchannel_pool": 1 });
    try {
      return await new Promise<string>((resolve, reject) =>
        client.makeUnaryRequest(
          WHO.path,
          (b: Buffer) => b,
          (b: Buffer) => b,
          Buffer.alloc(0),
          (err, res) => (err || !res ? reject(err) : resolve(res.toString())),
        ),
      );
    } finally {
      client.close();
    }
  };

  const first = await connectAndAsk();
  assert.equal(first, files.summary.fingerprint, "the server saw the client's certificate");
  assert.equal(built, 1, "the first connection built the context");
  for (let i = 0; i < 3; i++) assert.equal(await connectAndAsk(), first);
  assert.equal(built, 1, "three more connections built none");
  // Another channel's credentials from the same files (a resolver's channel to another DP) too.
  assert.equal(await connectAndAsk(port, channelCredentials(files, "server")), first);
  assert.equal(built, 1, "nor did other credentials made from the same files");
  // The kept context does not stand for the server's checks, made on every connection.
  await assert.rejects(connectAndAsk(otherPort), /presented identity "other", expected "server"/);

  // A rotation: a new key and certificate of the same identity.
  const paths = devTlsPaths(dir, "client");
  rmSync(paths.certFile);
  rmSync(paths.keyFile);
  await ensureDevPki(dir, ["client"]);
  assert.equal(files.reload().changed, true);
  const built0 = built;
  const rotated = await connectAndAsk();
  assert.notEqual(rotated, first, "the next connection presents the new certificate");
  assert.equal(rotated, files.summary.fingerprint);
  assert.equal(built - built0, 1, "one context for the new material");
  assert.equal(await connectAndAsk(), rotated);
  assert.equal(built - built0, 1, "and no more");

  // A new CA file (the same CA, listed twice) is new material too.
  const caFile = devTlsPaths(dir, "client").caFile;
  writeFileSync(caFile, Buffer.concat([readFileSync(caFile), readFileSync(caFile)]));
  assert.equal(files.reload().changed, true);
  const built1 = built;
  assert.equal(await connectAndAsk(), rotated);
  assert.equal(built - built1, 1, "one context for the new CA file");
});
