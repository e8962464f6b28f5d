// The claim rules called directly: rows of one CSI in, decisions out, no store or keys.
import assert from "node:assert/strict";
import { test } from "node:test";
import { encodeMappingRecord, type MappingRecord } from "@mimi/core";
import type { MappingRow } from "../store/rows.js";
import {
  capBroken,
  decideBulk,
  decideClaim,
  defaultChanges,
  eventClearsOptOut,
  invalidationTargets,
  olderThanPeerMapping,
  outdatedBy,
  promotedPrecedence,
  rankOf,
  splitByHolder,
} from "./rules.js";

const RANKING = ["bulk", "email-code", "sms-code"];
const CSI = "tel:+447700900100";
const T0 = Date.UTC(2026, 10, 1);
const holder = (n: number) => new Uint8Array(32).fill(n);

interface RowSpec {
  msp: string;
  ssi?: string;
  isDefault?: boolean;
  precedence?: number;
  asked?: boolean;
  proof?: "bulk" | "email-code" | "sms-code";
  /** Holder key byte; 0 for a bulk record (no holder). */
  holder?: number;
  createdAtMs?: number;
}

function record(s: RowSpec): MappingRecord {
  const proof = s.proof ?? "sms-code";
  return {
    csi: CSI,
    mspId: s.msp,
    ssi: s.ssi ?? `${s.msp}-user`,
    defaultRequested: s.asked ?? false,
    tags: [],
    createdAtMs: s.createdAtMs ?? T0,
    proofMethod: proof,
    proofId: "p",
    userPublicKey: proof === "bulk" || s.holder === 0 ? new Uint8Array(0) : holder(s.holder ?? 1),
    dpId: "eu",
    expiresAtMs: T0 + 365 * 86_400_000,
  };
}

function row(s: RowSpec): MappingRow {
  const r = record(s);
  return {
    csi: CSI,
    mspId: r.mspId,
    ssi: r.ssi,
    isDefault: s.isDefault ?? false,
    precedence: s.precedence ?? r.createdAtMs,
    expiresAtMs: r.expiresAtMs,
    record: encodeMappingRecord(r),
    userSig: new Uint8Array(0),
    mspSig: new Uint8Array(0),
    dpSig: new Uint8Array(0),
  };
}

const keyOf = (r: MappingRow) => `${r.mspId}/${r.ssi}`;
const keys = (rows: readonly MappingRow[]) => rows.map(keyOf);

test("defaultChanges keeps exactly one default, deciding once and deterministically (R7)", () => {
  const cases: {
    name: string;
    rows: RowSpec[];
    preferred?: string;
    /** The default afterwards (by MSP), or undefined when nothing may change. */
    want: string | undefined;
  }[] = [
    { name: "no mappings", rows: [], want: undefined },
    { name: "a single default stays", rows: [{ msp: "a", isDefault: true }, { msp: "b" }], want: undefined },
    {
      name: "a default that asked stays beside one that also asked",
      rows: [
        { msp: "a", isDefault: true, asked: true },
        { msp: "b", asked: true, precedence: 0 },
      ],
      want: undefined,
    },
    {
      name: "one that asked displaces a default that never asked",
      rows: [
        { msp: "a", isDefault: true },
        { msp: "b", asked: true },
      ],
      want: "b",
    },
    {
      name: "a bulk record that asked does not take the default from a holder who proved the number",
      rows: [
        { msp: "a", isDefault: true, proof: "email-code" },
        { msp: "b", asked: true, proof: "bulk", holder: 0, precedence: 0 },
      ],
      want: undefined,
    },
    {
      name: "one proven as strongly that asked does, and the weaker request is not a candidate",
      rows: [
        { msp: "a", isDefault: true, proof: "email-code" },
        { msp: "b", asked: true, proof: "bulk", holder: 0, precedence: 0 },
        { msp: "c", asked: true, proof: "email-code", holder: 2, precedence: 5 },
      ],
      want: "c",
    },
    {
      name: "among several that asked, the best precedence wins",
      rows: [
        { msp: "a", asked: true, precedence: 5 },
        { msp: "b", asked: true, precedence: 3 },
        { msp: "c" },
      ],
      want: "b",
    },
    {
      name: "two defaults (a lost write) become one, by precedence then MSP",
      rows: [
        { msp: "b", isDefault: true, precedence: 1 },
        { msp: "a", isDefault: true, precedence: 1 },
      ],
      want: "a",
    },
    {
      name: "none default, none asked: the best precedence",
      rows: [
        { msp: "z", precedence: 1 },
        { msp: "y", precedence: 2 },
      ],
      want: "z",
    },
    {
      name: "the holder's explicit choice wins over everything",
      rows: [{ msp: "a", isDefault: true, asked: true }, { msp: "b" }],
      preferred: "b",
      want: "b",
    },
  ];
  for (const c of cases) {
    const rows = c.rows.map(row);
    const preferred = c.preferred ? { mspId: c.preferred, ssi: `${c.preferred}-user` } : undefined;
    const changes = defaultChanges(rows, RANKING, preferred);
    if (c.want === undefined) {
      assert.deepEqual(changes, [], c.name);
      continue;
    }
    const after = rows.map((r) => changes.find((x) => x.row === r)?.isDefault ?? r.isDefault);
    assert.deepEqual(
      rows.filter((_, i) => after[i]).map((r) => r.mspId),
      [c.want],
      c.name,
    );
    assert.ok(
      changes.every((x) => x.isDefault !== x.row.isDefault),
      `${c.name}: only flags that change are listed`,
    );
  }
});

