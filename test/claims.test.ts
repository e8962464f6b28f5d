// Claims across real processes: codes by email through a real SMTP server and by SMS through
// a local HTTP gateway, MSPs identified by their certificates, answers verified end to end
// at the resolver and again by the test against the root-signed registry, notices streamed.
import assert from "node:assert/strict";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { after } from "node:test";
import { status } from "@grpc/grpc-js";
import { bulkRegister, completeChallenge, startAction, startClaim } from "@mimi/client";
import {
  bulkRecord,
  type DiscoveryError,
  generateSigningKey,
  loadPublicKey,
  mappingFromProto,
  mappingProblem,
  pb,
  registryKeys,
  registrySignatureValid,
  snapshotFromProto,
} from "@mimi/core";
import { devSigningKeyPaths } from "@mimi/devnet";
import { SMTPServer } from "smtp-server";
import { eventually, metricValue, rejectsWith, scenario, useNetwork } from "./harness.js";

// The CSI's own channels, played by the test: every code the DPs send lands here.
const mail: { to: string; body: string }[] = [];
const smtp = new SMTPServer({
  authOptional: true,
  disabledCommands: ["STARTTLS"],
  logger: false,
  onData(stream, session, cb) {
    const chunks: Buffer[] = [];
    stream.on("data", (c: Buffer) => chunks.push(c));
    stream.on("end", () => {
      mail.push({
        to: session.envelope.rcptTo[0]?.address ?? "",
        body: Buffer.concat(chunks).toString("utf8"),
      });
      cb();
    });
  },
});
await new Promise<void>((r) => smtp.listen(0, "127.0.0.1", r));
const sms: { to: string; text: string }[] = [];
const gateway = createServer((req, res) => {
  let body = "";
  req.on("data", (c) => (body += c));
  req.on("end", () => {
    if (req.headers.authorization !== "Bearer gw-token") {
      res.writeHead(401).end();
      return;
    }
    sms.push(JSON.parse(body) as { to: string; text: string });
    res.writeHead(202).end();
  });
});
await new Promise<void>((r) => gateway.listen(0, "127.0.0.1", r));
after(() => {
  smtp.close(() => {});
  gateway.close();
});

const t = useNetwork({
  authoritative: {
    delivery: {
      email: {
        kind: "smtp",
        host: "127.0.0.1",
        port: (smtp.server.address() as AddressInfo).port,
        tls: "opportunistic",
        from: "MIMI codes <codes@dp.test>",
      },
      tel: {
        kind: "http",
        url: `http://127.0.0.1:${(gateway.address() as AddressInfo).port}/sms`,
        token: "gw-token",
      },
    },
    sweepIntervalSeconds: 1,
  },
});

/** The newest code that reached `to` by mail or SMS, once one has. */
const codeFrom = (channel: "mail" | "sms", to: string) =>
  eventually(async () => {
    const hit =
      channel === "mail"
        ? mail.filter((m) => m.to === to).at(-1)?.body
        : sms.filter((m) => m.to === to).at(-1)?.text;
    const code = hit && /\b(\d{6})\b/.exec(hit)?.[1];
    if (!code) throw new Error(`no code reached ${to}`);
    return code;
  });

/** The MSP's view: a ClaimService client under its own certificate and its signing key. */
const asMsp = (identity: "msp-bluebird" | "msp-wirechat" | "msp-parrot", dp: "eu" | "us" = "eu") => ({
  api: t.net.channel(t.net.dps[dp].address, identity).client(pb.ClaimService),
  key: t.net.signingKey(identity),
  /** The MSP's registry id (demo.json) and the DP asked: every statement it signs must name both. */
  party: { mspId: `${identity.slice(4)}.example`, dpId: dp },
});

