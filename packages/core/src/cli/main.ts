// The `mimi` command: one CLI for every role. `resolve` for MSPs and operators,
// `root` for registry admins, `auth` for authoritative operators, `dev` for the local PKI.
import { readFileSync } from "node:fs";
import { Command, CommanderError } from "commander";
import { bitsSet } from "../answer.js";
import { keyToProto } from "../convert.js";
import { parseCsi } from "../csi.js";
import { ensureDevPki } from "../dev-pki.js";
import { DiscoveryError } from "../errors.js";
import * as pb from "../gen/index.js";
import { hex64, parseDelegationKeyText } from "../registry.js";
import { silenceIpServernameWarning } from "../tls.js";
import {
  addTlsOptions,
  connect,
  LOCAL_PORTS,
  local,
  type TlsFlags,
  timeoutOf,
  UsageError,
} from "./connect.js";

const out = (s: string) => process.stdout.write(`${s}\n`);
const json = (v: unknown) =>
  out(
    JSON.stringify(
      v,
      (_k, x) =>
        typeof x === "bigint" ? (x <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(x) : x.toString()) : x,
      2,
    ),
  );

/** A whole-number flag within bounds. */
function count(flag: string, text: string, min: number, max: number): number {
  const n = Number(text);
  if (!/^[0-9]+$/.test(text) || n < min || n > max)
    throw new UsageError(`${flag} must be a whole number from ${min} to ${max}`);
  return n;
}

const program = new Command("mimi")
  .description("MIMI discovery network: resolve identifiers and administer the root and authoritative DPs")
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
    .option("--msp <id...>", "only mappings at these MSPs"),
  "cli",
).action(
  async (
    csiText: string,
    o: TlsFlags & { resolver: string; json?: boolean; compact?: boolean; msp?: string[] },
  ) => {
    let csi: string;
    try {
      csi = parseCsi(csiText).uri;
    } catch (err) {
      throw new UsageError(`invalid CSI: ${(err as Error).message}`);
    }
    const ch = connect(o.resolver, o);
    try {
      const res = await ch.client(pb.ResolverService).resolve(
        {
          csi,
          options: {
            format: o.compact ? pb.AnswerFormat.COMPACT : pb.AnswerFormat.VERBOSE,
            mspFilter: o.msp ?? [],
          },
        },
        { timeoutMs: timeoutOf(o) },
      );
      const a = res.answer;
      const status = a?.status === pb.LookupStatus.FOUND ? "FOUND" : "NOT_FOUND";
      const mappings = (a?.mappings ?? []).map((m) => ({
        msp: m.mspId,
        ssi: m.ssi,
        default: m.isDefault,
        tags: m.tags,
        createdAt: new Date(Number(m.createdAtMs)).toISOString(),
      }));
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
        });
        return;
      }
      const from = a?.dpIds.filter(Boolean).length ? `, from DP ${a?.dpIds.join(", ")}` : "";
      out(`${csi}: ${status}${res.stale ? " (STALE)" : ""} (ttl ${a?.ttlSeconds ?? 0}s${from})`);
      mappings.forEach((m, i) => {
        const tags = [...(m.default ? ["Default"] : []), ...m.tags];
        out(`  ${i + 1}. ${m.msp}  ${m.ssi}${tags.length ? `  [${tags.join(", ")}]` : ""}`);
      });
      if (o.compact)
        out(
          `  compact: ${Buffer.from(bits).toString("hex") || "(empty)"} -> MSP indexes ${bitsSet(bits).join(", ") || "none"}`,
        );
    } finally {
      ch.close();
    }
  },
);

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
    .requiredOption("--jurisdiction <code>", 'e.g. "EU"'),
  "admin",
).action(
  async (
    id: string,
    o: TlsFlags & { root: string; endpoint: string[]; tlsIdentity: string; jurisdiction: string },
  ) => {
    const { ch, api, opts } = admin(o);
    try {
      const r = await api.putDp(
        { dp: { id, endpoints: o.endpoint, tlsIdentity: o.tlsIdentity, jurisdiction: o.jurisdiction } },
        opts,
      );
      out(`DP ${id} registered (serial ${r.serial})`);
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
  ).requiredOption("--name <name>", "display name"),
  "admin",
).action(async (id: string, o: TlsFlags & { root: string; name: string }) => {
  const { ch, api, opts } = admin(o);
  try {
    const r = await api.putMsp({ id, name: o.name }, opts);
    out(`MSP ${id} has index ${r.msp?.index} (serial ${r.serial})`);
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
      })),
      msps: (s?.msps ?? []).map((m) => ({ id: m.id, name: m.name, index: m.index })),
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
        `  ${d.id.padEnd(8)} ${d.jurisdiction.padEnd(4)} ${d.tlsIdentity.padEnd(12)} ${d.endpoints.join(" ")}`,
      );
    out("MSPs:");
    for (const m of view.msps) out(`  ${String(m.index).padStart(3)}  ${m.id}  (${m.name})`);
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
  .description("administer an authoritative DP (MSP enrolment, mapping import)");
