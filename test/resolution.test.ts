// Resolution through root -> authoritative -> resolver over mutual TLS (R8, R14, R15, R23, D1).
import assert from "node:assert/strict";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { status } from "@grpc/grpc-js";
import {
  bitsSet,
  decodeSealStatement,
  decodeStatusDetails,
  pb,
  receivedAnswerFromProto,
  STATUS_DETAILS_KEY,
  sealSignatureValid,
} from "@mimi/core";
import { devTlsPaths } from "@mimi/devnet";
import { channelCredentials, loadTls } from "@mimi/rpc";
import { eventually, rejectsWith, scenario, useNetwork } from "./harness.js";

// Debug level, so the privacy scenario can see every request the DPs log.
const t = useNetwork(undefined, "debug");
const FOUND = pb.LookupStatus.FOUND;
const NOT_FOUND = pb.LookupStatus.NOT_FOUND;

scenario(t, "a tel CSI resolves through the eu authoritative, ordered by preference", async () => {
  const r = await t.resolve("tel:+44 7700 900123");
  assert.equal(r.answer?.status, FOUND);
  assert.deepEqual(r.answer?.dpIds, ["eu"]);
  assert.deepEqual(
    r.answer?.mappings.map((m) => [m.mspId, m.ssi, m.isDefault, m.tags]),
    [
      ["bluebird.example", "@amira:bluebird.example", true, ["Personal"]],
      ["wirechat.example", "wc-77310042", false, ["Business"]],
    ],
  );
  assert.equal(r.stale, false);
  assert.ok((r.answer?.ttlSeconds ?? 0) > 0);
});

scenario(t, "a +1 number resolves at us, and a mailto CSI by its domain hash", async () => {
  const tel = await t.resolve("tel:+12025550142");
  assert.deepEqual(tel.answer?.dpIds, ["us"]);
  assert.equal(tel.answer?.mappings[0]?.mspId, "parrot.example");
  const mail = await t.resolve("mailto:Alice@Example.ORG");
  assert.equal(mail.answer?.status, FOUND);
  assert.deepEqual(
    mail.answer?.mappings.map((m) => m.mspId),
    ["bluebird.example", "parrot.example"],
  );
});

scenario(t, "compact answers set one bit per MSP index; the MSP filter narrows", async () => {
  const compact = await t.resolve("tel:+447700900123", { compact: true });
  assert.equal(compact.answer?.mappings.length, 0);
  assert.deepEqual(bitsSet(compact.answer?.compactMspBits ?? new Uint8Array()), [0, 1]);
  const filtered = await t.resolve("tel:+447700900123", { mspFilter: ["wirechat.example"] });
  assert.deepEqual(
    filtered.answer?.mappings.map((m) => m.mspId),
    ["wirechat.example"],
  );
  const none = await t.resolve("tel:+447700900123", { mspFilter: ["parrot.example"] });
  assert.equal(none.answer?.status, NOT_FOUND);
});

scenario(t, "an unknown CSI is NOT_FOUND, a distinct answer rather than an error", async () => {
  const r = await t.resolve("tel:+447700900000");
  assert.equal(r.answer?.status, NOT_FOUND);
  assert.equal(r.answer?.mappings.length, 0);
  assert.deepEqual(r.answer?.dpIds, ["eu"]);
  // No delegation covers +81: the resolver answers from its registry copy, naming no DP.
  const undelegated = await t.resolve("tel:+81312345678");
  assert.equal(undelegated.answer?.status, NOT_FOUND);
  assert.deepEqual(undelegated.answer?.dpIds, []);
});

scenario(t, "a second lookup is served from the cache: the authoritative sees one request", async () => {
  const before = await t.lookupsServed("eu");
  const a = await t.resolve("tel:+33612345678");
  const b = await t.resolve("tel:+33612345678");
  assert.equal(a.answer?.status, FOUND);
  assert.deepEqual(b.answer?.mappings, a.answer?.mappings);
  assert.ok((b.answer?.ttlSeconds ?? 0) <= (a.answer?.ttlSeconds ?? 0));
  assert.equal((await t.lookupsServed("eu")) - before, 1n);
});

scenario(t, "NOT_FOUND is cached too", async () => {
  const before = await t.lookupsServed("us");
  for (let i = 0; i < 3; i++) assert.equal((await t.resolve("tel:+12025550199")).answer?.status, NOT_FOUND);
  assert.equal((await t.lookupsServed("us")) - before, 1n);
});

scenario(t, "concurrent identical misses cause one upstream request", async () => {
  const before = await t.lookupsServed("eu");
  const answers = await Promise.all(Array.from({ length: 25 }, () => t.resolve("tel:+4915123456789")));
  assert.ok(answers.every((a) => a.answer?.mappings[0]?.ssi === "parrot:jonas"));
  assert.equal((await t.lookupsServed("eu")) - before, 1n);
});