/** Verifies an answer as an MSP would: the pinned root key, the signed registry, each mapping. */
const verifyAtMsp = async (csi: string, answer: pb.Answer | undefined) => {
  const snap = (await t.net.channel(t.net.root.address, "cli").client(pb.RootService).getSnapshot({}))
    .snapshot;
  const data = snapshotFromProto(snap as pb.RegistrySnapshot);
  const rootKey = loadPublicKey(devSigningKeyPaths(t.net.pkiDir, "root").publicKeyFile);
  assert.ok(
    data.seal !== undefined && registrySignatureValid(data, data.seal, rootKey),
    "registry signed by the root",
  );
  const byId = {
    dp: (id: string) => data.dps.find((d) => d.id === id),
    msp: (id: string) => data.msps.find((m) => m.id === id),
  };
  for (const m of answer?.mappings ?? []) {
    assert.equal(mappingProblem(csi, mappingFromProto(m), registryKeys(byId), Date.now()), undefined);
  }
};

scenario(
  t,
  "an email claim: the code travels by SMTP, the MSP never sees it, the answer verifies end to end",
  async () => {
    const csi = "mailto:carol@example.net";
    const user = generateSigningKey();
    // example.net hashes into one of the two email ranges; find which DP serves it.
    const refer = await t.net.channel(t.net.root.address, "cli").client(pb.RootService).refer({ csi });
    const dp = refer.delegation?.dpId === "us" ? "us" : "eu";
    const msp = asMsp("msp-bluebird", dp);
    const ch = await startClaim(
      msp.api,
      msp.party,
      { csi, ssi: "@carol:bluebird.example", tags: ["Personal"], makeDefault: true },
      user,
    );
    assert.equal(ch.proofMethod, "email-code");
    const code = await codeFrom("mail", "carol@example.net");
    // The statement the MSP signs never carries the code.
    assert.ok(!Buffer.from(ch.statement).toString("latin1").includes(code), "the statement holds no code");
    const done = await completeChallenge(msp.api, ch, code, user, msp.key);
    assert.equal(done.hasPrecedence, true);
    const a = (await t.resolve(csi)).answer;
    assert.equal(a?.status, pb.LookupStatus.FOUND);
    assert.equal(a?.mappings[0]?.ssi, "@carol:bluebird.example");
    assert.equal(a?.mappings[0]?.proofMethod, "email-code");
    assert.ok((a?.mappings[0]?.signed?.userSignature.length ?? 0) > 0);
    await verifyAtMsp(csi, a);
  },
);

