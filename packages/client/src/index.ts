// The public surface of @mimi/client: clients of the network's APIs that more than one package
// needs: the MSP's side of claims and bulk registration, and the verified registry copy.
export {
  type BulkProgress,
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
} from "./msp.js";
export {
  type RegistrySync,
  type RegistrySyncOptions,
  savedRegistryCopy,
  startRegistrySync,
} from "./registry-sync.js";