scenario(t, "malformed CSIs get INVALID_ARGUMENT with the reason, naming the field to fix", async () => {
  const cases: [string, RegExp][] = [
    ["", /empty/],
    ["tel:+44abc", /only digits/],
    ["tel:+9991234567", /country code/],
    ["mailto:alice@-x-.org", /domain/],
    ["x".repeat(1000), /longer than/],
  ];
  for (const [csi, reason] of cases) {
    const err = await rejectsWith(t.resolve(csi), status.INVALID_ARGUMENT, reason);
    // google.rpc.ErrorInfo and BadRequest, as a client in any language reads them.
    assert.equal(err.details?.reason, "INVALID_CSI");
    assert.deepEqual(
      err.details?.fields?.map((f) => f.field),
      ["csi"],
    );
    assert.match(err.details?.fields?.[0]?.description ?? "", reason);
  }
  const filter = await rejectsWith(
    t.resolve("tel:+447700900123", { mspFilter: [""] }),
    status.INVALID_ARGUMENT,
  );
  assert.equal(filter.details?.reason, "INVALID_FIELD");
  assert.deepEqual(filter.details?.fields, [
    { field: "options.msp_filter", description: "msp_filter entries must be 1 to 128 characters" },
  ]);
});

scenario(t, "an authoritative refuses a CSI outside its delegation", async () => {
  const n = t.net;
  const eu = n.channel(n.dps.eu.address, "resolver").client(pb.AuthoritativeService);
  await rejectsWith(
    eu.lookup({ csi: "tel:+12025550142" }),
    status.FAILED_PRECONDITION,
    /delegated to DP "us"/,
  );
  await rejectsWith(eu.lookup({ csi: "tel:+81312345678" }), status.FAILED_PRECONDITION, /no delegation/);
  const ok = await eu.lookup({ csi: "tel:+447700900123" });
  assert.equal(ok.answer?.status, FOUND);
});

scenario(
  t,
  "lookups streamed to a DP together are sealed together, each answer verifiable alone and in order",
  async () => {
    const n = t.net;
    const eu = n.channel(n.dps.eu.address, "resolver").client(pb.AuthoritativeService);
    // One found, the rest not, and one outside the DP's delegation (an item error in its place).
    const csis = Array.from(
      { length: 40 },
      (_, i) => `tel:+4477009${String(i ? 1000 + i : 123).padStart(5, "0")}`,
    );
    csis[20] = "tel:+12025550142";
    async function* requests() {
      for (const [i, csi] of csis.entries()) yield { requestId: BigInt(i + 1), csi };
    }
    const answers: pb.LookupStreamResponse[] = [];
    for await (const res of eu.lookupStream(requests())) {
      if (res.result.case !== "limits") answers.push(res);
      if (answers.length === csis.length) break;
    }
    assert.deepEqual(
      answers.map((a) => a.requestId),
      csis.map((_, i) => BigInt(i + 1)),
    );
    assert.match(
      answers[20]?.result.case === "error" ? answers[20].result.value.message : "",
      /delegated to DP "us"/,
    );
    const dpKey = n.signingKey("dp-eu").publicKey;
    const signatures = new Set<string>();
    for (const [i, a] of answers.entries()) {
      if (i === 20) continue;
      const seal =
        a.result.case === "response"
          ? receivedAnswerFromProto(a.result.value.answer as pb.Answer).seal
          : undefined;
      assert.ok(seal && sealSignatureValid(dpKey, seal), `answer ${i}`);
      assert.equal(decodeSealStatement(seal.statement).csi, csis[i]);
      signatures.add(Buffer.from(seal.signature).toString("hex"));
    }
    assert.equal(answers[0]?.result.case === "response" && answers[0].result.value.answer?.status, FOUND);
    // Written in one burst, they are read in a few turns of the DP's event loop, not one by one.
    assert.ok(signatures.size < 39, `${signatures.size} signatures for 39 answers`);
  },
);

scenario(
  t,
  "a malformed request on a DP's lookup stream ends it, after the answers to the requests before it",
  async () => {
    const creds = channelCredentials(loadTls(devTlsPaths(t.net.pkiDir, "resolver")));
    const raw = new grpc.Client(t.net.dps.eu.address, creds);
    const same = (b: Buffer) => b;
    try {
      const stream = raw.makeBidiStreamRequest(
        "/mimi.discovery.v1.AuthoritativeService/LookupStream",
        same,
        same,
      );
      const items: pb.LookupStreamResponse[] = [];
      stream.on("data", (b: Buffer) => items.push(fromBinary(pb.LookupStreamResponseSchema, b)));
      const ended = new Promise<grpc.ServiceError>((done) => stream.on("error", done));
      // Three lookups and a malformed message (field 2, the CSI, not UTF-8) in one burst: the
      // answers wait for their seals while the malformed message is read.
      for (const [i, csi] of ["tel:+447700900123", "tel:+447700901001", "tel:+447700901002"].entries()) {
        stream.write(
          Buffer.from(
            toBinary(
              pb.LookupStreamRequestSchema,
              create(pb.LookupStreamRequestSchema, { requestId: BigInt(i + 1), csi }),
            ),
          ),
        );
      }
      stream.write(Buffer.from([0x12, 0x02, 0xc3, 0x28]));
      const err = await ended;
      assert.equal(err.code, grpc.status.INVALID_ARGUMENT);
      assert.match(err.details, /malformed request message/);
      assert.deepEqual(
        items.filter((r) => r.result.case === "response").map((r) => r.requestId),
        [1n, 2n, 3n],
      );
    } finally {
      raw.close();
    }
  },
);

