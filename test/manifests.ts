// Readers for what deploy/ holds besides configs, as test/deploy.test.ts checks it: the
// Containerfile and .dockerignore, the Kubernetes manifests (YAML 1.1, as Kubernetes reads them),
// and an evaluator of NetworkPolicies for the flows between the servers.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parseAllDocuments } from "yaml";

// ---- Containerfile ---------------------------------------------------------------------------

/** One instruction of a Containerfile: the keyword (upper case) and the rest of the line. */
export interface Instruction {
  readonly op: string;
  readonly args: string;
}

/** A build stage: its base, its name (AS ...) and its instructions. */
export interface Stage {
  readonly from: string;
  readonly name: string | undefined;
  readonly instructions: Instruction[];
}

/** The global ARGs (before the first FROM) with their defaults, and the stages. */
export function parseContainerfile(text: string): { args: Map<string, string>; stages: Stage[] } {
  const lines: string[] = [];
  let pending = "";
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    // Comment lines are dropped, also inside a continued instruction (as BuildKit does).
    if (line.startsWith("#")) continue;
    if (line.endsWith("\\")) {
      pending += `${line.slice(0, -1).trim()} `;
      continue;
    }
    const whole = (pending + line).trim();
    pending = "";
    if (whole !== "") lines.push(whole);
  }
  assert.equal(pending, "", "no instruction is left continued at the end");
  const args = new Map<string, string>();
  const stages: Stage[] = [];
  for (const line of lines) {
    const space = line.indexOf(" ");
    const op = line.slice(0, space).toUpperCase();
    const rest = line.slice(space + 1).trim();
    if (op === "FROM") {
      const [from = "", as, name] = rest.split(/\s+/);
      stages.push({ from, name: as?.toUpperCase() === "AS" ? name : undefined, instructions: [] });
    } else if (stages.length === 0) {
      assert.equal(op, "ARG", `only ARG may come before the first FROM: ${line}`);
      const [key = "", value = ""] = rest.split("=", 2);
      args.set(key, value);
    } else {
      stages.at(-1)?.instructions.push({ op, args: rest });
    }
  }
  return { args, stages };
}

/** The flags, sources and destination of a COPY instruction (shell form). */
export function parseCopy(args: string): { flags: string[]; sources: string[]; dest: string } {
  const words = args.split(/\s+/);
  const flags = words.filter((w) => w.startsWith("--"));
  const paths = words.filter((w) => !w.startsWith("--"));
  assert.ok(paths.length >= 2, `COPY names a source and a destination: ${args}`);
  return { flags, sources: paths.slice(0, -1), dest: paths.at(-1) as string };
}

/**
 * Whether .dockerignore `patterns` leave `path` (relative, with slashes) out of the build
 * context: the last pattern that matches the path or one of its parent folders decides, a
 * pattern starting with "!" taking the path back in.
 */
export function ignoredByDockerignore(patterns: readonly string[], path: string): boolean {
  const parts = path.split("/");
  let ignored = false;
  for (const raw of patterns) {
    const negated = raw.startsWith("!");
    const re = globToRegExp(negated ? raw.slice(1) : raw);
    for (let i = 1; i <= parts.length; i++) {
      if (re.test(parts.slice(0, i).join("/"))) {
        ignored = !negated;
        break;
      }
    }
  }
  return ignored;
}

/** The patterns of a .dockerignore file (comments and blank lines dropped). */
export function dockerignorePatterns(text: string): string[] {
  return text
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "" && !l.startsWith("#"))
    .map((l) => l.replace(/\/+$/, ""));
}

function globToRegExp(glob: string): RegExp {
  let re = "";
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i] as string;
    if (glob.startsWith("**/", i)) {
      re += "(?:.*/)?";
      i += 2;
    } else if (glob.startsWith("**", i)) {
      re += ".*";
      i += 1;
    } else if (c === "*") re += "[^/]*";
    else if (c === "?") re += "[^/]";
    else re += c.replace(/[.+^${}()|[\]\\]/g, "\\$&");
  }
  return new RegExp(`^${re}$`);
}

// ---- Kubernetes manifests --------------------------------------------------------------------

/** Labels or a matchLabels selector. */
export type Labels = Readonly<Record<string, string>>;

/** The parts of a manifest every kind has. */
export interface Manifest {
  readonly apiVersion: string;
  readonly kind: string;
  readonly metadata: {
    readonly name: string;
    readonly namespace?: string;
    readonly labels?: Labels;
    readonly annotations?: Labels;
  };
  readonly spec?: unknown;
}

/** A file projected into a volume from a Secret or ConfigMap key. */
export interface KeyToPath {
  readonly key: string;
  readonly path: string;
  readonly mode?: number;
}

/** The volume sources the manifests use. */
export interface Volume {
  readonly name: string;
  readonly configMap?: { readonly name: string; readonly items?: KeyToPath[]; readonly defaultMode?: number };
  readonly secret?: {
    readonly secretName: string;
    readonly items?: KeyToPath[];
    readonly defaultMode?: number;
  };
  readonly projected?: {
    readonly defaultMode?: number;
    readonly sources: {
      readonly secret?: { readonly name: string; readonly items?: KeyToPath[] };
      readonly configMap?: { readonly name: string; readonly items?: KeyToPath[] };
    }[];
  };
  readonly emptyDir?: object;
  readonly persistentVolumeClaim?: { readonly claimName: string };
}

