// gRPC binding of CsiFilterService: a DP's CSI filter (csi-filter.ts) streamed to resolvers and
// DPs: whole when the caller's version and position do not continue (header, then chunks), then
// each batch of additions, and a new version whole on the same stream when one is built.
import type { MessageInitShape } from "@bufbuild/protobuf";
import type * as grpc from "@grpc/grpc-js";
import { DiscoveryError, invalidArgument, type Logger, pb } from "@mimi/core";
import { addService } from "@mimi/rpc";
import { type DpFilter, type FilterVersion, positionOf } from "./csi-filter.js";
import { createSlots } from "./slots.js";

/**
 * Bytes of filter per chunk. A call queues up to 1,024 messages at a reader that does not read
 * (rpc's stream writer), so a whole send holds at most 64 MiB; MAX_WHOLE_SENDS bounds the sum.
 */
const CHUNK_BYTES = 64 * 1024;
/**
 * Whole filters sent at once by this DP, and to one identity (a resolver's workers take turns):
 * a reader that does not read holds its slot until its connection ages out (an hour), and
 * without the per-identity share one resolver could hold all four, and every other resolver's
 * filter with them.
 */
const MAX_WHOLE_SENDS = 4;
const MAX_WHOLE_SENDS_PER_IDENTITY = 1;
/** Bits per additions message. */
const ADDITIONS_PER_MESSAGE = 4_096;

/**
 * Registers CsiFilterService (resolver role) on `server`. `federated` says whether some range
 * names this DP as a federated DP (undefined while it has no registry copy): only then do
 * resolvers route by its filter, and only then is it served (its key lets the holder test any
 * CSI offline).
 */
export function bindFilterServer(
  server: grpc.Server,
  filter: DpFilter,
  log: Logger,
  federated: () => boolean | undefined,
): void {
  // Whole filters being sent at once: each may queue up to the call's message limit of chunks
  // at a slow reader, so only a few are in flight; the rest wait their turn.
  const wholeSends = createSlots(
    MAX_WHOLE_SENDS,
    MAX_WHOLE_SENDS_PER_IDENTITY,
    () => new DiscoveryError("upstream_unavailable", "the call ended while it waited for a slot"),
  );
  addService(
    server,
    pb.CsiFilterService,
    {
      async watchFilter(req, ctx, send) {
        if (req.version.length > 64) throw invalidArgument("version is at most 64 bytes", "version");
        // What the caller holds: a version and how many of its additions it has applied.
        let held: Uint8Array | undefined = req.version.length > 0 ? req.version : undefined;
        let position = Number(req.position > BigInt(Number.MAX_SAFE_INTEGER) ? -1 : req.position);
        let resumed = held !== undefined;
        let wake: (() => void) | undefined;
        const unsubscribe = filter.subscribe(() => wake?.());
        const onAbort = () => wake?.();
        ctx.signal.addEventListener("abort", onAbort);
        // Checked before every send: a stream open when the DP stops being federated ends.
        const requireFederated = () => {
          const is = federated();
          if (is === undefined)
            throw new DiscoveryError("not_ready", "this DP has no registry copy yet; try again shortly");
          if (!is) {
            throw new DiscoveryError(
              "failed_precondition",
              "no range of the registry names this DP as a federated DP, so no resolver routes by its CSI filter, and it is not served",
              { details: { reason: "NOT_FEDERATED" } },
            );
          }
        };
        try {
          while (!ctx.signal.aborted) {
            requireFederated();
            const f = filter.current();
            if (!f) {
              throw new DiscoveryError(
                "upstream_unavailable",
                "this DP's CSI filter is still being built; try again shortly",
              );
            }
            const end = positionOf(f);
            const continues =
              held !== undefined &&
              Buffer.from(held).equals(f.version) &&
              position >= f.floor &&
              position <= end;
            if (!continues) {
              // The slot may be a while coming: what to send is read again once it is ours.
              const sent = await wholeSends.run(ctx.peer.name, ctx.signal, async () => {
                requireFederated();
                const now = filter.current() ?? f;
                return { version: now.version, position: await sendWhole(now, send) };
              });
              position = sent.position;
              held = sent.version;
              resumed = false;
              continue;
            }
            // On a resume the caller hears at once that its version continues (maybe with nothing new).
            if (resumed || position < end) {
              resumed = false;
              const next = Math.min(end, position + ADDITIONS_PER_MESSAGE);
              const bits = f.additions.slice(position - f.floor, next - f.floor).map(BigInt);
              await send({ item: { case: "additions", value: { position: BigInt(next), bits } } });
              position = next;
              continue;
            }
            await new Promise<void>((resolve) => {
              wake = resolve;
            });
            wake = undefined;
          }
        } finally {
          unsubscribe();
          ctx.signal.removeEventListener("abort", onAbort);
        }
      },
    },
    // The key lets its holder test any CSI: resolvers only (they route by it), never MSPs or
    // other DPs, which have no use for it.
    { log, roles: ["resolver"] },
  );
}

/**
 * Sends version `f` whole; returns the position it stands for. The position is read before the
 * bits: additions after it are sent again, which is harmless (a bit set twice is set).
 */
async function sendWhole(
  f: FilterVersion,
  send: (m: MessageInitShape<typeof pb.WatchFilterResponseSchema>) => Promise<void>,
): Promise<number> {
  const position = positionOf(f);
  const { bits, hashes } = f.bits.shape;
  await send({
    item: {
      case: "header",
      value: {
        version: f.version,
        key: f.bits.key,
        bits: BigInt(bits),
        hashes,
        position: BigInt(position),
        sizedFor: BigInt(f.sizedFor),
        targetFalsePositiveRate: f.targetFpr,
        csis: BigInt(f.csis),
      },
    },
  });
  const bytes = f.bits.bytes;
  for (let offset = 0; offset < bytes.length || offset === 0; offset += CHUNK_BYTES) {
    const end = Math.min(bytes.length, offset + CHUNK_BYTES);
    await send({
      item: {
        case: "chunk",
        value: { offset: BigInt(offset), data: bytes.subarray(offset, end), last: end === bytes.length },
      },
    });
    if (end === bytes.length) break;
  }
  return position;
}