scenario(t, "a client without a certificate, or with one from another CA, is refused", async () => {
  const grpc = await import("@grpc/grpc-js");
  const { readFileSync } = await import("node:fs");
  const { join } = await import("node:path");
  const { openChannel } = await import("@mimi/rpc");
  const ca = readFileSync(join(t.net.pkiDir, "ca.pem"));
  const noCert = openChannel(t.net.resolver.address, grpc.credentials.createSsl(ca));
  try {
    await rejectsWith(
      noCert.client(pb.ResolverService).resolve({ csi: "tel:+447700900123" }, { timeoutMs: 3_000 }),
      status.UNAVAILABLE,
    );
  } finally {
    noCert.close();
  }
  const { ensureDevPki, devTlsPaths } = await import("@mimi/devnet");
  const { mkdtempSync } = await import("node:fs");
  const { tmpdir } = await import("node:os");
  const otherDir = mkdtempSync(join(tmpdir(), "mimi-other-ca-"));
  await ensureDevPki(otherDir, ["intruder"]);
  const p = devTlsPaths(otherDir, "intruder");
  const foreign = openChannel(
    t.net.resolver.address,
    grpc.credentials.createSsl(ca, readFileSync(p.keyFile), readFileSync(p.certFile)),
  );
  try {
    await rejectsWith(
      foreign.client(pb.ResolverService).resolve({ csi: "tel:+447700900123" }, { timeoutMs: 3_000 }),
      status.UNAVAILABLE,
    );
  } finally {
    foreign.close();
  }
});

scenario(t, "admin services refuse identities that are not admins", async () => {
  const n = t.net;
  const root = n.channel(n.root.address, "msp-bluebird").client(pb.RegistryAdminService);
  await rejectsWith(
    root.listDelegations({}),
    status.PERMISSION_DENIED,
    /needs a certificate with role admin/,
  );
  const dp = n.channel(n.dps.eu.address, "resolver").client(pb.AuthoritativeAdminService);
  await rejectsWith(dp.getStatus({}), status.PERMISSION_DENIED, /needs a certificate with role admin/);
});

scenario(t, "delegation edits made with the CLI are audited and reach the resolver", async () => {
  // +4420 moves to us: an uncached London number is now asked of us (which holds nothing for it).
  const add = await t.cli(["root", "delegation", "add", "+4420", "--dp", "us", "--root", t.net.root.address]);
  assert.equal(add.code, 0, add.stderr);
  await eventually(async () => {
    const r = await t.resolve("tel:+442079460000");
    assert.deepEqual(r.answer?.dpIds, ["us"]);
  });
  const list = await t.cli(["root", "delegation", "list", "--json", "--root", t.net.root.address]);
  const listed = JSON.parse(list.stdout) as { delegations: { key: string; dp: string }[] };
  assert.ok(listed.delegations.some((d) => d.key === "+4420" && d.dp === "us"));
  const upd = await t.cli([
    "root",
    "delegation",
    "update",
    "+4420",
    "--dp",
    "eu",
    "--root",
    t.net.root.address,
  ]);
  assert.equal(upd.code, 0, upd.stderr);
  await eventually(async () => {
    assert.deepEqual((await t.resolve("tel:+442079460001")).answer?.dpIds, ["eu"]);
  });
  const rm = await t.cli(["root", "delegation", "remove", "+4420", "--root", t.net.root.address]);
  assert.equal(rm.code, 0, rm.stderr);
  const again = await t.cli(["root", "delegation", "remove", "+4420", "--root", t.net.root.address]);
  assert.equal(again.code, 1);
  assert.match(again.stderr, /NOT_FOUND: e164:4420 is not delegated/);
  const audit = await t.cli(["root", "audit", "--limit", "3", "--root", t.net.root.address]);
  assert.match(audit.stdout, /admin\s+delegation \+4420 removed/);
  assert.match(audit.stdout, /admin\s+delegation \+4420 -> eu/);
});

