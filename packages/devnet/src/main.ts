// `npm start`: runs the local network on fixed loopback ports with data under ./data, prints
// one READY line with the resolver's address, then the servers' logs (rendered by pino-pretty,
// one labelled stream per server) until Ctrl-C.
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { silenceIpServernameWarning } from "@mimi/rpc";
import pretty from "pino-pretty";
import { startNetwork } from "./network.js";
import { LOCAL_PORTS } from "./paths.js";
import { supervise } from "./supervise.js";

const REPO = resolve(fileURLToPath(import.meta.url), "../../../..");
const COLORS: Record<string, number> = { root: 35, "dp-eu": 34, "dp-us": 36, "dp-fed": 33, resolver: 32 };
const tty = process.stdout.isTTY === true;

const labelOf = (name: string) => {
  const label = name.padEnd(8);
  return tty ? `\x1b[${COLORS[name] ?? 0}m${label}\x1b[0m` : label;
};

// One pretty-printer per server, so every line carries the server's name as its label; lines
// that are not log records (a crash trace on stderr) keep the label too.
const printers = new Map<string, ReturnType<typeof pretty>>();
function show(name: string, line: string): void {
  if (!line.startsWith("{")) {
    process.stdout.write(`${labelOf(name)} ${line}\n`);
    return;
  }
  let printer = printers.get(name);
  if (!printer) {
    printer = pretty({
      colorize: tty,
      singleLine: true,
      sync: true,
      translateTime: "SYS:HH:MM:ss",
      ignore: "pid,hostname,name",
      messageFormat: `${labelOf(name)} {msg}`,
    });
    printers.set(name, printer);
  }
  printer.write(`${line}\n`);
}

async function main(): Promise<void> {
  silenceIpServernameWarning(process);
  const dir = join(REPO, "data");
  const net = await startNetwork({
    dir,
    ports: { ...LOCAL_PORTS },
    logLevel: process.env.LOG_LEVEL ?? "info",
    onLine: show,
    thirdParty: true,
    privateLookups: true,
  });
  process.stdout.write(
    `READY resolver=${net.resolver.address} root=${net.root.address} dp-eu=${net.dps.eu.address} dp-us=${net.dps.us.address} dp-fed=${net.dps.fed?.address}\n` +
      `      try: npx mimi resolve tel:+447700900123   (data and certificates are in ${dir})\n` +
      "      and: npx mimi resolve tel:+447700900123 --federate   (also asks the third-party DP fed)\n" +
      "      and: npx mimi resolve tel:+447700900999 --private --verify   (the DP does not learn the number)\n",
  );
  let stopping = false;
  const stop = async (code: number) => {
    if (stopping) return;
    stopping = true;
    process.stdout.write("stopping...\n");
    await net.stop();
    process.exit(code);
  };
  // A server that dies is reported and the rest keep running; "restart" brings it back.
  supervise([net.root, ...Object.values(net.dps), net.resolver], {
    input: process.stdin,
    write: (text) => process.stderr.write(text),
  });
  process.on("SIGINT", () => void stop(0));
  process.on("SIGTERM", () => void stop(0));
}

main().catch((err) => {
  process.stderr.write(`start: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
