// Conversions between generated protobuf messages and domain types. Generated types
// stop here: stores, caches and services work on the domain types only.
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import {
  type AnswerSeal,
  checkParams,
  compactBits,
  filterMappings,
  type LookupOutcome,
  type LookupParams,
  type Mapping,
  type OptOutProof,
  type OutcomeKind,
} from "../domain/answer.js";
import { invalidArgument } from "../domain/errors.js";
import {
  type Delegation,
  type DelegationKey,
  type DpInfo,
  type FederationPolicy,
  type MspInfo,
  type RegistryChange,
  type RegistryData,
  type RegistrySeal,
  validateDelegationKey,
} from "../domain/registry.js";
import type { ReceivedAnswer } from "../domain/verify.js";
import {
  type Answer,
  type AnswerSchema,
  DelegationKeySchema,
  type DpRecord,
  FederationMode,
  FederationPolicySchema,
  type LookupOptions,
  LookupStatus,
  type MappingSchema,
  type MspRecord,
  type RegistryChange as PbChange,
  type Delegation as PbDelegation,
  type FederationPolicy as PbFederationPolicy,
  AnswerFormat as PbFormat,
  type DelegationKey as PbKey,
  type Mapping as PbMapping,
  type RegistrySnapshot,
} from "../gen/generated/mimi/discovery/v1/common_pb.js";
import type { Detection } from "../runtime/enumeration.js";

/** Domain key from proto; throws INVALID_ARGUMENT when unset or out of bounds. */
export function keyFromProto(k: PbKey | undefined): DelegationKey {
  switch (k?.key.case) {
    case "e164Prefix":
      return validateDelegationKey({ kind: "e164", prefix: k.key.value });
    case "emailHashRange":
      return validateDelegationKey({ kind: "email", first: k.key.value.first, last: k.key.value.last });
    default:
      throw invalidArgument("delegation key is missing: set e164_prefix or email_hash_range");
  }
}

export function keyToProto(k: DelegationKey): MessageInitShape<typeof DelegationKeySchema> {
  return k.kind === "e164"
    ? { key: { case: "e164Prefix", value: k.prefix } }
    : { key: { case: "emailHashRange", value: { first: k.first, last: k.last } } };
}

export function delegationToProto(d: Delegation) {
  return {
    id: d.id,
    key: create(DelegationKeySchema, keyToProto(d.key)),
    dpId: d.dpId,
    ttlSeconds: d.ttlSeconds,
    federatedDpIds: [...(d.federatedDpIds ?? [])],
  };
}

function delegationFromProto(d: PbDelegation): Delegation {
  return {
    id: d.id,
    key: keyFromProto(d.key),
    dpId: d.dpId,
    ttlSeconds: d.ttlSeconds,
    ...(d.federatedDpIds.length > 0 && { federatedDpIds: Object.freeze([...d.federatedDpIds]) }),
  };
}

const MODE_TO_PROTO = { local: FederationMode.LOCAL, federate: FederationMode.FEDERATE } as const;

/** A policy as the wire carries it (absent for the default, LOCAL with no preference). */
export function policyToProto(p: FederationPolicy | undefined) {
  if (!p || (p.defaultMode === "local" && p.preferredDpIds.length === 0)) return undefined;
  return create(FederationPolicySchema, {
    defaultMode: MODE_TO_PROTO[p.defaultMode],
    preferredDpIds: [...p.preferredDpIds],
  });
}

/** A policy from the wire; undefined for the default one. */
export function policyFromProto(p: PbFederationPolicy | undefined): FederationPolicy | undefined {
  if (!p) return undefined;
  const mode = p.defaultMode === FederationMode.FEDERATE ? "federate" : "local";
  if (mode === "local" && p.preferredDpIds.length === 0) return undefined;
  return Object.freeze({ defaultMode: mode, preferredDpIds: Object.freeze([...p.preferredDpIds]) });
}

export function dpToProto(d: DpInfo) {
  return {
    id: d.id,
    endpoints: [...d.endpoints],
    tlsIdentity: d.tlsIdentity,
    jurisdiction: d.jurisdiction,
    signingPublicKey: d.signingPublicKey,
    federation: policyToProto(d.federation),
    privateLookupKeys: (d.privateLookupKeys ?? []).map((k) => ({ epoch: k.epoch, publicKey: k.publicKey })),
    endpointJurisdictions: (d.endpointJurisdictions ?? []).map((e) => ({
      endpoint: e.endpoint,
      jurisdiction: e.jurisdiction,
    })),
  };
}

export function dpFromProto(d: DpRecord): DpInfo {
  const federation = policyFromProto(d.federation);
  return {
    id: d.id,
    endpoints: [...d.endpoints],
    tlsIdentity: d.tlsIdentity,
    jurisdiction: d.jurisdiction,
    signingPublicKey: d.signingPublicKey,
    ...(federation && { federation }),
    ...(d.privateLookupKeys.length > 0 && {
      privateLookupKeys: d.privateLookupKeys.map((k) => ({ epoch: k.epoch, publicKey: k.publicKey })),
    }),
    ...(d.endpointJurisdictions.length > 0 && {
      endpointJurisdictions: d.endpointJurisdictions.map((e) => ({
        endpoint: e.endpoint,
        jurisdiction: e.jurisdiction,
      })),
    }),
  };
}

