// How many cancelled calls one HTTP/2 connection survives on this Node: a client opens streams
// on a bare node:http2 server that never answers and cancels each (as a gRPC client does when a
// deadline passes); the server's nghttp2 answers the resets with GOAWAY once its budget is
// spent (CVE-2023-44487's defence: 1,000 at once, 33 a second after). Prints how many streams
// were cancelled before the connection went, and with what code.
//   node --import tsx bench/reset-budget.ts [streams, default 3000]
import http2 from "node:http2";
import type { AddressInfo } from "node:net";

const streams = Number(process.argv[2] ?? 3_000);
const server = http2.createServer();
server.on("stream", (s) => s.on("error", () => {})); // never answered
server.listen(0, "127.0.0.1", async () => {
  const { port } = server.address() as AddressInfo;
  const client = http2.connect(`http://127.0.0.1:${port}`);
  let goaway: number | undefined;
  client.on("goaway", (code) => {
    goaway = code;
  });
  client.on("error", () => {});
  let cancelled = 0;
  for (let i = 0; i < streams && !client.destroyed && goaway === undefined; i++) {
    const r = client.request({ ":path": "/" });
    r.on("error", () => {});
    r.end();
    r.close(http2.constants.NGHTTP2_CANCEL);
    cancelled++;
    // In bursts of 100, so the server reads the resets as they come.
    if (cancelled % 100 === 0) await new Promise((res) => setTimeout(res, 20));
  }
  await new Promise((res) => setTimeout(res, 200));
  process.stdout.write(
    `${
      goaway === undefined
        ? `${cancelled} streams cancelled on one connection; it is still open (node ${process.version})`
        : `the server closed the connection with GOAWAY code ${goaway} after about ${cancelled} cancelled streams (node ${process.version}, nghttp2 ${process.versions.nghttp2})`
    }\n`,
  );
  client.destroy();
  server.close();
});
