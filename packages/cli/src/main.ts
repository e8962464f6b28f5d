// The `mimi` command: one CLI for every role. `resolve` for MSPs and operators, `root` for
// registry admins, `auth` for authoritative operators, `claim` for MSPs acting at a DP,
// `resolver` for resolver operators, `store` for backups of a server's store, `dev-pki` for the
// local PKI, `health` for probes; one file per group in commands/, loaded only when its group
// is used (groups.ts). This file assembles them and maps failures to exit codes.
import { createRequire } from "node:module";
import { type Command, CommanderError } from "commander";
import { EnvironmentCommand, refuseMixedIdentity } from "./environment.js";
import { Interrupted, UsageError } from "./errors.js";
import { GROUPS } from "./groups.js";
import { ABOUT } from "./help.js";

/** The release, as every server prints it (the workspace packages share one version). */
const VERSION = (createRequire(import.meta.url)("../package.json") as { version: string }).version;

/** The group a command line uses (`mimi help <group>` included), or undefined. */
function groupOf(argv: readonly string[]): keyof typeof GROUPS | undefined {
  const words = argv.filter((a) => !a.startsWith("-"));
  const word = words[0] === "help" ? words[1] : words[0];
  return word !== undefined && Object.hasOwn(GROUPS, word) ? (word as keyof typeof GROUPS) : undefined;
}

/** The program with the group `argv` uses loaded, and the others as help lines only. */
async function programFor(argv: readonly string[]): Promise<Command> {
  const program = new EnvironmentCommand("mimi")
    .description(
      "MIMI discovery network: resolve identifiers, act as an MSP at a DP, and administer the root and authoritative DPs",
    )
    .version(`mimi ${VERSION}`, "--version", "print the version")
    .showHelpAfterError()
    .exitOverride()
    .hook("preAction", (_program, action) => refuseMixedIdentity(action));
  const used = groupOf(argv);
  for (const name of Object.keys(GROUPS) as (keyof typeof GROUPS)[]) {
    if (name === used) {
      const rpc = await import("@mimi/rpc");
      rpc.silenceIpServernameWarning(process);
      (await GROUPS[name]())(program);
    } else {
      // Listed in `mimi --help`; never run, since a command line that names it loads it.
      program.command(name).description(ABOUT[name]);
    }
  }
  return program;
}

/** Runs the CLI; resolves to the process exit code. */
export async function run(argv: readonly string[]): Promise<number> {
  try {
    const program = await programFor(argv);
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
    process.stderr.write(`mimi: ${err instanceof Error ? err.message : String(err)}\n`);
    return 1;
  }
}

// A reader that went away (`mimi root show | head`) ends the command quietly, as for any CLI.
process.stdout.on("error", (err: NodeJS.ErrnoException) => {
  if (err.code === "EPIPE") process.exit(0);
  throw err;
});
run(process.argv.slice(2)).then((code) => {
  process.exitCode = code;
});
