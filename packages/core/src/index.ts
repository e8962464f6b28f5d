// The public surface of @mimi/core, by job. Servers, the CLI, the dev network, tests and the
// benchmark import from here; everything not listed is internal to core.

// The MSP side of claims and bulk registration.
export {
  type BulkProgress,
  bulkRecord,
  bulkRegister,
  type ClaimClient,
  type ClaimParty,
  type ClaimRequest,
  completeChallenge,
  contestConflict,
  type OpenChallenge,
  type StatementCheckOptions,
  startAction,
  startClaim,
} from "./client/msp.js";
export {
  type AnswerFormat,
  type AnswerSeal,
  bitsSet,
  DEFAULT_PARAMS,
  filterMappings,
  type LookupOutcome,
  type LookupParams,
  type Mapping,
  type MappingSignatures,
  type OptOutProof,
  type OutcomeKind,
} from "./domain/answer.js";
export {
  decodeSealStatement,
  encodeSealStatement,
  MAX_ANSWER_SEAL_MS,
  MAX_ANSWER_SEAL_SECONDS,
  type Sealable,
  type SealedEntry,
  type SealStatement,
  sealAnswer,
  sealDigest,
} from "./domain/answer-seal.js";
export { CHANGE_HASH_KEY_BYTES, changeHash, changeHashHex, changeHashKey } from "./domain/change-hash.js";
export { type Csi, type CsiType, type LookupKey, parseCsi } from "./domain/csi.js";
// Domain: identifiers, the registry, answers, signed records and their verification.
export {
  DiscoveryError,
  type DiscoveryErrorCode,
  type ErrorDetails,
  invalidArgument,
} from "./domain/errors.js";
export {
  type ActionStatement,
  type ContestStatement,
  decodeActionStatement,
  decodeMappingRecord,
  dpSignedParts,
  encodeActionStatement,
  encodeContestStatement,
  encodeMappingRecord,
  MAX_MAPPING_LIFETIME_DAYS,
  MAX_MAPPING_LIFETIME_MS,
  MAX_SSI_LENGTH,
  type MappingRecord,
  PROOF_METHODS,
  type ProofMethod,
  proofMethodFor,
  RECORD_CLOCK_SKEW_MS,
  ssiProblem,
  tagsProblem,
} from "./domain/record.js";
export {
  covers,
  type Delegation,
  type DelegationKey,
  type DpInfo,
  delegationId,
  hex64,
  type MspInfo,
  parseDelegationKeyText,
  type RegistryChange,
  type RegistryData,
  type RegistrySeal,
  RegistryView,
} from "./domain/registry.js";
export {
  REGISTRY_CLOCK_SKEW_MS,
  registrySignatureValid,
  type SealPeriod,
  sealProblem,
  signRegistry,
} from "./domain/registry-seal.js";
export {
  checkPublicKey,
  generateSigningKey,
  loadPublicKey,
  loadSigningKey,
  PUBLIC_KEY_BYTES,
  publicKeyPem,
  SIGNING_CONTEXT,
  type SigningContext,
  type SigningKey,
  signingKeyPem,
  signWith,
  verifications,
  verifyWith,
} from "./domain/signing.js";
export {
  type AnsweredCsi,
  answerProblem,
  type KeyDirectory,
  mappingProblem,
  type ReceivedAnswer,
  registryKeys,
  registryTrust,
  type TrustAnchors,
  type VerifiedAnswer,
  verifyOutcome,
} from "./domain/verify.js";
// Following and serving resumable logs (the registry, DP change logs).
export { type FollowLogOptions, followLog, type LogFollower } from "./follow/follow-log.js";
export {
  type RegistrySync,
  type RegistrySyncOptions,
  savedRegistryCopy,
  startRegistrySync,
} from "./follow/registry-sync.js";
export { type ServeLogOptions, serveLog } from "./follow/serve-log.js";
// The generated wire types, one namespace so they never mix with domain types.
export * as pb from "./gen/index.js";
export { AsyncQueue } from "./runtime/async-queue.js";
export { setNewest } from "./runtime/bounded-map.js";
// Runtime: time, wake-ups, queues, configuration and logging.
export { type Clock, sleepUnlessAborted, systemClock } from "./runtime/clock.js";
export { ConfigError, ConfigReader, deepFreeze } from "./runtime/config.js";
export {
  createEnumerationDetector,
  csiBlockOf,
  DEFAULT_ENUMERATION_POLICY,
  type Detection,
  type EnumerationDetector,
  type EnumerationMode,
  type EnumerationPolicy,
  readEnumerationPolicy,
} from "./runtime/enumeration.js";
export { createLogger, csiHash, type Logger, setLogLevel } from "./runtime/logger.js";
export {
  checkDataDir,
  checkPrivate,
  createPrivateFile,
  ensurePrivateDir,
  type PrivateKind,
  type PrivateOptions,
  privateProblem,
  readOrCreateSecret,
  restrictFile,
  sqliteFilesOf,
} from "./runtime/private-files.js";
export {
  createRateLimiter,
  type KeyedRateLimiter,
  type RateLimit,
  type RateRefusal,
} from "./runtime/rate-limit.js";
export {
  SCHEMA_OBJECTS_SQL,
  type SchemaObject,
  type SchemaSource,
  schemaDrift,
  schemaDriftBetween,
} from "./runtime/store-schema.js";
export {
  type CallOptions,
  type Channel,
  type ClientMethod,
  openChannel,
  type ServiceClient,
} from "./wire/channel.js";
export { type ChannelPool, createChannelPool } from "./wire/channel-pool.js";
export {
  answerToProto,
  changeToProto,
  delegationToProto,
  detectionToProto,
  dpFromProto,
  dpToProto,
  keyFromProto,
  keyToProto,
  kindOfStatus,
  mappingFromProto,
  mappingToProto,
  mspToProto,
  paramsFromProto,
  receivedAnswerFromProto,
  sealPartsFromProto,
  snapshotFromProto,
  snapshotToProto,
} from "./wire/convert.js";
export {
  type Encoded,
  encodeAnswerWithoutTtl,
  encodeLookupResponse,
  encodeLookupStreamItem,
  encodeResolveResponse,
  encodeResolveStreamItem,
  readSimpleRequest,
  type SimpleRequest,
} from "./wire/encoded.js";
export { decodeStatusDetails, encodeStatusDetails, STATUS_DETAILS_KEY } from "./wire/error-details.js";
export type { FastPath } from "./wire/fast-path.js";
export {
  type AddServiceOptions,
  addService,
  type CallContext,
  type MethodHandler,
  type PeerIdentity,
  type Reply,
  type ServiceHandlers,
} from "./wire/grpc.js";
export { addHealthService, type HealthReporter } from "./wire/health.js";
export {
  counterFrom,
  countersFrom,
  createServerMetrics,
  gaugeFrom,
  MIMI_VERSION,
  outcomesBy,
  registryGauges,
  type ServerMetrics,
} from "./wire/metrics.js";
export { type OpsConfig, type OpsListener, readOpsSection, startOps } from "./wire/ops.js";
export { applyReload, planReload, type ReloadPlan, reloadAdmins } from "./wire/reload.js";
export { describeRoles, ROLE_URI_PREFIX, ROLES, type Role, rolesOf, roleUri } from "./wire/roles.js";
export {
  createGrpcServer,
  DEVELOPMENT_CA_SUBJECT,
  holdsDevelopmentCa,
  listen,
  type ProcessHost,
  type RunningServer,
  readServerBasics,
  runServer,
  type ServerBasics,
  type ServerContext,
  type ServerSpec,
  shutdown,
} from "./wire/server.js";
export {
  type ConnectionLimits,
  createWatchSlots,
  DEFAULT_CONNECTION_LIMITS,
  MAX_METHOD_REQUEST_BYTES,
  type WatchSlots,
} from "./wire/server-limits.js";
// Wire: gRPC services and clients, protobuf conversion, TLS, health and the server lifecycle.
export {
  fromStatus,
  itemError,
  itemErrorDetails,
  statusName,
  toWireStatus,
  type WireStatus,
} from "./wire/status.js";
export {
  channelCredentials,
  type LiveTls,
  loadTls,
  type ServerExpectation,
  serverCredentials,
  silenceIpServernameWarning,
  type TlsMaterial,
  type TlsPaths,
  type TlsSource,
  type WarningEmitter,
} from "./wire/tls.js";
export { type CertificateSummary, checkTlsMaterial, TlsFiles, type TlsReload } from "./wire/tls-files.js";
