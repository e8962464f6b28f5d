// `mimi resolve`: ask a resolver where a CSI is reachable, print the answer, and with --verify
// check it on this side like a DNSSEC-validating stub: the registry against the pinned root
// key, each mapping against the keys that registry publishes.
import {
  answerProblem,
  bitsSet,
  type Csi,
  type FederationQuery,
  federatedAnswerProblem,
  federationFromProto,
  type LookupParams,
  parseCsi,
  pb,
  RegistryView,
  receivedAnswerFromProto,
  receivedFederatedFromProto,
  registrySignatureValid,
  registryTrust,
  sealProblem,
  selectedDps,
  snapshotFromProto,
} from "@mimi/core";
import { devSigningKeyPaths } from "@mimi/devnet/paths";
import type { Command } from "commander";
import { csiArg, UsageError } from "../args.js";
import { addTlsOptions, connect, LOCAL_PORTS, local, type TlsFlags, timeoutOf } from "../connect.js";
import { explanationJson, explanationOf, printExplanation } from "../explain.js";
import { about } from "../help.js";
import { publicKeyArg } from "../keys.js";
import { json, mappingJson, out } from "../output.js";

/** Adds `resolve`. */
export function addResolveCommand(program: Command): void {
  addTlsOptions(
    program
      .command("resolve")
      .description(about("resolve"))
      .argument("<csi>", 'e.g. "tel:+447700900123" or "mailto:alice@example.org"')
      .option("--resolver <host:port>", "resolver address", local(LOCAL_PORTS.resolver))
      .option("--json", "print the answer as JSON")
      .option(
        "--explain",
        "also show how the resolver found the answer: delegation, DP endpoint, cache state, each signature, timings (resolver admins only; connects as admin unless --identity is given)",
      )
      .option("--compact", "ask for the compact answer (a bit per MSP)")
      .option("--msp <id...>", "only mappings at these MSPs")
      .option(
        "--tag <tag>",
        'only mappings with this preference tag, e.g. "Business"; "Default" for the default',
      )
      .option(
        "--federate",
        "federate (R10): also ask the federated DPs of the CSI's range (those the range's DP prefers, unless --dp or --all-dps) and merge their answers",
      )
      .option("--local", "do not federate, whatever the range's DP publishes as its default")
      .option(
        "--private",
        "a private lookup: the DP does not learn the CSI or whether it was found (fails when the DP does not offer them; a cached answer is shown either way, marked as found)",
      )
      .option("--plain", "a plain lookup, whatever the resolver's configuration says for the DP")
      .option("--dp <id...>", "with --federate: ask exactly these federated DPs")
      .option("--all-dps", "with --federate: ask every federated DP of the range")
      .option(
        "--ask-all",
        "with --federate: ask each selected DP whatever its CSI filter says (an answer --verify can call complete)",
      )
      .option(
        "--verify",
        "check the answer end to end against the registry, whose signature is checked with the pinned root key: the DP's seal over the answer (denials included), each mapping's holder and MSP signatures, an opt-out's signed statement",
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
        explain?: boolean;
        federate?: boolean;
        local?: boolean;
        dp?: string[];
        allDps?: boolean;
        askAll?: boolean;
        private?: boolean;
        plain?: boolean;
      },
      cmd: Command,
    ) => {
      const csi = csiArg(csiText);
      const federation = federationArgs(o);
      if (o.private && o.plain) throw new UsageError("--private and --plain contradict each other");
      const privacy = o.private ? pb.PrivacyMode.PRIVATE : o.plain ? pb.PrivacyMode.PLAIN : undefined;
      // Explain is for the resolver's operators: connect as one unless told otherwise.
      if (o.explain && cmd.getOptionValueSource("identity") === "default") o.identity = "admin";
      if (o.tag !== undefined && (o.tag === "" || o.tag.length > 32))
        throw new UsageError("--tag must be 1 to 32 characters");
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
            explain: o.explain === true,
            ...(federation && { federation }),
            ...(privacy !== undefined && { privacy }),
          },
          { timeoutMs },
        );
      } catch (err) {
        // A failed lookup still says how far it got.
        const e = explanationOf(err);
        if (e && o.json) json({ csi, explanation: explanationJson(e) });
        else if (e) printExplanation(e);
        throw err;
      } finally {
        ch.close();
      }
      const a = res.answer;
      const status = statusText(a?.status);
      const mappings = (a?.mappings ?? []).map(mappingJson);
      // Verified before printing, so a JSON answer can say whether it verified.
      const params: LookupParams = {
        format: o.compact ? "compact" : "verbose",
        mspFilter: o.msp ?? [],
        tag: o.tag ?? "",
      };
      const verdict = rootKey
        ? await verifyAnswer(parseCsi(csi), res, params, federationFromProto(federation), rootKey, o)
        : undefined;
      const sources = res.federation?.sources ?? [];
      const bits = a?.compactMspBits ?? new Uint8Array();
      if (o.json) {
        json({
          csi,
          status,
          stale: res.stale,
          ttlSeconds: a?.ttlSeconds ?? 0,
          dpIds: a?.dpIds ?? [],
          lookup: a?.privateLookup ? "private" : "plain",
          mappings: mappings.map((m, i) => ({ ...m, ...(res.federation && { dp: a?.mappings[i]?.dpId }) })),
          ...(res.federation && {
            federation: { partial: res.federation.partial, sources: sources.map(sourceJson) },
          }),
          compact: { hex: Buffer.from(bits).toString("hex"), mspIndexes: bitsSet(bits) },
          ...(verdict && { verified: verdict.problem === undefined, verification: verdict.text }),
          ...(res.explanation && { explanation: explanationJson(res.explanation) }),
        });
      } else {
        const from = a?.dpIds.filter(Boolean).length ? `, from DP ${a?.dpIds.join(", ")}` : "";
        const what = status === "OPTED_OUT" ? "OPTED_OUT: the holder chose not to be discoverable" : status;
        const how = a?.privateLookup ? ", found by a private lookup" : "";
        out(`${csi}: ${what}${res.stale ? " (STALE)" : ""} (ttl ${a?.ttlSeconds ?? 0}s${from}${how})`);
        mappings.forEach((m, i) => {
          const tags = [...(m.default ? ["Default"] : []), ...m.tags];
          const at = res.federation ? `, at DP ${a?.mappings[i]?.dpId}` : "";
          out(
            `  ${i + 1}. ${m.msp}  ${m.ssi}${tags.length ? `  [${tags.join(", ")}]` : ""}  (proof ${m.proofMethod || "unknown"}${at})`,
          );
        });
        if (res.federation) {
          out(`  federated${res.federation.partial ? " (PARTIAL: not every DP answered)" : ""}:`);
          for (const s of sources.map(sourceJson)) {
            const what =
              s.outcome === "answered" ? s.status : `${s.outcome}${s.failure ? `: ${s.failure}` : ""}`;
            out(`    DP ${s.dp}${s.authoritative ? " (authoritative)" : ""}: ${what}`);
          }
        }
        if (o.compact)
          out(
            `  compact: ${Buffer.from(bits).toString("hex") || "(empty)"} -> MSP indexes ${bitsSet(bits).join(", ") || "none"}`,
          );
        if (verdict && verdict.problem === undefined) out(verdict.text);
        if (res.explanation) printExplanation(res.explanation);
      }
      if (verdict?.problem !== undefined) throw new Error(verdict.text);
    },
  );

  /** The text of a lookup status; unknown values are named by number. */
}

