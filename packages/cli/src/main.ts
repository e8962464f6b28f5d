// The `mimi` command: one CLI for every role. `resolve` for MSPs and operators, `root` for
// registry admins, `auth` for authoritative operators, `claim` for MSPs acting at a DP,
// `resolver` for resolver operators, `store` for backups of a server's store, `dev-pki` for the
// local PKI; one file per group in commands/. This file assembles them and maps failures to exit codes.
import { DiscoveryError, MIMI_VERSION, silenceIpServernameWarning } from "@mimi/core";
import { Command, CommanderError } from "commander";
import { Interrupted, UsageError } from "./args.js";
import { addAuthCommands } from "./commands/auth.js";
import { addClaimCommands } from "./commands/claim.js";
import { addDevPkiCommand } from "./commands/dev-pki.js";
import { addHealthCommand } from "./commands/health.js";
import { addResolveCommand } from "./commands/resolve.js";
import { addResolverCommands } from "./commands/resolver.js";
import { addRootCommands } from "./commands/root.js";
import { addStoreCommands } from "./commands/store.js";

const program = new Command("mimi")
  .description(
    "MIMI discovery network: resolve identifiers, act as an MSP at a DP, and administer the root and authoritative DPs",
  )
  .version(`mimi ${MIMI_VERSION}`, "--version", "print the version")
  .showHelpAfterError()
  .exitOverride();
addResolveCommand(program);
addRootCommands(program);
addAuthCommands(program);
addClaimCommands(program);
addResolverCommands(program);
addStoreCommands(program);
addDevPkiCommand(program);
addHealthCommand(program);

/** Runs the CLI; resolves to the process exit code. */
export async function run(argv: readonly string[]): Promise<number> {
  try {
    await program.parseAsync([...argv], { from: "user" });
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : 2;
    if (err instanceof UsageError) {
      process.stderr.write(`mimi: ${err.message}\n`);
      return 2;
    }
    // The command already said where it stopped and how to go on.
    if (err instanceof Interrupted) return 130;
    const msg = err instanceof DiscoveryError || err instanceof Error ? err.message : String(err);
    process.stderr.write(`mimi: ${msg}\n`);
    return 1;
  }
}

silenceIpServernameWarning(process);
// A reader that went away (`mimi root show | head`) ends the command quietly, as for any CLI.
process.stdout.on("error", (err: NodeJS.ErrnoException) => {
  if (err.code === "EPIPE") process.exit(0);
  throw err;
});
run(process.argv.slice(2)).then((code) => {
  process.exitCode = code;
});
