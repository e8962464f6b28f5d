// `mimi auth ...`: administration of an authoritative DP: MSP enrolment (G1), provider feeds
// of disconnected, reassigned and ported identifiers (R16, D2), and the DP's status.
import { readFileSync } from "node:fs";
import { pb } from "@mimi/core";
import type { Command } from "commander";
import { count, fingerprint, UsageError } from "../args.js";
import { addTlsOptions, connect, LOCAL_PORTS, local, type TlsFlags, timeoutOf } from "../connect.js";
import { about } from "../help.js";
import { type FeedLine, parseFeed } from "../jsonl.js";
import { publicKeyArg } from "../keys.js";
import { isoTime, keyText, out } from "../output.js";

/** Adds `auth` and its subcommands. */
export function addAuthCommands(program: Command): void {
  const auth = program.command("auth").description(about("auth"));
  const authAddr = (c: Command) =>
    c.option("--dp <host:port>", "authoritative address", local(LOCAL_PORTS.eu));
  const authAdmin = (o: TlsFlags & { dp: string }) => {
    const ch = connect(o.dp, o, "dp");
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
          {
            mspId,
            tlsIdentity: o.tlsIdentity,
            enrolledUsers,
            signingPublicKey: key,
            mayBulk: o.bulk === true,
          },
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
      out(
        `refused lookups: ${s.refusedCapacity} over capacity, ${s.refusedResolver} over a resolver's rate, ${s.refusedContext} over a context's budget, ${s.refusedEnumeration} as enumeration`,
      );
      out(`enumeration: ${s.enumerationMode} mode, ${s.enumerationDetections} detections`);
      for (const d of s.recentDetections) {
        out(
          `  ${isoTime(d.atMs)} ${d.subject} ${d.scope}: ${d.distinct} distinct, ${d.notFound}/${d.answers} not found${d.blockedUntilMs > 0n ? `, refused until ${isoTime(d.blockedUntilMs)}` : ""}`,
        );
      }
      const r = s.replication;
      if (r) {
        out(`replication: ${r.role}, epoch ${r.epoch}, at change ${r.appliedSeq}`);
        for (const f of r.followers) out(`  follower ${f.identity}: holds change ${f.ackedSeq}`);
        if (r.followerState !== "") {
          out(
            `  ${r.followerState}${r.following ? ` from ${r.following}` : ""}, ${r.lagEvents} changes and ${r.lagMs} ms behind at the last report`,
          );
        }
      }
      if (s.privateLookupKeys.length > 0) {
        out("private-lookup keys:");
        for (const k of s.privateLookupKeys) out(`  ${privateKeyLine(k)}`);
        const next = rotationStep(s.privateLookupKeys);
        if (next) out(`  next step: ${next}`);
      }
    } finally {
      ch.close();
    }
  });
  addTlsOptions(
    authAddr(
      auth
        .command("roll-private-key")
        .description(
          "start a rotation of the DP's private-lookup key: the next key's table is built beside the served one",
        ),
    ),
    "admin",
  ).action(async (o: TlsFlags & { dp: string }) => {
    const { ch, api, opts } = authAdmin(o);
    try {
      const r = await api.rollPrivateLookupKey({}, opts);
      const k = r.key as pb.PrivateLookupKeyStatus;
      out(`${r.made ? "rolled to" : "already rolling to"} ${privateKeyLine(k)}`);
      out(
        "publish it once READY (mimi auth status), beside the current key: mimi root dp put ... --private-lookup-key <current> --private-lookup-key <this one>",
      );
    } finally {
      ch.close();
    }
  });
  // `mimi auth promote`: a secondary becomes the DP's primary (authoritative replication/promote.ts).
  addTlsOptions(
    authAddr(
      auth
        .command("promote")
        .description(
          "make this secondary the DP's primary at the next epoch; the other endpoints are fenced first and must mostly agree",
        )
        .option(
          "--force",
          "promote without a majority of the DP's endpoints (acknowledged writes may be lost)",
        ),
    ),
    "admin",
  ).action(async (o: TlsFlags & { dp: string; force?: boolean }) => {
    const { ch, api, opts } = authAdmin(o);
    try {
      // Fencing asks every other endpoint and may wait for this one to catch up.
      const r = await api.promote(
        { force: o.force === true },
        { timeoutMs: Math.max(opts.timeoutMs, 30_000) },
      );
      out(`${o.dp} is now the DP's primary, epoch ${r.epoch}`);
      for (const p of r.peers) {
        out(
          `  ${p.endpoint}: ${p.error !== "" ? `not reached (${p.error})` : p.granted ? "fenced" : "refused its vote"}`,
        );
      }
    } finally {
      ch.close();
    }
  });
}

/** A held private-lookup key as `mimi root dp put --private-lookup-key` takes it, with its state. */
function privateKeyLine(k: pb.PrivateLookupKeyStatus): string {
  const state = pb.PrivateLookupKeyState[k.state] ?? "UNKNOWN";
  const table = k.built
    ? `table built, ${2 ** k.bucketBits} buckets of ${k.bucketBytes} bytes`
    : "table being built";
  const retire = k.retireAtMs > 0n ? `, deleted at ${isoTime(k.retireAtMs)}` : "";
  return `${k.epoch}:${Buffer.from(k.publicKey).toString("hex")} ${state} (${table}${retire})`;
}

/** What the operator does next in a rotation, if anything. */
function rotationStep(keys: readonly pb.PrivateLookupKeyStatus[]): string | undefined {
  const text = (k: pb.PrivateLookupKeyStatus) => `${k.epoch}:${Buffer.from(k.publicKey).toString("hex")}`;
  const is = (s: pb.PrivateLookupKeyState) => keys.find((k) => k.state === s);
  const current = is(pb.PrivateLookupKeyState.CURRENT);
  const ready = is(pb.PrivateLookupKeyState.READY);
  const previous = is(pb.PrivateLookupKeyState.PREVIOUS);
  if (ready)
    return `publish the new key: mimi root dp put ... ${[current, ready].flatMap((k) => (k ? [`--private-lookup-key ${text(k)}`] : [])).join(" ")}`;
  if (previous && current)
    return `once resolvers moved to the new key, publish it alone: mimi root dp put ... --private-lookup-key ${text(current)}`;
  return undefined;
}
