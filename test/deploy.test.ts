// What deploy/ holds agrees with the build and with the servers' own config parsers:
// - the systemd units run a binary that exists, check their config first, read the example's
//   config path, and their StateDirectory is the example's dataDir;
// - the image (deploy/container) is built from a context without host artefacts and runs the
//   built servers from a production-only install, whose dependencies cover every import;
// - the Kubernetes manifests (deploy/kubernetes) give each server the ports, probes, files,
//   volumes, shutdown time and network reach its config and the protocol ask for; each config
//   passes its server's --check against files laid out as the pod mounts them.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { builtinModules } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join, relative, resolve } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { devSigningKeyPaths, devTlsPaths, ensureDevPki, ensureDevSigningKeys } from "@mimi/devnet";
import {
  type Container,
  dockerignorePatterns,
  ignoredByDockerignore,
  type Labels,
  loadManifests,
  loadYaml,
  type Manifest,
  type NetworkPolicy,
  type Party,
  parseContainerfile,
  parseCopy,
  policiesAllow,
  type Service,
  selects,
  type Volume,
  volumeFiles,
  type Workload,
} from "./manifests.js";

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
    // A reload checks the config, then sends SIGHUP (which the servers handle: host reload.ts).
    const reloads = (unit.get("Service") ?? []).filter(([k]) => k === "ExecReload").map(([, v]) => v);
    assert.deepEqual(reloads, [
      `/usr/bin/node ${main} --check --config ${exec[3]}`,
      "/bin/kill -HUP $MAINPID",
    ]);
    const dataDir = (JSON.parse(readFileSync(example, "utf8")) as { dataDir: string }).dataDir;
    assert.equal(`/var/lib/${(service.get("StateDirectory") ?? "").replace("%i", "eu")}`, dataDir, file);
    assert.equal(service.get("User"), "mimi");
    assert.equal(service.get("NoNewPrivileges"), "true");
  }
});

// ---- the image -------------------------------------------------------------------------------

const CONTAINERFILE = join(REPO, "deploy/container/Containerfile");
const K8S = join(REPO, "deploy/kubernetes");
/** Where the image and the systemd units put the build. */
const INSTALL_DIR = "/opt/mimi";
/** The servers' uid and gid in the image, the manifests' runAsUser and fsGroup. */
const SERVER_UID = 10001;
/** How long a stopping server lets running calls finish after its lame duck (host server.ts). */
const SHUTDOWN_GRACE_SECONDS = 2;

interface PackageJson {
  name: string;
  version: string;
  workspaces?: string[];
  exports?: Record<string, unknown>;
  dependencies?: Record<string, string>;
  devDependencies?: Record<string, string>;
}

interface Lockfile {
  packages: Record<string, { dev?: boolean; link?: boolean }>;
}

function readJson<T>(path: string): T {
  return JSON.parse(readFileSync(path, "utf8")) as T;
}

