// `mimi health <addr>`: asks a server's grpc.health.v1 (over mutual TLS, as any member may)
// whether it serves, like `grpc_health_probe`; exit 0 when it does, 1 otherwise. Load
// balancers without a client certificate use the server's ops listener (/readyz) instead.
import { pb } from "@mimi/core";
import type { Command } from "commander";
import { addTlsOptions, connect, type TlsFlags, timeoutOf } from "../connect.js";
import { about } from "../help.js";
import { out } from "../output.js";

/** Adds `health`. */
export function addHealthCommand(program: Command): void {
  addTlsOptions(
    program
      .command("health")
      .description(about("health"))
      .argument("<host:port>", "the server's gRPC address")
      .option(
        "--service <name>",
        'one service, e.g. "mimi.discovery.v1.ResolverService" (default: the server)',
        "",
      ),
    "cli",
  ).action(async (address: string, o: TlsFlags & { service: string }) => {
    const ch = connect(address, o);
    try {
      const r = await ch.client(pb.Health).check({ service: o.service }, { timeoutMs: timeoutOf(o) });
      const name = pb.HealthCheckResponse_ServingStatus[r.status] ?? String(r.status);
      const what = `${address}${o.service ? ` ${o.service}` : ""}: ${name}`;
      if (r.status !== pb.HealthCheckResponse_ServingStatus.SERVING) throw new Error(what);
      out(what);
    } finally {
      ch.close();
    }
  });
}
