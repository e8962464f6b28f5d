// How the CLI finds its TLS material and servers: flags, with defaults that match
// the local network `npm start` runs (data/pki, fixed loopback ports).
import { resolve } from "node:path";
import { devTlsPaths } from "@mimi/devnet/paths";
import { type Channel, channelCredentials, loadTls, openChannel, type Role } from "@mimi/rpc";
import type { Command } from "commander";
import { UsageError } from "./args.js";

export { LOCAL_PORTS } from "@mimi/devnet/paths";

/** TLS flags shared by every command that connects. */
export function addTlsOptions(cmd: Command, defaultIdentity: string): Command {
  return addTlsFiles(
    cmd
      .option("--pki <dir>", "folder with ca.pem, <identity>.pem and <identity>-key.pem", "data/pki")
      .option("--identity <name>", "certificate identity to connect as", defaultIdentity),
  );
}

/**
 * TLS flags for commands an MSP runs: `--as <identity>` names both the certificate the MSP
 * connects with and its signing key, <pki>/<identity>-signing.pem.
 */
export function addMspOptions(cmd: Command): Command {
  return addTlsFiles(
    cmd
      .requiredOption(
        "--as <identity>",
        "the MSP's certificate identity, e.g. msp-bluebird; its signing key is <pki>/<identity>-signing.pem",
      )
      .option(
        "--pki <dir>",
        "folder with ca.pem, <identity>.pem, <identity>-key.pem and <identity>-signing.pem",
        "data/pki",
      ),
  );
}

/** Flags parsed by addMspOptions. */
export type MspFlags = Omit<TlsFlags, "identity"> & { as: string };

/** The TLS flags of an MSP command, connecting as its `--as` identity. */
export function asTls(o: MspFlags): TlsFlags {
  return { ...o, identity: o.as };
}

function addTlsFiles(cmd: Command): Command {
  return cmd
    .option("--ca <file>", "CA certificate (overrides --pki)")
    .option("--cert <file>", "client certificate (overrides --pki)")
    .option("--key <file>", "client key (overrides --pki)")
    .option("--timeout <ms>", "deadline per call in milliseconds", "5000");
}

/** Parsed TLS flags. */
export interface TlsFlags {
  pki: string;
  identity: string;
  ca?: string;
  cert?: string;
  key?: string;
  timeout: string;
}

/**
 * Opens a channel to `address` with the identity the flags name; the server's certificate must
 * grant `serverRole` (a root, a DP, a resolver), so that no other certificate of the network's
 * CA can stand in for it.
 */
export function connect(address: string, flags: TlsFlags, serverRole?: Role): Channel {
  const dev = devTlsPaths(resolve(flags.pki), flags.identity);
  const tls = loadTls({
    caFile: flags.ca ?? dev.caFile,
    certFile: flags.cert ?? dev.certFile,
    keyFile: flags.key ?? dev.keyFile,
  });
  return openChannel(address, channelCredentials(tls, serverRole ? { role: serverRole } : {}));
}

/** The per-call deadline from the flags. */
export function timeoutOf(flags: TlsFlags): number {
  const ms = Number(flags.timeout);
  if (!/^[0-9]+$/.test(flags.timeout) || ms <= 0) {
    throw new UsageError("--timeout must be a positive number of milliseconds");
  }
  return ms;
}

/** A loopback address for a default port. */
export function local(port: number): string {
  return `127.0.0.1:${port}`;
}
