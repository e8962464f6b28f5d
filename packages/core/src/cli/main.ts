// The `mimi` command: one CLI for every role. `resolve` for MSPs and operators,
// `root` for registry admins, `auth` for authoritative operators, `claim` for MSPs acting
// at a DP (claim.ts), `resolver` for resolver operators (resolver-admin.ts), `dev-pki` for
// the local PKI.
import { readFileSync } from "node:fs";
import { Command, CommanderError } from "commander";
import { bitsSet } from "../answer.js";
import { keyToProto, mappingFromProto, snapshotFromProto } from "../convert.js";
import { devSigningKeyPaths, ensureDevPki } from "../dev-pki.js";
import { DiscoveryError } from "../errors.js";
import * as pb from "../gen/index.js";
import { hex64, parseDelegationKeyText, RegistryView } from "../registry.js";
import { silenceIpServernameWarning } from "../tls.js";
import { mappingProblem, registryKeys, registrySignatureValid } from "../verify.js";
import { count, csiArg, fingerprint, Interrupted } from "./args.js";
import { addClaimCommands } from "./claim.js";
import {
  addTlsOptions,
  connect,
  LOCAL_PORTS,
  local,
  type TlsFlags,
  timeoutOf,
  UsageError,
} from "./connect.js";
import { type FeedLine, parseFeed } from "./jsonl.js";
import { publicKeyArg } from "./keys.js";
import { json, mappingJson, out } from "./output.js";
import { addResolverCommands } from "./resolver-admin.js";

const program = new Command("mimi")
  .description(
    "MIMI discovery network: resolve identifiers, act as an MSP at a DP, and administer the root and authoritative DPs",
  )
  .showHelpAfterError()
  .exitOverride();

// ---- resolve -------------------------------------------------------------------------
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
    .option("--root <host:port>", "root to fetch the registry from (with --verify)", local(LOCAL_PORTS.root))
    .option("--root-key <file>", "the pinned root public key (with --verify; default <pki>/root-signing.pub)")
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
    const ch = connect(o.resolver, o);
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
  const ch = connect(o.root, o);
  let snapshot: pb.RegistrySnapshot | undefined;
  try {
    snapshot = (await ch.client(pb.RootService).getSnapshot({}, { timeoutMs: timeoutOf(o) })).snapshot;
  } finally {
    ch.close();
  }
  const fail = (problem: string) => ({ problem, text: `verification failed: ${problem}` });
  if (!snapshot) return fail(`the root at ${o.root} sent no registry`);
  const registry = snapshotFromProto(snapshot);
  if (!registrySignatureValid(registry, snapshot.signature, rootKey)) {
    return fail(
      `the registry (serial ${registry.serial}) from ${o.root} does not carry a valid signature of the pinned root key`,
    );
  }
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

// ---- root: registry administration ------------------------------------------------------
const root = program
  .command("root")
  .description("administer the root registry (delegations, DPs, MSPs, audit)");
