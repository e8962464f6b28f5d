// The ops listener: probes and metrics over plain HTTP on loopback, nothing else; the gRPC
// server adapter counts calls by method and status.
import assert from "node:assert/strict";
import { after, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { ConfigReader, createLogger, DiscoveryError } from "@mimi/core";
import { RootService } from "@mimi/core/pb";
import { addService, createGrpcServer, createServerMetrics, listen, openChannel } from "@mimi/rpc";
import { readOpsSection, startOps } from "./ops.js";

const log = createLogger({ name: "test", level: "silent" });
const closers: (() => unknown)[] = [];
after(async () => {
  for (const c of closers) await c();
});

const get = async (port: number, path: string, method = "GET") => {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, { method });
  return { status: res.status, body: await res.text(), type: res.headers.get("content-type") ?? "" };
};

test("probes say alive and why not ready; other paths and methods are refused", async () => {
  let why: string | undefined = "starting";
  const metrics = createServerMetrics("resolver");
  const ops = await startOps(
    { host: "127.0.0.1", port: 0 },
    { registry: metrics.registry, notReady: () => why },
    log,
  );
  closers.push(() => ops.close());
  assert.deepEqual(await get(ops.port, "/healthz"), {
    status: 200,
    body: "ok\n",
    type: "text/plain; charset=utf-8",
  });
  assert.equal((await get(ops.port, "/readyz")).status, 503);
  assert.equal((await get(ops.port, "/readyz")).body, "not ready: starting\n");
  why = undefined;
  assert.equal((await get(ops.port, "/readyz")).status, 200);
  assert.equal((await get(ops.port, "/nothing")).status, 404);
  assert.equal((await get(ops.port, "/metrics", "POST")).status, 405);
  const m = await get(ops.port, "/metrics");
  assert.equal(m.status, 200);
  assert.match(m.type, /^text\/plain; version=0\.0\.4/);
  assert.match(m.body, /mimi_build_info\{role="resolver",version="\d+\.\d+\.\d+",node="[\d.]+"\} 1/);
  assert.match(m.body, /process_cpu_seconds_total/);
});

test("every call is counted by method and status, and unary calls are timed", async () => {
  const metrics = createServerMetrics("root");
  const server = createGrpcServer(undefined, metrics.observers);
  closers.push(() => server.forceShutdown());
  addService(
    server,
    RootService,
    {
      async refer(req) {
        if (req.csi === "bad") throw new DiscoveryError("invalid_argument", "bad csi");
        return {};
      },
      getSnapshot: async () => ({}),
      watchRegistry: async () => {},
    },
    { log },
  );
  const port = await listen(server, "127.0.0.1", 0, grpc.ServerCredentials.createInsecure());
  const ch = openChannel(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  closers.push(() => ch.close());
  const root = ch.client(RootService);
  await root.refer({ csi: "tel:+1" });
  await root.refer({ csi: "tel:+1" });
  await assert.rejects(root.refer({ csi: "bad" }));
  const text = await metrics.registry.metrics();
  const labels = 'grpc_type="unary",grpc_service="mimi.discovery.v1.RootService",grpc_method="Refer"';
  assert.match(text, new RegExp(`grpc_server_started_total\\{${labels}\\} 3`));
  assert.match(text, new RegExp(`grpc_server_handled_total\\{${labels},grpc_code="OK"\\} 2`));
  assert.match(text, new RegExp(`grpc_server_handled_total\\{${labels},grpc_code="INVALID_ARGUMENT"\\} 1`));
  assert.match(text, new RegExp(`grpc_server_handling_seconds_count\\{${labels}\\} 3`));
  // A method nobody called has no series.
  assert.doesNotMatch(text, /GetSnapshot/);
});

test("the ops section: absent means no listener; loopback by default", () => {
  assert.equal(readOpsSection(ConfigReader.of({})), undefined);
  assert.deepEqual(readOpsSection(ConfigReader.of({ ops: {} })), { host: "127.0.0.1", port: 0 });
  assert.deepEqual(readOpsSection(ConfigReader.of({ ops: { port: 9100 } })), {
    host: "127.0.0.1",
    port: 9100,
  });
  assert.throws(() => readOpsSection(ConfigReader.of({ ops: { port: 70_000 } })), /port/);
  assert.throws(() => readOpsSection(ConfigReader.of({ ops: { path: "/m" } })), /path/);
});

test("the ops listener leaves loopback only when told to", () => {
  assert.throws(
    () => readOpsSection(ConfigReader.of({ ops: { host: "0.0.0.0" } })),
    /not loopback.*allowNonLoopback/,
  );
  assert.deepEqual(readOpsSection(ConfigReader.of({ ops: { host: "0.0.0.0", allowNonLoopback: true } })), {
    host: "0.0.0.0",
    port: 0,
  });
  assert.equal(readOpsSection(ConfigReader.of({ ops: { host: "::1" } }))?.host, "::1");
});
