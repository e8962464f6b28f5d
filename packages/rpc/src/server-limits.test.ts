// Connection hygiene (the abuse issue): watch streams per identity, request sizes per method,
// the connection cap and the TLS handshake timeout, on real sockets.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { TLSSocket, connect as tlsConnect } from "node:tls";
import * as grpc from "@grpc/grpc-js";
import { createLogger, DiscoveryError } from "@mimi/core";
import { ResolverService, RootService } from "@mimi/core/pb";
import { until } from "@mimi/core/testing";
import { devTlsPaths } from "@mimi/devnet/paths";
import { ensureDevPki } from "@mimi/devnet/pki";
import { type Channel, openChannel } from "./channel.js";
import { addService } from "./grpc.js";
import { createGrpcServer, listen } from "./listen.js";
import { addressKey, capConnections, DEFAULT_CONNECTION_LIMITS } from "./server-limits.js";
import { channelCredentials, loadTls, serverCredentials } from "./tls.js";

const log = createLogger({ name: "test", level: "silent" });
const closers: (() => void)[] = [];
after(() => {
  for (const c of closers) c();
});
const missing = async () => {
  throw new DiscoveryError("failed_precondition", "not in this test");
};

async function serve(
  limits: Partial<typeof DEFAULT_CONNECTION_LIMITS>,
  creds = grpc.ServerCredentials.createInsecure(),
) {
  const server = createGrpcServer({ ...DEFAULT_CONNECTION_LIMITS, ...limits });
  closers.push(() => server.forceShutdown());
  let watching = 0;
  let streaming = 0;
  addService(
    server,
    RootService,
    {
      getSnapshot: missing,
      refer: missing,
      async watchRegistry(_req, ctx) {
        watching++;
        await new Promise<void>((done) => ctx.signal.addEventListener("abort", () => done()));
        watching--;
      },
    },
    { log },
  );
  addService(
    server,
    ResolverService,
    {
      resolve: async () => ({}),
      async resolveStream(_reqs, ctx) {
        streaming++;
        await new Promise<void>((done) => ctx.signal.addEventListener("abort", () => done()));
        streaming--;
      },
      getQuota: missing,
    },
    { log },
  );
  const port = await listen(server, "127.0.0.1", 0, creds);
  return { server, port, watching: () => watching, streaming: () => streaming };
}

