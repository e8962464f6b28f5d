// Writes N generated mappings into the two DPs' SQLite stores, through the authoritative's
// own store module so the schema is the server's. Signing (two Ed25519 signatures a mapping)
// runs on a worker thread per core (generate-worker.ts), which sends back records and signatures
// packed in one transferred buffer, while this thread writes; the log says
// how the signing rate compares with what the machine's cores sign when doing nothing else.
// Results are kept under the bench folder and reused while the mapping count matches.
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { join } from "node:path";
import { Worker } from "node:worker_threads";
import { type MappingRow, openMappingStore } from "@mimi/authoritative/offline";
import { generatorKeys, type RowsJob, rowsOf, type SignedRows } from "./generate-rows.js";

const FORMAT = 2; // bump when keys.ts or the generated content changes
/** Mappings per job sent to a signing thread. */
const JOB = 5_000;
/** Jobs each thread may have queued: enough to keep it busy, few enough to bound memory. */
const QUEUED_PER_THREAD = 2;

/**
 * Ensures `dir`/dp-eu and dp-us hold the N generated mappings (indexes 0..N-1, alternating
 * between the DPs), or with `euOnly` N mappings all at eu (the even indexes 0..2N-2).
 * Returns the seconds spent, 0 when the folder already held them.
 */
export async function ensureGenerated(
  dir: string,
  n: number,
  log: (s: string) => void,
  { euOnly = false } = {},
): Promise<number> {
  const marker = join(dir, "generated.json");
  if (existsSync(marker)) {
    const m = JSON.parse(readFileSync(marker, "utf8")) as { n: number; format: number; euOnly?: boolean };
    if (m.n === n && m.format === FORMAT && (m.euOnly ?? false) === euOnly) return 0;
  }
  const started = performance.now();
  for (const dp of ["eu", "us"] as const) {
    const folder = join(dir, `dp-${dp}`);
    rmSync(folder, { recursive: true, force: true });
    mkdirSync(folder, { recursive: true, mode: 0o700 });
  }
  const stores = {
    eu: openMappingStore(join(dir, "dp-eu", "mappings.sqlite")),
    us: openMappingStore(join(dir, "dp-us", "mappings.sqlite")),
  };
  // Records are signed as the demo MSPs and DPs sign them, with the keys of the network that
  // will serve them (the PKI lives in `dir`; made here, before the threads read it).
  const pkiDir = join(dir, "pki");
  generatorKeys(pkiDir);
  // The benchmark's TypeScript runs through tsx, whose loader a thread must register before it
  // imports the worker (an --import in a thread's execArgv comes too late on Node 20).
  const boot = `import(${JSON.stringify(import.meta.resolve("tsx/esm/api"))})
    .then((tsx) => { tsx.register(); return import(${JSON.stringify(import.meta.resolve("./generate-worker.ts"))}); })`;
  const threads = Array.from(
    { length: Math.max(1, availableParallelism()) },
    () => new Worker(boot, { eval: true, workerData: { pkiDir } }),
  );
  try {
    // What every core signs at once with nothing else to do: the rate to compare with.
    const rates = await Promise.all(threads.map((t) => request<{ rate: number }>(t, { rateMs: 500 })));
    const machineRate = rates.reduce((a, r) => a + r.rate, 0);

    const createdAtMs = Date.now();
    const expiresAtMs = createdAtMs + 360 * 86_400_000;
    const step = euOnly ? 2 : 1;
    let next = 0;
    let written = 0;
    const signStarted = performance.now();
    const write = (rows: Record<"eu" | "us", MappingRow[]>) => {
      for (const dp of ["eu", "us"] as const) {
        const store = stores[dp];
        store.transaction(() => {
          for (const row of rows[dp]) store.putMapping(row);
        });
        written += rows[dp].length;
      }
      if (Math.floor(written / 1_000_000) !== Math.floor((written - JOB) / 1_000_000) && written < n)
        log(`generated ${written} of ${n} mappings`);
    };
    // Each thread works through its own queue of jobs; replies come in order per thread.
    await Promise.all(
      threads.map(async (t) => {
        const pending: Promise<SignedRows>[] = [];
        const post = () => {
          if (next >= n) return;
          const job: RowsJob = { from: next, to: Math.min(n, next + JOB), step, createdAtMs, expiresAtMs };
          next = job.to;
          pending.push(request(t, { job }));
        };
        for (let q = 0; q < QUEUED_PER_THREAD; q++) post();
        for (let p = pending.shift(); p; p = pending.shift()) {
          write(rowsOf(await p));
          post();
        }
      }),
    );
    const seconds = (performance.now() - signStarted) / 1000;
    const signatures = (2 * n) / seconds;
    log(
      `signed ${n} mappings on ${threads.length} threads in ${seconds.toFixed(1)} s: ${Math.round(signatures)} signatures/s, ` +
        `${(signatures / machineRate).toFixed(2)}x the ${Math.round(machineRate)}/s this machine's cores sign alone`,
    );
  } finally {
    await Promise.all(threads.map((t) => t.terminate()));
    stores.eu.close();
    stores.us.close();
  }
  writeFileSync(marker, JSON.stringify({ n, format: FORMAT, euOnly }));
  return (performance.now() - started) / 1000;
}

/** The replies each thread owes, oldest first: a thread answers its messages in order. */
const owed = new WeakMap<Worker, { resolve: (v: unknown) => void; reject: (e: unknown) => void }[]>();

/** Sends `msg` to thread `t`; resolves with its reply. */
function request<T>(t: Worker, msg: unknown): Promise<T> {
  let queue = owed.get(t);
  if (!queue) {
    const q: { resolve: (v: unknown) => void; reject: (e: unknown) => void }[] = [];
    queue = q;
    owed.set(t, q);
    t.on("message", (m: unknown) => q.shift()?.resolve(m));
    t.on("error", (err) => {
      for (const p of q.splice(0)) p.reject(err);
    });
  }
  const q = queue;
  return new Promise<T>((resolve, reject) => {
    q.push({ resolve: resolve as (v: unknown) => void, reject });
    t.postMessage(msg);
  });
}