test("promotedPrecedence moves a mapping ahead of all others, or leaves one already alone at the top", () => {
  const rows = [row({ msp: "a", precedence: 10 }), row({ msp: "b", precedence: 20 })];
  assert.equal(promotedPrecedence(rows, { mspId: "b", ssi: "b-user" }), 9);
  assert.equal(promotedPrecedence(rows, { mspId: "a", ssi: "a-user" }), undefined);
  const tied = [row({ msp: "a", precedence: 10 }), row({ msp: "b", precedence: 10 })];
  assert.equal(promotedPrecedence(tied, { mspId: "a", ssi: "a-user" }), 9, "a tie at the top is broken");
  assert.equal(promotedPrecedence(rows, { mspId: "x", ssi: "none" }), undefined);
});

test("decideClaim: alone, beside the same holder, with a stricter proof, or in conflict (R17, R18)", () => {
  const now = T0 + 1_000;
  const cases: {
    name: string;
    rows: RowSpec[];
    claim: RowSpec;
    want: string;
    first: boolean;
    others: string[];
  }[] = [
    { name: "first mapping", rows: [], claim: { msp: "new" }, want: "sole", first: true, others: [] },
    {
      name: "the same holder at another MSP is no conflict",
      rows: [{ msp: "old", holder: 7 }],
      claim: { msp: "new", holder: 7 },
      want: "sole",
      first: false,
      others: [],
    },
    {
      name: "an SMS proof beats a bulk registration at once",
      rows: [{ msp: "old", proof: "bulk" }],
      claim: { msp: "new", holder: 2, proof: "sms-code" },
      want: "stricter",
      first: false,
      others: ["old/old-user"],
    },
    {
      name: "an equal proof by another holder opens a conflict",
      rows: [{ msp: "old", holder: 1, proof: "sms-code" }],
      claim: { msp: "new", holder: 2, proof: "sms-code" },
      want: "conflict",
      first: false,
      others: ["old/old-user"],
    },
    {
      name: "stricter than some but not all is still a conflict",
      rows: [
        { msp: "a", proof: "bulk" },
        { msp: "b", holder: 1, proof: "sms-code" },
      ],
      claim: { msp: "new", holder: 2, proof: "email-code" },
      want: "conflict",
      first: false,
      others: ["a/a-user", "b/b-user"],
    },
  ];
  for (const c of cases) {
    const d = decideClaim(c.rows.map(row), record(c.claim), RANKING, now);
    assert.equal(d.outcome, c.want, c.name);
    assert.equal(d.first, c.first, c.name);
    assert.deepEqual(keys(d.others), c.others, c.name);
    if (c.rows.length === 0) {
      assert.equal(d.isDefault, true, "the first mapping is the default");
      assert.equal(d.precedence, now, "precedence is arrival here");
    }
  }
  // A claim of an existing mapping keeps its place and flag.
  const same = decideClaim(
    [row({ msp: "m", isDefault: true, precedence: 5 })],
    record({ msp: "m" }),
    RANKING,
    99,
  );
  assert.deepEqual([same.same?.mspId, same.isDefault, same.precedence], ["m", true, 5]);
});

test("removals: the holder's own mappings go at once, other holders' only through a conflict (R19)", () => {
  const rows = [
    row({ msp: "caller", holder: 9 }),
    row({ msp: "other", holder: 1 }),
    row({ msp: "other", ssi: "second", holder: 3 }),
    row({ msp: "bulked", proof: "bulk" }),
  ];
  const { own, foreign } = splitByHolder(rows, "caller", holder(3));
  assert.deepEqual(keys(own), ["caller/caller-user", "other/second"]);
  assert.deepEqual(keys(foreign), ["other/other-user", "bulked/bulked-user"]);
  assert.deepEqual(keys(invalidationTargets(rows, { targetMspId: "other", targetSsi: "" })), [
    "other/other-user",
    "other/second",
  ]);
  assert.deepEqual(keys(invalidationTargets(rows, { targetMspId: "other", targetSsi: "second" })), [
    "other/second",
  ]);
  assert.equal(invalidationTargets(rows, { targetMspId: "", targetSsi: "" }).length, 4);
});