function channel(port: number): Channel {
  const ch = openChannel(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  closers.push(() => ch.close());
  return ch;
}

test("one identity holds at most its watch streams; a closed one frees its slot", async () => {
  const s = await serve({ maxWatchersPerIdentity: 2 });
  const root = channel(s.port).client(RootService);
  const watches = [new AbortController(), new AbortController()];
  const open = watches.map((w) =>
    root.watchRegistry({}, { signal: w.signal })[Symbol.asyncIterator]().next(),
  );
  for (const p of open) p.catch(() => {});
  await until(() => s.watching() === 2, "two watches run");
  // Regression: 2,000 watch streams on one connection multiplied the DP's cost per write.
  await assert.rejects(root.watchRegistry({})[Symbol.asyncIterator]().next(), (err: DiscoveryError) => {
    assert.equal(err.remoteStatus, grpc.status.RESOURCE_EXHAUSTED);
    assert.match(err.message, /already holds 2 open watch streams here/);
    assert.equal(err.details?.reason, "WATCH_STREAMS_PER_IDENTITY");
    return true;
  });
  (watches[0] as AbortController).abort();
  await until(() => s.watching() === 1, "the cancelled watch ended");
  const again = new AbortController();
  root
    .watchRegistry({}, { signal: again.signal })
    [Symbol.asyncIterator]()
    .next()
    .catch(() => {});
  await until(() => s.watching() === 2, "a new watch took the freed slot");
  again.abort();
  (watches[1] as AbortController).abort();
});

test("one identity holds at most its streaming calls; a closed one frees its slot", async () => {
  const s = await serve({ maxStreamingCallsPerIdentity: 2 });
  const resolver = channel(s.port).client(ResolverService);
  const open = () => {
    const c = new AbortController();
    const it = resolver
      .resolveStream((async function* () {})(), { signal: c.signal })
      [Symbol.asyncIterator]();
    const first = it.next();
    first.catch(() => {});
    return { c, first };
  };
  const calls = [open(), open()];
  await until(() => s.streaming() === 2, "two streams run");
  await assert.rejects(open().first, (err: DiscoveryError) => {
    assert.equal(err.remoteStatus, grpc.status.RESOURCE_EXHAUSTED);
    assert.match(err.message, /already holds 2 open streaming calls here/);
    assert.equal(err.details?.reason, "STREAMING_CALLS_PER_IDENTITY");
    return true;
  });
  calls[0]?.c.abort();
  await until(() => s.streaming() === 1, "the cancelled stream ended");
  const again = open();
  await until(() => s.streaming() === 2, "a new stream took the freed slot");
  again.c.abort();
  calls[1]?.c.abort();
});

test("a request larger than its method takes is RESOURCE_EXHAUSTED, before it is decoded", async () => {
  const s = await serve({ maxRequestBytes: 1_024 });
  const resolver = channel(s.port).client(ResolverService);
  await resolver.resolve({ csi: "x".repeat(900) });
  await assert.rejects(resolver.resolve({ csi: "x".repeat(2_000) }), (err: DiscoveryError) => {
    assert.equal(err.remoteStatus, grpc.status.RESOURCE_EXHAUSTED);
    assert.match(err.message, /request message of 2003 bytes is larger than 1024, the most Resolve takes/);
    assert.equal(err.details?.reason, "REQUEST_TOO_LARGE");
    return true;
  });
});

// grpc-js read (or inflated) any request up to the 16 MiB of the largest method before the
// method's own check: here a message past twice its method's limit is refused by its length.
test("a request past twice its method's limit is refused by its declared length, compressed or not", async () => {
  const s = await serve({ maxRequestBytes: 1_024 });
  for (const compressed of [false, true]) {
    const ch = new grpc.Client(
      `127.0.0.1:${s.port}`,
      grpc.credentials.createInsecure(),
      compressed ? { "grpc.default_compression_algorithm": 2 } : {},
    );
    closers.push(() => ch.close());
    const call = (bytes: number) =>
      new Promise<grpc.ServiceError | undefined>((done) => {
        // A Resolve request: field 1 (csi), a string of `bytes` bytes.
        const body = Buffer.concat([Buffer.from([0x0a]), varint(bytes), Buffer.alloc(bytes, 0x78)]);
        ch.makeUnaryRequest(
          "/mimi.discovery.v1.ResolverService/Resolve",
          (b: Buffer) => b,
          (b: Buffer) => b,
          body,
          (err) => done(err ?? undefined),
        );
      });
    const near = await call(2_000);
    assert.equal(near?.code, grpc.status.RESOURCE_EXHAUSTED);
    assert.match(
      near?.details ?? "",
      /larger than 1024, the most Resolve takes/,
      "read, and refused by the method",
    );
    const far = await call(compressed ? 200_000 : 20_000);
    assert.equal(far?.code, grpc.status.RESOURCE_EXHAUSTED);
    assert.match(far?.details ?? "", /larger than (max \(\d+ vs 2048\)|2048)/, `compressed: ${compressed}`);
  }
});

test("a server stream's request is held to its method's limit too", async () => {
  const s = await serve({ maxRequestBytes: 1_024 });
  const ch = new grpc.Client(`127.0.0.1:${s.port}`, grpc.credentials.createInsecure());
  closers.push(() => ch.close());
  // A WatchRegistry request with an unknown field of 20,000 bytes (field 15, length-delimited).
  const body = Buffer.concat([Buffer.from([0x7a]), varint(20_000), Buffer.alloc(20_000, 1)]);
  const err = await new Promise<grpc.ServiceError>((done) => {
    const call = ch.makeServerStreamRequest(
      "/mimi.discovery.v1.RootService/WatchRegistry",
      (b: Buffer) => b,
      (b: Buffer) => b,
      body,
    );
    call.on("data", () => {});
    call.on("error", done);
  });
  assert.equal(err.code, grpc.status.RESOURCE_EXHAUSTED);
  assert.match(err.details, /larger than max \(\d+ vs 2048\)/);
  assert.equal(s.watching(), 0, "the handler never ran");
});

function varint(n: number): Buffer {
  const out: number[] = [];
  for (; n >= 0x80; n >>>= 7) out.push((n & 0x7f) | 0x80);
  out.push(n);
  return Buffer.from(out);
}

test("connections past the cap are closed as they arrive", async () => {
  const s = await serve({});
  capConnections(s.server, { maxConnections: 1, maxConnectionsPerAddress: 100 });
  const first = connect(s.port, "127.0.0.1");
  closers.push(() => first.destroy());
  await new Promise((r) => first.once("connect", r));
  const second = connect(s.port, "127.0.0.1");
  let closed = false;
  second.once("close", () => {
    closed = true;
  });
  second.on("error", () => {});
  await until(() => closed, "the second connection is closed");
  assert.equal(first.destroyed, false, "the first is kept");
});

test("one source address holds at most its share of the connections", async () => {
  const s = await serve({});
  capConnections(s.server, { maxConnections: 100, maxConnectionsPerAddress: 2 });
  const held = [connect(s.port, "127.0.0.1"), connect(s.port, "127.0.0.1")];
  for (const h of held) closers.push(() => h.destroy());
  await Promise.all(held.map((h) => new Promise((r) => h.once("connect", r))));
  const third = connect(s.port, "127.0.0.1");
  let closed = false;
  third.once("close", () => {
    closed = true;
  });
  third.on("error", () => {});
  await until(() => closed, "the third connection from the address is closed");
  // Once one goes, the address may connect again: a call on a new connection gets through.
  (held[0] as ReturnType<typeof connect>).destroy();
  let through = false;
  for (let i = 0; i < 200 && !through; i++) {
    const ch = openChannel(`127.0.0.1:${s.port}`, grpc.credentials.createInsecure());
    try {
      await ch.client(ResolverService).resolve({ csi: "x" }, { timeoutMs: 5_000 });
      through = true;
    } catch {
      // Refused while the server had not yet seen the old connection close: try again.
    } finally {
      ch.close();
    }
  }
  assert.ok(through);
});

test("a connection that does not finish its TLS handshake in time is closed", async () => {
  const dir = mkdtempSync(join(tmpdir(), "mimi-limits-"));
  closers.push(() => rmSync(dir, { recursive: true, force: true }));
  await ensureDevPki(dir, ["server"]);
  const creds = serverCredentials(loadTls(devTlsPaths(dir, "server")), { handshakeTimeoutMs: 200 });
  const s = await serve({}, creds);
  const silent = connect(s.port, "127.0.0.1"); // says nothing, holds the slot
  let closed = false;
  silent.once("close", () => {
    closed = true;
  });
  silent.on("error", () => {});
  // until's bound (2M turns of the loop, seconds) is far below Node's own handshake timeout
  // (120 s), which would close the socket too.
  await until(() => closed, "the silent connection is closed");
});

test("each connection's identity is its own certificate's, read once per connection; TLS 1.2 is refused", async () => {
  const dir = mkdtempSync(join(tmpdir(), "mimi-limits-"));
  closers.push(() => rmSync(dir, { recursive: true, force: true }));
  await ensureDevPki(dir, ["server", "alice", "bob"]);
  const server = createGrpcServer(DEFAULT_CONNECTION_LIMITS);
  closers.push(() => server.forceShutdown());
  const seen: string[] = [];
  addService(
    server,
    RootService,
    {
      getSnapshot: missing,
      watchRegistry: missing,
      async refer(req, ctx) {
        seen.push(`${req.csi}=${ctx.peer.name}`);
        return {};
      },
    },
    { log },
  );
  const port = await listen(server, "127.0.0.1", 0, serverCredentials(loadTls(devTlsPaths(dir, "server"))));
  const open = (who: string) => {
    const ch = openChannel(`127.0.0.1:${port}`, channelCredentials(loadTls(devTlsPaths(dir, who)), "server"));
    closers.push(() => ch.close());
    return ch.client(RootService);
  };
  const [alice, bob] = [open("alice"), open("bob")];
  await alice.refer({ csi: "alice" });
  await bob.refer({ csi: "bob" });
  // Counts certificate reads once both connections are up (the cost the cache saves).
  const read = TLSSocket.prototype.getPeerCertificate;
  let reads = 0;
  TLSSocket.prototype.getPeerCertificate = function (this: TLSSocket, ...args: [true]) {
    reads++;
    return read.apply(this, args);
  } as typeof read;
  try {
    for (let i = 0; i < 2; i++) {
      await alice.refer({ csi: "alice" });
      await bob.refer({ csi: "bob" });
    }
  } finally {
    TLSSocket.prototype.getPeerCertificate = read;
  }
  assert.deepEqual(seen, ["alice=alice", "bob=bob", "alice=alice", "bob=bob", "alice=alice", "bob=bob"]);
  assert.equal(reads, 0, "the certificate is read once per connection, not per call");

  const tlsFiles = loadTls(devTlsPaths(dir, "alice"));
  const old = tlsConnect({
    port,
    host: "127.0.0.1",
    ca: tlsFiles.ca,
    cert: tlsFiles.cert,
    key: tlsFiles.key,
    maxVersion: "TLSv1.2",
    checkServerIdentity: () => undefined,
    ALPNProtocols: ["h2"],
  });
  const failure = await new Promise<string>((resolve) => {
    old.once("secureConnect", () => resolve("connected"));
    old.once("error", (e) => resolve(e.message));
  });
  old.destroy();
  assert.match(failure, /version|protocol/i);
});

test("an IPv6 source is counted by its /64; IPv4, mapped, translated or not, by its address", () => {
  assert.equal(addressKey("192.0.2.7"), "192.0.2.7");
  assert.equal(addressKey("::ffff:192.0.2.7"), "192.0.2.7");
  const a = addressKey("2001:db8:1:2:aaaa::1");
  assert.equal(a, "2001:db8:1:2:0:0:0:0/64");
  for (const same of ["2001:0db8:0001:0002:ffff:1:2:3", "2001:DB8:1:2::9", "2001:db8:1:2:0:0:0:0%eth0"]) {
    assert.equal(addressKey(same), a, same);
  }
  assert.notEqual(addressKey("2001:db8:1:3::1"), a, "the next /64 is another source");
  assert.equal(addressKey("::1"), "0:0:0:0:0:0:0:0/64");
  assert.equal(addressKey("2001:db8::"), "2001:db8:0:0:0:0:0:0/64");
  assert.equal(addressKey("fe80::1:2:3:4"), "fe80:0:0:0:0:0:0:0/64");
  // NAT64's well-known prefix carries IPv4 clients, each its own source, however it is written.
  assert.equal(addressKey("64:ff9b::c000:207"), "192.0.2.7");
  assert.equal(addressKey("64:ff9b::192.0.2.7"), "192.0.2.7");
  assert.notEqual(addressKey("64:ff9b::c000:208"), addressKey("64:ff9b::c000:207"));
  // Another prefix length: 128 counts addresses, 48 a site.
  assert.equal(addressKey("2001:db8:1:2::9", 128), "2001:db8:1:2:0:0:0:9/128");
  assert.equal(addressKey("2001:db8:1:2::9", 48), "2001:db8:1:0:0:0:0:0/48");
  assert.equal(addressKey("2001:db8:1:ffff::9", 56), "2001:db8:1:ff00:0:0:0:0/56");
});
