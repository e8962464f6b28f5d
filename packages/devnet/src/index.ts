// The local network as a library, for `npm start`, the integration tests and the benchmark:
// the launcher, its server processes, the extra processes tests start beside it, the demo
// data and the development PKI. Never a dependency of a server.

export { type Demo, loadDemo, loadMappings, waitUntilResolving } from "./demo.js";
export {
  type DpSecondaryOptions,
  type ExtraProcessOptions,
  type ExtraResolverOptions,
  type RootSecondaryOptions,
  startDp,
  startDpSecondary,
  startResolver,
  startRootSecondary,
  waitForSerial,
  waitUntilServing,
} from "./extra.js";
export { type Network, type NetworkOptions, type NetworkPorts, startNetwork } from "./network.js";
export { devSigningKeyPaths, devTlsPaths, IDENTITIES, LOCAL_PORTS, SIGNING_KEYS } from "./paths.js";
export { type DevCrlOptions, ensureDevPki, ensureDevSigningKeys, writeDevCrl } from "./pki.js";
export { type Role, ServerProcess, type ServerProcessOptions } from "./server-process.js";
export { type SupervisorIo, supervise } from "./supervise.js";