scenario(
  t,
  "an SMS claim through the HTTP gateway; wrong codes count, and another MSP cannot use the challenge",
  async () => {
    const csi = "tel:+447700900555";
    const user = generateSigningKey();
    const wc = asMsp("msp-wirechat");
    const sentSeries = 'mimi_dp_codes_sent_total{channel="sms-http"}';
    const sent = (await metricValue(t.net.dps.eu.opsPort, sentSeries)) || 0;
    // A bad field of a request is named, as a client in any language reads it (BadRequest).
    const claimWith = (c: string, ssi: string) =>
      wc.api.startChallenge({
        csi: c,
        action: { case: "claim", value: { ssi, userPublicKey: user.publicKey } },
      });
    const badCsi = await rejectsWith(claimWith("tel:+44abc", "wc-555"), status.INVALID_ARGUMENT, /digits/);
    assert.equal(badCsi.details?.reason, "INVALID_CSI");
    assert.equal(badCsi.details?.fields?.[0]?.field, "csi");
    const badSsi = await rejectsWith(claimWith("tel:+447700900556", " "), status.INVALID_ARGUMENT, /ssi/);
    assert.equal(badSsi.details?.reason, "INVALID_FIELD");
    assert.equal(badSsi.details?.fields?.[0]?.field, "claim.ssi");
    const ch = await startClaim(wc.api, wc.party, { csi, ssi: "wc-555", makeDefault: true }, user);
    const code = await codeFrom("sms", "+447700900555");
    // The ops listener counts the code by its channel (and names no number).
    await eventually(async () => assert.equal(await metricValue(t.net.dps.eu.opsPort, sentSeries), sent + 1));
    // R21: the challenge belongs to the MSP of the certificate that opened it.
    const other = asMsp("msp-parrot");
    await rejectsWith(
      completeChallenge(other.api, ch, code, user, other.key),
      status.NOT_FOUND,
      /no challenge/,
    );
    const wrong = code === "000000" ? "111111" : "000000";
    const wrongCode = await rejectsWith(
      completeChallenge(wc.api, ch, wrong, user, wc.key),
      status.INVALID_ARGUMENT,
      /wrong code; 4 attempt/,
    );
    // What to fix and how many tries are left, in machine-readable form.
    assert.equal(wrongCode.details?.reason, "PROOF_FAILED");
    assert.equal(wrongCode.details?.fields?.[0]?.field, "code");
    assert.equal(wrongCode.details?.metadata?.attempts_left, "4");
    // The MSP signs with a key that is not its enrolled one: refused, challenge stays usable.
    const badSignature = await rejectsWith(
      completeChallenge(wc.api, ch, code, user, generateSigningKey()),
      status.INVALID_ARGUMENT,
      /msp_signature/,
    );
    assert.equal(badSignature.details?.fields?.[0]?.field, "msp_signature");
    assert.equal(badSignature.details?.metadata?.attempts_left, "3");
    await completeChallenge(wc.api, ch, code, user, wc.key);
    await rejectsWith(
      completeChallenge(wc.api, ch, code, user, wc.key),
      status.FAILED_PRECONDITION,
      /already completed/,
    );
    const a = (await t.resolve(csi)).answer;
    assert.equal(a?.mappings[0]?.proofMethod, "sms-code");
    await verifyAtMsp(csi, a);
  },
);

scenario(
  t,
  "a conflicting claim notifies the old MSP's stream; uncontested, the new claim takes precedence",
  async () => {
    // The demo's bulk-registered +33 number: a code claim is a stricter proof than bulk, so use two claims.
    const csi = "tel:+447700900556";
    const first = asMsp("msp-parrot");
    const u1 = generateSigningKey();
    await completeChallenge(
      first.api,
      await startClaim(first.api, first.party, { csi, ssi: "parrot:old", makeDefault: true }, u1),
      await codeFrom("sms", "+447700900556"),
      u1,
      first.key,
    );
    sms.length = 0;
    const watch = new AbortController();
    const notices: pb.Notice[] = [];
    const watching = (async () => {
      try {
        for await (const r of first.api.watchNotices({ sinceSeq: 0n }, { signal: watch.signal })) {
          if (r.notice) notices.push(r.notice);
        }
      } catch {
        // Cancelled at the end of the test.
      }
    })();
    const second = asMsp("msp-bluebird");
    const u2 = generateSigningKey();
    const openConflicts = () => metricValue(t.net.dps.eu.opsPort, "mimi_dp_conflicts_open");
    const open0 = await openConflicts();
    const ch = await startClaim(second.api, second.party, { csi, ssi: "@new", makeDefault: true }, u2);
    const r = await completeChallenge(second.api, ch, await codeFrom("sms", "+447700900556"), u2, second.key);
    assert.equal(r.hasPrecedence, false);
    assert.deepEqual(
      r.existingMsps.map((m) => m.id),
      ["parrot.example"],
    );
    assert.ok(r.conflictId);
    // Within the window (7 days) the old mapping keeps precedence and the claim is withheld, so
    // no answer tells parrot (or anyone) who claimed; parrot hears of the conflict by a notice.
    const before = (await t.resolve(csi)).answer;
    assert.deepEqual(
      before?.mappings.map((m) => m.mspId),
      ["parrot.example"],
    );
    const opened = await eventually(async () => {
      const n = notices.find((x) => x.kind === pb.NoticeKind.CONFLICT_OPENED);
      assert.ok(n, "parrot heard of the conflict");
      return n;
    });
    assert.equal(opened.conflictId, r.conflictId);
    await eventually(async () => assert.equal(await openConflicts(), open0 + 1));
    assert.equal(opened.ssi, "parrot:old");
    // The window lapses: the DP's clock moves past the deadline and its sweep (every second)
    // settles the conflict. Its answer changes at once, the resolver's copy by its TTL: ask the DP.
    const dp = t.net.channel(t.net.dps.eu.address, "resolver").client(pb.AuthoritativeService);
    try {
      t.advanceClock(t.net.dps.eu, 8 * 86_400_000);
      await eventually(async () => {
        const order = ((await dp.lookup({ csi })).answer?.mappings ?? []).map(
          (m) => `${m.mspId}${m.isDefault ? "*" : ""}`,
        );
        assert.deepEqual(order, ["bluebird.example*", "parrot.example"]);
      });
      await eventually(async () => assert.equal(await openConflicts(), open0));
    } finally {
      t.resetClocks();
    }
    await eventually(async () => assert.ok(notices.some((n) => n.kind === pb.NoticeKind.PRECEDENCE_LOST)));
    // Resume after the first notice: exactly the later ones come back, then the stream waits.
    const resumed: bigint[] = [];
    const stop = new AbortController();
    const resuming = (async () => {
      try {
        for await (const x of first.api.watchNotices(
          { sinceSeq: notices[0]?.seq ?? 0n },
          { signal: stop.signal },
        )) {
          resumed.push(x.notice?.seq ?? 0n);
        }
      } catch {
        // Cancelled below.
      }
    })();
    // Both streams end up with the same notices: the live one's after its first.
    const later = () => notices.slice(1).map((n) => n.seq);
    try {
      await eventually(async () => {
        assert.ok(later().length > 0);
        assert.deepEqual(resumed, later());
      });
    } finally {
      stop.abort();
      await resuming;
    }
    watch.abort();
    await watching;
  },
);

