// The local network's demo data (demo.json): DPs, delegations and MSPs at the root, then each
// demo MSP enrolled at the DPs and its demo mappings bulk-registered, signed with its key.
// Loading twice changes nothing: what exists is kept, and the bulk session resumes at its end.
import { readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { bulkRegister } from "@mimi/client";
import {
  bulkRecord,
  covers,
  DiscoveryError,
  keyFromProto,
  keyToProto,
  parseCsi,
  parseDelegationKeyText,
  pb,
  type SigningKey,
} from "@mimi/core";
import type { Channel } from "@mimi/rpc";
import type { ServerProcess } from "./server-process.js";

const DEMO_FILE = join(resolve(dirname(fileURLToPath(import.meta.url)), ".."), "demo.json");

/** The demo data file's shape. */
export interface Demo {
  /** `thirdParty`: a DP that holds mappings for others' ranges (federation), run when asked for. */
  dps: { id: string; tlsIdentity: string; jurisdiction: string; thirdParty?: boolean }[];
  /** `federated`: the range's federated DPs (those of them that run). */
  delegations: { key: string; dp: string; federated?: string[] }[];
  msps: { id: string; name: string; tlsIdentity: string }[];
  /** `dp`: the DP that holds the mapping; by default the DP its range is delegated to. */
  mappings: { csi: string; msp: string; ssi: string; default?: boolean; tags?: string[]; dp?: string }[];
}

/** Loads demo.json. */
export function loadDemo(): Demo {
  return JSON.parse(readFileSync(DEMO_FILE, "utf8")) as Demo;
}

/** Registers the demo DPs (at their current ports), delegations and MSPs; keeps what already exists. */
export async function loadRegistry(
  ch: Channel,
  dps: Readonly<Record<string, ServerProcess | undefined>>,
  signingKey: (name: string) => SigningKey,
  /** A DP's private-lookup key to publish (read from its data folder), when it has one. */
  privateKey: (dpId: string) => { epoch: number; publicKey: Uint8Array } | undefined = () => undefined,
): Promise<void> {
  const demo = loadDemo();
  const admin = ch.client(pb.RegistryAdminService);
  const snap = (await ch.client(pb.RootService).getSnapshot({})).snapshot;
  for (const d of demo.dps) {
    const running = dps[d.id];
    if (!running) continue;
    const endpoint = running.address;
    const key = signingKey(d.tlsIdentity).publicKey;
    const have = snap?.dps.find((x) => x.id === d.id);
    const same = have?.endpoints.length === 1 && have.endpoints[0] === endpoint;
    const priv = privateKey(d.id);
    const published = (have?.privateLookupKeys ?? []).some(
      (k) => k.epoch === priv?.epoch && Buffer.from(k.publicKey).equals(priv.publicKey),
    );
    if (same && Buffer.from(have.signingPublicKey).equals(key) && (!priv || published)) continue;
    await admin.putDp({
      dp: {
        id: d.id,
        endpoints: [endpoint],
        tlsIdentity: d.tlsIdentity,
        jurisdiction: d.jurisdiction,
        signingPublicKey: key,
        ...(priv && { privateLookupKeys: [priv] }),
      },
    });
  }
  for (const m of demo.msps) {
    const key = signingKey(m.tlsIdentity).publicKey;
    const have = snap?.msps.find((x) => x.id === m.id);
    if (!have || !Buffer.from(have.signingPublicKey).equals(key)) {
      await admin.putMsp({ id: m.id, name: m.name, signingPublicKey: key });
    }
  }
  // Demo delegations are created on a first start only; an admin may have changed them since.
  if ((snap?.delegations.length ?? 0) > 0) return;
  for (const d of demo.delegations) {
    try {
      await admin.createDelegation({
        key: keyToProto(parseDelegationKeyText(d.key)),
        dpId: d.dp,
        federatedDpIds: (d.federated ?? []).filter((id) => dps[id] !== undefined),
      });
    } catch (err) {
      // A re-run keeps delegations an admin may have changed since.
      if (!(err instanceof DiscoveryError && err.code === "already_exists")) throw err;
    }
  }
}

/**
 * Enrols the demo MSPs at a DP (trusted for bulk) and has each register its demo mappings
 * delegated to that DP in bulk, signed with its key. The "demo" session makes this a no-op
 * on later starts.
 */
export async function loadMappings(
  ch: Channel,
  minSerial: bigint,
  channelAs: (identity: string) => Channel,
  signingKey: (name: string) => SigningKey,
): Promise<void> {
  const demo = loadDemo();
  const admin = ch.client(pb.AuthoritativeAdminService);
  let status = await admin.getStatus({});
  for (let i = 0; status.registrySerial < minSerial; i++) {
    if (i > 200) throw new Error(`DP ${status.dpId} did not sync the registry to serial ${minSerial}`);
    await new Promise((r) => setTimeout(r, 50));
    status = await admin.getStatus({});
  }
  const now = Date.now();
  for (const m of demo.msps) {
    const key = signingKey(m.tlsIdentity);
    await admin.enrolMsp({
      mspId: m.id,
      tlsIdentity: m.tlsIdentity,
      enrolledUsers: 1000n,
      signingPublicKey: key.publicKey,
      mayBulk: true,
    });
    // This DP's: those it is named for, and those of the ranges delegated to it that name no DP.
    const mine = demo.mappings.filter(
      (x) =>
        x.msp === m.id &&
        (x.dp !== undefined
          ? x.dp === status.dpId
          : status.delegations.some(
              (d) => d.dpId === status.dpId && covers(keyFromProto(d.key), parseCsi(x.csi).key),
            )),
    );
    const records = mine.map((x) =>
      bulkRecord(
        {
          csi: parseCsi(x.csi).uri,
          mspId: x.msp,
          ssi: x.ssi,
          defaultRequested: x.default === true,
          tags: x.tags ?? [],
          createdAtMs: now,
          dpId: status.dpId,
          expiresAtMs: now + 300 * 86_400_000,
        },
        key,
      ),
    );
    await bulkRegister(channelAs(m.tlsIdentity).client(pb.ClaimService), {
      sessionId: "demo",
      total: records.length,
      recordsFrom: (first, count) => records.slice(first, first + count),
    });
  }
}

/** A CSI no demo data or test uses, for readiness probes that must not warm the cache. */
const PROBE_CSI = "tel:+19995550100";

/**
 * Waits until the resolver has its registry copy and answers (it says UNAVAILABLE until then,
 * and, with its event-loop guard on, RESOURCE_EXHAUSTED RESOLVER_OVERLOADED while its start-up
 * work keeps the loop late: asked again after the retry-after it gives).
 */
export async function waitUntilResolving(ch: Channel): Promise<void> {
  const resolver = ch.client(pb.ResolverService);
  for (let attempt = 0; ; attempt++) {
    try {
      await resolver.resolve({ csi: PROBE_CSI }, { timeoutMs: 2_000 });
      return;
    } catch (err) {
      const e = err instanceof DiscoveryError ? err : undefined;
      const overloaded = e?.code === "resource_exhausted" && e.details?.reason === "RESOLVER_OVERLOADED";
      if (!(e?.code === "upstream_unavailable" || overloaded) || attempt >= 200) throw err;
      await new Promise((r) =>
        setTimeout(r, Math.min(1_000, Math.max(50, Number(e?.details?.retryAfterMs ?? 0)))),
      );
    }
  }
}