/** An HTTP probe. */
export interface Probe {
  readonly httpGet?: { readonly path: string; readonly port: string | number };
}

/** A container of a pod template. */
export interface Container {
  readonly name: string;
  readonly image: string;
  readonly command?: string[];
  readonly args?: string[];
  readonly ports?: { readonly name?: string; readonly containerPort: number; readonly protocol?: string }[];
  readonly startupProbe?: Probe;
  readonly livenessProbe?: Probe;
  readonly readinessProbe?: Probe;
  readonly resources?: {
    readonly requests?: Readonly<Record<string, string>>;
    readonly limits?: Readonly<Record<string, string>>;
  };
  readonly securityContext?: {
    readonly runAsNonRoot?: boolean;
    readonly allowPrivilegeEscalation?: boolean;
    readonly readOnlyRootFilesystem?: boolean;
    readonly capabilities?: { readonly drop?: string[]; readonly add?: string[] };
  };
  readonly volumeMounts?: {
    readonly name: string;
    readonly mountPath: string;
    readonly subPath?: string;
    readonly readOnly?: boolean;
  }[];
}

/** A pod template's spec. */
export interface PodSpec {
  readonly containers: Container[];
  readonly initContainers?: Container[];
  readonly volumes?: Volume[];
  readonly enableServiceLinks?: boolean;
  readonly automountServiceAccountToken?: boolean;
  readonly terminationGracePeriodSeconds?: number;
  readonly securityContext?: {
    readonly runAsNonRoot?: boolean;
    readonly runAsUser?: number;
    readonly runAsGroup?: number;
    readonly fsGroup?: number;
    readonly seccompProfile?: { readonly type: string };
  };
  readonly affinity?: {
    readonly nodeAffinity?: {
      readonly requiredDuringSchedulingIgnoredDuringExecution?: {
        readonly nodeSelectorTerms: {
          readonly matchExpressions?: { key: string; operator: string; values?: string[] }[];
        }[];
      };
    };
  };
}

/** A StatefulSet or a Deployment. */
export interface Workload extends Manifest {
  readonly spec: {
    readonly replicas?: number;
    readonly serviceName?: string;
    readonly selector: { readonly matchLabels: Labels };
    readonly template: {
      readonly metadata: { readonly labels: Labels; readonly annotations?: Labels };
      readonly spec: PodSpec;
    };
    readonly volumeClaimTemplates?: {
      readonly metadata: { readonly name: string };
      readonly spec: { readonly storageClassName?: string };
    }[];
  };
}

/** A Service. */
export interface Service extends Manifest {
  readonly spec: {
    readonly clusterIP?: string;
    readonly type?: string;
    readonly selector: Labels;
    readonly ports: {
      readonly name?: string;
      readonly port: number;
      readonly targetPort?: string | number;
    }[];
  };
}

/** Every document of every YAML file in `dir` (YAML 1.1, as Kubernetes parses it: 0440 is octal). */
export function loadManifests(dir: string, files: readonly string[]): { file: string; doc: Manifest }[] {
  const out: { file: string; doc: Manifest }[] = [];
  for (const file of files) {
    for (const d of parseAllDocuments(readFileSync(join(dir, file), "utf8"), { version: "1.1" })) {
      assert.deepEqual(d.errors, [], `${file} parses`);
      const doc = d.toJS() as Manifest | null;
      if (doc !== null) out.push({ file, doc });
    }
  }
  return out;
}

/** Parses one YAML 1.1 document. */
export function loadYaml<T>(path: string): T {
  const docs = parseAllDocuments(readFileSync(path, "utf8"), { version: "1.1" });
  assert.equal(docs.length, 1, `${path} holds one document`);
  const [doc] = docs;
  assert.deepEqual(doc?.errors, [], `${path} parses`);
  return doc?.toJS() as T;
}

/** Whether `labels` carry every pair of the selector. */
export function selects(selector: Labels, labels: Labels | undefined): boolean {
  return Object.entries(selector).every(([k, v]) => labels?.[k] === v);
}

/** The files a volume provides: path inside the volume, the source's kind, name and key, and the mode. */
export function volumeFiles(
  v: Volume,
): { path: string; kind: "secret" | "configMap"; name: string; key: string; mode: number }[] {
  // Kubernetes' default mode of projected files.
  const DEFAULT_MODE = 0o644;
  const items = (
    kind: "secret" | "configMap",
    name: string,
    list: KeyToPath[] | undefined,
    defaultMode: number | undefined,
  ) => {
    assert.ok(
      list && list.length > 0,
      `volume ${v.name} lists the items of ${kind} ${name}, so paths are checked`,
    );
    return list.map((i) => ({
      path: i.path,
      kind,
      name,
      key: i.key,
      mode: i.mode ?? defaultMode ?? DEFAULT_MODE,
    }));
  };
  if (v.secret) return items("secret", v.secret.secretName, v.secret.items, v.secret.defaultMode);
  if (v.configMap) return items("configMap", v.configMap.name, v.configMap.items, v.configMap.defaultMode);
  if (v.projected) {
    return v.projected.sources.flatMap((s) => {
      if (s.secret) return items("secret", s.secret.name, s.secret.items, v.projected?.defaultMode);
      if (s.configMap)
        return items("configMap", s.configMap.name, s.configMap.items, v.projected?.defaultMode);
      throw new Error(`volume ${v.name}: a projected source other than a secret or configMap`);
    });
  }
  return [];
}

