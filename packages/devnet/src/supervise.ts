// What `npm start` does when one of its servers dies: it says so and keeps the others running,
// so an operator can watch what the network does without it (resolvers serving stale answers,
// failover, a secondary taking over), and restarts the dead ones on the same ports when asked
// ("restart" on standard input), as a process supervisor would.
import { createInterface } from "node:readline";
import type { ServerProcess } from "./server-process.js";

/** Where the supervisor reads commands and writes what happened. */
export interface SupervisorIo {
  readonly input: NodeJS.ReadableStream;
  write(text: string): void;
}

/** Watches `servers`; returns a function that stops watching. */
export function supervise(servers: readonly ServerProcess[], io: SupervisorIo): () => void {
  const dead = new Set<ServerProcess>();
  for (const p of servers) {
    p.onUnexpectedExit = (name, code, signal) => {
      dead.add(p);
      io.write(
        `start: ${name} exited unexpectedly (${signal ?? code}); the others keep running. ` +
          `Type "restart" and Enter to start it again on its port, or Ctrl-C to stop everything.\n`,
      );
    };
  }
  let busy = false;
  const lines = createInterface({ input: io.input });
  lines.on("line", (line) => {
    if (line.trim() !== "restart" || busy) return;
    if (dead.size === 0) {
      io.write("start: every server is running\n");
      return;
    }
    busy = true;
    void (async () => {
      for (const p of [...dead]) {
        try {
          await p.start({ samePort: true });
          dead.delete(p);
          io.write(`start: ${p.name} restarted at ${p.address}\n`);
        } catch (err) {
          io.write(`start: ${p.name} did not restart: ${(err as Error).message}\n`);
        }
      }
      busy = false;
    })();
  });
  return () => {
    lines.close();
    for (const p of servers) p.onUnexpectedExit = undefined;
  };
}
