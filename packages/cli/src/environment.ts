// Defaults from the environment for the flags an operator repeats in every command: where the
// servers are and which TLS material to use. A flag on the command line wins; a variable wins
// over the built-in default (the local network's). `mimi <command> --help` names each variable.
import { Command, type Option } from "commander";
import { UsageError } from "./errors.js";

/** The variable of each flag (by its flags text, so `--dp <host:port>` is not `--dp <dp-id>`). */
export const ENVIRONMENT: Readonly<Record<string, string>> = {
  "--resolver <host:port>": "MIMI_RESOLVER",
  "--root <host:port>": "MIMI_ROOT",
  "--dp <host:port>": "MIMI_DP",
  "--root-key <file>": "MIMI_ROOT_KEY",
  "--pki <dir>": "MIMI_PKI",
  "--identity <name>": "MIMI_IDENTITY",
  "--as <identity>": "MIMI_AS",
  "--ca <file>": "MIMI_CA",
  "--cert <file>": "MIMI_CERT",
  "--key <file>": "MIMI_KEY",
  "--timeout <ms>": "MIMI_TIMEOUT",
};

/**
 * A commander Command whose options named in ENVIRONMENT read their variable, and whose
 * subcommands do too (commander wires a variable only when the option is created).
 */
export class EnvironmentCommand extends Command {
  override createCommand(name?: string): Command {
    return new EnvironmentCommand(name);
  }

  override createOption(flags: string, description?: string): Option {
    const option = super.createOption(flags, description);
    const variable = ENVIRONMENT[flags];
    return variable ? option.env(variable) : option;
  }
}

/**
 * Refuses a command line that names who to connect as (`--identity`, `--as`) while MIMI_CERT or
 * MIMI_KEY set the certificate: the connection would not be the identity the flag names (and a
 * claim's signing key, chosen by `--as`, would not match the certificate's MSP).
 */
export function refuseMixedIdentity(action: Command): void {
  const from = (key: string) => action.getOptionValueSource(key);
  const named = ["identity", "as"].find((k) => from(k) === "cli");
  const fromEnv = ["cert", "key"].filter((k) => from(k) === "env");
  if (named && fromEnv.length > 0) {
    throw new UsageError(
      `--${named} is given, but ${fromEnv.map((k) => `MIMI_${k.toUpperCase()}`).join(" and ")} ` +
        `choose${fromEnv.length === 1 ? "s" : ""} the certificate; unset ${fromEnv.length === 1 ? "it" : "them"} or give --cert and --key too`,
    );
  }
}
