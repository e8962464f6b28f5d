// A TCP proxy the tests put between a resolver and a DP, to cut the connection (as a network
// partition would) while both processes keep running. TLS passes through it untouched.
import { createServer, type Server, type Socket, connect as tcpConnect } from "node:net";

/** A running proxy. */
export interface TcpProxy {
  readonly address: string;
  /** Drops every connection and refuses new ones until restore(). */
  cut(): void;
  restore(): void;
  close(): Promise<void>;
}

/** Starts a proxy on a free loopback port forwarding to `target` ("host:port"). */
export async function startProxy(target: string): Promise<TcpProxy> {
  const [host, port] = target.split(":") as [string, string];
  const sockets = new Set<Socket>();
  let open = true;
  const track = (s: Socket) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
    s.on("error", () => s.destroy());
  };
  const server: Server = createServer((client) => {
    track(client);
    if (!open) {
      client.destroy();
      return;
    }
    const upstream = tcpConnect(Number(port), host);
    track(upstream);
    client.pipe(upstream);
    upstream.pipe(client);
    client.on("close", () => upstream.destroy());
    upstream.on("close", () => client.destroy());
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const addr = server.address();
  if (!addr || typeof addr === "string") throw new Error("proxy did not bind");
  return {
    address: `127.0.0.1:${addr.port}`,
    cut() {
      open = false;
      for (const s of sockets) s.destroy();
    },
    restore() {
      open = true;
    },
    close() {
      open = false;
      for (const s of sockets) s.destroy();
      return new Promise((r) => server.close(() => r()));
    },
  };
}