scenario(t, "mimi resolve prints readable and JSON answers; a malformed CSI exits non-zero", async () => {
  const human = await t.cli(["resolve", "tel:+447700900123", "--resolver", t.net.resolver.address]);
  assert.equal(human.code, 0, human.stderr);
  assert.match(human.stdout, /FOUND/);
  assert.match(human.stdout, /bluebird\.example\s+@amira:bluebird\.example\s+\[Default, Personal\]/);
  const js = await t.cli([
    "resolve",
    "mailto:alice@example.org",
    "--json",
    "--resolver",
    t.net.resolver.address,
  ]);
  const parsed = JSON.parse(js.stdout) as {
    status: string;
    mappings: { msp: string; ssi: string; tags: string[] }[];
  };
  assert.equal(parsed.status, "FOUND");
  assert.deepEqual(parsed.mappings[1], {
    ...parsed.mappings[1],
    msp: "parrot.example",
    ssi: "parrot:alice",
    tags: ["Personal"],
  });
  const nf = await t.cli(["resolve", "tel:+447700900001", "--json", "--resolver", t.net.resolver.address]);
  assert.equal(JSON.parse(nf.stdout).status, "NOT_FOUND");
  const bad = await t.cli(["resolve", "tel:+44-not-a-number", "--resolver", t.net.resolver.address]);
  assert.notEqual(bad.code, 0);
  assert.match(bad.stderr, /invalid CSI: .*digits/);
});

// The resolver keeps using the endpoint that answered last, so this checks that an endpoint
// list change reaches it and a dead entry does not break lookups; failover from a dead
// endpoint is covered in failover.test.ts.
scenario(
  t,
  "a DP's new endpoint list reaches the resolver; a dead endpoint listed first does no harm",
  async () => {
    const eu = t.net.dps.eu.address;
    await t.putDp("eu", ["127.0.0.1:1", eu]);
    const show = await t.cli(["root", "show", "--json", "--root", t.net.root.address]);
    const snap = JSON.parse(show.stdout) as { dps: { id: string; endpoints: string[] }[] };
    assert.deepEqual(snap.dps.find((d) => d.id === "eu")?.endpoints, ["127.0.0.1:1", eu]);
    await eventually(async () => {
      const r = await t.resolve("tel:+447700900124");
      assert.equal(r.answer?.status, pb.LookupStatus.NOT_FOUND);
      assert.deepEqual(r.answer?.dpIds, ["eu"]);
    });
  },
);

scenario(t, "every server answers the standard health check; the root refers simple clients", async () => {
  const n = t.net;
  const servers: [string, string][] = [
    [n.root.address, "mimi.discovery.v1.RootService"],
    [n.dps.eu.address, "mimi.discovery.v1.AuthoritativeService"],
    [n.resolver.address, "mimi.discovery.v1.ResolverService"],
  ];
  for (const [address, service] of servers) {
    const health = n.channel(address, "cli").client(pb.Health);
    assert.equal((await health.check({})).status, pb.HealthCheckResponse_ServingStatus.SERVING, address);
    assert.equal(
      (await health.check({ service })).status,
      pb.HealthCheckResponse_ServingStatus.SERVING,
      service,
    );
    await rejectsWith(health.check({ service: "no.such.Service" }), status.NOT_FOUND);
  }
  const root = n.channel(n.root.address, "cli").client(pb.RootService);
  const ref = await root.refer({ csi: "tel:+12025550142" });
  assert.equal(ref.delegation?.dpId, "us");
  assert.deepEqual(ref.dp?.endpoints, [n.dps.us.address]);
  assert.equal((await root.refer({ csi: "tel:+81312345678" })).delegation, undefined);
  const refused = await rejectsWith(root.refer({ csi: "tel:12" }), status.INVALID_ARGUMENT);
  assert.equal(refused.details?.fields?.[0]?.field, "csi");
});

scenario(
  t,
  "DPs only ever see the resolver, and logs above debug hold no raw CSI (R9, privacy)",
  async () => {
    // Lookups of its own, asked by msp-bluebird, so the scenario also holds when run alone.
    for (const csi of [
      "tel:+447700900125",
      "tel:+447700900127",
      "tel:+12025550125",
      "mailto:dana@example.org",
    ])
      await t.resolve(csi);
    const records = t
      .logs()
      .split("\n")
      .map((l) => l.slice(l.indexOf(": ") + 2))
      .filter((l) => l.startsWith("{"))
      .map((l) => JSON.parse(l) as { level: number; msg: string; name: string; peer?: string });
    const dpLookups = records.filter((r) => r.name.startsWith("authoritative") && r.msg === "lookup");
    assert.ok(dpLookups.length >= 4, "the DPs logged their lookups at debug");
    const peers = new Set(dpLookups.map((r) => r.peer));
    assert.ok(!peers.has("msp-bluebird"), "no lookup reached a DP under the MSP's identity");
    assert.ok(peers.has("resolver"));
    const raw = /\+?447700900|alice@example|2025550142|4915123456789/;
    const leaks = records.filter((r) => r.level > 20 && raw.test(JSON.stringify(r)));
    assert.deepEqual(leaks, []);
  },
);

