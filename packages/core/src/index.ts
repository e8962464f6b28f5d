// The public surface of @mimi/core: the protocol's model, with no network and no process.
// domain/: identifiers, the registry, answers, signed records and their verification.
// codec/: proto <-> domain conversion, answers written by hand, google.rpc.Status details.
// follow/: following and serving resumable logs, whatever carries them.
// runtime/: time, wake-ups, queues, configuration, logging, private files.
// The generated wire types are the `pb` namespace (also `@mimi/core/pb`), so they never mix with
// domain types.

export { keepEncodedMappings } from "./codec/answer-encoding.js";
export {
  answerToProto,
  changeFromProto,
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
} from "./codec/convert.js";
export {
  type Encoded,
  type EncodedSnapshot,
  encodeAnswerWithoutTtl,
  encodeLookupResponse,
  encodeLookupStreamItem,
  encodeResolveResponse,
  encodeResolveStreamHit,
  encodeResolveStreamItem,
  encodeSnapshotResponses,
  type ItemBytes,
  readSimpleRequest,
  readVarintField,
  type SimpleRequest,
  streamItemSlab,
} from "./codec/encoded.js";
export { decodeStatusDetails, encodeStatusDetails, STATUS_DETAILS_KEY } from "./codec/error-details.js";
export {
  federatedResponseToProto,
  federationFromProto,
  isPartial,
  receivedFederatedFromProto,
  type SourceReport,
} from "./codec/federation-codec.js";
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
  type SealBatch,
} from "./domain/answer.js";
export {
  decodeSealStatement,
  encodeSealStatement,
  MAX_ANSWER_SEAL_MS,
  MAX_ANSWER_SEAL_SECONDS,
  type Sealable,
  type SealedEntry,
  type SealStatement,
  type StatementParts,
  sealAnswer,
  sealDigest,
  sealStatement,
  statementAt,
  statementParts,
} from "./domain/answer-seal.js";
export { CHANGE_HASH_KEY_BYTES, changeHash, changeHashHex, changeHashKey } from "./domain/change-hash.js";
export {
  type Csi,
  type CsiType,
  csiAddress,
  type LookupKey,
  parseCsi,
  parseRequestCsi,
  revenueShareType,
} from "./domain/csi.js";
export {
  expectedFpr,
  FILTER_KEY_BYTES,
  FILTER_VERSION_BYTES,
  FilterBits,
  type FilterShape,
  filterPositions,
  filterShape,
  MAX_FILTER_BITS,
  MAX_FILTER_HASHES,
  MIN_FILTER_CSIS,
} from "./domain/csi-filter.js";
export {
  clipped,
  clippedWithin,
  DiscoveryError,
  type DiscoveryErrorCode,
  type ErrorDetails,
  INVALID_FIELD,
  INVALID_REQUEST,
  invalidArgument,
  type WireSize,
} from "./domain/errors.js";
export {
  DEFAULT_FEDERATION,
  type FederatedMapping,
  type FederatedPart,
  type FederationPlan,
  type FederationQuery,
  type MergedAnswer,
  mergeFederated,
  planFederation,
  selectedDps,
  servesRange,
} from "./domain/federation.js";
export {
  type BucketStatement,
  bucketDigest,
  bucketProblem,
  decodeBucketStatement,
  decodePrivateParams,
  layoutOf,
  type PrivateParams,
  signBucket,
  signPrivateParams,
  verifyPrivateParams,
} from "./domain/private-statements.js";
export {
  type BlindedCsi,
  bucketBitsFor,
  bucketBytesFor,
  bucketEntries,
  bucketOf,
  ENTRIES_PER_BUCKET,
  encodeBucket,
  entryBytes,
  generateOprfKeys,
  KEY_ID_BYTES,
  keyIdOf,
  MAX_BUCKET_BITS,
  MAX_BUCKET_BYTES,
  MAX_ENTRY_PLAINTEXT,
  MAX_OPRF_BATCH,
  OPRF_ELEMENT_BYTES,
  OPRF_PROOF_BYTES,
  type OprfKeys,
  openEntry,
  oprfBlind,
  oprfBlindEvaluate,
  oprfEvaluate,
  oprfFinalize,
  oprfKeysMatch,
  oprfPublicKeyValid,
  PRIVATE_SUITE,
  positionsOf,
  type Slot,
  SPLIT_BUCKET_BYTES,
  sealEntry,
  slotOf,
  type TableLayout,
} from "./domain/private-table.js";
export {
  type ActionStatement,
  bulkRecord,
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
  byEndpoint,
  covers,
  type Delegation,
  type DelegationKey,
  type DpInfo,
  delegationId,
  type EndpointJurisdiction,
  type FederationMode,
  type FederationPolicy,
  hex64,
  isJurisdictionCode,
  jurisdictionCode,
  jurisdictionOfEndpoint,
  LOCAL_POLICY,
  MAX_FEDERATED_DPS,
  MAX_PRIVATE_LOOKUP_KEYS,
  type MspInfo,
  type PrivateLookupKey,
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
export { batchRoot, MAX_SEAL_BATCH, sealBatch, sealSignatureValid } from "./domain/seal-batch.js";
export {
  checkPublicKey,
  derivedSecret,
  generateSigningKey,
  loadPublicKey,
  loadSigningKey,
  MAX_DEFERRED_CHECKS,
  type PendingCheck,
  PUBLIC_KEY_BYTES,
  publicKeyPem,
  SIGNING_CONTEXT,
  type SigningContext,
  type SigningKey,
  signatureValid,
  signingKeyPem,
  signWith,
  verifications,
  verifyDeferred,
  verifyWith,
} from "./domain/signing.js";
export {
  type AnsweredCsi,
  answerProblem,
  type KeyDirectory,
  mappingProblem,
  type ReceivedAnswer,
  recordDp,
  registryKeys,
  registryTrust,
  type TrustAnchors,
  type VerifiedAnswer,
  verifyOutcome,
} from "./domain/verify.js";
export {
  federatedAnswerProblem,
  type ReceivedFederatedAnswer,
  type ReceivedSource,
} from "./domain/verify-federated.js";
export { type FollowLogOptions, followLog, type LogFollower } from "./follow/follow-log.js";
export { type ServeLogOptions, serveLog } from "./follow/serve-log.js";
export * as pb from "./gen/index.js";
export { AsyncQueue } from "./runtime/async-queue.js";
export { RecencyMap, setNewest } from "./runtime/bounded-map.js";
export { type Clock, fileOffsetClock, sleepUnlessAborted, systemClock } from "./runtime/clock.js";
export { ConfigError, ConfigReader, deepFreeze, readConfigFile } from "./runtime/config.js";
export {
  createEnumerationDetector,
  csiBlockOf,
  csiHash32,
  DEFAULT_ENUMERATION_POLICY,
  type Detection,
  type EnumerationDetector,
  type EnumerationMode,
  type EnumerationPolicy,
  readEnumerationPolicy,
} from "./runtime/enumeration.js";
export { Latch } from "./runtime/latch.js";
export {
  createLogger,
  csiHash,
  LOG_LEVELS,
  type Logger,
  logListening,
  setLogLevel,
} from "./runtime/logger.js";
export { LoopDelayGuard, type LoopDelayOptions } from "./runtime/loop-delay.js";
export {
  checkDataDir,
  checkPrivate,
  createPrivateFile,
  ensurePrivateDir,
  PRIVATE_FILE_MODE,
  type PrivateKind,
  type PrivateOptions,
  privateProblem,
  readOrCreateSecret,
  replacePrivateFile,
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
export { compiledWorkerUrl } from "./runtime/worker-url.js";
