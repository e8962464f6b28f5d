// The standard gRPC health service (grpc.health.v1) for every server: NOT_SERVING until the
// server can answer (e.g. before its first registry copy) and again while it shuts down.
import type * as grpc from "@grpc/grpc-js";
import { DiscoveryError, Latch } from "@mimi/core";
import { Health, type HealthCheckResponse, HealthCheckResponse_ServingStatus as Status } from "@mimi/core/pb";
import type { Logger } from "pino";
import { addService } from "./grpc.js";

/** Switches the reported status of the whole server. */
export interface HealthReporter {
  setServing(serving: boolean): void;
}

/**
 * Registers grpc.health.v1.Health. `services` are the fully qualified names the server
 * offers; "" stands for the whole server. Like every service here it requires mutual TLS.
 */
export function addHealthService(
  server: grpc.Server,
  log: Logger,
  services: readonly string[],
  initiallyServing = false,
): HealthReporter {
  const known = new Set(["", ...services]);
  let status = initiallyServing ? Status.SERVING : Status.NOT_SERVING;
  const watchers = new Set<() => void>();
  addService(
    server,
    Health,
    {
      async check(req) {
        if (!known.has(req.service))
          throw new DiscoveryError("not_found", `unknown service "${req.service}"`);
        return { status };
      },
      async watch(req, ctx, send) {
        const current = (): Status => (known.has(req.service) ? status : Status.SERVICE_UNKNOWN);
        let last: Status | undefined;
        const changed = new Latch();
        const notify = () => changed.fire();
        watchers.add(notify);
        try {
          while (!ctx.signal.aborted) {
            const now = current();
            if (now !== last) {
              await send({ status: now } satisfies Partial<HealthCheckResponse>);
              last = now;
            }
            await changed.wait(ctx.signal);
          }
        } finally {
          watchers.delete(notify);
        }
      },
    },
    { log },
  );
  return {
    setServing(serving) {
      const next = serving ? Status.SERVING : Status.NOT_SERVING;
      if (next === status) return;
      status = next;
      log.info({ serving }, "health status changed");
      for (const w of watchers) w();
    },
  };
}
