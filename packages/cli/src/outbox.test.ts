import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { addressOf, codeFor, newestFor, readOutbox } from "./outbox.js";

const root = mkdtempSync(join(tmpdir(), "mimi-outbox-"));
after(() => rmSync(root, { recursive: true, force: true }));

let n = 0;
/** An outbox folder holding the given messages, written the way the DP writes them. */
function outbox(messages: { to: string; code: string; sentAtMs: number; challengeId?: string }[]): string {
  const dir = join(root, `o${n++}`);
  mkdirSync(dir);
  for (const m of messages) {
    const challengeId = m.challengeId ?? `c${m.sentAtMs}`;
    const body = {
      csiType: m.to.startsWith("+") ? "tel" : "mailto",
      to: m.to,
      code: m.code,
      expiresAtMs: m.sentAtMs + 600_000,
      dpId: "eu",
      purpose: "claim",
      challengeId,
      sentAtMs: m.sentAtMs,
    };
    writeFileSync(join(dir, `${m.sentAtMs}-${challengeId}.json`), `${JSON.stringify(body)}\n`);
  }
  return dir;
}

test("the newest code for an address wins; other addresses are ignored", () => {
  const dir = outbox([
    { to: "+447700900123", code: "111111", sentAtMs: 1000 },
    { to: "+447700900123", code: "222222", sentAtMs: 3000 },
    { to: "+447700900999", code: "999999", sentAtMs: 5000 },
    { to: "alice@example.org", code: "333333", sentAtMs: 4000 },
  ]);
  assert.deepEqual(
    readOutbox(dir, "+447700900123").map((m) => m.code),
    ["222222", "111111"],
  );
  assert.equal(newestFor([dir], "+447700900123")?.code, "222222");
  assert.equal(newestFor([dir], "alice@example.org")?.code, "333333");
  assert.equal(newestFor([dir], "+447700900000"), undefined);
  assert.equal(readOutbox(dir).length, 4);
});

test("temporary, foreign and broken files are skipped", () => {
  const dir = outbox([{ to: "+447700900123", code: "111111", sentAtMs: 1000 }]);
  // The DP writes to a dot-prefixed temporary name and renames it when whole.
  writeFileSync(join(dir, ".2000-c2.json.0d6b.tmp"), '{"to":"+447700900123","code":"999999"}');
  writeFileSync(join(dir, "notes.txt"), "hello");
  writeFileSync(join(dir, "3000-c3.json"), "{ half a fi");
  writeFileSync(join(dir, "4000-c4.json"), '{"to":"+447700900123","code":"444444"}');
  assert.deepEqual(
    readOutbox(dir, "+447700900123").map((m) => m.code),
    ["111111"],
  );
});

test("codeFor finds a challenge's code; a missing folder holds none", () => {
  const dir = outbox([
    { to: "+447700900123", code: "111111", sentAtMs: 1000, challengeId: "abc_1" },
    { to: "+447700900123", code: "222222", sentAtMs: 2000, challengeId: "abc-2" },
  ]);
  assert.equal(codeFor(dir, "abc_1")?.code, "111111");
  assert.equal(codeFor(dir, "nope"), undefined);
  assert.deepEqual(readOutbox(join(root, "missing")), []);
});

test("newestFor looks across the outboxes of several DPs", () => {
  const eu = outbox([{ to: "+447700900123", code: "111111", sentAtMs: 1000 }]);
  const us = outbox([{ to: "+447700900123", code: "222222", sentAtMs: 2000 }]);
  assert.equal(newestFor([eu, us], "+447700900123")?.code, "222222");
  assert.equal(newestFor([us, eu], "+447700900123")?.code, "222222");
});

test("a CSI's address is its URI without the scheme, the mailto escapes undone", () => {
  assert.equal(addressOf("tel:+447700900123"), "+447700900123");
  assert.equal(addressOf("mailto:alice@example.org"), "alice@example.org");
  // The DP sends the code for "a%b@example.org" there, so that is where the code is looked for.
  assert.equal(addressOf("mailto:a%25b@example.org"), "a%b@example.org");
});