/** The --federate, --local, --dp and --all-dps flags as FederationOptions; undefined when none is given. */
function federationArgs(o: {
  federate?: boolean;
  local?: boolean;
  dp?: string[];
  allDps?: boolean;
  askAll?: boolean;
}) {
  if (o.federate && o.local) throw new UsageError("--federate and --local contradict each other");
  if ((o.dp || o.allDps || o.askAll) && !o.federate)
    throw new UsageError("--dp, --all-dps and --ask-all go with --federate");
  if (o.dp && o.allDps) throw new UsageError("--dp and --all-dps contradict each other");
  if (!o.federate && !o.local) return undefined;
  const S = pb.FederationOptions_DpSelection;
  return {
    mode: o.federate ? pb.FederationMode.FEDERATE : pb.FederationMode.LOCAL,
    dps: o.dp ? S.LISTED : o.allDps ? S.ALL : S.UNSPECIFIED,
    dpIds: o.dp ?? [],
    ignoreFilters: o.askAll === true,
  };
}

const OUTCOME_TEXT: Record<number, string> = {
  [pb.DpSource_Outcome.ANSWERED]: "answered",
  [pb.DpSource_Outcome.FAILED]: "failed",
  [pb.DpSource_Outcome.OVER_LIMIT]: "over the fan-out limit",
  [pb.DpSource_Outcome.SKIPPED_BY_FILTER]: "not asked: its filter rules the CSI out",
};

