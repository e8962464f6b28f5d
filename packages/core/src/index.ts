// The public surface of @mimi/core, by job. Servers, the CLI, the dev network, tests and the
// benchmark import from here; everything not listed is internal to core.

// The MSP side of claims and bulk registration.
export {
  type BulkProgress,
  bulkRecord,
  bulkRegister,
  type ClaimClient,
  type ClaimRequest,
  completeChallenge,
  type OpenChallenge,
  startAction,
  startClaim,
} from "./client/msp.js";
export {
  type AnswerFormat,
  bitsSet,
  checkParams,
  compactBits,
  DEFAULT_PARAMS,
  filterMappings,
  type LookupOutcome,
  type LookupParams,
  MAX_MSP_FILTER,
  type Mapping,
  type MappingSignatures,
  orderMappings,
} from "./domain/answer.js";
export { changeHash, changeHashHex, changeHashKey } from "./domain/change-hash.js";
export {
  type Csi,
  type CsiType,
  emailDomainHash,
  type LookupKey,
  MAX_CSI_LENGTH,
  parseCsi,
} from "./domain/csi.js";
// Domain: identifiers, the registry, answers, signed records and their verification.
export { DiscoveryError, type DiscoveryErrorCode, invalidArgument } from "./domain/errors.js";
export {
  type ActionStatement,
  decodeActionStatement,
  decodeMappingRecord,
  dpSignedParts,
  encodeActionStatement,
  encodeMappingRecord,
  MAX_SSI_LENGTH,
  MAX_TAG_LENGTH,
  MAX_TAGS,
  type MappingRecord,
  PROOF_METHODS,
  type ProofMethod,
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
  RegistryView,
  validateDelegationKey,
} from "./domain/registry.js";
export {
  checkPublicKey,
  generateSigningKey,
  loadPublicKey,
  loadSigningKey,
  PUBLIC_KEY_BYTES,
  publicKeyPem,
  rawPublicKey,
  SIGNATURE_BYTES,
  SIGNING_CONTEXT,
  type SigningContext,
  type SigningKey,
  signingKeyPem,
  signWith,
  verifyWith,
} from "./domain/signing.js";
export {
  type KeyDirectory,
  mappingProblem,
  registryDigest,
  registryKeys,
  registrySignatureValid,
  signRegistry,
  verifyOutcome,
} from "./domain/verify.js";
// Following and serving resumable logs (the registry, DP change logs).
export { type FollowLogOptions, followLog, type LogFollower } from "./follow/follow-log.js";
export { type RegistrySync, type RegistrySyncOptions, startRegistrySync } from "./follow/registry-sync.js";
export { type ServeLogOptions, serveLog } from "./follow/serve-log.js";
// The generated wire types, one namespace so they never mix with domain types.
export * as pb from "./gen/index.js";
export { AsyncQueue } from "./runtime/async-queue.js";
// Runtime: time, wake-ups, queues, configuration and logging.
export { type Clock, fileOffsetClock, sleepUnlessAborted, systemClock } from "./runtime/clock.js";
export { ConfigError, ConfigReader, deepFreeze, readConfigFile } from "./runtime/config.js";
export { Latch } from "./runtime/latch.js";
export { createLogger, csiHash, LOG_LEVELS, type Logger, logListening } from "./runtime/logger.js";
export { type ChannelPool, createChannelPool } from "./wire/channel-pool.js";
export {
  answerToProto,
  changeFromProto,
  changeToProto,
  delegationFromProto,
  delegationToProto,
  dpFromProto,
  dpToProto,
  keyFromProto,
  keyToProto,
  mappingFromProto,
  mappingToProto,
  mspFromProto,
  mspToProto,
  paramsFromProto,
  snapshotFromProto,
  snapshotToProto,
} from "./wire/convert.js";
export {
  type Encoded,
  encodeAnswerWithoutTtl,
  encodeResolveResponse,
  encodeResolveStreamItem,
} from "./wire/encoded.js";
export {
  type AddServiceOptions,
  addService,
  type CallContext,
  type CallOptions,
  CHANNEL_OPTIONS,
  type Channel,
  type ClientMethod,
  type MethodHandler,
  openChannel,
  type PeerIdentity,
  type Reply,
  type ServiceClient,
  type ServiceHandlers,
} from "./wire/grpc.js";
export { addHealthService, type HealthReporter } from "./wire/health.js";
export {
  createGrpcServer,
  listen,
  type ProcessHost,
  type RunningServer,
  readServerBasics,
  runServer,
  SERVER_USAGE,
  type ServerBasics,
  type ServerContext,
  type ServerSpec,
  shutdown,
} from "./wire/server.js";
// Wire: gRPC services and clients, protobuf conversion, TLS, health and the server lifecycle.
export {
  fromServiceError,
  fromStatus,
  statusName,
  statusOf,
  toWireStatus,
  type WireStatus,
} from "./wire/status.js";
export {
  channelCredentials,
  loadTls,
  readTlsSection,
  serverCredentials,
  silenceIpServernameWarning,
  type TlsMaterial,
  type TlsPaths,
  type WarningEmitter,
} from "./wire/tls.js";
