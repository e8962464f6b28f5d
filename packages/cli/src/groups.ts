// Where each command group of `mimi` is defined. main.ts loads only the group a command line
// names, so `mimi --help` and `mimi --version` start without the gRPC, protobuf and crypto code
// the groups need (most of a command's start-up time).
import type { Command } from "commander";
import type { ABOUT } from "./help.js";

type AddCommands = (program: Command) => void;

/** The module of each group, loaded when the group is used. */
export const GROUPS: Readonly<Record<keyof typeof ABOUT, () => Promise<AddCommands>>> = {
  resolve: async () => (await import("./commands/resolve.js")).addResolveCommand,
  root: async () => (await import("./commands/root.js")).addRootCommands,
  auth: async () => (await import("./commands/auth.js")).addAuthCommands,
  claim: async () => (await import("./commands/claim.js")).addClaimCommands,
  resolver: async () => (await import("./commands/resolver.js")).addResolverCommands,
  store: async () => (await import("./commands/store.js")).addStoreCommands,
  "dev-pki": async () => (await import("./commands/dev-pki.js")).addDevPkiCommand,
  health: async () => (await import("./commands/health.js")).addHealthCommand,
};