/** One DP of a federated answer, for printing. */
function sourceJson(s: pb.DpSource) {
  return {
    dp: s.dpId,
    authoritative: s.authoritative,
    outcome: OUTCOME_TEXT[s.outcome] ?? `unknown ${s.outcome}`,
    ...(s.outcome === pb.DpSource_Outcome.ANSWERED && { status: statusText(s.status) }),
    ...(s.failure && { failure: s.failure }),
  };
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
 * carry the pinned root key's signature; the answer the seal of the DP that registry delegates
 * the CSI to, and each mapping its holder's (unless "bulk") and MSP's signatures, with the keys
 * that registry publishes.
 */
async function verifyAnswer(
  csi: Csi,
  res: pb.ResolveResponse,
  params: LookupParams,
  query: FederationQuery,
  rootKey: Uint8Array,
  o: TlsFlags & { root: string },
): Promise<{ problem?: string; text: string }> {
  const fail = (problem: string) => ({ problem, text: `verification failed: ${problem}` });
  const answer = res.answer;
  if (!answer) return fail("the resolver sent no answer");
  const ch = connect(o.root, o, "root");
  let snapshot: pb.RegistrySnapshot | undefined;
  try {
    snapshot = (await ch.client(pb.RootService).getSnapshot({}, { timeoutMs: timeoutOf(o) })).snapshot;
  } finally {
    ch.close();
  }
  if (!snapshot) return fail(`the root at ${o.root} sent no registry`);
  const registry = snapshotFromProto(snapshot);
  if (!registry.seal || !registrySignatureValid(registry, registry.seal, rootKey)) {
    return fail(
      `the registry (serial ${registry.serial}) from ${o.root} does not carry a valid signature of the pinned root key`,
    );
  }
  const now = Date.now();
  const expired = sealProblem(registry.serial, registry.seal, now);
  if (expired) return fail(expired);
  const view = new RegistryView();
  view.replace(registry);
  const chain = `chained to the root key (registry serial ${registry.serial})`;
  // Which DPs the query selects, by the registry: a resolver may not leave one out unsaid, nor
  // answer a federating query locally.
  const delegation = view.find(csi.key);
  const selected = delegation && selectedDps(view, delegation, query);
  if (selected && !res.federation)
    return fail(`the query federates to [${selected.join(", ")}], but the answer is local`);
  if (!selected && res.federation) return fail("the answer is federated, but the query does not federate");
  if (res.federation && selected) {
    let fed: ReturnType<typeof receivedFederatedFromProto>;
    try {
      fed = receivedFederatedFromProto(res);
    } catch (err) {
      return fail((err as Error).message);
    }
    if (!fed) return fail("the resolver sent no answer");
    const r = federatedAnswerProblem(csi, fed, params, registryTrust(view), now, selected);
    if ("problem" in r) return fail(r.problem);
    const skipped = fed.sources.filter((s) => s.outcome === "skipped").map((s) => s.dpId);
    if (query.ignoreFilters && skipped.length > 0) {
      return fail(`the query asked every DP, but the resolver skipped ${skipped.join(", ")} by its filter`);
    }
    const answered = fed.sources.filter((s) => s.outcome === "answered").map((s) => s.dpId);
    const partial = fed.partial
      ? " (PARTIAL: not every DP answered)"
      : skipped.length > 0
        ? ` (DP(s) ${skipped.join(", ")} skipped by their filters, the resolver's word; --ask-all asks them)`
        : r.complete
          ? ""
          : " (a tag filter: completeness cannot be shown)";
    return {
      text: `verified: the merge of the sealed answers of DP(s) ${answered.join(", ")}, each seal valid, ${chain}${partial}`,
    };
  }
  let received: ReturnType<typeof receivedAnswerFromProto>;
  try {
    received = receivedAnswerFromProto(answer);
  } catch (err) {
    return fail((err as Error).message);
  }
  const r = answerProblem(csi, received, params, registryTrust(view), now);
  if ("problem" in r) return fail(r.problem);
  if (!r.seal && received.privateLookup)
    return {
      text: `not verifiable end to end: NOT_FOUND by a private lookup at DP "${received.dpIds[0]}", the DP the registry ${chain} delegates the CSI to; the resolver checked the DP's signed bucket, which has no entry for it, but passes no proof on (its word; ask with --plain for a sealed denial)`,
    };
  if (!r.seal) return { text: `verified: no delegation covers this CSI in the registry ${chain}` };
  const until = new Date(r.seal.expiresAtMs).toISOString();
  const what =
    received.status === "answer" && params.format === "verbose"
      ? `${received.mappings.length} mapping(s) with valid holder/MSP signatures, sealed by DP "${r.seal.dpId}"`
      : received.status === "opted_out"
        ? `OPTED_OUT sealed by DP "${r.seal.dpId}", with the holder's signed opt-out`
        : `${received.status === "answer" ? "FOUND" : "NOT_FOUND"} sealed by DP "${r.seal.dpId}"`;
  const partial = r.complete ? "" : " (a tag filter: the seal cannot show that no mapping was left out)";
  return { text: `verified: ${what}, valid until ${until}, ${chain}${partial}` };
}