export function mspToProto(m: MspInfo) {
  return { id: m.id, name: m.name, index: m.index, signingPublicKey: m.signingPublicKey };
}

function mspFromProto(m: MspRecord): MspInfo {
  return { id: m.id, name: m.name, index: m.index, signingPublicKey: m.signingPublicKey };
}

export function snapshotToProto(s: RegistryData) {
  return {
    serial: s.serial,
    delegations: s.delegations.map(delegationToProto),
    dps: s.dps.map(dpToProto),
    msps: s.msps.map(mspToProto),
    ...sealToProto(s.seal),
  };
}

function sealToProto(seal: RegistrySeal | undefined) {
  return {
    signature: seal?.signature ?? new Uint8Array(0),
    signedAtMs: BigInt(seal?.signedAtMs ?? 0),
    expiresAtMs: BigInt(seal?.expiresAtMs ?? 0),
  };
}

/** The seal of a snapshot or change; absent when it carries no signature. Times beyond 2^53 ms read as invalid (0). */
function sealFromProto(m: {
  signature: Uint8Array;
  signedAtMs: bigint;
  expiresAtMs: bigint;
}): RegistrySeal | undefined {
  if (m.signature.length === 0) return undefined;
  const ms = (v: bigint) => (v >= 0n && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : 0);
  return { signature: m.signature, signedAtMs: ms(m.signedAtMs), expiresAtMs: ms(m.expiresAtMs) };
}

export function snapshotFromProto(s: RegistrySnapshot): RegistryData {
  return {
    serial: s.serial,
    delegations: s.delegations.map(delegationFromProto),
    dps: s.dps.map(dpFromProto),
    msps: s.msps.map(mspFromProto),
    ...optionalSeal(s),
  };
}

function optionalSeal(m: { signature: Uint8Array; signedAtMs: bigint; expiresAtMs: bigint }) {
  const seal = sealFromProto(m);
  return seal ? { seal } : {};
}

export function changeToProto(c: RegistryChange) {
  return { ...changeBodyToProto(c), ...sealToProto(c.seal) };
}

function changeBodyToProto(c: RegistryChange) {
  const serial = c.serial;
  switch (c.kind) {
    case "put_delegation":
      return { serial, change: { case: "putDelegation" as const, value: delegationToProto(c.delegation) } };
    case "delete_delegation":
      return { serial, change: { case: "deleteDelegationId" as const, value: c.id } };
    case "put_dp":
      return { serial, change: { case: "putDp" as const, value: dpToProto(c.dp) } };
    case "delete_dp":
      return { serial, change: { case: "deleteDpId" as const, value: c.id } };
    case "put_msp":
      return { serial, change: { case: "putMsp" as const, value: mspToProto(c.msp) } };
    case "delete_msp":
      return { serial, change: { case: "deleteMspId" as const, value: c.id } };
    case "refresh":
      return { serial, change: { case: "refresh" as const, value: {} } };
  }
}

export function changeFromProto(c: PbChange): RegistryChange {
  const serial = c.serial;
  return { ...changeBodyFromProto(c, serial), ...optionalSeal(c) };
}

function changeBodyFromProto(c: PbChange, serial: bigint): RegistryChange {
  switch (c.change.case) {
    case "putDelegation":
      return { serial, kind: "put_delegation", delegation: delegationFromProto(c.change.value) };
    case "deleteDelegationId":
      return { serial, kind: "delete_delegation", id: c.change.value };
    case "putDp":
      return { serial, kind: "put_dp", dp: dpFromProto(c.change.value) };
    case "deleteDpId":
      return { serial, kind: "delete_dp", id: c.change.value };
    case "putMsp":
      return { serial, kind: "put_msp", msp: mspFromProto(c.change.value) };
    case "deleteMspId":
      return { serial, kind: "delete_msp", id: c.change.value };
    case "refresh":
      return { serial, kind: "refresh" };
    default:
      throw invalidArgument("registry change has no content");
  }
}

export function mappingToProto(m: Mapping): MessageInitShape<typeof MappingSchema> {
  return {
    mspId: m.mspId,
    ssi: m.ssi,
    isDefault: m.isDefault,
    tags: [...m.tags],
    createdAtMs: BigInt(m.createdAtMs),
    proofMethod: m.proofMethod,
    expiresAtMs: BigInt(m.expiresAtMs),
    signed: m.signed,
  };
}

// Out-of-range times become NaN, which validation refuses, instead of a silently rounded value.
function safeTime(t: bigint): number {
  return t >= BigInt(Number.MIN_SAFE_INTEGER) && t <= BigInt(Number.MAX_SAFE_INTEGER)
    ? Number(t)
    : Number.NaN;
}

