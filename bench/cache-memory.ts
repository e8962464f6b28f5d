// The resolver's heap per cached answer, measured in a process of its own (node --expose-gc):
// answers as a DP sends them (bulk records of realistic size, real seal statements) go through
// the resolver's own path (protobuf decode, outcomeFromAnswer, CachedAnswer, the TTL cache with
// its change-hash index), and the heap and external bytes are read after full collections
// before and after the fill. Unlike the live resolver's RSS, this does not depend on when V8
// chooses to collect. Usage: node --expose-gc --import tsx bench/cache-memory.ts <answers> <mappings per answer>
import { createHash } from "node:crypto";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import {
  answerToProto,
  bulkRecord,
  DEFAULT_PARAMS,
  encodeSealStatement,
  generateSigningKey,
  type LookupOutcome,
  type Mapping,
  parseCsi,
  pb,
} from "@mimi/core";
import { answerIndex, CachedAnswer, createTtlCache, outcomeFromAnswer } from "@mimi/resolver/offline";

const answers = Number(process.argv[2] ?? 100_000);
const perAnswer = Number(process.argv[3] ?? 2);
const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error("run with node --expose-gc");

const MSPS = ["bluebird.example", "wirechat.example", "parrot.example"];
const DP = "dp-eu.example";
const mspKey = generateSigningKey();
const sig = new Uint8Array(64).fill(7);

/** The answer a DP sends for CSI number `i` (its bytes on the wire). */
function wireAnswer(i: number): Uint8Array {
  const csi = `tel:+4477${String(i).padStart(8, "0")}`;
  const mappings: Mapping[] = [];
  for (let m = 0; m < perAnswer; m++) {
    const mspId = MSPS[m % MSPS.length] as string;
    const fields = {
      csi,
      mspId,
      ssi: `@user${i}:${mspId}`,
      defaultRequested: m === 0,
      tags: ["Personal"],
      createdAtMs: 1_780_000_000_000 + i,
      proofId: `bulk-${i}`,
      dpId: DP,
      expiresAtMs: 1_800_000_000_000,
    };
    const { record } = bulkRecord(fields, mspKey);
    const signed = { record, userSignature: new Uint8Array(0), mspSignature: sig, dpSignature: sig };
    mappings.push({
      mspId,
      ssi: fields.ssi,
      isDefault: m === 0,
      tags: fields.tags,
      createdAtMs: fields.createdAtMs,
      proofMethod: "bulk",
      expiresAtMs: fields.expiresAtMs,
      signed,
    });
  }
  const statement = encodeSealStatement({
    csi,
    dpId: DP,
    status: "answer",
    signedAtMs: 1_780_000_000_000,
    expiresAtMs: 1_780_000_300_000,
    entries: mappings.map((m) => ({
      mspId: m.mspId,
      isDefault: m.isDefault,
      recordDigest: createHash("sha256")
        .update(m.signed?.record ?? new Uint8Array(0))
        .digest(),
    })),
    optOutDigest: new Uint8Array(0),
  });
  const outcome: LookupOutcome = {
    kind: "answer",
    dpId: DP,
    ttlSeconds: 3600,
    mappings,
    seal: { statement, signature: sig },
  };
  return toBinary(
    pb.AnswerSchema,
    create(
      pb.AnswerSchema,
      answerToProto(outcome, DEFAULT_PARAMS, () => 0, 3600),
    ),
  );
}

// A few hundred distinct answers, reused round robin: their sizes are what the heap sees.
const wire = Array.from({ length: 256 }, (_, i) => wireAnswer(i));
const changeKeys = new Map([[DP, new Uint8Array(32).fill(3)]]);
const cache = createTtlCache<CachedAnswer>({
  maxEntries: answers,
  minTtlSeconds: 0,
  maxTtlSeconds: 86_400,
  staleWindowSeconds: 3_600,
  now: Date.now,
  indexKey: answerIndex(changeKeys),
});
const registry = { serial: 1n, indexOf: (id: string) => MSPS.indexOf(id) };

gc();
gc();
const before = process.memoryUsage();
for (let i = 0; i < answers; i++) {
  const csi = parseCsi(`tel:+4478${String(i).padStart(8, "0")}`);
  const answer = fromBinary(pb.AnswerSchema, wire[i % wire.length] as Uint8Array);
  cache.set(csi.uri, new CachedAnswer(outcomeFromAnswer(DP, answer), csi.key, false, registry), 3600);
}
gc();
gc();
const after = process.memoryUsage();
const per = (k: "heapUsed" | "external") => Math.round((after[k] - before[k]) / answers);
const wireBytes = Math.round(wire.reduce((n, w) => n + w.length, 0) / wire.length);
process.stdout.write(
  `${JSON.stringify({ answers: cache.size, mappingsPerAnswer: perAnswer, heapBytesPerAnswer: per("heapUsed"), externalBytesPerAnswer: per("external"), answerWireBytes: wireBytes })}\n`,
);