// ---- NetworkPolicy ---------------------------------------------------------------------------

interface LabelSelector {
  readonly matchLabels?: Labels;
  readonly matchExpressions?: unknown[];
}

interface PolicyPeer {
  readonly podSelector?: LabelSelector;
  readonly namespaceSelector?: LabelSelector;
  readonly ipBlock?: { readonly cidr: string; readonly except?: string[] };
}

interface PolicyPort {
  readonly protocol?: string;
  readonly port?: string | number;
}

/** A NetworkPolicy. */
export interface NetworkPolicy extends Manifest {
  readonly spec: {
    readonly podSelector: LabelSelector;
    readonly policyTypes: string[];
    readonly ingress?: { readonly from?: PolicyPeer[]; readonly ports?: PolicyPort[] }[];
    readonly egress?: { readonly to?: PolicyPeer[]; readonly ports?: PolicyPort[] }[];
  };
}

/** One side of a connection: a pod (namespace, its labels, its named ports) or an outside address. */
export interface Party {
  readonly namespace?: string;
  readonly namespaceLabels?: Labels;
  readonly labels?: Labels;
  readonly ports?: ReadonlyMap<string, number>;
  readonly ip?: string;
}

function matchLabels(sel: LabelSelector, labels: Labels | undefined): boolean {
  assert.equal(sel.matchExpressions, undefined, "policies here select by matchLabels only");
  return selects(sel.matchLabels ?? {}, labels ?? {});
}

function ipv4(ip: string): number {
  return ip.split(".").reduce((n, part) => n * 256 + Number(part), 0);
}

function inCidr(ip: string, cidr: string): boolean {
  const [base = "", bits = "32"] = cidr.split("/");
  const size = 2 ** (32 - Number(bits));
  return Math.floor(ipv4(ip) / size) === Math.floor(ipv4(base) / size);
}

function peerMatches(peer: PolicyPeer, party: Party, policyNamespace: string): boolean {
  if (peer.ipBlock) {
    const { cidr, except = [] } = peer.ipBlock;
    return (
      party.ip !== undefined && inCidr(party.ip, cidr) && !except.some((e) => inCidr(party.ip as string, e))
    );
  }
  if (party.namespace === undefined) return false;
  const namespaceOk = peer.namespaceSelector
    ? matchLabels(peer.namespaceSelector, party.namespaceLabels)
    : party.namespace === policyNamespace;
  return namespaceOk && (peer.podSelector ? matchLabels(peer.podSelector, party.labels) : true);
}

function portMatches(
  ports: PolicyPort[] | undefined,
  target: Party,
  port: string | number,
  protocol: string,
) {
  if (ports === undefined) return true;
  const number = typeof port === "number" ? port : target.ports?.get(port);
  return ports.some(
    (p) =>
      (p.protocol ?? "TCP") === protocol &&
      (p.port === undefined || p.port === port || (typeof p.port === "number" && p.port === number)),
  );
}

/**
 * Whether `policies` let `from` open a connection to `to` on `port` (a number, or the name of
 * one of the target pod's ports): the target's ingress and the source's egress must both allow
 * it, where a pod no policy selects for a direction is open in that direction.
 */
export function policiesAllow(
  policies: readonly NetworkPolicy[],
  from: Party,
  to: Party,
  port: string | number,
  protocol = "TCP",
): boolean {
  const governing = (party: Party, type: string) =>
    policies.filter(
      (p) =>
        p.metadata.namespace === party.namespace &&
        p.spec.policyTypes.includes(type) &&
        matchLabels(p.spec.podSelector, party.labels),
    );
  const ingress = governing(to, "Ingress");
  const ingressOk =
    to.namespace === undefined ||
    ingress.length === 0 ||
    ingress.some((p) =>
      (p.spec.ingress ?? []).some(
        (rule) =>
          (rule.from === undefined ||
            rule.from.some((peer) => peerMatches(peer, from, p.metadata.namespace ?? ""))) &&
          portMatches(rule.ports, to, port, protocol),
      ),
    );
  const egress = from.namespace === undefined ? [] : governing(from, "Egress");
  const egressOk =
    egress.length === 0 ||
    egress.some((p) =>
      (p.spec.egress ?? []).some(
        (rule) =>
          (rule.to === undefined ||
            rule.to.some((peer) => peerMatches(peer, to, p.metadata.namespace ?? ""))) &&
          portMatches(rule.ports, to, port, protocol),
      ),
    );
  return ingressOk && egressOk;
}
