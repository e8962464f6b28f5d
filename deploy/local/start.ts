// `npm start`: runs the local network on fixed loopback ports with data under ./data,
// prints one READY line with the resolver's address, then the servers' logs until Ctrl-C.
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { silenceIpServernameWarning } from "@mimi/core";
import { startNetwork } from "./network.js";

const REPO = resolve(fileURLToPath(import.meta.url), "../../..");
const COLORS = { root: 35, "dp-eu": 34, "dp-us": 36, resolver: 32 } as Record<string, number>;
const LEVELS: Record<number, string> = {
  10: "TRACE",
  20: "DEBUG",
  30: "INFO",
  40: "WARN",
  50: "ERROR",
  60: "FATAL",
};
const tty = process.stdout.isTTY;

// Renders a pino JSON line as "hh:mm:ss name LEVEL msg key=value ...".
function show(name: string, line: string): void {
  let text = line;
  try {
    const {
      time,
      level,
      msg,
      name: _n,
      pid: _p,
      hostname: _h,
      ...rest
    } = JSON.parse(line) as Record<string, unknown>;
    const fields = Object.entries(rest)
      .map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : String(v)}`)
      .join(" ");
    const t = new Date(Number(time)).toISOString().slice(11, 19);
    text = `${t} ${LEVELS[Number(level)] ?? level} ${msg}${fields ? ` ${fields}` : ""}`;
  } catch {
    // Not JSON (e.g. a crash trace on stderr): shown as it is.
  }
  const label = name.padEnd(8);
  process.stdout.write(`${tty ? `\x1b[${COLORS[name] ?? 0}m${label}\x1b[0m` : label} ${text}\n`);
}

async function main(): Promise<void> {
  silenceIpServernameWarning();
  const dir = join(REPO, "data");
  const net = await startNetwork({
    dir,
    ports: { root: 7400, eu: 7501, us: 7502, resolver: 7600 },
    logLevel: process.env.LOG_LEVEL ?? "info",
    onLine: show,
  });
  process.stdout.write(
    `READY resolver=${net.resolver.address} root=${net.root.address} dp-eu=${net.dps.eu.address} dp-us=${net.dps.us.address}\n` +
      `      try: npx mimi resolve tel:+447700900123   (data and certificates are in ${dir})\n`,
  );
  let stopping = false;
  const stop = async (code: number) => {
    if (stopping) return;
    stopping = true;
    process.stdout.write("stopping...\n");
    await net.stop();
    process.exit(code);
  };
  // A server that dies takes the network down with it, loudly, rather than leaving it half up.
  for (const p of [net.root, net.dps.eu, net.dps.us, net.resolver]) {
    p.onUnexpectedExit = (name, code, signal) => {
      process.stderr.write(`start: ${name} exited unexpectedly (${signal ?? code}); stopping the network\n`);
      void stop(1);
    };
  }
  process.on("SIGINT", () => void stop(0));
  process.on("SIGTERM", () => void stop(0));
}

main().catch((err) => {
  process.stderr.write(`start: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
