// Micro-benchmark of parseCsi, the first step of every lookup. Times a fixed mix of inputs
// through each module given on the command line, alternating the modules over a few rounds so
// that they share the machine's state, and prints the median ns per call of each.
//   node --import tsx bench/csi-parse.ts <csi.ts> [<other csi.ts> ...]
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";

type Parse = (input: string) => unknown;

const CALLS = 200_000;
const ROUNDS = 5;
const WARMUP_ROUNDS = 1;

/** Inputs every version of parseCsi accepts: canonical URIs, bare and formatted numbers, addresses. */
const COMMON = [
  "tel:+447700900123",
  "tel:+4915123456789",
  "tel:+12025550142",
  "tel:+81312345678",
  "tel:+78005553535",
  "+33612345678",
  "+44 7700 900123",
  "tel:+1-202-555-0142",
  "+39 06 1234 5678",
  "mailto:alice@example.org",
  "Alice@Example.ORG",
  "mailto:bob.smith+tag@mail.example.com",
];

/** Canonical tel URIs only, what most lookups carry. */
const CANONICAL_TEL = COMMON.filter((i) => /^tel:\+[0-9]+$/.test(i));

/** Inputs with a trunk prefix or a slash, which only the libphonenumber-style parser accepts. */
const WRITTEN = ["+49 (0)30 123456", "+44 (0)20 7946 0000", "+33 (0)6 12 34 56 78", "+421 2/212 345 67"];

function nsPerCall(parse: Parse, inputs: readonly string[]): number {
  const start = process.hrtime.bigint();
  for (let i = 0; i < CALLS; i++) parse(inputs[i % inputs.length] as string);
  return Number(process.hrtime.bigint() - start) / CALLS;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] as number;
}

function accepts(parse: Parse, input: string): boolean {
  try {
    parse(input);
    return true;
  } catch {
    return false;
  }
}

const paths = process.argv.slice(2);
if (paths.length === 0) throw new Error("usage: bench/csi-parse.ts <csi.ts> [<other csi.ts> ...]");
const modules: { path: string; parse: Parse }[] = [];
for (const path of paths) {
  const mod = (await import(pathToFileURL(resolve(path)).href)) as { parseCsi: Parse };
  modules.push({ path, parse: mod.parseCsi });
}

const mixes = [
  { name: "common", inputs: COMMON },
  { name: "tel-e164", inputs: CANONICAL_TEL },
  { name: "written", inputs: WRITTEN },
];
const samples = new Map<string, number[]>();
for (let round = 0; round < WARMUP_ROUNDS + ROUNDS; round++) {
  for (const m of modules) {
    for (const mix of mixes) {
      if (!mix.inputs.every((i) => accepts(m.parse, i))) continue;
      const key = `${m.path}\t${mix.name}`;
      const ns = nsPerCall(m.parse, mix.inputs);
      if (round >= WARMUP_ROUNDS) samples.set(key, [...(samples.get(key) ?? []), ns]);
    }
  }
}
for (const m of modules) {
  for (const mix of mixes) {
    const xs = samples.get(`${m.path}\t${mix.name}`);
    const figure = xs ? `${median(xs).toFixed(0)} ns/call` : "refused";
    process.stdout.write(`${mix.name.padEnd(9)} ${figure.padStart(14)}  ${m.path}\n`);
  }
}
