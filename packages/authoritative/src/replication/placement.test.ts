// Where the registry places a DP's store (H2): jurisdictions compared upper-cased, since a
// registry from before may hold "eu" and a secondary's config say "EU".
import assert from "node:assert/strict";
import { test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { pb } from "@mimi/core";
import { checkPlacement, placementProblem } from "./placement.js";

test("a follower's jurisdiction matches the registry's whatever their case; another is refused", () => {
  const placed = (code: string) => ({ jurisdiction: () => code, placesEndpoints: () => false });
  const req = (jurisdiction: string) => create(pb.FollowStartSchema, { endpoint: "", jurisdiction });
  checkPlacement(placed("eu"), req("EU"));
  checkPlacement(placed("EU"), req("eu"));
  assert.throws(() => checkPlacement(placed("eu"), req("US")), /configured for jurisdiction "US"/);

  const problem = (configured: string, published: string | undefined) =>
    placementProblem("eu", { configured, published: () => published }, undefined);
  assert.equal(problem("EU", "eu"), undefined);
  assert.match(problem("EU", "us") ?? "", /places DP "eu" in "us"/);
  assert.match(problem("EU", undefined) ?? "", /in "none"/);
});
