// `mimi root ...`: registry administration (H3): delegations, the DP and MSP registries, the
// signed snapshot and the audit log. Every edit is checked and audited by the root itself.
import { DiscoveryError, keyToProto, parseDelegationKeyText, pb } from "@mimi/core";
import type { Command } from "commander";
import { count, fingerprint, UsageError } from "../args.js";
import { addTlsOptions, connect, LOCAL_PORTS, local, type TlsFlags, timeoutOf } from "../connect.js";
import { about } from "../help.js";
import { publicKeyArg } from "../keys.js";
import { json, keyText, out } from "../output.js";

/** Adds `root` and its subcommands. */
export function addRootCommands(program: Command): void {
  const root = program.command("root").description(about("root"));
  const rootAddr = (c: Command) => c.option("--root <host:port>", "root address", local(LOCAL_PORTS.root));
  const admin = (o: TlsFlags & { root: string }) => {
    const ch = connect(o.root, o, "root");
    return { ch, api: ch.client(pb.RegistryAdminService), opts: { timeoutMs: timeoutOf(o) } };
  };
  const keyArg = (text: string) => {
    try {
      return keyToProto(parseDelegationKeyText(text));
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
  };
  const delegation = root.command("delegation").description("add, change, list and remove delegations");
  const KEY_HELP =
    'an E.164 prefix ("+44", "+1415") or an email-hash range ("email:0-7fffffffffffffff", "email:*")';
  addTlsOptions(
    rootAddr(delegation.command("add").description("delegate a key to a DP").argument("<key>", KEY_HELP))
      .requiredOption("--dp <id>", "the DP that serves the key")
      .option("--ttl <seconds>", "delegation TTL in seconds; 0 takes the root's default", "0")
      .option("--federated <id...>", "DPs that may also hold mappings for the key's range (federation)"),
    "admin",
  ).action(
    async (key: string, o: TlsFlags & { root: string; dp: string; ttl: string; federated?: string[] }) => {
      const { ch, api, opts } = admin(o);
      try {
        const r = await api.createDelegation(
          {
            key: keyArg(key),
            dpId: o.dp,
            ttlSeconds: count("--ttl", o.ttl, 0, 604_800),
            federatedDpIds: o.federated ?? [],
          },
          opts,
        );
        out(`added ${r.delegation?.id} -> ${o.dp} (serial ${r.serial})`);
      } finally {
        ch.close();
      }
    },
  );
  addTlsOptions(
    rootAddr(
      delegation
        .command("update")
        .description("move a delegation to another DP or change its TTL")
        .argument("<key>", KEY_HELP),
    )
      .option("--dp <id>", "the DP that serves the key (default: unchanged)", "")
      .option("--ttl <seconds>", "new TTL in seconds; 0 keeps the current one", "0")
      .option("--federated <id...>", "the range's federated DPs from now on (default: unchanged)")
      .option("--no-federated", "the range has no federated DPs from now on"),
    "admin",
  ).action(
    async (
      key: string,
      o: TlsFlags & { root: string; dp: string; ttl: string; federated?: string[] | boolean },
    ) => {
      const { ch, api, opts } = admin(o);
      try {
        // Commander gives true when neither flag is given (the --no- flag's default), false for --no-federated.
        const federated = Array.isArray(o.federated) ? o.federated : o.federated === false ? [] : undefined;
        const r = await api.updateDelegation(
          {
            key: keyArg(key),
            dpId: o.dp,
            ttlSeconds: count("--ttl", o.ttl, 0, 604_800),
            federatedDpIds: federated ?? [],
            setFederatedDpIds: federated !== undefined,
          },
          opts,
        );
        out(`updated ${r.delegation?.id} -> ${r.delegation?.dpId} (serial ${r.serial})`);
      } finally {
        ch.close();
      }
    },
  );
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
            federated: d.federatedDpIds,
          })),
        });
        return;
      }
      out(`serial ${r.serial}`);
      for (const d of r.delegations)
        out(
          `  ${keyText(d.key).padEnd(40)} -> ${d.dpId}  (ttl ${d.ttlSeconds}s)${federatedText(d.federatedDpIds)}`,
        );
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
        "--endpoint-jurisdiction <host:port=code...>",
        "where an endpoint elsewhere than --jurisdiction is (H2); the placements of other endpoints still listed are kept; host:port=<the DP's code> puts one back",
      )
      .option(
        "--signing-key <file>",
        "the DP's Ed25519 public key file, or its private key PEM (default: keep the key the registry has)",
      )
      .option(
        "--federation <mode>",
        'what queries for its ranges do by default (R11): "local" or "federate" (default: keep the published policy)',
      )
      .option(
        "--prefer <id...>",
        "the federated DPs it prefers asked, in order (default: keep; with --federation alone: none)",
      )
      .option(
        "--private-lookup-key <epoch:hex...>",
        "the DP's private-lookup public keys (at most 2; the DP logs its key at start; default: keep)",
      )
      .option("--no-private-lookup-keys", "unpublish the DP's private-lookup keys"),
    "admin",
  ).action(
    async (
      id: string,
      o: TlsFlags & {
        root: string;
        endpoint: string[];
        tlsIdentity: string;
        jurisdiction: string;
        endpointJurisdiction?: string[];
        signingKey?: string;
        federation?: string;
        prefer?: string[];
        privateLookupKey?: string[];
        privateLookupKeys?: boolean;
      },
    ) => {
      const privateLookupKeys = (o.privateLookupKey ?? []).map((text) => {
        const m = /^(\d{1,10}):([0-9a-fA-F]{64})$/.exec(text);
        if (!m || Number(m[1]) > 0xffff_ffff)
          throw new UsageError(`--private-lookup-key ${text}: give <epoch (32-bit)>:<64 hex digits>`);
        return { epoch: Number(m[1]), publicKey: new Uint8Array(Buffer.from(m[2] as string, "hex")) };
      });
      const endpointJurisdictions = (o.endpointJurisdiction ?? []).map((text) => {
        const at = text.lastIndexOf("=");
        if (at <= 0 || at === text.length - 1)
          throw new UsageError(
            `--endpoint-jurisdiction ${text}: give <host:port>=<code>, e.g. dp-eu-2:7500=CH`,
          );
        return { endpoint: text.slice(0, at), jurisdiction: text.slice(at + 1) };
      });
      const clearPrivateLookupKeys = o.privateLookupKeys === false;
      if (clearPrivateLookupKeys && privateLookupKeys.length > 0)
        throw new UsageError("--private-lookup-key and --no-private-lookup-keys contradict each other");
      const given = o.signingKey !== undefined ? publicKeyArg("--signing-key", o.signingKey) : undefined;
      if (o.federation !== undefined && o.federation !== "local" && o.federation !== "federate") {
        throw new UsageError('--federation must be "local" or "federate"');
      }
      const { ch, api, opts } = admin(o);
      try {
        // PutDp replaces the whole record, so a policy or endpoint placement not given is carried
        // over rather than dropped, and the edit applies only at the serial it was read at (an
        // edit made meanwhile is not undone: the root says REGISTRY_CHANGED, and the record is
        // read again, a few times at most). A key not given is sent empty: the root keeps its
        // current one.
        const put = async () => {
          const snapshot = (await ch.client(pb.RootService).getSnapshot({}, opts)).snapshot;
          const current = snapshot?.dps.find((d) => d.id === id);
          const federation =
            o.federation === undefined && o.prefer === undefined
              ? current?.federation
              : {
                  defaultMode:
                    (o.federation ?? "local") === "federate"
                      ? pb.FederationMode.FEDERATE
                      : pb.FederationMode.LOCAL,
                  preferredDpIds: o.prefer ?? [],
                };
          const r = await api.putDp(
            {
              dp: {
                id,
                endpoints: o.endpoint,
                tlsIdentity: o.tlsIdentity,
                jurisdiction: o.jurisdiction,
                signingPublicKey: given ?? new Uint8Array(0),
                ...(federation && { federation }),
                privateLookupKeys,
                // The current placements of endpoints still listed, each given one overriding.
                endpointJurisdictions: [
                  ...(current?.endpointJurisdictions ?? []).filter(
                    (e) =>
                      o.endpoint.includes(e.endpoint) &&
                      !endpointJurisdictions.some((g) => g.endpoint === e.endpoint),
                  ),
                  ...endpointJurisdictions,
                ],
              },
              clearPrivateLookupKeys,
              ifSerial: snapshot?.serial ?? 0n,
            },
            opts,
          );
          return { r, key: given ?? current?.signingPublicKey ?? new Uint8Array(0) };
        };
        let done: Awaited<ReturnType<typeof put>> | undefined;
        for (let attempt = 1; !done; attempt++) {
          try {
            done = await put();
          } catch (err) {
            const changed = err instanceof DiscoveryError && err.details?.reason === "REGISTRY_CHANGED";
            if (!changed || attempt >= 3) throw err;
          }
        }
        const { r, key } = done;
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
      root
        .command("msp")
        .description("register an MSP (its compact index is assigned once)")
        .argument("<id>"),
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
    const ch = connect(o.root, o, "root");
    try {
      const { snapshot: s } = await ch.client(pb.RootService).getSnapshot({}, { timeoutMs: timeoutOf(o) });
      const view = {
        serial: s?.serial ?? 0n,
        delegations: (s?.delegations ?? []).map((d) => ({
          key: keyText(d.key),
          dp: d.dpId,
          ttlSeconds: d.ttlSeconds,
          federated: d.federatedDpIds,
        })),
        dps: (s?.dps ?? []).map((d) => ({
          id: d.id,
          endpoints: d.endpoints,
          tlsIdentity: d.tlsIdentity,
          jurisdiction: d.jurisdiction,
          signingKey: fingerprint(d.signingPublicKey),
          federation: {
            defaultMode: d.federation?.defaultMode === pb.FederationMode.FEDERATE ? "federate" : "local",
            preferred: d.federation?.preferredDpIds ?? [],
          },
          // As `mimi root dp put --private-lookup-key` takes them.
          privateLookupKeys: d.privateLookupKeys.map(
            (k) => `${k.epoch}:${Buffer.from(k.publicKey).toString("hex")}`,
          ),
          // As `mimi root dp put --endpoint-jurisdiction` takes them.
          endpointJurisdictions: d.endpointJurisdictions.map((e) => `${e.endpoint}=${e.jurisdiction}`),
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
      for (const d of view.delegations) out(`  ${d.key.padEnd(40)} -> ${d.dp}${federatedText(d.federated)}`);
      out("DPs:");
      for (const d of view.dps)
        out(
          `  ${d.id.padEnd(8)} ${d.jurisdiction.padEnd(4)} ${d.tlsIdentity.padEnd(12)} key ${d.signingKey.padEnd(8)}  ${endpointsText(d.endpoints, d.endpointJurisdictions)}  (${d.federation.defaultMode}${d.federation.preferred.length ? `, prefers ${d.federation.preferred.join(", ")}` : ""})`,
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
      if (r.truncated) out(`  (older records left out: the response holds at most 3.5 MB)`);
    } finally {
      ch.close();
    }
  });
}

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

/** ", federated: a, b" for a delegation with federated DPs; "" without. */
function federatedText(ids: readonly string[]): string {
  return ids.length > 0 ? `  federated: ${ids.join(", ")}` : "";
}

/** A DP's endpoints, each elsewhere than the DP marked with its jurisdiction ("host:port=CH"). */
function endpointsText(endpoints: readonly string[], elsewhere: readonly string[]): string {
  return endpoints.map((e) => elsewhere.find((x) => x.startsWith(`${e}=`)) ?? e).join(" ");
}
