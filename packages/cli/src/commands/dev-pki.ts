// `mimi dev-pki`: a development CA and certificates (never for production). The generator is
// loaded only when the command runs, so other commands start without it.
import type { Command } from "commander";
import { about } from "../help.js";
import { out } from "../output.js";

/** Adds `dev-pki`. */
export function addDevPkiCommand(program: Command): void {
  program
    .command("dev-pki")
    .description(about("dev-pki"))
    .argument("<dir>", "output folder")
    .argument(
      "<identity...>",
      "certificate identities (subject common names), each optionally with roles: name=dp+resolver (default from the name: root*, dp-*, resolver*, admin*; msp-* and cli are MSPs)",
    )
    .action(async (dir: string, identities: string[]) => {
      const { ensureDevPki } = await import("@mimi/devnet/pki");
      await ensureDevPki(dir, identities);
      out(`certificates for ${identities.join(", ")} are in ${dir}`);
    });
}
