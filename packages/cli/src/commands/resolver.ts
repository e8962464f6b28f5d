// `mimi resolver`: operator commands of a resolver (ResolverAdminService): targeted flush and
// the freshness counters, like `unbound-control flush*` and `stats`.

import { pb } from "@mimi/core";
import type { ServiceClient } from "@mimi/rpc";
import type { Command } from "commander";
import { csiArg, UsageError } from "../args.js";
import { addTlsOptions, connect, LOCAL_PORTS, local, type TlsFlags, timeoutOf } from "../connect.js";
import { about } from "../help.js";
import { isoTime, json, out } from "../output.js";

type ResolverFlags = TlsFlags & { resolver: string };

const withResolver = (c: Command) =>
  addTlsOptions(c.option("--resolver <host:port>", "resolver address", local(LOCAL_PORTS.resolver)), "admin");

type AdminApi = ServiceClient<(typeof pb.ResolverAdminService)["method"]>;

async function withAdmin<T>(
  o: ResolverFlags,
  f: (api: AdminApi, opts: { timeoutMs: number }) => Promise<T>,
): Promise<T> {
  const ch = connect(o.resolver, o, "resolver");
  try {
    return await f(ch.client(pb.ResolverAdminService), { timeoutMs: timeoutOf(o) });
  } finally {
    ch.close();
  }
}

/** Adds `resolver flush` and `resolver stats`. */
export function addResolverCommands(program: Command): void {
  const resolver = program.command("resolver").description(about("resolver"));

  withResolver(
    resolver
      .command("flush")
      .description(
        "drop cached answers: for one CSI (positive or negative), everything one DP answered, or all",
      )
      .argument("[csi]", "the CSI whose cached answer to drop")
      .option("--dp <dp-id>", "drop every answer this DP gave")
      .option("--all", "drop everything"),
  ).action(async (csiText: string | undefined, o: ResolverFlags & { dp?: string; all?: boolean }) => {
    const given = [csiText !== undefined, o.dp !== undefined, o.all === true].filter(Boolean).length;
    if (given !== 1) throw new UsageError("give exactly one of <csi>, --dp <dp-id> and --all");
    const scope: pb.FlushRequest["scope"] =
      csiText !== undefined
        ? { case: "csi", value: csiArg(csiText) }
        : o.dp !== undefined
          ? { case: "dpId", value: o.dp }
          : { case: "all", value: true };
    const r = await withAdmin(o, (api, opts) => api.flush({ scope }, opts));
    out(`${r.evicted} cached answer(s) dropped`);
  });

  withResolver(
    resolver
      .command("stats")
      .description("show cache and freshness counters and each DP change subscription")
      .option("--json", "print the counters as JSON"),
  ).action(async (o: ResolverFlags & { json?: boolean }) => {
    const s = await withAdmin(o, (api, opts) => api.getStats({}, opts));
    if (o.json) {
      const { $typeName: _, subscriptions, upstreamWindows, recentDetections, filters, ...counters } = s;
      const plain = <T extends { $typeName: string }>(xs: T[]) => xs.map(({ $typeName: __, ...x }) => x);
      json({
        ...counters,
        subscriptions: plain(subscriptions),
        upstreamWindows: plain(upstreamWindows),
        recentDetections: plain(recentDetections),
        filters: plain(filters),
      });
      return;
    }
    out(`cache entries     ${s.cacheEntries}`);
    out(`hits / misses     ${s.hits} / ${s.misses}`);
    out(`stale answers     ${s.stale}`);
    out(`prefetches        ${s.prefetches}`);
    out(
      `invalidations     ${s.invalidations} by change events, ${s.evictedByRegistry} by registry changes, ${s.flushed} flushed`,
    );
    out(`resyncs           ${s.resyncs}`);
    out(
      `upstream          ${s.upstreamRequests} requests, ${s.upstreamFailures} failed, ${s.verificationFailures} failed verification`,
    );
    out(`quota refusals    ${s.quotaRefusals}`);
    out(
      `enumeration       ${s.enumerationMode} mode, ${s.enumerationDetections} detections, ${s.enumerationRefusals} lookups refused`,
    );
    for (const d of s.recentDetections) {
      out(
        `  ${isoTime(d.atMs)} ${d.subject} ${d.scope}: ${d.distinct} distinct, ${d.notFound}/${d.answers} not found${d.blockedUntilMs > 0n ? `, refused until ${isoTime(d.blockedUntilMs)}` : ""}`,
      );
    }
    out(
      `registry          serial ${s.registrySerial}, ${s.registryConnected ? "following a root" : "no root connected"}`,
    );
    for (const w of s.upstreamWindows) {
      out(`window ${w.dpId.padEnd(10)} ${w.inflight} in flight of ${w.window}, ${w.queued} waiting`);
    }
    for (const f of s.filters) {
      out(
        `filter ${f.dpId.padEnd(10)} ${f.routing ? "routing" : "not routing (the DP is asked)"}, ${f.bits} bits, ${f.hashes} hashes, ${f.position} additions, ${f.versions} versions`,
      );
    }
    for (const sub of s.subscriptions) {
      out(
        `DP ${sub.dpId.padEnd(10)} ${sub.connected ? "subscribed" : "reconnecting"}, seq ${sub.seq}, ${sub.events} events, ${sub.resyncs} resyncs, last event ${isoTime(sub.lastEventAtMs)}`,
      );
    }
  });
}
