// Helpers for hand-written parseConfig functions: strict objects (unknown keys are
// errors), typed fields with defaults, and messages that name the offending key.
import { readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";

/** A configuration problem, naming the key and what was expected. */
export class ConfigError extends Error {
  override readonly name = "ConfigError";
}

/** Reads fields of one configuration object, rejecting keys that are not read. */
export class ConfigReader {
  private readonly seen = new Set<string>();

  constructor(
    private readonly obj: Record<string, unknown>,
    private readonly path: string,
  ) {}

  /** Wraps `raw` after checking that it is a plain object. */
  static of(raw: unknown, path = "config"): ConfigReader {
    if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
      throw new ConfigError(`${path} must be an object`);
    }
    return new ConfigReader(raw as Record<string, unknown>, path);
  }

  private take(key: string): unknown {
    this.seen.add(key);
    return this.obj[key];
  }

  string(key: string, fallback?: string): string {
    const v = this.take(key) ?? fallback;
    if (typeof v !== "string" || v === "")
      throw new ConfigError(`${this.path}.${key} must be a non-empty string`);
    return v;
  }

  optionalString(key: string): string | undefined {
    const v = this.take(key);
    if (v === undefined) return undefined;
    if (typeof v !== "string" || v === "")
      throw new ConfigError(`${this.path}.${key} must be a non-empty string`);
    return v;
  }

  integer(key: string, fallback: number, min: number, max: number): number {
    const v = this.take(key) ?? fallback;
    if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max) {
      throw new ConfigError(`${this.path}.${key} must be an integer from ${min} to ${max}`);
    }
    return v;
  }

  /** One of a fixed set of strings. */
  oneOf<T extends string>(key: string, choices: readonly T[], fallback: T): T {
    const v = this.take(key) ?? fallback;
    if (typeof v !== "string" || !(choices as readonly string[]).includes(v)) {
      const names = choices.map((c) => `"${c}"`);
      const list = names.length === 2 ? names.join(" or ") : `one of ${names.join(", ")}`;
      throw new ConfigError(`${this.path}.${key} must be ${list}`);
    }
    return v as T;
  }

  boolean(key: string, fallback: boolean): boolean {
    const v = this.take(key) ?? fallback;
    if (typeof v !== "boolean") throw new ConfigError(`${this.path}.${key} must be true or false`);
    return v;
  }

  stringList(key: string, fallback?: readonly string[], { nonEmpty = false } = {}): string[] {
    const v = this.take(key) ?? fallback;
    if (!Array.isArray(v) || v.some((s) => typeof s !== "string" || s === "")) {
      throw new ConfigError(`${this.path}.${key} must be a list of non-empty strings`);
    }
    if (nonEmpty && v.length === 0) throw new ConfigError(`${this.path}.${key} must not be empty`);
    return [...v];
  }

  /** The keys of this object (for maps such as identity -> count); each is read through the reader. */
  keys(): string[] {
    return Object.keys(this.obj);
  }

  /** A nested object; an absent optional one reads as empty, so its fields take their defaults. */
  object(key: string, { optional = false } = {}): ConfigReader {
    const v = this.take(key);
    return ConfigReader.of(v === undefined && optional ? {} : v, `${this.path}.${key}`);
  }

  /** Throws when the object has keys no reader asked for (a misspelt knob must not be ignored). */
  done(): void {
    const unknown = Object.keys(this.obj).filter((k) => !this.seen.has(k));
    if (unknown.length > 0) {
      throw new ConfigError(
        `${this.path} has unknown key${unknown.length > 1 ? "s" : ""}: ${unknown.join(", ")}`,
      );
    }
  }
}

/** Deeply freezes a parsed configuration so no component can change it after start. */
export function deepFreeze<T>(value: T): T {
  if (typeof value === "object" && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}

/** Reads a JSON config file; returns the parsed value and the folder relative paths are resolved against. */
export function readConfigFile(path: string): { raw: unknown; baseDir: string } {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw new ConfigError(`cannot read config file ${path}: ${(err as Error).message}`);
  }
  try {
    return { raw: JSON.parse(text), baseDir: dirname(resolve(path)) };
  } catch (err) {
    throw new ConfigError(`config file ${path} is not valid JSON${jsonErrorPlace(text, err as Error)}`);
  }
}

/**
 * Where JSON.parse failed, as " at line L, column C", or "" when it does not say. Never the
 * parser's own text, which may quote the file around the error (an inline password).
 */
function jsonErrorPlace(text: string, err: Error): string {
  let at = Number(/at position (\d+)/.exec(err.message)?.[1] ?? Number.NaN);
  if (Number.isNaN(at)) {
    // "Unexpected token 'x', ..." names the token: find it where parsing would have stopped.
    const token = /^Unexpected token '(.)'/.exec(err.message)?.[1];
    if (token === undefined) return "";
    at = firstStrayToken(text, token);
    if (at < 0) return "";
  }
  const before = text.slice(0, at).split("\n");
  return ` at line ${before.length}, column ${(before[before.length - 1] ?? "").length + 1}`;
}

/** The first place outside strings where `token` stands (or -1). */
function firstStrayToken(text: string, token: string): number {
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (inString) {
      if (c === "\\") i++;
      else if (c === '"') inString = false;
    } else if (c === '"') inString = true;
    else if (c === token) return i;
  }
  return -1;
}
