// Roles read from a certificate's subject alternative names, as Node writes them in one string.
import assert from "node:assert/strict";
import { test } from "node:test";
import { rolesOf, subjectAltNames } from "./roles.js";

const roles = (subjectaltname: string) => [...rolesOf({ subjectaltname })].sort();

test("each URI name urn:mimi:role:<role> grants that role; other names and unknown roles grant none", () => {
  assert.deepEqual(roles("DNS:localhost, IP Address:127.0.0.1, URI:urn:mimi:role:dp"), ["dp"]);
  assert.deepEqual(roles("URI:urn:mimi:role:resolver, URI:urn:mimi:role:admin"), ["admin", "resolver"]);
  assert.deepEqual(roles("URI:urn:mimi:role:superuser, DNS:urn:mimi:role:root"), []);
  assert.deepEqual(roles(""), []);
  assert.deepEqual(rolesOf(undefined).size, 0);
});

// Node quotes a name holding a comma as a JSON string. Split on commas, the text inside it read
// as names of its own: a CA that copied a requester's text into a URI granted the root role.
test("a quoted name is read whole: text inside it grants no role", () => {
  const node = 'URI:"urn:x,URI:urn:mimi:role:root,y", DNS:"a, URI:urn:mimi:role:admin"';
  assert.deepEqual(subjectAltNames(node), [
    { type: "URI", value: "urn:x,URI:urn:mimi:role:root,y" },
    { type: "DNS", value: "a, URI:urn:mimi:role:admin" },
  ]);
  assert.deepEqual(roles(node), []);
  assert.deepEqual(roles(`${node}, URI:urn:mimi:role:msp`), ["msp"]);
  assert.deepEqual(subjectAltNames('URI:"a\\"b, c", DNS:d'), [
    { type: "URI", value: 'a"b, c' },
    { type: "DNS", value: "d" },
  ]);
  // Not Node's form: no role at all rather than a guess.
  assert.equal(subjectAltNames('URI:"unterminated, URI:urn:mimi:role:root'), undefined);
  assert.deepEqual(roles('URI:"unterminated, URI:urn:mimi:role:root'), []);
  assert.deepEqual(roles("URI:urn:mimi:role:root,URI:urn:mimi:role:dp"), []);
});
