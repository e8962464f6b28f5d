// The schema check of a store file that came from elsewhere (a backup being restored): its
// tables, indexes, triggers and views must be exactly those a fresh store of this build has.
// A trigger or view planted in a backup would otherwise run inside the server that opens it,
// after every check of its data (a trigger on the change log could rewrite a signed registry
// the moment the restored root signs it again).

/** One row of sqlite_schema: a table, index, trigger or view and the SQL that made it. */
export interface SchemaObject {
  readonly type: string;
  readonly name: string;
  readonly sql: string | null;
}

/** Reads a store's schema objects, SQLite's own (sqlite_*) left out. */
export const SCHEMA_OBJECTS_SQL =
  "SELECT type, name, sql FROM sqlite_schema WHERE name NOT LIKE 'sqlite!_%' ESCAPE '!' ORDER BY type, name";

/** The part of a better-sqlite3 database the check uses (core does not depend on it). */
export interface SchemaSource {
  prepare(sql: string): { all(): unknown[] };
  close(): void;
}

/** What of `file`'s schema differs from `fresh`'s (a new store of this build); closes both. */
export function schemaDriftBetween(fresh: SchemaSource, file: SchemaSource): string[] {
  try {
    const objects = (db: SchemaSource) => db.prepare(SCHEMA_OBJECTS_SQL).all() as SchemaObject[];
    return schemaDrift(objects(fresh), objects(file));
  } finally {
    fresh.close();
    file.close();
  }
}

/** What of `actual` differs from `expected` (a fresh store's schema), one line per object. */
export function schemaDrift(expected: readonly SchemaObject[], actual: readonly SchemaObject[]): string[] {
  const key = (o: SchemaObject) => `${o.type} "${o.name}"`;
  const want = new Map(expected.map((o) => [key(o), o.sql]));
  const got = new Map(actual.map((o) => [key(o), o.sql]));
  const drift: string[] = [];
  for (const [k, sql] of got) {
    if (!want.has(k)) drift.push(`${k} is not part of this build's schema`);
    else if (want.get(k) !== sql) drift.push(`${k} is defined differently from this build's`);
  }
  for (const k of want.keys()) if (!got.has(k)) drift.push(`${k} is missing`);
  return drift;
}
