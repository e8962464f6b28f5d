import assert from "node:assert/strict";
import { test } from "node:test";
import { UsageError } from "./args.js";
import { BulkFile, effectiveTime, parseBulkLine, parseFeed } from "./jsonl.js";

const bulk = (text: string) => BulkFile.parse("f.jsonl", Buffer.from(text, "utf8"));

test("a bulk line gets defaults and a canonical CSI", () => {
  assert.deepEqual(parseBulkLine('{"csi":"+44 7700 900123","ssi":"@a:b"}', "x"), {
    csi: "tel:+447700900123",
    ssi: "@a:b",
    tags: [],
    isDefault: false,
    createdAtMs: undefined,
  });
  assert.deepEqual(
    parseBulkLine(
      '{"csi":"mailto:A@Example.org","ssi":"s","tags":["Business"],"default":true,"createdAtMs":5}',
      "x",
    ),
    { csi: "mailto:a@example.org", ssi: "s", tags: ["Business"], isDefault: true, createdAtMs: 5 },
  );
});

test("bad bulk lines are usage errors naming the file line", () => {
  const cases: [string, RegExp][] = [
    ["{not json", /f\.jsonl line 2: not JSON/],
    ["[1]", /line 2: must be a JSON object/],
    ['{"csi":"tel:+447700900123","ssi":"s","msp":"x"}', /line 2: unknown field\(s\) msp/],
    ['{"ssi":"s"}', /line 2: "csi" must be a string/],
    ['{"csi":"tel:+44","ssi":"s"}', /line 2: invalid csi: /],
    ['{"csi":"tel:+447700900123"}', /line 2: "ssi" must be a string/],
    ['{"csi":"tel:+447700900123","ssi":" "}', /line 2: ssi must be 1 to 256/],
    ['{"csi":"tel:+447700900123","ssi":"s","tags":"Business"}', /line 2: "tags" must be a list/],
    ['{"csi":"tel:+447700900123","ssi":"s","tags":["Default"]}', /line 2: "Default" is not a tag/],
    ['{"csi":"tel:+447700900123","ssi":"s","default":"yes"}', /line 2: "default" must be true or false/],
    ['{"csi":"tel:+447700900123","ssi":"s","createdAtMs":-1}', /line 2: "createdAtMs" must be/],
    ['{"csi":"tel:+447700900123","ssi":"s","createdAtMs":1.5}', /line 2: "createdAtMs" must be/],
  ];
  for (const [line, expected] of cases) {
    const text = `{"csi":"tel:+447700900124","ssi":"ok"}\n${line}\n`;
    assert.throws(
      () => bulk(text),
      (err: unknown) => err instanceof UsageError && expected.test(err.message),
      line,
    );
  }
});

test("a bulk file numbers records in file order, skipping blank lines, CRLF and a BOM", () => {
  const f = bulk(
    '\uFEFF{"csi":"tel:+447700900001","ssi":"a"}\r\n\r\n   \n{"csi":"tel:+447700900002","ssi":"b"}\n{"csi":"tel:+447700900003","ssi":"c"}',
  );
  assert.equal(f.count, 3);
  assert.deepEqual(
    [0, 1, 2].map((i) => [f.record(i).ssi, f.lineOf(i)]),
    [
      ["a", 1],
      ["b", 4],
      ["c", 5],
    ],
  );
  assert.equal(f.lineOf(3), undefined);
  assert.throws(() => f.record(3), RangeError);
  assert.equal(bulk("").count, 0);
  assert.equal(bulk("\n\n").count, 0);
});

test("a bulk file keeps non-ASCII text whole", () => {
  const f = bulk('{"csi":"tel:+447700900001","ssi":"@zoë:ex","tags":["Büro"]}\n');
  assert.equal(f.record(0).ssi, "@zoë:ex");
  assert.deepEqual(f.record(0).tags, ["Büro"]);
});

test("feed lines parse events, dates and donors", () => {
  const text = [
    '{"csi":"tel:+447700900123","event":"disconnected","effective":"2026-11-01"}',
    "",
    '{"csi":"+14155550100","event":"ported","effective":1793491200000,"donorMsp":"bluebird.example"}',
    '{"csi":"mailto:a@example.org","event":"reassigned","effective":"2026-11-01T10:00:00+02:00"}',
  ].join("\n");
  assert.deepEqual(parseFeed("feed.jsonl", text), [
    { csi: "tel:+447700900123", event: "disconnected", effectiveAtMs: 1793491200000, donorMspId: "" },
    {
      csi: "tel:+14155550100",
      event: "ported",
      effectiveAtMs: 1793491200000,
      donorMspId: "bluebird.example",
    },
    { csi: "mailto:a@example.org", event: "reassigned", effectiveAtMs: 1793520000000, donorMspId: "" },
  ]);
});

test("bad feed lines are usage errors naming the file line", () => {
  const ok = '{"csi":"tel:+447700900123","event":"disconnected","effective":"2026-11-01"}';
  const cases: [string, RegExp][] = [
    ['{"csi":"tel:+447700900123","event":"lost","effective":"2026-11-01"}', /line 3: "event" must be one of/],
    ['{"csi":"tel:+447700900123","event":"ported"}', /line 3: "effective" must be/],
    ['{"csi":"tel:+447700900123","event":"ported","effective":"2026-02-30"}', /line 3: "effective" must be/],
    [
      '{"csi":"tel:+447700900123","event":"disconnected","effective":1,"donorMsp":"x"}',
      /line 3: "donorMsp" belongs only to "ported"/,
    ],
    [
      '{"csi":"tel:+447700900123","event":"ported","effective":1,"donorMsp":""}',
      /line 3: "donorMsp" must be/,
    ],
    ['{"csi":"tel:+447700900123","event":"ported","effective":1,"at":1}', /line 3: unknown field\(s\) at/],
    ["nope", /line 3: not JSON/],
  ];
  for (const [line, expected] of cases) {
    assert.throws(
      () => parseFeed("feed.jsonl", `${ok}\n\n${line}`),
      (err: unknown) => err instanceof UsageError && expected.test(err.message),
      line,
    );
  }
});

test("effective times: dates are midnight UTC, times need a zone, numbers are ms", () => {
  const cases: [unknown, number | undefined][] = [
    ["2026-11-01", Date.UTC(2026, 10, 1)],
    ["2026-11-01T10:00:00Z", Date.UTC(2026, 10, 1, 10)],
    ["2026-11-01T10:00Z", Date.UTC(2026, 10, 1, 10)],
    ["2026-11-01T10:00:00", undefined],
    ["2026-02-29", undefined],
    ["1 Nov 2026", undefined],
    [1_700_000_000_000, 1_700_000_000_000],
    [0, undefined],
    [1.5, undefined],
    [null, undefined],
  ];
  for (const [v, expected] of cases) assert.equal(effectiveTime(v), expected, String(v));
});
