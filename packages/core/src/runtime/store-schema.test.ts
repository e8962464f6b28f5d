import assert from "node:assert/strict";
import { test } from "node:test";
import { schemaDrift } from "./store-schema.js";

const table = { type: "table", name: "mappings", sql: "CREATE TABLE mappings (csi TEXT)" };
const trigger = {
  type: "trigger",
  name: "log",
  sql: "CREATE TRIGGER log AFTER INSERT ON mappings BEGIN SELECT 1; END",
};

test("a store's schema drifts when an object is added, missing or defined otherwise", () => {
  assert.deepEqual(schemaDrift([table, trigger], [trigger, table]), [], "order does not matter");
  assert.deepEqual(schemaDrift([table], [table, trigger]), [
    `trigger "log" is not part of this build's schema`,
  ]);
  assert.deepEqual(schemaDrift([table, trigger], [table]), [`trigger "log" is missing`]);
  assert.deepEqual(schemaDrift([table], [{ ...table, sql: "CREATE TABLE mappings (csi TEXT, x)" }]), [
    `table "mappings" is defined differently from this build's`,
  ]);
  // A view named like a table is another object, not the table.
  assert.deepEqual(schemaDrift([table], [{ ...table, type: "view" }]), [
    `view "mappings" is not part of this build's schema`,
    `table "mappings" is missing`,
  ]);
});
