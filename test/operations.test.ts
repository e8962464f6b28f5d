// Operating a running server (issue 13). Reload without restart: SIGHUP re-reads the config and
// applies what can change (admins, log level, limits, TLS files), names what needs a restart,
// and keeps running on a config that does not load; a rotated certificate serves new
// connections while a stream opened before goes on; a bad rotation is refused; the files are
// also watched. Server reflection answers tools like grpcurl when the config turns it on.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { copyFileSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { connect } from "node:tls";
import * as grpc from "@grpc/grpc-js";
import { status } from "@grpc/grpc-js";
import { DiscoveryError, pb } from "@mimi/core";
import {
  devTlsPaths,
  ensureDevPki,
  type ServerProcess,
  startResolver,
  waitUntilServing,
  writeDevCrl,
} from "@mimi/devnet";
import { channelCredentials, loadTls } from "@mimi/rpc";
import { eventually, rejectsWith, scenario, useNetwork } from "./harness.js";

const t = useNetwork();

/** The serial of the certificate a new TLS connection to `proc` is shown. */
function servedSerial(proc: ServerProcess, o: { maxVersion?: "TLSv1.2" } = {}): Promise<string> {
  const tls = loadTls(devTlsPaths(t.net.pkiDir, "cli"));
  return new Promise((done, fail) => {
    const socket = connect({
      ...o,
      host: "127.0.0.1",
      port: proc.port,
      ca: tls.ca,
      cert: tls.cert,
      key: tls.key,
      servername: "localhost",
      ALPNProtocols: ["h2"],
    });
    socket.once("secureConnect", () => {
      const serial = socket.getPeerCertificate().serialNumber;
      socket.destroy();
      done(serial);
    });
    socket.once("error", fail);
  });
}

/** Makes a new key and certificate for `identity` (same name and roles): a rotation. */
async function rotate(identity: string): Promise<void> {
  const p = devTlsPaths(t.net.pkiDir, identity);
  rmSync(p.certFile);
  rmSync(p.keyFile);
  await ensureDevPki(t.net.pkiDir, [identity]);
}

/** Rewrites `proc`'s config file with `change` applied. */
function editConfig(proc: ServerProcess, change: (c: Record<string, unknown>) => void): void {
  const c = JSON.parse(readFileSync(proc.configPath, "utf8")) as Record<string, unknown>;
  change(c);
  writeFileSync(proc.configPath, `${JSON.stringify(c, null, 2)}\n`);
}

const hangUp = (proc: ServerProcess) => {
  assert.ok(proc.pid, `${proc.name} runs`);
  process.kill(proc.pid, "SIGHUP");
};

/** A request stream the test feeds by hand. */
function feed<T>() {
  const queue: T[] = [];
  let wake: (() => void) | undefined;
  let ended = false;
  return {
    push(v: T) {
      queue.push(v);
      wake?.();
    },
    end() {
      ended = true;
      wake?.();
    },
    async *[Symbol.asyncIterator]() {
      for (;;) {
        const v = queue.shift();
        if (v !== undefined) yield v;
        else if (ended) return;
        else await new Promise<void>((r) => (wake = r));
      }
    },
  };
}

// Each scenario has its own resolver, so what it reloads or rotates touches no other test.
const extras: ServerProcess[] = [];
const resolverAs = async (identity: string, overrides: object = {}): Promise<ServerProcess> => {
  await ensureDevPki(t.net.pkiDir, [identity, "admin-ops"]);
  const proc = await startResolver(t.net, {
    name: identity,
    rootEndpoints: [t.net.root.address],
    overrides: { tls: t.net.tlsConfig(identity), admins: ["admin"], ...overrides },
  });
  extras.push(proc);
  await waitUntilServing(t.net, proc);
  return proc;
};
const lines = (proc: ServerProcess, pattern: RegExp) => proc.lines.filter((l) => pattern.test(l));