const rootAddr = (c: Command) => c.option("--root <host:port>", "root address", local(LOCAL_PORTS.root));
const admin = (o: TlsFlags & { root: string }) => {
  const ch = connect(o.root, o);
  return { ch, api: ch.client(pb.RegistryAdminService), opts: { timeoutMs: timeoutOf(o) } };
};
const keyArg = (text: string) => {
  try {
    return keyToProto(parseDelegationKeyText(text));
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
};
const keyText = (k: pb.DelegationKey | undefined) =>
  k?.key.case === "e164Prefix"
    ? `+${k.key.value}`
    : k?.key.case === "emailHashRange"
      ? `email:${hex64(k.key.value.first)}-${hex64(k.key.value.last)}`
      : "?";

const delegation = root.command("delegation").description("add, change, list and remove delegations");
const KEY_HELP =
  'an E.164 prefix ("+44", "+1415") or an email-hash range ("email:0-7fffffffffffffff", "email:*")';
addTlsOptions(
  rootAddr(delegation.command("add").description("delegate a key to a DP").argument("<key>", KEY_HELP))
    .requiredOption("--dp <id>", "the DP that serves the key")
    .option("--ttl <seconds>", "delegation TTL in seconds; 0 takes the root's default", "0"),
  "admin",
).action(async (key: string, o: TlsFlags & { root: string; dp: string; ttl: string }) => {
  const { ch, api, opts } = admin(o);
  try {
    const r = await api.createDelegation(
      { key: keyArg(key), dpId: o.dp, ttlSeconds: count("--ttl", o.ttl, 0, 604_800) },
      opts,
    );
    out(`added ${r.delegation?.id} -> ${o.dp} (serial ${r.serial})`);
  } finally {
    ch.close();
  }
});
addTlsOptions(
  rootAddr(
    delegation
      .command("update")
      .description("move a delegation to another DP or change its TTL")
      .argument("<key>", KEY_HELP),
  )
    .option("--dp <id>", "the DP that serves the key (default: unchanged)", "")
    .option("--ttl <seconds>", "new TTL in seconds; 0 keeps the current one", "0"),
  "admin",
).action(async (key: string, o: TlsFlags & { root: string; dp: string; ttl: string }) => {
  const { ch, api, opts } = admin(o);
  try {
    const r = await api.updateDelegation(
      { key: keyArg(key), dpId: o.dp, ttlSeconds: count("--ttl", o.ttl, 0, 604_800) },
      opts,
    );
    out(`updated ${r.delegation?.id} -> ${o.dp} (serial ${r.serial})`);
  } finally {
    ch.close();
  }
});
addTlsOptions(
  rootAddr(delegation.command("remove").description("remove a delegation").argument("<key>", KEY_HELP)),
  "admin",
).action(async (key: string, o: TlsFlags & { root: string }) => {
  const { ch, api, opts } = admin(o);
  try {
    const r = await api.deleteDelegation({ key: keyArg(key) }, opts);
    out(`removed (serial ${r.serial})`);
  } finally {
    ch.close();
  }
});
addTlsOptions(
  rootAddr(delegation.command("list").description("list delegations").option("--json", "as JSON")),
  "admin",
).action(async (o: TlsFlags & { root: string; json?: boolean }) => {
  const { ch, api, opts } = admin(o);
  try {
    const r = await api.listDelegations({}, opts);
    if (o.json) {
      json({
        serial: r.serial,
        delegations: r.delegations.map((d) => ({
          id: d.id,
          key: keyText(d.key),
          dp: d.dpId,
          ttlSeconds: d.ttlSeconds,
        })),
      });
      return;
    }
    out(`serial ${r.serial}`);
    for (const d of r.delegations) out(`  ${keyText(d.key).padEnd(40)} -> ${d.dpId}  (ttl ${d.ttlSeconds}s)`);
  } finally {
    ch.close();
  }
});

const dp = root.command("dp").description("register and remove DPs");
addTlsOptions(
  rootAddr(dp.command("put").description("register or update a DP").argument("<id>"))
    .requiredOption("--endpoint <host:port...>", "endpoints in order of preference")
    .requiredOption("--tls-identity <name>", "certificate identity the DP's servers present")
    .requiredOption("--jurisdiction <code>", 'e.g. "EU"')
    .option(
      "--signing-key <file>",
      "the DP's Ed25519 public key file, or its private key PEM (default: keep the key the registry has)",
    ),
  "admin",
).action(
  async (
    id: string,
    o: TlsFlags & {
      root: string;
      endpoint: string[];
      tlsIdentity: string;
      jurisdiction: string;
      signingKey?: string;
    },
  ) => {
    const given = o.signingKey !== undefined ? publicKeyArg("--signing-key", o.signingKey) : undefined;
    const { ch, api, opts } = admin(o);
    try {
      // PutDp replaces the whole record, so a key not given is carried over rather than dropped.
      const key =
        given ??
        (await ch.client(pb.RootService).getSnapshot({}, opts)).snapshot?.dps.find((d) => d.id === id)
          ?.signingPublicKey ??
        new Uint8Array(0);
      const r = await api.putDp(
        {
          dp: {
            id,
            endpoints: o.endpoint,
            tlsIdentity: o.tlsIdentity,
            jurisdiction: o.jurisdiction,
            signingPublicKey: key,
          },
        },
        opts,
      );
      out(`DP ${id} registered with signing key ${fingerprint(key)} (serial ${r.serial})`);
      if (key.length === 0) out("  without a signing key, answers from this DP do not verify");
    } finally {
      ch.close();
    }
  },
);
addTlsOptions(
  rootAddr(dp.command("remove").description("remove a DP with no delegations").argument("<id>")),
  "admin",
).action(async (id: string, o: TlsFlags & { root: string }) => {
  const { ch, api, opts } = admin(o);
  try {
    const r = await api.deleteDp({ id }, opts);
    out(`DP ${id} removed (serial ${r.serial})`);
  } finally {
    ch.close();
  }
});
addTlsOptions(
  rootAddr(
    root.command("msp").description("register an MSP (its compact index is assigned once)").argument("<id>"),
  )
    .requiredOption("--name <name>", "display name")
    .option(
      "--signing-key <file>",
      "the MSP's Ed25519 public key file, or its private key PEM (default: keep the key the registry has)",
    ),
  "admin",
).action(async (id: string, o: TlsFlags & { root: string; name: string; signingKey?: string }) => {
  const key = o.signingKey !== undefined ? publicKeyArg("--signing-key", o.signingKey) : new Uint8Array(0);
  const { ch, api, opts } = admin(o);
  try {
    const r = await api.putMsp({ id, name: o.name, signingPublicKey: key }, opts);
    out(
      `MSP ${id} has index ${r.msp?.index} and signing key ${fingerprint(r.msp?.signingPublicKey ?? key)} (serial ${r.serial})`,
    );
  } finally {
    ch.close();
  }
});
addTlsOptions(
  rootAddr(
    root
      .command("show")
      .description("print the registry snapshot (delegations, DPs, MSPs)")
      .option("--json", "as JSON"),
  ),
  "cli",
).action(async (o: TlsFlags & { root: string; json?: boolean }) => {
  const ch = connect(o.root, o);
  try {
    const { snapshot: s } = await ch.client(pb.RootService).getSnapshot({}, { timeoutMs: timeoutOf(o) });
    const view = {
      serial: s?.serial ?? 0n,
      delegations: (s?.delegations ?? []).map((d) => ({
        key: keyText(d.key),
        dp: d.dpId,
        ttlSeconds: d.ttlSeconds,
      })),
      dps: (s?.dps ?? []).map((d) => ({
        id: d.id,
        endpoints: d.endpoints,
        tlsIdentity: d.tlsIdentity,
        jurisdiction: d.jurisdiction,
        signingKey: fingerprint(d.signingPublicKey),
      })),
      msps: (s?.msps ?? []).map((m) => ({
        id: m.id,
        name: m.name,
        index: m.index,
        signingKey: fingerprint(m.signingPublicKey),
      })),
    };
    if (o.json) {
      json(view);
      return;
    }
    out(`serial ${view.serial}`);
    out("delegations:");
    for (const d of view.delegations) out(`  ${d.key.padEnd(40)} -> ${d.dp}`);
    out("DPs:");
    for (const d of view.dps)
      out(
        `  ${d.id.padEnd(8)} ${d.jurisdiction.padEnd(4)} ${d.tlsIdentity.padEnd(12)} key ${d.signingKey.padEnd(8)}  ${d.endpoints.join(" ")}`,
      );
    out("MSPs:");
    for (const m of view.msps)
      out(`  ${String(m.index).padStart(3)}  ${m.id}  (${m.name})  key ${m.signingKey}`);
  } finally {
    ch.close();
  }
});
addTlsOptions(
  rootAddr(
    root
      .command("audit")
      .description("show the audit log, newest first")
      .option("--limit <n>", "records", "20"),
  ),
  "admin",
).action(async (o: TlsFlags & { root: string; limit: string }) => {
  const { ch, api, opts } = admin(o);
  try {
    const r = await api.listAudit({ limit: count("--limit", o.limit, 1, 10_000) }, opts);
    for (const rec of r.records) {
      const what = describeChange(rec.change);
      out(
        `${String(rec.serial).padStart(5)}  ${new Date(Number(rec.atMs)).toISOString()}  ${rec.actor.padEnd(10)}  ${what}`,
      );
    }
  } finally {
    ch.close();
  }
});

// ---- auth: authoritative administration ----------------------------------------------
const auth = program
  .command("auth")
  .description("administer an authoritative DP (MSP enrolment, provider feeds, status)");
const authAddr = (c: Command) => c.option("--dp <host:port>", "authoritative address", local(LOCAL_PORTS.eu));
const authAdmin = (o: TlsFlags & { dp: string }) => {
  const ch = connect(o.dp, o);
  return { ch, api: ch.client(pb.AuthoritativeAdminService), opts: { timeoutMs: timeoutOf(o) } };
};
/** Feed entries per IngestProviderFeed message. */
const FEED_BATCH = 1000;

const FEED_EVENT: Record<FeedLine["event"], pb.FeedEvent> = {
  disconnected: pb.FeedEvent.DISCONNECTED,
  reassigned: pb.FeedEvent.REASSIGNED,
  ported: pb.FeedEvent.PORTED,
};

function feedEntry(e: FeedLine) {
  return {
    csi: e.csi,
    event: FEED_EVENT[e.event],
    effectiveAtMs: BigInt(e.effectiveAtMs),
    donorMspId: e.donorMspId,
  };
}

addTlsOptions(
  authAddr(auth.command("enrol").description("enrol an MSP at the DP").argument("<msp-id>"))
    .requiredOption("--tls-identity <name>", "certificate identity the MSP connects with")
    .requiredOption(
      "--signing-key <file>",
      "the MSP's Ed25519 public key file, or its private key PEM; must equal the key the root registry publishes",
    )
    .option("--users <n>", "number of users the MSP has enrolled", "0")
    .option("--bulk", "let the MSP register mappings in bulk, without a proof by each holder"),
  "admin",
).action(
  async (
    mspId: string,
    o: TlsFlags & { dp: string; tlsIdentity: string; users: string; signingKey: string; bulk?: boolean },
  ) => {
    const enrolledUsers = BigInt(count("--users", o.users, 0, Number.MAX_SAFE_INTEGER));
    const key = publicKeyArg("--signing-key", o.signingKey);
    const { ch, api, opts } = authAdmin(o);
    try {
      await api.enrolMsp(
        { mspId, tlsIdentity: o.tlsIdentity, enrolledUsers, signingPublicKey: key, mayBulk: o.bulk === true },
        opts,
      );
      out(
        `MSP ${mspId} enrolled with signing key ${fingerprint(key)}${o.bulk ? ", allowed to register in bulk" : ""}`,
      );
    } finally {
      ch.close();
    }
  },
);
addTlsOptions(
  authAddr(
    auth
      .command("feed")
      .description(
        "apply a provider feed of disconnected, reassigned and ported identifiers, removing the mappings each makes outdated",
      )
      .argument(
        "<file>",
        'JSON Lines: {"csi","event":"disconnected"|"reassigned"|"ported","effective":"2026-11-01" or ms,"donorMsp"?}',
      )
      .addHelpText(
        "after",
        `
Only mappings created before "effective" are removed, so a new holder's claim survives a late
feed. "ported" removes only the mappings at "donorMsp", the MSP of the operator the number left.
Entries are sent ${FEED_BATCH} to a message; each message is one transaction at the DP, and
feeding the same file again removes nothing more.`,
      ),
  ),
  "admin",
).action(async (file: string, o: TlsFlags & { dp: string }) => {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    throw new UsageError(`cannot read ${file}: ${(err as Error).message}`);
  }
  const entries = parseFeed(file, text);
  if (entries.length === 0) throw new UsageError(`${file} holds no entries`);
  const timeoutMs = timeoutOf(o);
  const { ch, api } = authAdmin(o);
  try {
    async function* batches() {
      for (let i = 0; i < entries.length; i += FEED_BATCH) {
        yield { entries: entries.slice(i, i + FEED_BATCH).map(feedEntry) };
      }
    }
    const r = await api.ingestProviderFeed(batches(), { timeoutMs: Math.max(timeoutMs, 600_000) });
    out(`applied ${r.entries} feed entries: removed ${r.mappingsRemoved} mapping(s)`);
  } finally {
    ch.close();
  }
});
addTlsOptions(
  authAddr(auth.command("status").description("show the DP's delegations and store size")),
  "admin",
).action(async (o: TlsFlags & { dp: string }) => {
  const { ch, api, opts } = authAdmin(o);
  try {
    const s = await api.getStatus({}, opts);
    out(
      `DP ${s.dpId}: ${s.mappingCount} mappings, ${s.lookupsServed} lookups served, registry serial ${s.registrySerial}`,
    );
    for (const d of s.delegations) out(`  ${keyText(d.key)}`);
  } finally {
    ch.close();
  }
});

