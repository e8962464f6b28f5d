// Calls on a channel that has been closed (a DP endpoint the registry no longer lists): grpc-js
// throws as the call starts; the client says upstream_unavailable, as for a failed call there.
import assert from "node:assert/strict";
import { test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { DiscoveryError, pb } from "@mimi/core";
import { openChannel } from "./channel.js";

const unavailable = (e: unknown) => e instanceof DiscoveryError && e.code === "upstream_unavailable";

test("a unary call or a stream started on a closed channel fails as upstream_unavailable", async () => {
  const ch = openChannel("127.0.0.1:1", grpc.credentials.createInsecure());
  ch.close();
  await assert.rejects(ch.client(pb.ResolverService).resolve({ csi: "tel:+447700900001" }), unavailable);
  const stream = ch.client(pb.AuthoritativeService).lookupStream((async function* () {})());
  await assert.rejects(async () => {
    for await (const _ of stream) assert.fail("no reply on a closed channel");
  }, unavailable);
});
