// `mimi resolve`: ask a resolver where a CSI is reachable, print the answer, and with --verify
// check it on this side like a DNSSEC-validating stub: the registry against the pinned root
// key, each mapping against the keys that registry publishes.
import {
  bitsSet,
  mappingFromProto,
  mappingProblem,
  pb,
  RegistryView,
  registryKeys,
  registrySignatureValid,
  sealProblem,
  snapshotFromProto,
} from "@mimi/core";
import { devSigningKeyPaths } from "@mimi/devnet/paths";
import type { Command } from "commander";
import { csiArg, UsageError } from "../args.js";
import { addTlsOptions, connect, LOCAL_PORTS, local, type TlsFlags, timeoutOf } from "../connect.js";
import { publicKeyArg } from "../keys.js";
import { json, mappingJson, out } from "../output.js";

/** Adds `resolve`. */
export function addResolveCommand(program: Command): void {
  addTlsOptions(
    program
      .command("resolve")
      .description("ask a resolver where a CSI (tel:+... or mailto:...) is reachable")
      .argument("<csi>", 'e.g. "tel:+447700900123" or "mailto:alice@example.org"')
      .option("--resolver <host:port>", "resolver address", local(LOCAL_PORTS.resolver))
      .option("--json", "print the answer as JSON")
      .option("--compact", "ask for the compact answer (a bit per MSP)")
      .option("--msp <id...>", "only mappings at these MSPs")
      .option(
        "--tag <tag>",
        'only mappings with this preference tag, e.g. "Business"; "Default" for the default',
      )
      .option(
        "--verify",
        "check every mapping's user, MSP and DP signatures against the registry, whose signature is checked with the pinned root key",
      )
      .option(
        "--root <host:port>",
        "root to fetch the registry from (with --verify)",
        local(LOCAL_PORTS.root),
      )
      .option(
        "--root-key <file>",
        "the pinned root public key (with --verify; default <pki>/root-signing.pub)",
      )
      .addHelpText(
        "after",
        "\nExit status: 0 for FOUND, NOT_FOUND and OPTED_OUT answers, 1 when the lookup or --verify fails, 2 for bad input.",
      ),
    "cli",
  ).action(
    async (
      csiText: string,
      o: TlsFlags & {
        resolver: string;
        json?: boolean;
        compact?: boolean;
        msp?: string[];
        tag?: string;
        verify?: boolean;
        root: string;
        rootKey?: string;
      },
    ) => {
      const csi = csiArg(csiText);
      if (o.tag !== undefined && (o.tag === "" || o.tag.length > 32))
        throw new UsageError("--tag must be 1 to 32 characters");
      if (o.verify && o.compact)
        throw new UsageError("--verify needs the mappings, which --compact leaves out");
      const rootKey = o.verify
        ? publicKeyArg("--root-key", o.rootKey ?? devSigningKeyPaths(o.pki, "root").publicKeyFile)
        : undefined;
      const timeoutMs = timeoutOf(o);
      const ch = connect(o.resolver, o, "resolver");
      let res: pb.ResolveResponse;
      try {
        res = await ch.client(pb.ResolverService).resolve(
          {
            csi,
            options: {
              format: o.compact ? pb.AnswerFormat.COMPACT : pb.AnswerFormat.VERBOSE,
              mspFilter: o.msp ?? [],
              tag: o.tag ?? "",
            },
          },
          { timeoutMs },
        );
      } finally {
        ch.close();
      }
      const a = res.answer;
      const status = statusText(a?.status);
      const mappings = (a?.mappings ?? []).map(mappingJson);
      // Verified before printing, so a JSON answer can say whether it verified.
      const verdict = rootKey ? await verifyAnswer(csi, a?.mappings ?? [], rootKey, o) : undefined;
      const bits = a?.compactMspBits ?? new Uint8Array();
      if (o.json) {
        json({
          csi,
          status,
          stale: res.stale,
          ttlSeconds: a?.ttlSeconds ?? 0,
          dpIds: a?.dpIds ?? [],
          mappings,
          compact: { hex: Buffer.from(bits).toString("hex"), mspIndexes: bitsSet(bits) },
          ...(verdict && { verified: verdict.problem === undefined, verification: verdict.text }),
        });
      } else {
        const from = a?.dpIds.filter(Boolean).length ? `, from DP ${a?.dpIds.join(", ")}` : "";
        const what = status === "OPTED_OUT" ? "OPTED_OUT: the holder chose not to be discoverable" : status;
        out(`${csi}: ${what}${res.stale ? " (STALE)" : ""} (ttl ${a?.ttlSeconds ?? 0}s${from})`);
        mappings.forEach((m, i) => {
          const tags = [...(m.default ? ["Default"] : []), ...m.tags];
          out(
            `  ${i + 1}. ${m.msp}  ${m.ssi}${tags.length ? `  [${tags.join(", ")}]` : ""}  (proof ${m.proofMethod || "unknown"})`,
          );
        });
        if (o.compact)
          out(
            `  compact: ${Buffer.from(bits).toString("hex") || "(empty)"} -> MSP indexes ${bitsSet(bits).join(", ") || "none"}`,
          );
        if (verdict && verdict.problem === undefined) out(verdict.text);
      }
      if (verdict?.problem !== undefined) throw new Error(verdict.text);
    },
  );

  /** The text of a lookup status; unknown values are named by number. */
}