export function mappingFromProto(m: PbMapping): Mapping {
  const s = m.signed;
  return {
    mspId: m.mspId,
    ssi: m.ssi,
    isDefault: m.isDefault,
    tags: [...m.tags],
    createdAtMs: safeTime(m.createdAtMs),
    proofMethod: m.proofMethod,
    expiresAtMs: safeTime(m.expiresAtMs),
    ...(s && {
      signed: {
        record: s.record,
        userSignature: s.userSignature,
        mspSignature: s.mspSignature,
        dpSignature: s.dpSignature,
      },
    }),
  };
}

/** Query parameters from a request; throws INVALID_ARGUMENT on bad values. */
export function paramsFromProto(o: LookupOptions | undefined): LookupParams {
  const format = o?.format === PbFormat.COMPACT ? "compact" : "verbose";
  if (
    o &&
    o.format !== PbFormat.UNSPECIFIED &&
    o.format !== PbFormat.VERBOSE &&
    o.format !== PbFormat.COMPACT
  ) {
    throw invalidArgument(`unknown answer format ${o.format}`, "options.format");
  }
  return checkParams(format, o?.mspFilter ?? [], o?.tag ?? "");
}

/**
 * Builds the wire answer for an outcome under the query parameters. `ttlSeconds` is what the
 * receiver may cache it for (a resolver passes the remaining TTL of its cached copy).
 */
export function answerToProto(
  outcome: LookupOutcome,
  params: LookupParams,
  indexOf: (mspId: string) => number | undefined,
  ttlSeconds: number,
): MessageInitShape<typeof AnswerSchema> {
  const mappings = outcome.kind === "answer" ? filterMappings(outcome.mappings, params) : [];
  // An empty dpId means no DP is delegated the range: the resolver answered from the registry alone.
  const dpIds = outcome.dpId ? [outcome.dpId] : [];
  // The seal covers the whole answer and goes with every shape of it (AnswerSeal in common.proto).
  const seal = outcome.seal && { seal: { ...outcome.seal } };
  const privately = outcome.private === true && { privateLookup: true };
  if (outcome.kind === "opted_out") {
    return {
      status: LookupStatus.OPTED_OUT,
      ttlSeconds,
      dpIds,
      ...seal,
      ...(outcome.optOut && { optOut: { ...outcome.optOut } }),
      ...privately,
    };
  }
  if (mappings.length === 0)
    return { status: LookupStatus.NOT_FOUND, ttlSeconds, dpIds, ...seal, ...privately };
  return {
    status: LookupStatus.FOUND,
    mappings: params.format === "verbose" ? mappings.map(mappingToProto) : [],
    compactMspBits: compactBits(mappings, indexOf),
    ttlSeconds,
    dpIds,
    ...seal,
    ...privately,
  };
}

const KIND_OF_STATUS = new Map<LookupStatus, OutcomeKind>([
  [LookupStatus.FOUND, "answer"],
  [LookupStatus.NOT_FOUND, "not_found"],
  [LookupStatus.OPTED_OUT, "opted_out"],
]);

/** The kind of a wire status; undefined for an unset or unknown one. */
export function kindOfStatus(s: LookupStatus): OutcomeKind | undefined {
  return KIND_OF_STATUS.get(s);
}

function sealFromWire(s: NonNullable<Answer["seal"]>): AnswerSeal {
  const { statement, signature, batch: b } = s;
  return b
    ? { statement, signature, batch: { salt: b.salt, index: b.index, size: b.size, path: b.path } }
    : { statement, signature };
}

/** The seal and opt-out proof of a wire answer, as domain values (absent when not sent). */
export function sealPartsFromProto(a: Answer): { seal?: AnswerSeal; optOut?: OptOutProof } {
  return {
    ...(a.seal && { seal: sealFromWire(a.seal) }),
    ...(a.optOut && {
      optOut: {
        statement: a.optOut.statement,
        userSignature: a.optOut.userSignature,
        mspSignature: a.optOut.mspSignature,
      },
    }),
  };
}

/** A wire answer as a client verifies it (answerProblem); throws INVALID_ARGUMENT for an unknown status. */
export function receivedAnswerFromProto(a: Answer): ReceivedAnswer {
  const status = kindOfStatus(a.status);
  if (!status) throw invalidArgument(`the answer has an unknown status ${a.status}`);
  return {
    status,
    mappings: a.mappings.map(mappingFromProto),
    dpIds: [...a.dpIds],
    compactBits: a.compactMspBits,
    ...sealPartsFromProto(a),
    ...(a.privateLookup && { privateLookup: true }),
  };
}

/** An enumeration detection as GetStats (resolver) and GetStatus (DP) report it. */
export function detectionToProto(d: Detection) {
  return {
    subject: d.subject,
    scope: d.scope,
    distinct: BigInt(d.distinct),
    answers: BigInt(d.answers),
    notFound: BigInt(d.notFound),
    atMs: BigInt(d.atMs),
    blockedUntilMs: BigInt(d.blockedUntilMs),
  };
}
