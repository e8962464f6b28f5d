import assert from "node:assert/strict";
import { test } from "node:test";
import { createProgressReporter, formatDuration, renderProgress } from "./progress.js";

test("the progress line shows bar, counts, percentage, rate and ETA", () => {
  const cases: [Parameters<typeof renderProgress>[0], string][] = [
    [
      { done: 512_000, total: 1_000_000, resumedAt: 0, elapsedMs: 60_952 },
      "[##########          ] 512000/1000000 51% 8400/s ETA 58s",
    ],
    [{ done: 0, total: 10, resumedAt: 0, elapsedMs: 0 }, "[                    ] 0/10 0% 0/s ETA ?"],
    [{ done: 10, total: 10, resumedAt: 0, elapsedMs: 2000 }, "[####################] 10/10 100% 5/s ETA 0s"],
    // A resumed session's earlier records do not count towards this run's rate.
    [
      { done: 600, total: 1000, resumedAt: 500, elapsedMs: 1000 },
      "[############        ] 600/1000 60% 100/s ETA 4s",
    ],
  ];
  for (const [state, expected] of cases) assert.equal(renderProgress(state), expected);
});

test("durations read as seconds, minutes or hours", () => {
  const cases: [number, string][] = [
    [0, "0s"],
    [58.4, "58s"],
    [59.6, "1m00s"],
    [725, "12m05s"],
    [3600 * 3 + 420, "3h07m"],
  ];
  for (const [s, expected] of cases) assert.equal(formatDuration(s), expected);
});

test("on a terminal the line is redrawn in place, at most every 100 ms", () => {
  let now = 0;
  const written: string[] = [];
  const p = createProgressReporter({ total: 100, tty: true, write: (s) => written.push(s), now: () => now });
  now = 1_000;
  p.update(10, 0);
  now = 1_050;
  p.update(20, 0);
  now = 1_200;
  p.update(30, 0);
  p.finish();
  assert.equal(written.length, 4);
  assert.ok(written.slice(0, 3).every((w) => w.startsWith("\r") && w.endsWith("\x1b[K")));
  assert.match(written[0] ?? "", /10\/100 10%/);
  assert.match(written[1] ?? "", /30\/100 30%/);
  assert.match(written[2] ?? "", /30\/100 30%/);
  assert.equal(written[3], "\n");
});

test("in a log a plain line is printed every interval", () => {
  let now = 0;
  const written: string[] = [];
  const p = createProgressReporter({
    total: 100,
    tty: false,
    write: (s) => written.push(s),
    now: () => now,
    logIntervalMs: 5_000,
  });
  for (let t = 1_000; t <= 12_000; t += 1_000) {
    now = t;
    p.update(t / 1_000, 0);
  }
  p.finish();
  assert.deepEqual(
    written.map((w) => /\] (\d+\/\d+) /.exec(w)?.[1]),
    ["5/100", "10/100"],
  );
  assert.ok(written.every((w) => w.endsWith("\n") && !w.includes("\r")));
});
