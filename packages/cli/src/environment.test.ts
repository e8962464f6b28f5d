// Flags take defaults from MIMI_* variables: the command line wins over a variable, a variable
// over the built-in default, in every subcommand; flags not in the table read nothing.
import assert from "node:assert/strict";
import { test } from "node:test";
import { EnvironmentCommand, refuseMixedIdentity } from "./environment.js";
import { GROUPS } from "./groups.js";
import { ABOUT } from "./help.js";

function parse(argv: string[], env: Record<string, string>): Record<string, unknown> {
  const saved = { ...process.env };
  Object.assign(process.env, env);
  try {
    let seen: Record<string, unknown> = {};
    const program = new EnvironmentCommand("mimi").exitOverride().configureOutput({ writeErr: () => {} });
    program
      .command("group")
      .command("run")
      .option("--resolver <host:port>", "resolver", "127.0.0.1:7600")
      .option("--dp <dp-id>", "a DP id, not an address")
      .requiredOption("--as <identity>", "MSP")
      .action((o: Record<string, unknown>) => {
        seen = o;
      });
    program.parse(argv, { from: "user" });
    return seen;
  } finally {
    for (const k of Object.keys(env)) delete process.env[k];
    Object.assign(process.env, saved);
  }
}

test("a MIMI_* variable is a flag's default; the command line wins; other flags read nothing", () => {
  const env = { MIMI_RESOLVER: "10.0.0.1:7600", MIMI_AS: "msp-bluebird", MIMI_DP: "10.0.0.2:7501" };
  assert.deepEqual(parse(["group", "run"], env), { resolver: "10.0.0.1:7600", as: "msp-bluebird" });
  assert.deepEqual(parse(["group", "run", "--resolver", "10.0.0.9:1", "--dp", "eu"], env), {
    resolver: "10.0.0.9:1",
    as: "msp-bluebird",
    dp: "eu",
  });
  assert.deepEqual(parse(["group", "run", "--as", "x"], {}), { resolver: "127.0.0.1:7600", as: "x" });
  // A required flag may come from its variable, and is still required without one.
  assert.throws(() => parse(["group", "run"], {}), /required option '--as <identity>' not specified/);
});

test("every group has its help line and its module, and each module adds the command it names", async () => {
  assert.deepEqual(Object.keys(GROUPS).sort(), Object.keys(ABOUT).sort());
  for (const [name, load] of Object.entries(GROUPS)) {
    const program = new EnvironmentCommand("mimi");
    (await load())(program);
    assert.deepEqual(
      program.commands.map((c) => [c.name(), c.description()]),
      [[name, ABOUT[name as keyof typeof ABOUT]]],
    );
  }
});

test("a command line that names the identity is refused while the environment picks the certificate", () => {
  const program = new EnvironmentCommand("mimi").exitOverride().configureOutput({ writeErr: () => {} });
  program
    .command("run")
    .option("--identity <name>", "identity", "cli")
    .option("--cert <file>", "certificate")
    .option("--key <file>", "key")
    .hook("preAction", (_c, action) => refuseMixedIdentity(action))
    .action(() => {});
  const saved = { ...process.env };
  try {
    process.env.MIMI_CERT = "/tmp/other.pem";
    assert.throws(
      () => program.parse(["run", "--identity", "msp-x"], { from: "user" }),
      /--identity is given, but MIMI_CERT chooses the certificate/,
    );
    // Both from the command line, or the identity from the environment too: no conflict.
    program.parse(["run", "--identity", "msp-x", "--cert", "a.pem", "--key", "a-key.pem"], { from: "user" });
    process.env.MIMI_IDENTITY = "msp-x";
    program.parse(["run"], { from: "user" });
  } finally {
    for (const k of ["MIMI_CERT", "MIMI_IDENTITY"]) delete process.env[k];
    Object.assign(process.env, saved);
  }
});
