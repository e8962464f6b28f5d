// The systemd units in deploy/systemd agree with the config examples and the build: each unit
// runs a binary that exists, checks its config first, reads the example's config path, and its
// StateDirectory is the example's dataDir.
import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

const REPO = resolve(fileURLToPath(import.meta.url), "../..");
const UNITS = join(REPO, "deploy/systemd");

/** The key=value lines of each [Section] of a unit file (keys may repeat). */
function parseUnit(text: string): Map<string, [string, string][]> {
  const sections = new Map<string, [string, string][]>();
  let current: [string, string][] | undefined;
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    const header = /^\[(\w+)\]$/.exec(line);
    if (header) {
      current = [];
      sections.set(header[1] as string, current);
      continue;
    }
    const eq = line.indexOf("=");
    assert.ok(current && eq > 0, `a key=value line in a section: ${line}`);
    current.push([line.slice(0, eq), line.slice(eq + 1)]);
  }
  return sections;
}

test("every systemd unit runs a built binary on an example config, checked first, in the example's data folder", () => {
  const files = readdirSync(UNITS).filter((f) => f.endsWith(".service"));
  assert.deepEqual(files.sort(), [
    "mimi-authoritative@.service",
    "mimi-resolver.service",
    "mimi-root.service",
  ]);
  for (const file of files) {
    const unit = parseUnit(readFileSync(join(UNITS, file), "utf8"));
    const service = new Map(unit.get("Service"));
    assert.ok(unit.get("Unit") && unit.get("Install"), `${file} has [Unit] and [Install]`);
    const exec = (service.get("ExecStart") ?? "").split(" ");
    const main = exec[1] ?? "";
    assert.match(main, /^\/opt\/mimi\/packages\/(root|authoritative|resolver)\/dist\/main\.js$/, file);
    assert.ok(existsSync(join(REPO, main.replace("/opt/mimi/", ""))), `${file}: ${main} is built`);
    // The instance of the template is the DP id of the example (eu).
    const config = (exec[3] ?? "").replace("%i", "eu");
    const example = join(REPO, "deploy/examples", config.replace("/etc/mimi/", ""));
    assert.ok(existsSync(example), `${file}: ${config} has an example`);
    assert.equal(service.get("ExecStartPre"), `/usr/bin/node ${main} --check --config ${exec[3]}`);
    const dataDir = (JSON.parse(readFileSync(example, "utf8")) as { dataDir: string }).dataDir;
    assert.equal(`/var/lib/${(service.get("StateDirectory") ?? "").replace("%i", "eu")}`, dataDir, file);
    assert.equal(service.get("User"), "mimi");
    assert.equal(service.get("NoNewPrivileges"), "true");
  }
});
