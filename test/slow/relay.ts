// Relays connections from the multi-host test's process (which stays in the machine's own
// network namespace) into a host of the test's network: run with `ip netns exec <host> node
// --import tsx test/slow/relay.ts <dir> <ip:port>...`, it listens on <dir>/<ip>-<port>.sock for
// each target and connects to the target from inside that host, so every byte the test sends
// crosses the test's network as that host's traffic (and is cut when its link is). TLS passes
// through untouched. It prints "relay ready" once listening and exits when stdin closes.
import { connect, createServer, type Socket } from "node:net";
import { join } from "node:path";

const [dir, ...targets] = process.argv.slice(2);
if (!dir || targets.length === 0) {
  process.stderr.write("usage: relay.ts <socket dir> <ip:port>...\n");
  process.exit(2);
}

const sockets = new Set<Socket>();
const track = (s: Socket) => {
  sockets.add(s);
  s.on("close", () => sockets.delete(s));
  s.on("error", () => s.destroy());
};

await Promise.all(
  targets.map((target) => {
    const [host, port] = target.split(":") as [string, string];
    const server = createServer((client) => {
      track(client);
      const upstream = connect(Number(port), host);
      track(upstream);
      client.pipe(upstream);
      upstream.pipe(client);
      client.on("close", () => upstream.destroy());
      upstream.on("close", () => client.destroy());
    });
    return new Promise<void>((listening, fail) => {
      server.once("error", fail);
      server.listen(join(dir, `${host}-${port}.sock`), listening);
    });
  }),
);
process.stdout.write("relay ready\n");
// Stops with whoever started it, however that one ends.
process.stdin.resume();
process.stdin.on("end", () => process.exit(0));
process.stdin.on("error", () => process.exit(0));
