// The public surface of @mimi/rpc: gRPC on both sides. Typed services and clients from protobuf-es
// descriptors, fast paths, error codes as gRPC status, mutual TLS, channel pools, connection and
// call limits, call metrics, health and reflection.
export {
  type CallOptions,
  type Channel,
  type ClientMethod,
  openChannel,
  type ServiceClient,
} from "./channel.js";
export { type ChannelPool, channelPool, createChannelPool } from "./channel-pool.js";
export type { FastCall, FastPath, ItemErrorReply } from "./fast-path.js";
export {
  type AddServiceOptions,
  addService,
  type CallContext,
  type MethodHandler,
  type PeerIdentity,
  type Reply,
  type ServiceHandlers,
} from "./grpc.js";
export { addHealthService, type HealthReporter } from "./health.js";
export { createGrpcServer, listen, shutdown } from "./listen.js";
export {
  counterFrom,
  countersFrom,
  createServerMetrics,
  gaugeFrom,
  MIMI_VERSION,
  outcomesBy,
  registryGauges,
  type ServerMetrics,
} from "./metrics.js";
export { addReflection } from "./reflection.js";
export {
  describeRoles,
  ROLE_URI_PREFIX,
  ROLES,
  type Role,
  rolesOf,
  roleUri,
  subjectAltNames,
} from "./roles.js";
export {
  type ConnectionLimits,
  capConnections,
  createWatchSlots,
  DEFAULT_CONNECTION_LIMITS,
  MAX_METHOD_REQUEST_BYTES,
  readConnectionLimits,
  type WatchSlots,
} from "./server-limits.js";
export { endUntrustedSessions, trackSessions } from "./sessions.js";
export {
  fromStatus,
  itemError,
  itemErrorDetails,
  statusName,
  toWireStatus,
  type WireStatus,
} from "./status.js";
export { keepStreamMapsYoung, refreshStreamMaps, streamMapRefreshes, streamStateOf } from "./stream-maps.js";
export {
  channelCredentials,
  type LiveTls,
  loadCrl,
  loadTls,
  readTlsSection,
  type ServerExpectation,
  serverCredentials,
  silenceIpServernameWarning,
  type TlsMaterial,
  type TlsPaths,
  type TlsSource,
  type WarningEmitter,
} from "./tls.js";