scenario(t, "ResolveStream answers every item once by id; a bad CSI fails only its own item", async () => {
  const n = t.net;
  const client = n.channel(n.resolver.address, "msp-wirechat").client(pb.ResolverService);
  const csis = [
    "tel:+447700900123",
    "tel:+44-not",
    "mailto:alice@example.org",
    "tel:+447700900126",
    ...Array.from({ length: 60 }, (_, i) => `tel:+1202555${String(1000 + i)}`),
  ];
  async function* requests() {
    for (const [i, csi] of csis.entries()) yield { requestId: BigInt(i), csi };
  }
  const seen = new Map<number, pb.ResolveStreamResponse>();
  for await (const res of client.resolveStream(requests(), { timeoutMs: 10_000 })) {
    assert.ok(!seen.has(Number(res.requestId)), "one response per request");
    seen.set(Number(res.requestId), res);
  }
  assert.equal(seen.size, csis.length);
  const answer = (i: number) => {
    const r = seen.get(i)?.result;
    assert.equal(r?.case, "response", `item ${i} has an answer`);
    return r?.case === "response" ? r.value.answer : undefined;
  };
  const error = (i: number) => {
    const r = seen.get(i)?.result;
    assert.equal(r?.case, "error", `item ${i} failed`);
    return r?.case === "error" ? r.value : undefined;
  };
  assert.equal(answer(0)?.status, pb.LookupStatus.FOUND);
  assert.equal(error(1)?.code, status.INVALID_ARGUMENT);
  assert.match(error(1)?.message ?? "", /digits/);
  assert.equal(error(1)?.reason, "INVALID_CSI");
  assert.deepEqual(answer(2)?.dpIds, ["us"]);
  assert.equal(answer(3)?.status, pb.LookupStatus.NOT_FOUND);
  for (let i = 4; i < csis.length; i++) assert.equal(answer(i)?.status, pb.LookupStatus.NOT_FOUND);
});

scenario(
  t,
  "a cached answer follows its delegation: a new range is visible at once, TTL-only edits keep the DP",
  async () => {
    // Regression: the resolver kept a cached "no DP" NOT_FOUND after +61 was delegated.
    const before = await t.resolve("tel:+61212345678");
    assert.deepEqual(before.answer?.dpIds, []);
    const add = await t.cli(["root", "delegation", "add", "+61", "--dp", "eu", "--root", t.net.root.address]);
    assert.equal(add.code, 0, add.stderr);
    await eventually(async () => {
      assert.deepEqual((await t.resolve("tel:+61212345678")).answer?.dpIds, ["eu"]);
    });
    // A TTL-only edit keeps the DP, so the cached +61 answer stays: the DP is not asked again.
    const served = await t.lookupsServed("eu");
    const update = ["root", "delegation", "update", "+61", "--ttl", "120", "--root", t.net.root.address];
    const ttl = await t.cli(update);
    assert.equal(ttl.code, 0, ttl.stderr);
    await t.resolverApplied(ttl.stdout);
    assert.deepEqual((await t.resolve("tel:+61212345678")).answer?.dpIds, ["eu"]);
    assert.equal(await t.lookupsServed("eu"), served);
    const list = JSON.parse(
      (await t.cli(["root", "delegation", "list", "--json", "--root", t.net.root.address])).stdout,
    ) as { delegations: { key: string; dp: string; ttlSeconds: number; federated: string[] }[] };
    assert.deepEqual(
      list.delegations.find((d) => d.key === "+61"),
      { id: "e164:61", key: "+61", dp: "eu", ttlSeconds: 120, federated: [] },
    );
  },
);

scenario(t, "bad admin input is refused with a reason", async () => {
  const n = t.net;
  const admin = n.channel(n.dps.eu.address, "admin").client(pb.AuthoritativeAdminService);
  await rejectsWith(
    admin.enrolMsp({ mspId: "bluebird.example", tlsIdentity: "msp-bluebird", enrolledUsers: 2n ** 64n - 1n }),
    status.INVALID_ARGUMENT,
    /enrolled_users/,
  );
  const timeout = await t.cli([
    "resolve",
    "tel:+447700900123",
    "--timeout",
    "abc",
    "--resolver",
    n.resolver.address,
  ]);
  assert.equal(timeout.code, 2);
  assert.match(timeout.stderr, /--timeout must be/);
});