const ROOT_PACKAGE = readJson<PackageJson>(join(REPO, "package.json"));
/** The workspace folders under packages/, as the root package.json lists them. */
const WORKSPACES = (ROOT_PACKAGE.workspaces ?? []).map((w) => w.replace(/^packages\//, ""));

/** Files under `dir`, without node_modules and dist folders unless `built`. */
function walk(dir: string, { built = false } = {}, out: string[] = []): string[] {
  for (const e of readdirSync(dir)) {
    const p = join(dir, e);
    if (statSync(p).isDirectory()) {
      if (e === "node_modules" || (!built && e === "dist")) continue;
      walk(p, { built }, out);
    } else out.push(p);
  }
  return out;
}

/** The built file in this repository that a path under /opt/mimi in the image is. */
function inRepo(imagePath: string): string {
  assert.ok(imagePath.startsWith(`${INSTALL_DIR}/`), `${imagePath} is under ${INSTALL_DIR}`);
  return join(REPO, imagePath.slice(INSTALL_DIR.length + 1));
}

/** A server binary's path in the image and its role. */
function serverMain(path: string | undefined): { main: string; role: string } {
  const m = /^\/opt\/mimi\/packages\/(root|authoritative|resolver)\/dist\/main\.js$/.exec(path ?? "");
  assert.ok(m, `${path} is a server's main.js under ${INSTALL_DIR}`);
  assert.ok(existsSync(inRepo(m[0])), `${m[0]} exists after tsc -b`);
  return { main: m[0], role: m[1] as string };
}

/** Every config the deployment files hold: the examples and the Kubernetes ConfigMaps' sources. */
function allConfigs(): { file: string; config: ServerConfig }[] {
  return ["deploy/examples", "deploy/kubernetes/config"].flatMap((dir) =>
    readdirSync(join(REPO, dir))
      .filter((f) => f.endsWith(".json"))
      .map((f) => ({ file: `${dir}/${f}`, config: readJson<ServerConfig>(join(REPO, dir, f)) })),
  );
}

test("the image is built in a stage of its own from a context without host artefacts", () => {
  const { args, stages } = parseContainerfile(readFileSync(CONTAINERFILE, "utf8"));
  // One base for both stages: the better-sqlite3 addon built in the first runs in the second.
  const base = (s: { from: string }) =>
    s.from.replace(/^\$\{(\w+)\}$/, (_, arg: string) => args.get(arg) ?? "");
  assert.deepEqual(
    stages.map((s) => [s.name, base(s)]),
    [
      ["build", "node:20-bookworm-slim"],
      ["runtime", "node:20-bookworm-slim"],
    ],
  );
  assert.equal(stages[0]?.from, stages[1]?.from, "both stages name the base through one ARG");
  const build = stages[0]?.instructions ?? [];
  const index = (what: string, match: (i: { op: string; args: string }) => boolean) => {
    const i = build.findIndex(match);
    assert.ok(i >= 0, `the build stage has ${what}`);
    return i;
  };
  const run = (re: RegExp) => index(`RUN ${re}`, (i) => i.op === "RUN" && re.test(i.args));
  // --ignore-scripts: the root's prepare script (tsc -b) needs the sources, which come later.
  const install = run(/^npm ci --ignore-scripts\b/);
  const addon = run(/\bnpm rebuild better-sqlite3$/);
  const compile = run(/^npx tsc -b$/);
  const prune = run(/^npm prune --omit=dev --ignore-scripts\b/);
  const copies = build.map((i, at) => ({ at, ...(i.op === "COPY" ? parseCopy(i.args) : undefined) }));
  const manifests = copies.filter((c) => c.sources?.some((s) => /^packages\/[^/]+\/package\.json$/.test(s)));
  assert.deepEqual(
    manifests.flatMap((c) => c.sources?.map((s) => s.split("/")[1]) ?? []).sort(),
    [...WORKSPACES].sort(),
    "every workspace's package.json is copied for npm ci",
  );
  const sources = index("COPY packages/", (i) => i.op === "COPY" && /^packages\/? /.test(i.args));
  assert.ok(
    manifests.every((c) => c.at < install) && install < addon && addon < sources,
    "manifests, install and the addon come before the sources (a source change reuses the install)",
  );
  assert.ok(sources < compile && compile < prune, "then compile, then prune the dev dependencies");

  const patterns = dockerignorePatterns(readFileSync(join(REPO, ".dockerignore"), "utf8"));
  const ignored = (path: string) => ignoredByDockerignore(patterns, path);
  for (const c of copies) {
    for (const source of c.sources ?? []) {
      const path = source.replace(/\/$/, "");
      assert.ok(existsSync(join(REPO, path)), `${source} exists`);
      assert.ok(!ignored(path), `${source} is in the build context`);
    }
  }
  // What tsc -b and the image read is in the context; what the host built or installed, the
  // development PKI's keys, tests and history are not.
  const needed = walk(join(REPO, "packages"))
    .map((f) => relative(REPO, f))
    .filter((f) => /^packages\/[^/]+\/(package\.json|tsconfig\.json|bin\/.+|src\/.+\.(ts|json))$/.test(f))
    .filter((f) => !f.endsWith(".test.ts"));
  assert.ok(needed.length > 100, "the walk found the sources");
  for (const f of [...needed, "package-lock.json", "tsconfig.base.json"])
    assert.ok(!ignored(f), `${f} is sent`);
  for (const f of [
    "node_modules/yaml/package.json",
    "packages/cli/node_modules/commander/package.json",
    "packages/core/dist/index.js",
    "packages/core/tsconfig.tsbuildinfo",
    "data/pki/ca-key.pem",
    ".git/HEAD",
    "test/deploy.test.ts",
    "packages/host/src/ops.test.ts",
    "deploy/examples/root.json",
  ]) {
    assert.ok(ignored(f), `${f} stays out of the build context`);
  }
});

test("the image runs a server as uid 10001 from manifests, production node_modules and dist/ only", () => {
  const { stages } = parseContainerfile(readFileSync(CONTAINERFILE, "utf8"));
  const runtime = stages[1]?.instructions ?? [];
  const one = (op: string) => {
    const found = runtime.filter((i) => i.op === op);
    assert.equal(found.length, 1, `the runtime stage has one ${op}`);
    return found[0]?.args ?? "";
  };
  assert.equal(one("USER"), `${SERVER_UID}:${SERVER_UID}`);
  assert.equal(one("WORKDIR"), INSTALL_DIR);
  assert.deepEqual(JSON.parse(one("ENTRYPOINT")), ["node"]);
  const cmd = JSON.parse(one("CMD")) as string[];
  const { role } = serverMain(cmd[0]);
  assert.deepEqual(cmd.slice(1), ["--config", `/etc/mimi/${role}.json`]);
  const exposed = one("EXPOSE").split(/\s+/).map(Number);
  for (const { file, config } of allConfigs()) {
    for (const port of [config.port, config.ops?.port]) {
      assert.ok(port !== undefined && exposed.includes(port), `${file}: port ${port} is exposed`);
    }
  }

  // Everything comes from the build stage, each path where it was there, relative to /opt/mimi as
  // to the repository, so node_modules/@mimi/* links (../../packages/*) resolve.
  const copied = new Set<string>();
  for (const i of runtime.filter((i) => i.op === "COPY")) {
    const { flags, sources, dest } = parseCopy(i.args);
    assert.deepEqual(flags, ["--from=build"], `the runtime copies from the build stage only: ${i.args}`);
    for (const source of sources) {
      assert.ok(source.startsWith("/src/"), `${source} comes from the build's folder`);
      const path = source.slice("/src/".length);
      const folder = path.endsWith("/") ? path : dirname(path) === "." ? "./" : `${dirname(path)}/`;
      assert.equal(dest, folder, `${source} keeps its place`);
      copied.add(path.replace(/\/$/, ""));
    }
  }
  assert.ok(
    copied.has("node_modules") && copied.has("package.json"),
    "the pruned node_modules and the root manifest",
  );
  for (const p of ["core", "root", "authoritative", "resolver"]) {
    assert.ok(copied.has(`packages/${p}/dist`), `packages/${p}/dist is copied`);
  }
  for (const path of copied) {
    assert.doesNotMatch(path, /(^|\/)(src|test|bench)(\/|$)/, `${path}: no sources or tests in the image`);
    const ws = /^packages\/([^/]+)\//.exec(path)?.[1];
    if (ws) {
      assert.ok(WORKSPACES.includes(ws), `${path} is a workspace's`);
      assert.ok(copied.has(`packages/${ws}/package.json`), `${ws}'s package.json comes with its files`);
    }
  }
  // A production dependency npm could not hoist lives in its workspace's node_modules; the
  // runtime must copy exactly those folders (COPY fails on a folder that is not there).
  const lock = readJson<Lockfile>(join(REPO, "package-lock.json"));
  const nested = new Set(
    Object.entries(lock.packages)
      .filter(([path, entry]) => /^packages\/[^/]+\/node_modules\//.test(path) && !entry.dev)
      .map(([path]) => path.split("/").slice(0, 3).join("/")),
  );
  assert.deepEqual(
    [...copied].filter((p) => /^packages\/[^/]+\/node_modules$/.test(p)).sort(),
    [...nested].sort(),
  );
});

/** Bare specifiers of the static and dynamic imports of compiled ESM. */
function importsOf(js: string): string[] {
  const found: string[] = [];
  for (const m of js.matchAll(/^\s*(?:import|export)\s(?:[^;"'`]*?\sfrom\s*)?["']([^"']+)["']/gm)) {
    found.push(m[1] as string);
  }
  for (const m of js.matchAll(/\bimport\(\s*["']([^"']+)["']\s*\)/g)) found.push(m[1] as string);
  return found.filter((s) => !s.startsWith(".") && !s.startsWith("/"));
}

test("the built packages import only builtins, workspace exports and their own production dependencies", () => {
  const lock = readJson<Lockfile>(join(REPO, "package-lock.json"));
  const manifests = new Map(
    WORKSPACES.map((w) => [w, readJson<PackageJson>(join(REPO, "packages", w, "package.json"))]),
  );
  const byName = new Map([...manifests.values()].map((m) => [m.name, m]));
  const problems: string[] = [];
  const seen = new Set<string>();
  // devnet ships in the image because the CLI loads its paths and certificate code.
  for (const w of ["core", "root", "authoritative", "resolver", "cli", "devnet"]) {
    const own = manifests.get(w);
    assert.ok(own, `${w} is a workspace`);
    const deps = own.dependencies ?? {};
    const files = walk(join(REPO, "packages", w, "dist"), { built: true }).filter((f) => f.endsWith(".js"));
    assert.ok(files.length > 0, `packages/${w}/dist is built`);
    for (const file of files) {
      for (const spec of importsOf(readFileSync(file, "utf8"))) {
        if (spec.startsWith("node:") || builtinModules.includes(spec)) continue;
        const name = spec
          .split("/")
          .slice(0, spec.startsWith("@") ? 2 : 1)
          .join("/");
        seen.add(name);
        const where = `${relative(REPO, file)} imports ${spec}`;
        if (!(name in deps)) {
          const dev = name in (ROOT_PACKAGE.devDependencies ?? {}) ? " (a root devDependency)" : "";
          problems.push(`${where}, which is not in ${own.name}'s dependencies${dev}`);
          continue;
        }
        const workspace = byName.get(name);
        if (workspace) {
          const subpath = `.${spec.slice(name.length)}`;
          if (workspace.exports && !(subpath in workspace.exports))
            problems.push(`${where}, which ${name} does not export`);
          continue;
        }
        const entry =
          lock.packages[`packages/${w}/node_modules/${name}`] ?? lock.packages[`node_modules/${name}`];
        if (!entry) problems.push(`${where}, which package-lock.json does not install`);
        else if (entry.dev) problems.push(`${where}, which package-lock.json installs for development only`);
      }
    }
  }
  assert.deepEqual(problems, []);
  for (const name of ["@grpc/grpc-js", "better-sqlite3", "pino", "@mimi/core"])
    assert.ok(seen.has(name), name);
});

// ---- Kubernetes ------------------------------------------------------------------------------

/** The parts of a server config the manifests must agree with. */
interface ServerConfig {
  port?: number;
  ops?: { host: string; port: number; allowNonLoopback?: boolean };
  lameDuckSeconds?: number;
  dpId?: string;
  dataDir?: string;
  signingKey?: string;
  rootEndpoints?: string[];
  primary?: { endpoints: string[]; rootPublicKey: string };
  [key: string]: unknown;
}

interface Kustomization {
  namespace: string;
  resources: string[];
  configMapGenerator: { name: string; files: string[] }[];
  images: { name: string; newName: string; newTag: string }[];
}

/** A server's pod as the manifests describe it, with the config its ConfigMap gives it. */
interface Server {
  readonly workload: Workload;
  readonly name: string;
  readonly container: Container;
  readonly volumes: ReadonlyMap<string, Volume>;
  readonly labels: Labels;
  readonly ports: ReadonlyMap<string, number>;
  readonly role: string;
  readonly main: string;
  readonly configPath: string;
  /** The config's file in deploy/kubernetes. */
  readonly configSource: string;
  readonly config: ServerConfig;
}

interface Cluster {
  readonly kustomization: Kustomization;
  readonly docs: Manifest[];
  readonly servers: Server[];
  readonly services: Service[];
}

let loaded: Cluster | undefined;

/** The manifests the kustomization lists, and each server's pod and config. */
function cluster(): Cluster {
  if (loaded) return loaded;
  const kustomization = loadYaml<Kustomization>(join(K8S, "kustomization.yaml"));
  const docs = loadManifests(K8S, kustomization.resources).map((m) => m.doc);
  const generated = new Map(
    kustomization.configMapGenerator.map((g) => [
      g.name,
      new Map(g.files.map((f) => f.split("=", 2) as [string, string])),
    ]),
  );
  const servers = docs
    .filter((d): d is Workload => d.kind === "StatefulSet" || d.kind === "Deployment")
    .map((workload): Server => {
      const name = workload.metadata.name;
      const pod = workload.spec.template.spec;
      assert.equal(pod.containers.length, 1, `${name} runs one container`);
      const container = pod.containers[0] as Container;
      assert.equal(container.command, undefined, `${name} keeps the image's entrypoint (node)`);
      const args = container.args ?? [];
      const { main, role } = serverMain(args[0]);
      assert.equal(args[1], "--config", `${name} names its config`);
      const configPath = args[2] ?? "";
      const volumes = new Map((pod.volumes ?? []).map((v) => [v.name, v]));
      const mount = container.volumeMounts?.find((m) => m.mountPath === configPath);
      const source = mount && volumes.get(mount.name)?.configMap?.name;
      const file = source && mount.subPath ? generated.get(source)?.get(mount.subPath) : undefined;
      assert.ok(file, `${name}: ${configPath} is a key of a generated ConfigMap, mounted by subPath`);
      const ports = new Map((container.ports ?? []).map((p) => [p.name ?? "", p.containerPort]));
      return {
        workload,
        name,
        container,
        volumes,
        labels: workload.spec.template.metadata.labels,
        ports,
        role,
        main,
        configPath,
        configSource: file,
        config: readJson<ServerConfig>(join(K8S, file)),
      };
    });
  const services = docs.filter((d): d is Service => d.kind === "Service");
  loaded = { kustomization, docs, servers, services };
  return loaded;
}

test("the kustomization lists every manifest, one namespace, and a generated ConfigMap per config", () => {
  const { kustomization, docs } = cluster();
  const yamlFiles = readdirSync(K8S).filter((f) => f.endsWith(".yaml") && f !== "kustomization.yaml");
  assert.deepEqual([...kustomization.resources].sort(), yamlFiles.sort());
  const ns = kustomization.namespace;
  for (const d of docs) {
    if (d.kind === "Namespace") assert.equal(d.metadata.name, ns);
    else assert.equal(d.metadata.namespace, ns, `${d.kind} ${d.metadata.name} is in ${ns}`);
  }
  const names = docs.map((d) => `${d.kind}/${d.metadata.name}`);
  assert.equal(new Set(names).size, names.length, "no two manifests share a kind and name");
  const sources = kustomization.configMapGenerator.flatMap((g) => g.files.map((f) => f.split("=")[1]));
  assert.deepEqual(
    sources.sort(),
    readdirSync(join(K8S, "config"))
      .map((f) => `config/${f}`)
      .sort(),
    "every file in config/ is generated into a ConfigMap",
  );
});

test("every server's pod runs the one image with its config's ports, probes, shutdown time and restrictions", () => {
  const { kustomization, servers, services } = cluster();
  const core = readJson<PackageJson>(join(REPO, "packages/core/package.json"));
  const [image] = kustomization.images;
  assert.equal(kustomization.images.length, 1);
  assert.equal(image?.newTag, core.version, "the image is tagged with the build's version");
  assert.deepEqual(
    [...new Set(servers.map((s) => s.role))].sort(),
    ["authoritative", "resolver", "root"],
    "every server has a pod",
  );
  for (const s of servers) {
    const { name, container: c, config } = s;
    const pod = s.workload.spec.template.spec;
    assert.equal(c.image, `${image?.name}:${image?.newTag}`, `${name} runs the kustomization's image`);
    assert.ok(selects(s.workload.spec.selector.matchLabels, s.labels), `${name} selects its pods`);
    assert.equal(s.labels["app.kubernetes.io/component"], s.role, `${name} is labelled with its role`);

    // Ports: the config's, named for the probes, Services and policies.
    assert.deepEqual([...s.ports.keys()].sort(), ["grpc", "ops"], name);
    assert.equal(s.ports.get("grpc"), config.port, `${name}: the gRPC port is the config's`);
    const ops = config.ops;
    assert.ok(ops, `${name}: the config has an ops listener`);
    assert.equal(s.ports.get("ops"), ops.port, `${name}: the ops port is the config's`);
    // Kubelet probes come from the node, not from loopback.
    assert.ok(!["127.0.0.1", "::1", "localhost"].includes(ops.host), `${name}: ops listens beyond loopback`);
    assert.equal(ops.allowNonLoopback, true, `${name}: and says so`);
    const probes = [
      [c.startupProbe, "/healthz"],
      [c.livenessProbe, "/healthz"],
      [c.readinessProbe, "/readyz"],
    ] as const;
    for (const [probe, path] of probes) {
      const get = probe?.httpGet;
      assert.ok(get, `${name}: an HTTP probe for ${path}`);
      assert.equal(get.path, path);
      const port = typeof get.port === "number" ? get.port : s.ports.get(get.port);
      assert.equal(port, ops.port, `${name}: ${path} is asked on the ops port`);
    }
    const annotations = s.workload.spec.template.metadata.annotations ?? {};
    assert.equal(annotations["prometheus.io/port"], String(ops.port), `${name}: metrics are scraped on ops`);
    for (const svc of services.filter((v) => selects(v.spec.selector, s.labels))) {
      for (const p of svc.spec.ports) {
        assert.equal(p.port, config.port, `Service ${svc.metadata.name} serves ${name}'s gRPC port`);
        assert.equal(p.targetPort, "grpc");
      }
    }
    if (s.workload.kind === "StatefulSet") {
      const headless = services.find((v) => v.metadata.name === s.workload.spec.serviceName);
      assert.equal(headless?.spec.clusterIP, "None", `${name}: its serviceName is a headless Service`);
      assert.ok(headless && selects(headless.spec.selector, s.labels), `${name}: which selects its pods`);
    }

    // Shutdown: the lame duck and the drain fit in the grace period, or the kubelet kills early.
    const lameDuck = config.lameDuckSeconds ?? 0;
    assert.ok(lameDuck > 0, `${name}: a lame duck, so callers move away before the pod stops`);
    assert.ok(
      (pod.terminationGracePeriodSeconds ?? 30) > lameDuck + SHUTDOWN_GRACE_SECONDS,
      `${name}: terminationGracePeriodSeconds exceeds lameDuckSeconds (${lameDuck}) and the drain`,
    );

    // Restrictions (Pod Security "restricted"), and no environment from Service links: a Service
    // named "resolver" or "root" with a cluster IP sets RESOLVER_PORT=tcp://... in every pod, which
    // the server would read as its port.
    assert.equal(pod.enableServiceLinks, false, `${name}: no Service links`);
    assert.equal(pod.automountServiceAccountToken, false, `${name}: no API token`);
    const podSecurity = pod.securityContext;
    assert.equal(podSecurity?.runAsNonRoot, true, name);
    assert.equal(podSecurity?.runAsUser, SERVER_UID, name);
    assert.equal(podSecurity?.runAsGroup, SERVER_UID, name);
    assert.equal(podSecurity?.fsGroup, SERVER_UID, `${name}: its volumes are writable by the server`);
    assert.equal(podSecurity?.seccompProfile?.type, "RuntimeDefault", name);
    const security = c.securityContext;
    assert.equal(security?.runAsNonRoot, true, name);
    assert.equal(security?.allowPrivilegeEscalation, false, name);
    assert.equal(security?.readOnlyRootFilesystem, true, name);
    assert.deepEqual(security?.capabilities, { drop: ["ALL"] }, name);
    assert.ok(c.resources?.requests?.cpu && c.resources.requests.memory, `${name}: requests CPU and memory`);
  }
});

/** The keys of a config (dotted) that name files or folders: *File, *Key, *Dir. */
function configPaths(value: unknown, at = ""): { key: string; path: string }[] {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return [];
  return Object.entries(value).flatMap(([k, v]) => {
    const key = at === "" ? k : `${at}.${k}`;
    if (typeof v === "string" && /(File|Key|Dir)$/.test(k)) return [{ key, path: v }];
    return configPaths(v, key);
  });
}

/** The files a server's volumes provide (absolute paths) and the folders it may write in. */
function mountedFiles(s: Server) {
  const files = new Map<string, ReturnType<typeof volumeFiles>[number]>();
  const writable: string[] = [];
  const claims = new Set((s.workload.spec.volumeClaimTemplates ?? []).map((t) => t.metadata.name));
  for (const m of s.container.volumeMounts ?? []) {
    const v = s.volumes.get(m.name);
    if (m.subPath !== undefined) continue;
    if (v === undefined) {
      assert.ok(claims.has(m.name), `${s.name}: volume ${m.name} is a claim template`);
      writable.push(m.mountPath);
    } else if (v.emptyDir) {
      writable.push(m.mountPath);
    } else {
      assert.equal(m.readOnly, true, `${s.name}: ${m.mountPath} is mounted read-only`);
      for (const f of volumeFiles(v)) files.set(join(m.mountPath, f.path), f);
    }
  }
  return { files, writable };
}

test("every file a config names is mounted at its path, and every folder is inside a writable volume", () => {
  for (const s of cluster().servers) {
    const mounts = s.container.volumeMounts ?? [];
    for (const a of mounts) {
      for (const b of mounts) {
        // A mount point inside a read-only volume cannot be made.
        assert.ok(
          !b.mountPath.startsWith(`${a.mountPath}/`),
          `${s.name}: ${b.mountPath} is not inside ${a.mountPath}`,
        );
      }
    }
    const { files, writable } = mountedFiles(s);
    assert.ok(writable.includes("/tmp"), `${s.name}: a writable /tmp (SQLite's temporary files)`);
    const paths = configPaths(s.config);
    assert.ok(
      paths.some((p) => p.key === "tls.keyFile"),
      `${s.name}: the walk finds the config's files`,
    );
    for (const { key, path } of paths) {
      assert.ok(path.startsWith("/"), `${s.name}: ${key} is an absolute path`);
      if (key.endsWith("Dir")) {
        // Inside the volume, not its root: the server makes the folder itself, 0700, its own.
        assert.ok(
          writable.some((w) => path.startsWith(`${w}/`)),
          `${s.name}: ${key} ${path} is a folder inside a writable volume`,
        );
      } else {
        assert.ok(files.has(path), `${s.name}: ${key} ${path} is a file a volume mounts`);
      }
    }
  }
});

/** Runs a command; resolves with its exit code and output. */
function run(cmd: string, args: string[], env: NodeJS.ProcessEnv) {
  return new Promise<{ code: number; stdout: string; stderr: string }>((done) => {
    execFile(cmd, args, { env }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === "number" ? err.code : 1) : 0;
      done({ code, stdout, stderr });
    });
  });
}

test("every ConfigMap's config passes its server's --check against the files its pod mounts, and a DP's too large answer cache does not", async () => {
  const dir = mkdtempSync(join(tmpdir(), "mimi-deploy-"));
  try {
    const pki = join(dir, "pki");
    await ensureDevPki(pki, ["server"]);
    ensureDevSigningKeys(pki, ["root", "server"]);
    const tls = devTlsPaths(pki, "server");
    // What each Secret or ConfigMap key holds (README.md says how they are made).
    const material: Record<string, string> = {
      "ca.crt": tls.caFile,
      "tls.crt": tls.certFile,
      "tls.key": tls.keyFile,
      "signing.pem": devSigningKeyPaths(pki, "server").keyFile,
      "root-signing.pub": devSigningKeyPaths(pki, "root").publicKeyFile,
    };
    // A server reads <ROLE>_PORT; nothing of this process's environment may move its port.
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.endsWith("_PORT")));
    const checks = cluster().servers.map(async (s) => {
      const podRoot = join(dir, s.name);
      const { files, writable } = mountedFiles(s);
      for (const w of writable) mkdirSync(join(podRoot, w), { recursive: true });
      for (const [path, f] of files) {
        const from = material[f.key];
        assert.ok(from, `${s.name}: ${f.kind} ${f.name} key ${f.key} is one the test can make`);
        mkdirSync(dirname(join(podRoot, path)), { recursive: true });
        writeFileSync(join(podRoot, path), readFileSync(from));
        // With fsGroup the kubelet makes projected files group-readable (0440 at least).
        const fsGroup = s.workload.spec.template.spec.securityContext?.fsGroup;
        chmodSync(join(podRoot, path), fsGroup === undefined ? f.mode : f.mode | 0o440);
      }
      // The config as mounted, its absolute paths moved under the pod's folder; the test's
      // certificates come from the development CA.
      const config = JSON.parse(JSON.stringify(s.config), (_k, v: unknown) =>
        typeof v === "string" && v.startsWith("/") ? join(podRoot, v) : v,
      ) as ServerConfig;
      config.allowDevelopmentCa = true;
      const configFile = join(podRoot, s.configPath);
      mkdirSync(dirname(configFile), { recursive: true });
      writeFileSync(configFile, JSON.stringify(config));
      return {
        s,
        configFile,
        ...(await run(process.execPath, [inRepo(s.main), "--check", "--config", configFile], env)),
      };
    });
    const results = await Promise.all(checks);
    for (const { s, code, stdout, stderr } of results) {
      assert.equal(code, 0, `${s.name}: ${s.configSource} passes --check: ${stderr}`);
      const ok = /: ok \((\w+); port (\d+), ops port (\d+)\)/.exec(stdout);
      assert.ok(ok, `${s.name}: --check says ok: ${stdout}`);
      assert.equal(ok[1], s.role);
      assert.equal(
        Number(ok[2]),
        s.ports.get("grpc"),
        `${s.name}: the server listens on the container's gRPC port`,
      );
      assert.equal(Number(ok[3]), s.ports.get("ops"), `${s.name}: and on its ops port`);
    }
    // A DP's answer cache may take at most half its heap: more is refused before it starts, with
    // what to change (the same check runs at every start).
    const dp = results.find((r) => r.s.role === "authoritative");
    assert.ok(dp, "the cluster has a DP");
    const big = join(dirname(dp.configFile), "big-cache.json");
    writeFileSync(
      big,
      JSON.stringify({ ...JSON.parse(readFileSync(dp.configFile, "utf8")), answerCacheMegabytes: 1024 }),
    );
    const refused = await run(
      process.execPath,
      ["--max-old-space-size=512", inRepo(dp.s.main), "--check", "--config", big],
      env,
    );
    assert.notEqual(refused.code, 0, `a 1 GB cache in a 512 MB heap is refused: ${refused.stdout}`);
    assert.match(
      refused.stderr + refused.stdout,
      /answerCacheMegabytes \(1024\) is more than half of this process's heap limit .*--max-old-space-size/,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("the root endpoints of every config name each root pod by its stable name and gRPC port", () => {
  const { kustomization, servers } = cluster();
  const roots = servers.filter((s) => s.role === "root" && s.workload.kind === "StatefulSet");
  const podsOf = (s: Server) =>
    Array.from(
      { length: s.workload.spec.replicas ?? 1 },
      (_, i) =>
        `${s.name}-${i}.${s.workload.spec.serviceName}.${kustomization.namespace}.svc.cluster.local:${s.config.port}`,
    );
  const everyRoot = roots.flatMap(podsOf);
  const primaries = roots.filter((s) => s.config.signingKey !== undefined);
  assert.equal(primaries.length, 1, "one root holds the signing key");
  assert.equal(primaries[0]?.workload.spec.replicas, 1, "and runs one replica");
  for (const s of servers) {
    if (s.config.primary) {
      assert.deepEqual(
        s.config.primary.endpoints,
        podsOf(primaries[0] as Server),
        `${s.name} follows the primary`,
      );
    } else if (s.role !== "root") {
      // Every root, so scaling the secondaries without telling the followers fails here.
      assert.deepEqual(
        [...(s.config.rootEndpoints ?? [])].sort(),
        [...everyRoot].sort(),
        `${s.name} follows every root`,
      );
    }
  }
});

test("each DP's pod and volume stay in its own jurisdiction's regions, one writer each", () => {
  const dps = cluster().servers.filter((s) => s.role === "authoritative");
  assert.ok(dps.length >= 2, "a DP per jurisdiction");
  const regionsOf = new Map<string, string[]>();
  for (const s of dps) {
    assert.equal(s.workload.kind, "StatefulSet", s.name);
    assert.equal(s.workload.spec.replicas, 1, `${s.name}: one store, one writer`);
    assert.equal(s.name, `dp-${s.config.dpId}`, `${s.name} is named after its DP id`);
    const [claim] = s.workload.spec.volumeClaimTemplates ?? [];
    assert.equal(
      claim?.spec.storageClassName,
      `mimi-${s.name}`,
      `${s.name}: a storage class of its own jurisdiction`,
    );
    const dataMount = s.container.volumeMounts?.find((m) => m.name === claim?.metadata.name);
    assert.ok(
      dataMount && s.config.dataDir?.startsWith(`${dataMount.mountPath}/`),
      `${s.name}: the store is on that volume`,
    );
    const terms =
      s.workload.spec.template.spec.affinity?.nodeAffinity?.requiredDuringSchedulingIgnoredDuringExecution
        ?.nodeSelectorTerms ?? [];
    assert.ok(terms.length > 0, `${s.name}: required node affinity`);
    const regions = terms.map((t) => {
      const e = t.matchExpressions?.find((x) => x.key === "topology.kubernetes.io/region");
      assert.equal(e?.operator, "In", `${s.name}: every term requires a region`);
      assert.ok(e.values && e.values.length > 0);
      return e.values;
    });
    regionsOf.set(s.name, regions.flat());
  }
  const all = [...regionsOf.values()].flat();
  assert.equal(new Set(all).size, all.length, "no region serves two jurisdictions");
});

test("the resolvers scale on CPU and keep one serving through voluntary disruptions", () => {
  const { docs, servers } = cluster();
  const resolvers = servers.filter((s) => s.role === "resolver");
  assert.equal(resolvers.length, 1);
  const r = resolvers[0] as Server;
  assert.equal(r.workload.kind, "Deployment");
  assert.equal(r.workload.spec.replicas, undefined, "the autoscaler owns the replica count");
  const hpa = docs.find((d) => d.kind === "HorizontalPodAutoscaler") as
    | (Manifest & {
        spec: { scaleTargetRef: { kind: string; name: string }; minReplicas: number; maxReplicas: number };
      })
    | undefined;
  assert.equal(hpa?.apiVersion, "autoscaling/v2");
  assert.deepEqual(hpa.spec.scaleTargetRef, { apiVersion: "apps/v1", kind: "Deployment", name: r.name });
  const pdb = docs.find((d) => d.kind === "PodDisruptionBudget") as
    | (Manifest & { spec: { minAvailable: number; selector: { matchLabels: Labels } } })
    | undefined;
  assert.ok(pdb && selects(pdb.spec.selector.matchLabels, r.labels), "the budget covers the resolvers");
  assert.ok(hpa.spec.minReplicas >= 2 && pdb.spec.minAvailable < hpa.spec.minReplicas, "a drain can proceed");
  assert.ok(hpa.spec.maxReplicas >= hpa.spec.minReplicas);
});

test("network policies deny by default and allow exactly the protocol's flows", () => {
  const { docs, servers, kustomization } = cluster();
  const policies = docs.filter((d): d is NetworkPolicy => d.kind === "NetworkPolicy");
  const namespace = docs.find((d) => d.kind === "Namespace");
  const inside = {
    namespace: kustomization.namespace,
    namespaceLabels: {
      ...namespace?.metadata.labels,
      "kubernetes.io/metadata.name": kustomization.namespace,
    },
  };
  const pod = (name: string): Party => {
    const s = servers.find((x) => x.name === name);
    assert.ok(s, `a server ${name}`);
    return { ...inside, labels: s.labels, ports: s.ports };
  };
  const elsewhere = (ns: string, labels: Labels = {}): Party => ({
    namespace: ns,
    namespaceLabels: { "kubernetes.io/metadata.name": ns, ...labels },
    labels: {},
  });
  const parties: Record<string, Party> = {
    root: pod("root"),
    secondary: pod("root-secondary"),
    eu: pod("dp-eu"),
    na: pod("dp-na"),
    resolver: pod("resolver"),
    monitoring: elsewhere("monitoring"),
    mspInCluster: elsewhere("msp-bluebird", { "mimi-discovery/msp": "true" }),
    adminInCluster: elsewhere("registry-admin", { "mimi-discovery/admin": "true" }),
    other: elsewhere("other"),
    // The documentation ranges the policies name for outside MSPs and administrators.
    msp: { ip: "198.51.100.7" },
    admin: { ip: "203.0.113.9" },
    stranger: { ip: "192.0.2.1" },
  };
  const serverNames = ["root", "secondary", "eu", "na", "resolver"];
  // [from, to] pairs allowed on the gRPC port; every other pair is refused.
  const grpc = new Set([
    "resolver>root",
    "resolver>secondary",
    "resolver>eu",
    "resolver>na",
    "eu>root",
    "eu>secondary",
    "eu>na",
    "na>root",
    "na>secondary",
    "na>eu",
    "secondary>root",
    // MSPs resolve, claim at DPs and read the registry; admins administer every server.
    ...["msp", "mspInCluster", "admin", "adminInCluster"].flatMap((c) => serverNames.map((t) => `${c}>${t}`)),
  ]);
  const refused: string[] = [];
  const missing: string[] = [];
  for (const [fromName, from] of Object.entries(parties)) {
    for (const to of serverNames) {
      if (fromName === to) continue;
      const key = `${fromName}>${to}`;
      const target = parties[to] as Party;
      if (policiesAllow(policies, from, target, "grpc") !== grpc.has(key)) {
        (grpc.has(key) ? missing : refused).push(key);
      }
      // The ops port: the monitoring namespace only.
      if (policiesAllow(policies, from, target, "ops") !== (fromName === "monitoring"))
        refused.push(`${key} ops`);
    }
  }
  assert.deepEqual(missing, [], "flows the protocol needs are allowed");
  assert.deepEqual(refused, [], "nothing else is");
  const dns: Party = {
    namespace: "kube-system",
    namespaceLabels: { "kubernetes.io/metadata.name": "kube-system" },
    labels: { "k8s-app": "kube-dns" },
  };
  for (const name of serverNames) {
    assert.ok(policiesAllow(policies, parties[name] as Party, dns, 53, "UDP"), `${name} resolves names`);
  }
  // Codes go out by SMTP (587) and to the SMS gateway (443) from the DPs only.
  const relay: Party = { ip: "192.0.2.25" };
  assert.ok(policiesAllow(policies, parties.eu as Party, relay, 587));
  assert.ok(!policiesAllow(policies, parties.resolver as Party, relay, 443));
  const deny = policies.find(
    (p) => Object.keys(p.spec.podSelector).length === 0 && !p.spec.ingress && !p.spec.egress,
  );
  assert.deepEqual(deny?.spec.policyTypes, ["Ingress", "Egress"], "a default deny, both ways");
});

test("the README creates every Secret and ConfigMap the pods mount that the kustomization does not", () => {
  const { kustomization, servers } = cluster();
  const readme = readFileSync(join(K8S, "README.md"), "utf8").replace(/\\\n\s*/g, " ");
  const commands = readme
    .split("\n")
    .filter((l) => /\bkubectl\b.*\bcreate (secret generic|configmap) /.test(l));
  const generated = new Set(kustomization.configMapGenerator.map((g) => g.name));
  for (const s of servers) {
    for (const f of mountedFiles(s).files.values()) {
      if (f.kind === "configMap" && generated.has(f.name)) continue;
      const what = f.kind === "secret" ? `create secret generic ${f.name} ` : `create configmap ${f.name} `;
      const command = commands.find((l) => l.includes(what));
      assert.ok(command, `README.md: kubectl ${what}`);
      assert.ok(command.includes(`--from-file=${f.key}=`), `README.md: ${f.name} gets its key ${f.key}`);
    }
  }
});

test("each Kubernetes config is its deploy/examples config but for what the cluster names", () => {
  // What differs in a cluster: the ops listener leaves loopback, a lame duck for endpoint
  // updates, in-cluster root names, worker threads to match the CPU request.
  const CLUSTER_KEYS = ["ops", "lameDuckSeconds", "rootEndpoints", "bulkVerifyThreads"];
  const strip = (c: ServerConfig) => {
    const out: ServerConfig = { ...c };
    for (const k of CLUSTER_KEYS) delete out[k];
    if (out.primary) out.primary = { ...out.primary, endpoints: [] };
    return out;
  };
  const example = (file: string) => readJson<ServerConfig>(join(REPO, "deploy/examples", file));
  for (const s of cluster().servers) {
    const file = s.configSource.replace(/^config\//, "");
    if (existsSync(join(REPO, "deploy/examples", file))) {
      assert.deepEqual(strip(s.config), strip(example(file)), s.configSource);
    } else {
      // Another DP: the example's twin under its own id.
      const id = s.config.dpId ?? "";
      assert.equal(s.role, "authoritative", `${s.configSource} has an example, or is a DP's`);
      const renamed = JSON.parse(JSON.stringify(s.config).replaceAll(`dp-${id}`, "dp-eu")) as ServerConfig;
      assert.deepEqual(
        strip({ ...renamed, dpId: "eu" }),
        strip(example("authoritative-eu.json")),
        s.configSource,
      );
    }
  }
});