scenario(t, "opting out answers OPTED_OUT, distinct from NOT_FOUND, through the resolver", async () => {
  const csi = "tel:+4915123456789"; // a demo mapping at parrot, registered in bulk
  const holder = generateSigningKey();
  const msp = asMsp("msp-wirechat");
  const ch = await startAction(msp.api, msp.party, csi, { optOut: true }, holder);
  const r = await completeChallenge(msp.api, ch, await codeFrom("sms", "+4915123456789"), holder, msp.key);
  // Parrot's mapping is another holder's, but a bulk one: the holder's code proof is stricter,
  // so it goes at once (parrot cannot veto the opt-out with its own key).
  assert.equal(r.removed, 1);
  assert.equal(r.conflictId, "");
  const dp = t.net.channel(t.net.dps.eu.address, "resolver").client(pb.AuthoritativeService);
  assert.equal((await dp.lookup({ csi })).answer?.status, pb.LookupStatus.OPTED_OUT);
  // A CSI never looked up before goes through the resolver fresh.
  const fresh = "tel:+447700900557";
  const ch2 = await startAction(msp.api, msp.party, fresh, { optOut: true }, holder);
  await completeChallenge(msp.api, ch2, await codeFrom("sms", "+447700900557"), holder, msp.key);
  assert.equal((await t.resolve(fresh)).answer?.status, pb.LookupStatus.OPTED_OUT);
  // The denial is the holder's own choice, and anyone holding the root key can check it.
  const v = await t.cli([
    "resolve",
    fresh,
    "--verify",
    "--resolver",
    t.net.resolver.address,
    "--root",
    t.net.root.address,
  ]);
  assert.equal(v.code, 0, v.stderr);
  assert.match(v.stdout, /verified: OPTED_OUT sealed by DP "eu", with the holder's signed opt-out/);
});

scenario(
  t,
  "bulk registration needs bulk trust and the caller's own MSP; the provider feed removes outdated mappings",
  async () => {
    const parrot = asMsp("msp-parrot");
    // The demo enrols every MSP with bulk trust; records for another MSP are refused.
    const now = Date.now();
    const rec = bulkRecord(
      {
        csi: "tel:+447700900560",
        mspId: "bluebird.example",
        ssi: "x",
        defaultRequested: false,
        tags: [],
        createdAtMs: now,
        dpId: "eu",
        expiresAtMs: now + 86_400_000,
      },
      parrot.key,
    );
    await rejectsWith(
      bulkRegister(parrot.api, { sessionId: "wrong-msp", total: 1, recordsFrom: () => [rec] }),
      status.PERMISSION_DENIED,
      /only its own users/,
    );
    const admin = t.net.channel(t.net.dps.eu.address, "admin").client(pb.AuthoritativeAdminService);
    async function* feed() {
      yield {
        entries: [
          { csi: "tel:+447700900123", event: pb.FeedEvent.REASSIGNED, effectiveAtMs: BigInt(Date.now()) },
          {
            csi: "tel:+33612345678",
            event: pb.FeedEvent.PORTED,
            effectiveAtMs: BigInt(Date.now()),
            donorMspId: "parrot.example",
          },
        ],
      };
    }
    const r = await admin.ingestProviderFeed(feed());
    assert.equal(
      r.mappingsRemoved,
      2n,
      "both demo mappings of +447700900123; the +33 mapping is at wirechat, not the donor",
    );
    const dp = t.net.channel(t.net.dps.eu.address, "resolver").client(pb.AuthoritativeService);
    assert.equal((await dp.lookup({ csi: "tel:+447700900123" })).answer?.status, pb.LookupStatus.NOT_FOUND);
    assert.equal((await dp.lookup({ csi: "tel:+33612345678" })).answer?.status, pb.LookupStatus.FOUND);
    // A bad message fails the feed naming its field (BadRequest); the messages before it stay
    // applied, each a write of its own.
    async function* badSecond() {
      yield { entries: [{ csi: "tel:+447700900124", event: pb.FeedEvent.DISCONNECTED, effectiveAtMs: 1n }] };
      yield { entries: [{ csi: "tel:+447700900125", event: 99 as pb.FeedEvent, effectiveAtMs: 1n }] };
    }
    const bad = await rejectsWith(
      admin.ingestProviderFeed(badSecond()),
      status.INVALID_ARGUMENT,
      /message 1 \(counting from 0\) refused; the 1 entries before it are applied/,
    );
    assert.deepEqual(
      bad.details?.fields?.map((f) => f.field),
      ["entries[0].event"],
    );
    const notAdmin = t.net.channel(t.net.dps.eu.address, "msp-parrot").client(pb.AuthoritativeAdminService);
    await rejectsWith(
      notAdmin.ingestProviderFeed(feed()),
      status.PERMISSION_DENIED,
      /needs a certificate with role admin/,
    );
  },
);

scenario(
  t,
  "a code flood to one number stops at each MSP's budget and at the shared one; the holder claims later",
  async () => {
    const number = "+447700900444";
    const csi = `tel:${number}`;
    const user = generateSigningKey();
    const bluebird = asMsp("msp-bluebird");
    const wirechat = asMsp("msp-wirechat");
    const start = (m: ReturnType<typeof asMsp>, ssi: string) =>
      startClaim(m.api, m.party, { csi, ssi, tags: [], makeDefault: false }, user);
    const texts = () => sms.filter((m) => m.to === number).length;
    // Regression: 200 StartChallenge calls for one number sent 200 codes. Now each MSP may send
    // 3 an hour, and all MSPs together 10.
    const parrot = asMsp("msp-parrot");
    const refusedHour = async () =>
      (await metricValue(
        t.net.dps.eu.opsPort,
        'mimi_dp_claim_refusals_total{reason="CODE_LIMIT_CSI_HOUR"}',
      )) || 0;
    const refusedBefore = await refusedHour();
    for (let i = 0; i < 3; i++) await start(bluebird, "@flood:bluebird.example");
    const err = await rejectsWith(
      start(bluebird, "@flood:bluebird.example"),
      status.RESOURCE_EXHAUSTED,
      /the budget of 3 codes per number per hour is spent; try again in 1200 s/,
    );
    // The rich error model: when to retry and which budget, for clients in any language.
    assert.equal(err.details?.retryAfterMs, 1_200_000);
    assert.deepEqual(err.details?.quota, [{ subject: "csi", description: "3 codes per number per hour" }]);
    assert.equal(err.details?.reason, "CODE_LIMIT_CSI_HOUR");
    // Another MSP is not held by bluebird's budget (one MSP cannot spend a number's codes for
    // everyone); all together stop at 10 an hour (claims/throttle.test.ts has that part).
    for (const m of [wirechat, parrot]) for (let i = 0; i < 3; i++) await start(m, `@flood:${m.party.mspId}`);
    assert.equal(texts(), 9);
    await rejectsWith(
      start(parrot, "@flood:parrot.example"),
      status.RESOURCE_EXHAUSTED,
      /3 codes per number/,
    );
    assert.equal(texts(), 9, "no code went out for the refused calls");
    // The DP's metrics count the refusals by reason, never by number or MSP.
    await eventually(async () => assert.equal(await refusedHour(), refusedBefore + 2));
    // An hour later (on the DP's, the resolver's and the MSP's clocks) the budget has refilled
    // and the holder claims.
    const HOUR = 3_600_000;
    t.advanceClock(t.net.dps.eu, HOUR);
    t.advanceClock(t.net.resolver, HOUR);
    try {
      const ch = await startClaim(
        bluebird.api,
        bluebird.party,
        { csi, ssi: "@holder:bluebird.example", tags: [], makeDefault: false },
        user,
        { now: () => Date.now() + HOUR },
      );
      await completeChallenge(bluebird.api, ch, await codeFrom("sms", number), user, bluebird.key);
      await eventually(async () =>
        assert.equal((await t.resolve(csi)).answer?.status, pb.LookupStatus.FOUND),
      );
    } finally {
      t.resetClocks();
    }
  },
);

scenario(
  t,
  "one identity's watch streams stop at the cap; the rest are refused and lookups go on",
  async () => {
    const api = t.net.channel(t.net.dps.eu.address, "msp-parrot").client(pb.ClaimService);
    /**
     * Opens `n` watch streams and checks that all but 64 are refused. A refusal is sent before the
     * answer to a later call on the same connection, so after one round trip every refusal is in.
     */
    const open = async (n: number, stop: AbortController) => {
      let refused = 0;
      let other = "";
      for (let i = 0; i < n; i++) {
        api
          .watchNotices({ sinceSeq: 0n }, { signal: stop.signal })
          [Symbol.asyncIterator]()
          .next()
          .catch((err: DiscoveryError) => {
            if (stop.signal.aborted) return;
            if (err.remoteStatus === status.RESOURCE_EXHAUSTED && /64 open watch streams/.test(err.message)) {
              refused++;
            } else other = err.message;
          });
      }
      await rejectsWith(api.completeChallenge({ challengeId: "ch_none", code: "000000" }), status.NOT_FOUND);
      assert.equal(other, "");
      assert.equal(refused, n - 64);
      // Lookups go on meanwhile (this number's answer depends on the scenarios before).
      const answer = (await t.resolve("tel:+447700900123")).answer;
      assert.ok(answer && answer.status !== pb.LookupStatus.UNSPECIFIED);
    };
    // Regression: 2,000 streams on one connection were all served, at 33 times the DP's cost per write.
    const first = new AbortController();
    await open(2_000, first);
    first.abort();
    // Closed streams give their slots back.
    await eventually(async () => {
      const again = new AbortController();
      try {
        await open(100, again);
      } finally {
        again.abort();
      }
    });
  },
);