scenario(
  t,
  "malformed request bytes get INVALID_ARGUMENT naming the fault, on unary and streaming calls",
  async () => {
    const creds = channelCredentials(loadTls(devTlsPaths(t.net.pkiDir, "msp-bluebird")));
    const raw = new grpc.Client(t.net.resolver.address, creds);
    const same = (b: Buffer) => b;
    // Field 1 (csi, a string) holding bytes that are not UTF-8; a varint cut short; a wrong wire type.
    const bad = [
      Buffer.from([0x0a, 0x02, 0xc3, 0x28]),
      Buffer.from([0x08, 0xff]),
      Buffer.from([0x0d, 1, 2, 3, 4]),
    ];
    try {
      for (const bytes of bad) {
        const err = await new Promise<grpc.ServiceError | undefined>((done) =>
          raw.makeUnaryRequest("/mimi.discovery.v1.ResolverService/Resolve", same, same, bytes, (e) =>
            done(e ?? undefined),
          ),
        );
        // Regression: these were INTERNAL "Error deserializing request".
        assert.equal(err?.code, grpc.status.INVALID_ARGUMENT, `${bytes.toString("hex")}: ${err?.message}`);
        assert.match(err?.details ?? "", /^malformed request message: /);
        assert.equal(
          decodeStatusDetails(err?.metadata.get(STATUS_DETAILS_KEY)[0] as Buffer)?.reason,
          "MALFORMED_MESSAGE",
        );
      }
      // A stream: an item whose request id can be read fails alone, as a bad CSI does, and the
      // stream goes on; one whose id cannot be read ends the call with the status.
      const stream = raw.makeBidiStreamRequest(
        "/mimi.discovery.v1.ResolverService/ResolveStream",
        same,
        same,
      );
      const items: pb.ResolveStreamResponse[] = [];
      const ended = new Promise<grpc.ServiceError>((done) => stream.on("error", done));
      const answered = new Promise<void>((done) =>
        stream.on("data", (b: Buffer) => {
          items.push(fromBinary(pb.ResolveStreamResponseSchema, b));
          if (items.length === 2) done();
        }),
      );
      // request_id 7, then field 2 (csi) holding bytes that are not UTF-8.
      stream.write(Buffer.from([0x08, 0x07, 0x12, 0x02, 0xc3, 0x28]));
      const good = create(pb.ResolveStreamRequestSchema, { requestId: 8n, csi: "tel:+447700900123" });
      stream.write(Buffer.from(toBinary(pb.ResolveStreamRequestSchema, good)));
      await Promise.race([
        answered,
        ended.then((e) => assert.fail(`the stream ended before both items were answered: ${e.message}`)),
      ]);
      const [first, second] = [...items].sort((a, b) => Number(a.requestId - b.requestId));
      assert.equal(first?.requestId, 7n);
      assert.equal(first?.result.case, "error");
      if (first?.result.case === "error") {
        assert.equal(first.result.value.code, grpc.status.INVALID_ARGUMENT);
        assert.equal(first.result.value.reason, "MALFORMED_MESSAGE");
        assert.match(first.result.value.message, /^malformed request message: /);
      }
      assert.equal(second?.requestId, 8n);
      assert.equal(second?.result.case, "response");
      // Field 1 with the wrong wire type: no request id to answer under.
      stream.write(bad[0] as Buffer);
      const err = await ended;
      assert.equal(err.code, grpc.status.INVALID_ARGUMENT);
      assert.match(err.details, /malformed request message/);
      // The server is unharmed.
      assert.equal((await t.resolve("tel:+447700900123")).answer?.status, pb.LookupStatus.FOUND);
    } finally {
      raw.close();
    }
  },
);