scenario(
  t,
  "SIGHUP applies admins and the log level, names what needs a restart, and survives a bad file",
  async () => {
    try {
      const proc = await resolverAs("resolver-reload");
      const stats = () =>
        t.net
          .channel(proc.address, "admin-ops")
          .client(pb.ResolverAdminService)
          .getStats({}, { timeoutMs: 5_000 });
      await rejectsWith(stats(), status.PERMISSION_DENIED, /not an admin|admin/);
      // Said where an operator looks (the process logs at info).
      await eventually(async () => {
        const refused = lines(proc, /call refused for its caller's identity/);
        assert.equal(refused.length, 1);
        assert.match(
          refused[0] as string,
          /"level":40.*"identity":"admin-ops".*ResolverAdminService\/GetStats/,
        );
      });
      editConfig(proc, (c) => {
        c.admins = ["admin", "admin-ops"];
        c.logLevel = "debug";
        c.upstreamTimeoutMs = 2_345;
      });
      hangUp(proc);
      await eventually(stats);
      const reloaded = await eventually(async () => {
        const l = lines(proc, /configuration reloaded/);
        assert.equal(l.length, 1);
        return JSON.parse(l[0] as string) as { changed: string[]; needsRestart: string[] };
      });
      assert.deepEqual(reloaded.changed, ["admins", "logLevel"]);
      assert.deepEqual(reloaded.needsRestart, ["upstreamTimeoutMs"]);
      await eventually(async () => assert.equal(lines(proc, /admins reloaded/).length, 1));
      assert.match(lines(proc, /admins reloaded/)[0] as string, /"added":\["admin-ops"\]/);
      // A file that does not parse changes nothing: the server goes on with what it had.
      writeFileSync(proc.configPath, "{ not json");
      hangUp(proc);
      await eventually(async () => assert.equal(lines(proc, /reload refused/).length, 1));
      assert.ok(proc.running);
      await stats();
    } finally {
      await Promise.all(extras.splice(0).map((p) => p.stop()));
    }
  },
);

scenario(
  t,
  "a rotated certificate serves new connections; a stream opened before goes on; a bad one is refused",
  async () => {
    try {
      const proc = await resolverAs("resolver-rotate", {});
      const csi = "tel:+447700900123";
      const requests = feed<{ requestId: bigint; csi: string }>();
      const responses = t.net
        .channel(proc.address, "msp-bluebird")
        .client(pb.ResolverService)
        .resolveStream(requests, { timeoutMs: 60_000 })
        [Symbol.asyncIterator]();
      requests.push({ requestId: 1n, csi });
      const first = await responses.next();
      assert.equal(first.done ? undefined : first.value.result.case, "response");
      const before = await servedSerial(proc);

      await rotate("resolver-rotate");
      hangUp(proc);
      const after = await eventually(async () => {
        const s = await servedSerial(proc);
        assert.notEqual(s, before);
        return s;
      });
      await eventually(async () => assert.equal(lines(proc, /TLS certificate rotated/).length, 1));
      // The stream's connection keeps the handshake it made: it is still answered.
      requests.push({ requestId: 2n, csi });
      const next = await responses.next();
      assert.equal(next.done ? undefined : next.value.result.case, "response");
      assert.equal(next.done ? undefined : next.value.requestId, 2n);
      requests.end();
      // A key that does not match the certificate is refused, and the certificate in use stays.
      const paths = devTlsPaths(t.net.pkiDir, "resolver-rotate");
      copyFileSync(devTlsPaths(t.net.pkiDir, "admin-ops").keyFile, paths.keyFile);
      hangUp(proc);
      await eventually(async () => assert.equal(lines(proc, /new TLS material refused/).length, 1));
      assert.match(lines(proc, /new TLS material refused/)[0] as string, /key values mismatch/);
      assert.equal(await servedSerial(proc), after);
    } finally {
      await Promise.all(extras.splice(0).map((p) => p.stop()));
    }
  },
);

scenario(
  t,
  "a certificate a new CRL revokes loses its open stream and its next handshake; other peers go on",
  async () => {
    try {
      const hour = 3_600_000;
      const crlFile = join(t.net.dir, "resolver-crl.pem");
      await writeDevCrl(t.net.pkiDir, crlFile, { thisUpdate: new Date(Date.now() - 2 * hour) });
      await ensureDevPki(t.net.pkiDir, ["resolver-crl"]);
      const proc = await resolverAs("resolver-crl", {
        tls: { ...t.net.tlsConfig("resolver-crl"), crlFile, watchSeconds: 1 },
      });
      const csi = "tel:+447700900123";
      const open = (msp: string) => {
        const requests = feed<{ requestId: bigint; csi: string }>();
        const responses = t.net
          .channel(proc.address, msp)
          .client(pb.ResolverService)
          .resolveStream(requests, { timeoutMs: 60_000 })
          [Symbol.asyncIterator]();
        return { requests, responses };
      };
      const kept = open("msp-bluebird");
      const revoked = open("msp-wirechat");
      for (const s of [kept, revoked]) {
        s.requests.push({ requestId: 1n, csi });
        const first = await s.responses.next();
        assert.equal(first.done ? undefined : first.value.result.case, "response");
      }

      // The CA revokes msp-wirechat's certificate; the file watch takes the new list.
      await writeDevCrl(t.net.pkiDir, crlFile, {
        revoke: ["msp-wirechat"],
        thisUpdate: new Date(Date.now() - hour),
      });
      await eventually(async () =>
        assert.equal(lines(proc, /certificate revocation lists changed/).length, 1),
      );
      const ended = await eventually(async () => {
        const l = lines(proc, /ending the connections of peers no longer trusted/);
        assert.equal(l.length, 1);
        return JSON.parse(l[0] as string) as { connections: number };
      });
      assert.equal(ended.connections, 1, "only the revoked peer's connection");
      // Its stream ends, at the latest after the grace the server gives running calls.
      await assert.rejects(revoked.responses.next(), (err: DiscoveryError) => err instanceof DiscoveryError);
      // The other stream goes on.
      kept.requests.push({ requestId: 2n, csi });
      const next = await kept.responses.next();
      assert.equal(next.done ? undefined : next.value.requestId, 2n);
      kept.requests.end();
      // A new connection of the revoked certificate fails its handshake.
      await rejectsWith(
        t.net
          .channel(proc.address, "msp-wirechat")
          .client(pb.ResolverService)
          .resolve({ csi }, { timeoutMs: 10_000 }),
        status.UNAVAILABLE,
      );
    } finally {
      await Promise.all(extras.splice(0).map((p) => p.stop()));
    }
  },
);

scenario(
  t,
  "with tls.watchSeconds the server picks up a rotated certificate; the CA file waits for a reload",
  async () => {
    try {
      const identity = "resolver-watch";
      await ensureDevPki(t.net.pkiDir, [identity]);
      // Its own copy of the CA file, so what this scenario adds to it touches no other server.
      const tlsConfig = {
        ...t.net.tlsConfig(identity),
        caFile: join(t.net.dir, "watch-ca.pem"),
        watchSeconds: 1,
      };
      copyFileSync(t.net.tlsConfig(identity).caFile, tlsConfig.caFile);
      const proc = await resolverAs(identity, { tls: tlsConfig });
      const before = await servedSerial(proc);
      await rotate(identity);
      await eventually(async () => assert.notEqual(await servedSerial(proc), before));
      // Its log line travels through a pipe: it may arrive after a client sees the new certificate.
      await eventually(async () => assert.equal(lines(proc, /TLS certificate rotated/).length, 1));
      // A rotated certificate keeps the TLS 1.3 floor (grpc-js sets a fresh context for it).
      await assert.rejects(servedSerial(proc, { maxVersion: "TLSv1.2" }), /protocol version|alert|socket/i);
      // A second CA of the same name is refused (OpenSSL would pick one of the two by name, and
      // refuse the peers of the other)...
      const trusted = readFileSync(tlsConfig.caFile);
      const sameName = join(t.net.dir, "other-pki");
      await ensureDevPki(sameName, ["stranger"]);
      writeFileSync(tlsConfig.caFile, Buffer.concat([trusted, readFileSync(join(sameName, "ca.pem"))]));
      hangUp(proc);
      await eventually(async () =>
        assert.equal(lines(proc, /two different CAs named CN=MIMI Development CA/).length, 1),
      );
      // ...another CA appended to the CA file: the watch says so but does not trust it...
      const stranger = join(t.net.dir, "stranger-ca.pem");
      execFileSync(
        "openssl",
        [
          "req",
          "-x509",
          "-newkey",
          "ec",
          "-pkeyopt",
          "ec_paramgen_curve:P-256",
          "-nodes",
          "-subj",
          "/CN=Stranger CA",
          "-days",
          "2",
          "-keyout",
          join(t.net.dir, "stranger-ca-key.pem"),
          "-out",
          stranger,
        ],
        { stdio: "ignore" },
      );
      // (Run together without a newline, OpenSSL would read only the first: refused too.)
      writeFileSync(tlsConfig.caFile, `${trusted.toString().trimEnd()}${readFileSync(stranger, "utf8")}`);
      hangUp(proc);
      await eventually(async () => assert.equal(lines(proc, /not each on their own lines/).length, 1));
      writeFileSync(tlsConfig.caFile, `${trusted.toString().trimEnd()}\n${readFileSync(stranger, "utf8")}`);
      await eventually(async () => assert.ok(lines(proc, /trusted only after a reload/).length >= 1));
      // ...until an operator reloads, which says at warn what was added.
      hangUp(proc);
      await eventually(async () => assert.equal(lines(proc, /trusted CAs changed/).length, 1));
      assert.match(lines(proc, /trusted CAs changed/)[0] as string, /"level":40.*"added":\["CN=Stranger CA/);
      await waitUntilServing(t.net, proc);
      // A certificate with other roles is not a rotation, and a FIFO in a file's place does not
      // hang the server: both are refused, and it goes on serving with what it has.
      await ensureDevPki(t.net.pkiDir, [`${identity}=resolver+admin`]);
      await eventually(async () => assert.equal(lines(proc, /keeps the identity and the roles/).length, 1));
      const paths = devTlsPaths(t.net.pkiDir, identity);
      rmSync(paths.certFile);
      execFileSync("mkfifo", [paths.certFile]);
      await eventually(async () => assert.equal(lines(proc, /not a regular file/).length, 1));
      await waitUntilServing(t.net, proc);
    } finally {
      rmSync(devTlsPaths(t.net.pkiDir, "resolver-watch").certFile, { force: true });
      await Promise.all(extras.splice(0).map((p) => p.stop()));
    }
  },
);

/**
 * One grpc.reflection.v1 request as grpcurl sends it, hand-encoded (field `number`, a string):
 * the raw response bytes, where the names it lists or the descriptors it returns can be found.
 */
async function reflect(proc: ServerProcess, field: number, value: string, as = "admin"): Promise<Buffer> {
  const tls = loadTls(devTlsPaths(t.net.pkiDir, as));
  const client = new grpc.Client(`localhost:${proc.port}`, channelCredentials(tls));
  try {
    const text = Buffer.from(value);
    const request = Buffer.concat([Buffer.from([(field << 3) | 2, text.length]), text]);
    const call = client.makeBidiStreamRequest(
      "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
      (b: Buffer) => b,
      (b: Buffer) => b,
    );
    const reply = new Promise<Buffer>((done, fail) => {
      call.once("data", done);
      call.once("error", fail);
    });
    call.write(request);
    call.end();
    return await reply;
  } finally {
    client.close();
  }
}

scenario(
  t,
  "server reflection, when turned on, lists this server's services and their descriptors to admins",
  async () => {
    try {
      const off = await resolverAs("resolver-plain");
      await assert.rejects(
        reflect(off, 7, ""),
        (err: grpc.ServiceError) => err.code === status.UNIMPLEMENTED,
      );
      const on = await resolverAs("resolver-reflect", { reflection: true });
      const list = (await reflect(on, 7, "")).toString("latin1");
      for (const service of ["mimi.discovery.v1.ResolverService", "grpc.health.v1.Health"]) {
        assert.ok(list.includes(service), `reflection lists ${service}`);
      }
      // Only what this server serves: a resolver has no registry admin service.
      assert.ok(!list.includes("RegistryAdminService"), "reflection lists only registered services");
      // For operators only: an MSP's certificate is refused.
      await assert.rejects(
        reflect(on, 7, "", "cli"),
        (err: grpc.ServiceError) => err.code === status.PERMISSION_DENIED && /admin role/.test(err.details),
      );
      // The file that declares a symbol, with the files it imports (grpcurl needs them all).
      const files = (await reflect(on, 4, "mimi.discovery.v1.ResolverService")).toString("latin1");
      assert.ok(files.includes("mimi/discovery/v1/resolver.proto"));
      assert.ok(files.includes("mimi/discovery/v1/common.proto"));
    } finally {
      await Promise.all(extras.splice(0).map((p) => p.stop()));
    }
  },
);

scenario(
  t,
  "resolve --explain shows the delegation, endpoint, cache state, signatures and steps (admins only)",
  async () => {
    const csi = "tel:+447700900123";
    const explain = async () => {
      const r = await t.cli(["resolve", csi, "--explain", "--json", "--resolver", t.net.resolver.address]);
      assert.equal(r.code, 0, r.stderr);
      return (JSON.parse(r.stdout) as { explanation: Record<string, unknown> }).explanation;
    };
    await t.net
      .channel(t.net.resolver.address, "admin")
      .client(pb.ResolverAdminService)
      .flush({ scope: { case: "csi", value: csi } });
    const miss = await explain();
    assert.equal(miss.cache, "MISS");
    assert.deepEqual([miss.delegation, miss.dpId, miss.endpoint], ["e164:44", "eu", t.net.dps.eu.address]);
    assert.ok(Number(miss.registrySerial) > 0);
    const signatures = miss.signatures as { what: string; signer: string; ok: boolean }[];
    assert.equal(signatures[0]?.what, "answer seal");
    assert.equal(signatures[0]?.signer, "dp:eu");
    assert.ok(signatures.length >= 3 && signatures.every((c) => c.ok), JSON.stringify(signatures));
    assert.deepEqual(Object.keys(miss.steps as object), ["upstream", "verify", "total"]);
    const hit = await explain();
    assert.equal(hit.cache, "HIT");
    assert.equal(hit.endpoint, "");
    assert.ok(Number(hit.ttlSeconds) > 0);
    assert.deepEqual(Object.keys(hit.steps as object), ["total"]);
    // The text form names the same things.
    const text = await t.cli(["resolve", csi, "--explain", "--resolver", t.net.resolver.address]);
    assert.match(text.stdout, /explain:\n {2}delegation {2}e164:44 -> DP eu\n {2}cache {7}HIT/);
    // An MSP may not see the cache state: it would tell who asked for what lately.
    const msp = await t.cli([
      "resolve",
      csi,
      "--explain",
      "--identity",
      "cli",
      "--resolver",
      t.net.resolver.address,
    ]);
    assert.equal(msp.code, 1);
    assert.match(msp.stderr, /PERMISSION_DENIED|explain is for this resolver's admins/);
  },
);
