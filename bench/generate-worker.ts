// A signing thread of the generator (generate.ts): signs the jobs its parent sends, one reply
// per job; or measures this core's signing rate.
import { parentPort, workerData } from "node:worker_threads";
import { generatorKeys, type RowsJob, signingRate, signRows } from "./generate-rows.js";

const key = generatorKeys((workerData as { pkiDir: string }).pkiDir);
const port = parentPort;
if (!port) throw new Error("generate-worker runs as a worker thread");
port.on("message", (msg: { job?: RowsJob; rateMs?: number }) => {
  if (msg.rateMs !== undefined) port.postMessage({ rate: signingRate(key("dp-eu"), msg.rateMs) });
  else if (msg.job) {
    const signed = signRows(key, msg.job);
    port.postMessage(signed, [signed.packed]);
  }
});