addClaimCommands(program);
addResolverCommands(program);

// ---- dev ------------------------------------------------------------------------------
program
  .command("dev-pki")
  .description("create a development CA and certificates (never for production)")
  .argument("<dir>", "output folder")
  .argument("<identity...>", "certificate identities (subject common names)")
  .action(async (dir: string, identities: string[]) => {
    await ensureDevPki(dir, identities);
    out(`certificates for ${identities.join(", ")} are in ${dir}`);
  });

/** One line of text for an audited change. */
function describeChange(change: pb.RegistryChange | undefined): string {
  const c = change?.change;
  switch (c?.case) {
    case "putDelegation":
      return `delegation ${keyText(c.value.key)} -> ${c.value.dpId}`;
    case "deleteDelegationId":
      return `delegation ${c.value.replace(/^e164:/, "+")} removed`;
    case "putDp":
      return `dp ${c.value.id} ${c.value.endpoints.join(",")}`;
    case "deleteDpId":
      return `dp ${c.value} removed`;
    case "putMsp":
      return `msp ${c.value.id} index ${c.value.index}`;
    case "deleteMspId":
      return `msp ${c.value} removed`;
    default:
      return "(empty change)";
  }
}

/** Runs the CLI; resolves to the process exit code. */
export async function run(argv: readonly string[]): Promise<number> {
  try {
    await program.parseAsync([...argv], { from: "user" });
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : 2;
    if (err instanceof UsageError) {
      process.stderr.write(`mimi: ${err.message}\n`);
      return 2;
    }
    // The command already said where it stopped and how to go on.
    if (err instanceof Interrupted) return 130;
    const msg = err instanceof DiscoveryError || err instanceof Error ? err.message : String(err);
    process.stderr.write(`mimi: ${msg}\n`);
    return 1;
  }
}

silenceIpServernameWarning();
run(process.argv.slice(2)).then((code) => {
  process.exitCode = code;
});