test("provider events remove only mappings created before them, a port only the donor's (R16, D2)", () => {
  const day = 86_400_000;
  const rows = [
    row({ msp: "donor", createdAtMs: T0 }),
    row({ msp: "other", createdAtMs: T0 }),
    row({ msp: "donor", ssi: "late", createdAtMs: T0 + 2 * day }),
  ];
  const at = T0 + day;
  assert.deepEqual(keys(outdatedBy(rows, { event: "disconnected", effectiveAtMs: at, donorMspId: "" })), [
    "donor/donor-user",
    "other/other-user",
  ]);
  assert.deepEqual(keys(outdatedBy(rows, { event: "ported", effectiveAtMs: at, donorMspId: "donor" })), [
    "donor/donor-user",
  ]);
  assert.deepEqual(
    outdatedBy(rows, { event: "ported", effectiveAtMs: at, donorMspId: "" }),
    [],
    "a port names its donor",
  );
  assert.equal(eventClearsOptOut({ event: "reassigned", effectiveAtMs: at, donorMspId: "" }, T0), true);
  assert.equal(eventClearsOptOut({ event: "reassigned", effectiveAtMs: at, donorMspId: "" }, at + 1), false);
  assert.equal(eventClearsOptOut({ event: "ported", effectiveAtMs: at, donorMspId: "d" }, T0), false);
  assert.equal(
    eventClearsOptOut({ event: "disconnected", effectiveAtMs: at, donorMspId: "" }, undefined),
    false,
  );
});

test("decideBulk never overtakes a holder's own proof, keeps places, and respects opt-outs (G4)", () => {
  const r = record({ msp: "m", proof: "bulk", asked: true });
  const bytes = encodeMappingRecord(r);
  assert.deepEqual(decideBulk([], r, bytes, true, RANKING, 5), { kind: "opted_out" });
  assert.deepEqual(decideBulk([], r, bytes, false, RANKING, 5), {
    kind: "store",
    isDefault: true,
    precedence: 5,
    settle: false,
  });
  const stored = { ...row({ msp: "m", proof: "bulk", asked: true }), record: bytes };
  assert.deepEqual(
    decideBulk([stored], r, bytes, false, RANKING, 5),
    { kind: "unchanged" },
    "the same record again",
  );
  assert.deepEqual(
    decideBulk([row({ msp: "m", proof: "sms-code" })], r, bytes, false, RANKING, 5),
    { kind: "unchanged" },
    "a holder-proven mapping stays",
  );
  assert.deepEqual(
    decideBulk([row({ msp: "other", isDefault: true, precedence: 1 })], r, bytes, false, RANKING, 5),
    { kind: "store", isDefault: false, precedence: 5, settle: true },
    "a record asking to be default beside another default makes the default be settled",
  );
});

test("a peer's first mapping removes weaker older mappings of other holders and contests the rest (R18)", () => {
  const newer = record({ msp: "new", holder: 5, proof: "email-code", createdAtMs: T0 + 10 });
  const rows = [
    row({ msp: "bulked", proof: "bulk", createdAtMs: T0 }),
    row({ msp: "sms", holder: 1, proof: "sms-code", createdAtMs: T0 }),
    row({ msp: "same-holder", holder: 5, proof: "email-code", createdAtMs: T0 }),
    row({ msp: "younger", proof: "bulk", createdAtMs: T0 + 20 }),
  ];
  const { weaker, contestable } = olderThanPeerMapping(rows, newer, RANKING);
  assert.deepEqual(keys(weaker), ["bulked/bulked-user"]);
  assert.deepEqual(keys(contestable), ["sms/sms-user"]);
  assert.equal(rankOf(RANKING, "unknown"), -1);
});

test("capBroken: a new mapping beyond the caps per MSP and per CSI; a stored one never", () => {
  const caps = { perCsi: 3, perMsp: 2 };
  const rows = [row({ msp: "a", ssi: "1" }), row({ msp: "a", ssi: "2" }), row({ msp: "b", ssi: "1" })];
  const cases: [
    rows: MappingRow[],
    key: { mspId: string; ssi: string },
    broken: "msp" | "csi" | undefined,
  ][] = [
    [rows.slice(0, 1), { mspId: "a", ssi: "2" }, undefined],
    [rows.slice(0, 2), { mspId: "a", ssi: "3" }, "msp"],
    [rows.slice(0, 2), { mspId: "b", ssi: "1" }, undefined],
    [rows, { mspId: "c", ssi: "1" }, "csi"],
    [rows, { mspId: "a", ssi: "3" }, "msp"],
    // Renewals and re-registrations add nothing, even over a cap that was lowered.
    [rows, { mspId: "a", ssi: "1" }, undefined],
    [rows, { mspId: "b", ssi: "1" }, undefined],
  ];
  for (const [given, key, broken] of cases) {
    assert.equal(capBroken(given, key, caps), broken, `${given.length} rows, ${key.mspId}/${key.ssi}`);
  }
});