const authAddr = (c: Command) => c.option("--dp <host:port>", "authoritative address", local(LOCAL_PORTS.eu));
const authAdmin = (o: TlsFlags & { dp: string }) => {
  const ch = connect(o.dp, o);
  return { ch, api: ch.client(pb.AuthoritativeAdminService), opts: { timeoutMs: timeoutOf(o) } };
};
addTlsOptions(
  authAddr(auth.command("enrol").description("enrol an MSP at the DP").argument("<msp-id>"))
    .requiredOption("--tls-identity <name>", "certificate identity the MSP connects with")
    .option("--users <n>", "number of users the MSP has enrolled", "0"),
  "admin",
).action(async (mspId: string, o: TlsFlags & { dp: string; tlsIdentity: string; users: string }) => {
  const { ch, api, opts } = authAdmin(o);
  try {
    await api.enrolMsp(
      {
        mspId,
        tlsIdentity: o.tlsIdentity,
        enrolledUsers: BigInt(count("--users", o.users, 0, Number.MAX_SAFE_INTEGER)),
      },
      opts,
    );
    out(`MSP ${mspId} enrolled`);
  } finally {
    ch.close();
  }
});
addTlsOptions(
  authAddr(
    auth
      .command("import")
      .description('import mappings from a JSON file: [{"csi","msp","ssi","default"?,"tags"?}]')
      .argument("<file>"),
  ).option("--batch <n>", "mappings per message", "1000"),
  "admin",
).action(async (file: string, o: TlsFlags & { dp: string; batch: string }) => {
  const records = readImportFile(file);
  const size = count("--batch", o.batch, 1, 10_000);
  const { ch, api } = authAdmin(o);
  try {
    async function* batches() {
      for (let i = 0; i < records.length; i += size) yield { mappings: records.slice(i, i + size) };
    }
    const r = await api.importMappings(batches(), { timeoutMs: Math.max(timeoutOf(o), 600_000) });
    out(`imported ${r.imported}, unchanged ${r.unchanged}`);
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

function readImportFile(
  file: string,
): { csi: string; mapping: { mspId: string; ssi: string; isDefault: boolean; tags: string[] } }[] {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, "utf8"));
  } catch (err) {
    throw new UsageError(`cannot read ${file}: ${(err as Error).message}`);
  }
  if (!Array.isArray(raw)) throw new UsageError(`${file} must hold a JSON array of mappings`);
  return raw.map((r, i) => {
    const bad = (why: string) => new UsageError(`${file}: entry ${i} ${why}`);
    if (typeof r !== "object" || r === null || Array.isArray(r)) throw bad("must be an object");
    const m = r as Record<string, unknown>;
    if (typeof m.csi !== "string" || typeof m.msp !== "string" || typeof m.ssi !== "string") {
      throw bad("needs string fields csi, msp and ssi");
    }
    if (m.tags !== undefined && (!Array.isArray(m.tags) || m.tags.some((t) => typeof t !== "string"))) {
      throw bad("has tags that are not a list of strings");
    }
    if (m.default !== undefined && typeof m.default !== "boolean")
      throw bad("has a default that is not true or false");
    const unknown = Object.keys(m).filter((k) => !["csi", "msp", "ssi", "tags", "default"].includes(k));
    if (unknown.length > 0) throw bad(`has unknown field(s) ${unknown.join(", ")}`);
    return {
      csi: m.csi,
      mapping: {
        mspId: m.msp,
        ssi: m.ssi,
        isDefault: m.default === true,
        tags: (m.tags as string[] | undefined) ?? [],
      },
    };
  });
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
    const msg = err instanceof DiscoveryError || err instanceof Error ? err.message : String(err);
    process.stderr.write(`mimi: ${msg}\n`);
    return 1;
  }
}

silenceIpServernameWarning();
run(process.argv.slice(2)).then((code) => {
  process.exitCode = code;
});
