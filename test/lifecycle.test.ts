// Launchers leave nothing behind: a process that started a network (as npm start, the harness
// and the benchmark do) is killed outright, and every server it started stops on its own.
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { eventually } from "./harness.js";

const HERE = resolve(fileURLToPath(import.meta.url), "..");

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

test("servers stop when the process that launched them is killed with SIGKILL", async () => {
  const dir = mkdtempSync(join(tmpdir(), "mimi-launcher-"));
  let launcher: ChildProcess | undefined;
  try {
    launcher = spawn(process.execPath, ["--import", "tsx", join(HERE, "fixtures", "launcher.ts"), dir], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    const lines = createInterface({ input: launcher.stdout as NodeJS.ReadableStream });
    const pids = await new Promise<number[]>((done, fail) => {
      launcher?.once("exit", (code) =>
        fail(new Error(`the launcher exited (${code}) before its network was up`)),
      );
      lines.on("line", (l) => {
        if (l.startsWith("PIDS ")) done(l.slice(5).split(",").map(Number));
      });
    });
    assert.equal(pids.length, 4);
    assert.ok(pids.every(alive), "the network is up");
    launcher.kill("SIGKILL"); // no exit handler runs
    await eventually(async () => assert.deepEqual(pids.filter(alive), [], "no server outlives its launcher"));
  } finally {
    launcher?.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  }
});
