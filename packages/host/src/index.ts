// The public surface of @mimi/host: how a server process runs (config, logger, listen, signals,
// reload, certificate rotation, the ops listener, graceful shutdown).
export {
  type ClusterLink,
  type ClusterSpec,
  type PrimaryContext,
  type PrimaryPart,
  WORKER_VARIABLE,
} from "./cluster.js";
export { serialKey } from "./crl.js";
export { type OpsConfig, type OpsListener, readOpsSection, startOps } from "./ops.js";
export { applyReload, planReload, type ReloadPlan, reloadAdmins } from "./reload.js";
export {
  DEVELOPMENT_CA_SUBJECT,
  holdsDevelopmentCa,
  type ProcessHost,
  type RunningServer,
  readServerBasics,
  runServer,
  type ServerBasics,
  type ServerContext,
  type ServerSpec,
} from "./server.js";
export { type CertificateSummary, checkTlsMaterial, TlsFiles, type TlsReload } from "./tls-files.js";
