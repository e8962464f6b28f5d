// Authoritative logic, protocol-free: answers only for CSIs delegated to this DP,
// validates imports, and keeps MSP enrolments. It never recurses (no upstream calls).
import {
  type Clock,
  type Delegation,
  DiscoveryError,
  invalidArgument,
  type LookupOutcome,
  type Mapping,
  orderMappings,
  parseCsi,
  type RegistryView,
} from "@mimi/core";
import type { EnrolledMsp, MappingStore, StoredMapping } from "./store.js";

/** A mapping to import, as received. */
export interface ImportItem {
  readonly csi: string;
  readonly mapping: Omit<Mapping, "createdAtMs"> & { createdAtMs?: number };
}

/** Bounds on preference tags (R7): a short list of short words. */
export const MAX_TAGS = 8;
export const MAX_TAG_LENGTH = 32;
const MAX_SSI_LENGTH = 256;
/** Created times may lie at most this far ahead of the DP's clock. */
const MAX_CLOCK_SKEW_MS = 86_400_000;

/** The authoritative's operations. */
export interface AuthoritativeService {
  lookup(csi: string): LookupOutcome;
  enrolMsp(mspId: string, tlsIdentity: string, enrolledUsers: number): EnrolledMsp;
  listEnrolled(): EnrolledMsp[];
  importMappings(items: readonly ImportItem[]): { imported: number; unchanged: number };
  status(): {
    dpId: string;
    serial: bigint;
    delegations: Delegation[];
    mappingCount: number;
    lookupsServed: number;
  };
  /** Registry index of an MSP, for compact answers. */
  mspIndex(mspId: string): number | undefined;
}

/** Options of the authoritative service. */
export interface AuthoritativeServiceOptions {
  dpId: string;
  store: MappingStore;
  /** The DP's copy of the root registry (kept current by registry sync). */
  registry: RegistryView;
  /** False until the registry copy is usable; lookups answer UNAVAILABLE meanwhile. */
  registryReady: () => boolean;
  clock: Clock;
  answerTtlSeconds: number;
  negativeTtlSeconds: number;
}

/** Creates the authoritative service. */
export function createAuthoritativeService(o: AuthoritativeServiceOptions): AuthoritativeService {
  // Refuses CSIs outside the ranges the root delegated to this DP, like a DNS server
  // answering REFUSED for zones it does not serve.
  const requireDelegated = (csiText: string) => {
    const csi = parseCsi(csiText);
    if (!o.registryReady()) {
      throw new DiscoveryError("not_ready", "this DP has not yet received its delegations from the root");
    }
    const d = o.registry.find(csi.key);
    if (!d || d.dpId !== o.dpId) {
      throw new DiscoveryError(
        "not_authoritative",
        d
          ? `${csi.type} identifier is in ${d.id}, delegated to DP "${d.dpId}", not to this DP ("${o.dpId}")`
          : `no delegation covers this ${csi.type} identifier, so this DP ("${o.dpId}") does not serve it`,
      );
    }
    return csi;
  };

  let lookupsServed = 0;
  return {
    lookup(csiText) {
      lookupsServed++;
      const csi = requireDelegated(csiText);
      const mappings = o.store.lookup(csi.uri);
      if (mappings.length === 0) return { kind: "not_found", dpId: o.dpId, ttlSeconds: o.negativeTtlSeconds };
      return {
        kind: "answer",
        mappings: orderMappings(mappings),
        dpId: o.dpId,
        ttlSeconds: o.answerTtlSeconds,
      };
    },
    enrolMsp(mspId, tlsIdentity, enrolledUsers) {
      if (!o.registry.msp(mspId)) {
        throw new DiscoveryError("failed_precondition", `MSP "${mspId}" is not in the root's MSP registry`);
      }
      if (!tlsIdentity) throw invalidArgument("tls_identity is required");
      const existing = o.store.enrolled(mspId);
      const msp: EnrolledMsp = {
        mspId,
        tlsIdentity,
        enrolledUsers,
        enrolledAtMs: existing?.enrolledAtMs ?? o.clock(),
      };
      o.store.enrol(msp);
      return msp;
    },
    listEnrolled: () => o.store.listEnrolled(),
    importMappings(items) {
      const now = o.clock();
      const records: StoredMapping[] = items.map((item, i) => {
        try {
          const csi = requireDelegated(item.csi);
          const m = item.mapping;
          if (!o.store.enrolled(m.mspId)) {
            throw new DiscoveryError("failed_precondition", `MSP "${m.mspId}" is not enrolled at this DP`);
          }
          if (m.ssi.trim() === "" || m.ssi.length > MAX_SSI_LENGTH) {
            throw invalidArgument(`ssi must be 1 to ${MAX_SSI_LENGTH} characters, not all blank`);
          }
          // Control characters would reach terminals and logs of whoever reads the answer.
          if (/\p{Cc}/u.test(m.ssi)) throw invalidArgument("ssi must not hold control characters");
          const created = m.createdAtMs ?? 0;
          if (!Number.isSafeInteger(created) || created < 0 || created > now + MAX_CLOCK_SKEW_MS) {
            throw invalidArgument(
              "created_at_ms must be 0 (now) or a time in ms since 1970 not in the future",
            );
          }
          return {
            csi: csi.uri,
            mapping: { ...m, tags: checkTags(m.tags), createdAtMs: created === 0 ? now : created },
          };
        } catch (err) {
          if (err instanceof DiscoveryError) {
            throw new DiscoveryError(err.code, `mapping ${i} of the batch: ${err.message}`);
          }
          throw err;
        }
      });
      return o.store.upsert(records);
    },
    status: () => ({
      dpId: o.dpId,
      serial: o.registry.serial,
      delegations: o.registry.delegationsOf(o.dpId),
      mappingCount: o.store.count(),
      lookupsServed,
    }),
    mspIndex: (id) => o.registry.msp(id)?.index,
  };
}

/** Validates preference tags: "Default" is a flag, never a tag (R7); tags are few, short and distinct. */
export function checkTags(tags: readonly string[]): string[] {
  if (tags.length > MAX_TAGS) throw invalidArgument(`at most ${MAX_TAGS} tags`);
  const seen = new Set<string>();
  for (const t of tags) {
    if (t.toLowerCase() === "default")
      throw invalidArgument('"Default" is set with is_default, never as a tag');
    if (!/^[\p{L}\p{N}][\p{L}\p{N} _-]*$/u.test(t) || t.length > MAX_TAG_LENGTH) {
      throw invalidArgument(
        `tag "${t.slice(0, 40)}" must be 1 to ${MAX_TAG_LENGTH} letters, digits, spaces or dashes`,
      );
    }
    if (seen.has(t.toLowerCase())) throw invalidArgument(`tag "${t}" appears twice`);
    seen.add(t.toLowerCase());
  }
  return [...tags];
}