function statusText(s: pb.LookupStatus | undefined): string {
  switch (s) {
    case pb.LookupStatus.FOUND:
      return "FOUND";
    case pb.LookupStatus.NOT_FOUND:
      return "NOT_FOUND";
    case pb.LookupStatus.OPTED_OUT:
      return "OPTED_OUT";
    default:
      return `UNKNOWN_STATUS_${s ?? 0}`;
  }
}

/**
 * Checks an answer end to end, like a DNSSEC-validating stub: the registry from the root must
 * carry the pinned root key's signature, and each mapping the signatures of its holder (unless
 * "bulk"), its MSP and its DP, with the keys that registry publishes.
 */
async function verifyAnswer(
  csi: string,
  mappings: readonly pb.Mapping[],
  rootKey: Uint8Array,
  o: TlsFlags & { root: string },
): Promise<{ problem?: string; text: string }> {
  const ch = connect(o.root, o, "root");
  let snapshot: pb.RegistrySnapshot | undefined;
  try {
    snapshot = (await ch.client(pb.RootService).getSnapshot({}, { timeoutMs: timeoutOf(o) })).snapshot;
  } finally {
    ch.close();
  }
  const fail = (problem: string) => ({ problem, text: `verification failed: ${problem}` });
  if (!snapshot) return fail(`the root at ${o.root} sent no registry`);
  const registry = snapshotFromProto(snapshot);
  if (!registry.seal || !registrySignatureValid(registry, registry.seal, rootKey)) {
    return fail(
      `the registry (serial ${registry.serial}) from ${o.root} does not carry a valid signature of the pinned root key`,
    );
  }
  const expired = sealProblem(registry.serial, registry.seal, Date.now());
  if (expired) return fail(expired);
  const view = new RegistryView();
  view.replace(registry);
  const keys = registryKeys(view);
  const now = Date.now();
  for (const [i, m] of mappings.entries()) {
    const problem = mappingProblem(csi, mappingFromProto(m), keys, now);
    if (problem) return fail(`mapping ${i + 1} (${m.mspId} ${m.ssi}): ${problem}`);
  }
  if (mappings.length === 0) {
    return {
      text: `nothing to verify: the answer holds no mappings (negative answers carry no signatures); the registry (serial ${registry.serial}) carries the root key's signature`,
    };
  }
  return {
    text: `verified: all ${mappings.length} mappings carry valid user/MSP/DP signatures chained to the root key (registry serial ${registry.serial})`,
  };
}