scenario(
  t,
  "every server's ops listener answers probes, and its metrics count the calls it served",
  async () => {
    const net = t.net;
    const scrape = async (port: number, path = "/metrics") => {
      const res = await fetch(`http://127.0.0.1:${port}${path}`);
      return { status: res.status, body: await res.text() };
    };
    for (const p of [net.root, net.dps.eu, net.dps.us, net.resolver]) {
      assert.ok(p.opsPort > 0, `${p.name} has an ops listener`);
      assert.equal((await scrape(p.opsPort, "/healthz")).status, 200);
      assert.deepEqual(await scrape(p.opsPort, "/readyz"), { status: 200, body: "ready\n" });
    }
    const labels = 'grpc_type="unary",grpc_service="mimi.discovery.v1.ResolverService",grpc_method="Resolve"';
    const count = async (code: string) => {
      const m = new RegExp(`grpc_server_handled_total\\{${labels},grpc_code="${code}"\\} (\\d+)`).exec(
        (await scrape(net.resolver.opsPort)).body,
      );
      return Number(m?.[1] ?? 0);
    };
    const value = async (port: number, series: string) => {
      const line = (await scrape(port)).body.split("\n").find((l) => l.startsWith(`${series} `));
      return Number(line?.split(" ")[1] ?? Number.NaN);
    };
    await t.resolve("tel:+447700900123"); // cached from here on
    const [ok, bad] = [await count("OK"), await count("INVALID_ARGUMENT")];
    const streams = async () => {
      const m =
        /grpc_server_handled_total\{grpc_type="bidi_stream",grpc_service="mimi.discovery.v1.ResolverService",grpc_method="ResolveStream",grpc_code="OK"\} (\d+)/.exec(
          (await scrape(net.resolver.opsPort)).body,
        );
      return Number(m?.[1] ?? 0);
    };
    const streamsBefore = await streams();
    const stream = net.channel(net.resolver.address, "msp-bluebird").client(pb.ResolverService);
    async function* two() {
      yield { requestId: 1n, csi: "tel:+447700900123" };
      yield { requestId: 2n, csi: "tel:+447700900123" };
    }
    for await (const _ of stream.resolveStream(two(), { timeoutMs: 10_000 })) {
      // Each item is answered; the stream ends OK.
    }
    const hits = await value(net.resolver.opsPort, "mimi_resolver_cache_hits_total");
    const dpLookups = await value(net.dps.eu.opsPort, "mimi_dp_lookups_total");
    // Every DP lookup is read from its answer cache (hit) or its store (miss).
    const dpRead = async () =>
      (await value(net.dps.eu.opsPort, 'mimi_dp_answer_cache_lookups_total{result="hit"}')) +
      (await value(net.dps.eu.opsPort, 'mimi_dp_answer_cache_lookups_total{result="miss"}'));
    const dpReadBefore = await dpRead();
    const dpOk =
      (await value(net.resolver.opsPort, 'mimi_resolver_dp_lookups_total{dp="eu",result="ok"}')) || 0;
    await t.resolve("tel:+447700900199"); // a miss: the eu DP is asked
    for (let i = 0; i < 3; i++) await t.resolve("tel:+447700900123");
    await assert.rejects(t.resolve("not a number"));
    // A rendering of the metrics serves scrapes for a second: poll until the new one shows.
    await eventually(async () => {
      assert.equal(await count("OK"), ok + 4);
      assert.equal(await count("INVALID_ARGUMENT"), bad + 1);
      assert.ok((await value(net.resolver.opsPort, "mimi_resolver_cache_hits_total")) >= hits + 3);
      assert.equal(await value(net.dps.eu.opsPort, "mimi_dp_lookups_total"), dpLookups + 1);
      assert.equal(await dpRead(), dpReadBefore + 1);
      assert.ok(Number.isInteger(await value(net.dps.eu.opsPort, "mimi_dp_answer_cache_entries")));
      const admissions = 'mimi_dp_answer_cache_admissions_total{result="first_sight"}';
      assert.ok(Number.isInteger(await value(net.dps.eu.opsPort, admissions)));
      assert.equal(await streams(), streamsBefore + 1);
      // The miss went to eu: counted, and timed, per DP.
      assert.equal(
        await value(net.resolver.opsPort, 'mimi_resolver_dp_lookups_total{dp="eu",result="ok"}'),
        dpOk + 1,
      );
    });
    assert.ok((await value(net.root.opsPort, "mimi_registry_serial")) > 0);
    // No label carries a CSI or anything per user: only services, methods, types and codes.
    const body = (await scrape(net.resolver.opsPort)).body;
    assert.doesNotMatch(body, /7700900123|msp-bluebird|tel:/);
    assert.match(body, /mimi_build_info\{role="resolver"/);
    assert.match(body, /mimi_resolver_dp_lookup_duration_seconds_count\{dp="eu"\} [1-9]/);
    assert.match(body, /mimi_signature_checks_total\{how="computed"\} [1-9]/);
  },
);

scenario(t, "every binary tells its version", async () => {
  const { execFileSync } = await import("node:child_process");
  const { fileURLToPath } = await import("node:url");
  for (const role of ["root", "authoritative", "resolver"]) {
    const main = fileURLToPath(new URL(`../packages/${role}/dist/main.js`, import.meta.url));
    assert.match(
      execFileSync(process.execPath, [main, "--version"]).toString(),
      new RegExp(`^mimi ${role} \\d+\\.\\d+\\.\\d+\\n$`),
    );
  }
});

scenario(
  t,
  "--check passes a good config and names what is wrong with a bad one, binding nothing",
  async () => {
    const { execFileSync } = await import("node:child_process");
    const { readFileSync, writeFileSync } = await import("node:fs");
    const { join } = await import("node:path");
    const { fileURLToPath } = await import("node:url");
    const main = fileURLToPath(new URL("../packages/resolver/dist/main.js", import.meta.url));
    const good = join(t.net.dir, "config", "resolver.json");
    const check = (file: string) => {
      try {
        return {
          code: 0,
          out: execFileSync(process.execPath, [main, "--check", "--config", file], {
            stdio: "pipe",
          }).toString(),
        };
      } catch (err) {
        const e = err as { status: number; stderr: Buffer };
        return { code: e.status, out: e.stderr.toString() };
      }
    };
    const ok = check(good);
    assert.equal(ok.code, 0, ok.out);
    assert.match(ok.out, /resolver\.json: ok \(resolver; port \d+, ops port \d+\)/);
    const config = JSON.parse(readFileSync(good, "utf8")) as Config;
    type Config = { tls: { keyFile: string }; rootPublicKey: string };
    const bad = (name: string, change: (c: Config) => void) => {
      const c = structuredClone(config);
      change(c);
      const file = join(t.net.dir, "config", `check-${name}.json`);
      writeFileSync(file, JSON.stringify(c));
      return check(file);
    };
    const mismatched = bad("tls", (c) => {
      c.tls.keyFile = c.tls.keyFile.replace("resolver-key.pem", "root-key.pem");
    });
    assert.equal(mismatched.code, 1);
    assert.match(mismatched.out, /TLS material .* does not load/);
    const noKey = bad("root-key", (c) => {
      c.rootPublicKey = join(t.net.dir, "missing.pub");
    });
    assert.equal(noKey.code, 1);
    assert.match(noKey.out, /missing\.pub/);
    const unknown = bad("unknown", (c) => {
      (c as unknown as Record<string, unknown>).upstreamTimeoutMz = 5;
    });
    assert.equal(unknown.code, 1);
    assert.match(unknown.out, /upstreamTimeoutMz/);
    // A DP's signing key is checked against the registry copy it saved: another key is caught
    // before the DP starts answering what resolvers would refuse.
    const { existsSync } = await import("node:fs");
    const dpMain = fileURLToPath(new URL("../packages/authoritative/dist/main.js", import.meta.url));
    const dpGood = join(t.net.dir, "config", "dp-eu.json");
    const dpConfig = JSON.parse(readFileSync(dpGood, "utf8")) as { dataDir: string; signingKey: string };
    await eventually(async () => assert.ok(existsSync(join(dpConfig.dataDir, "registry.bin"))));
    const dpCheck = (file: string) => {
      try {
        execFileSync(process.execPath, [dpMain, "--check", "--config", file], { stdio: "pipe" });
        return { code: 0, out: "" };
      } catch (err) {
        const e = err as { status: number; stderr: Buffer };
        return { code: e.status, out: e.stderr.toString() };
      }
    };
    assert.equal(dpCheck(dpGood).code, 0);
    const otherKey = join(t.net.dir, "config", "check-dp-key.json");
    writeFileSync(
      otherKey,
      JSON.stringify({ ...dpConfig, signingKey: dpConfig.signingKey.replace("dp-eu", "dp-us") }),
    );
    const wrongKey = dpCheck(otherKey);
    assert.equal(wrongKey.code, 1);
    assert.match(wrongKey.out, /publishes another signing key for DP "eu"/);
  },
);

scenario(
  t,
  "SIGTERM makes a server not ready at once, while it goes on answering for its lame-duck period",
  async () => {
    const { startResolver } = await import("@mimi/devnet");
    const proc = await startResolver(t.net, {
      name: "resolver-lame-duck",
      rootEndpoints: [t.net.root.address],
      overrides: { lameDuckSeconds: 60, ops: { port: 0 } },
    });
    await eventually(async () => {
      assert.equal((await fetch(`http://127.0.0.1:${proc.opsPort}/readyz`)).status, 200);
    });
    const stopped = proc.stop(20_000);
    await eventually(async () => {
      const res = await fetch(`http://127.0.0.1:${proc.opsPort}/readyz`);
      assert.deepEqual([res.status, await res.text()], [503, "not ready: shutting down\n"]);
    });
    // Still answering: callers that have not moved away yet are served.
    const r = await t.net
      .channel(proc.address, "msp-bluebird")
      .client(pb.ResolverService)
      .resolve({ csi: "tel:+447700900123" });
    assert.equal(r.answer?.status, FOUND);
    // A second signal ends the lame duck at once (an operator's second Ctrl-C, a launcher gone).
    process.kill(proc.pid as number, "SIGTERM");
    await stopped;
    assert.ok(proc.lines.some((l) => l.includes("lame duck: not ready, still serving")));
    assert.ok(proc.lines.some((l) => l.includes("lame duck ended early by another stop signal")));
  },
);

scenario(t, "mimi health asks a server whether it serves, and fails when it does not", async () => {
  const ok = await t.cli(["health", t.net.resolver.address]);
  assert.equal(ok.code, 0, ok.stderr);
  assert.equal(ok.stdout, `${t.net.resolver.address}: SERVING\n`);
  const dp = await t.cli([
    "health",
    t.net.dps.eu.address,
    "--service",
    "mimi.discovery.v1.AuthoritativeService",
  ]);
  assert.equal(dp.code, 0, dp.stderr);
  const unknown = await t.cli(["health", t.net.root.address, "--service", "no.such.Service"]);
  assert.equal(unknown.code, 1);
  assert.match(unknown.stderr, /NOT_FOUND|unknown service/i);
});

scenario(
  t,
  "the local network keeps running when a server dies, and restarts it on its port when asked",
  async () => {
    const { PassThrough } = await import("node:stream");
    const { supervise, waitUntilServing } = await import("@mimi/devnet");
    const input = new PassThrough();
    const said: string[] = [];
    const us = t.net.dps.us;
    const port = us.port;
    const stopWatching = supervise([t.net.dps.us], { input, write: (text) => said.push(text) });
    try {
      process.kill(us.pid as number, "SIGKILL");
      await eventually(async () =>
        assert.match(said.join(""), /dp-us exited unexpectedly .*the others keep running/),
      );
      // The rest still answer: the eu DP's numbers resolve.
      assert.equal((await t.resolve("tel:+447700900123")).answer?.status, FOUND);
      input.write("restart\n");
      await eventually(async () => assert.match(said.join(""), /dp-us restarted at 127\.0\.0\.1:\d+/));
      assert.equal(us.port, port, "on the port it had");
      await waitUntilServing(t.net, us);
      // The resolver reconnects on its own (its channel's backoff) and asks the DP again.
      await eventually(async () => assert.ok((await t.resolve("tel:+12025550142")).answer), 60_000);
    } finally {
      stopWatching();
      input.end();
    }
  },
);
