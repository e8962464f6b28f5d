import assert from "node:assert/strict";
import { test } from "node:test";
import { fromBinary } from "@bufbuild/protobuf";
import { anyUnpack } from "@bufbuild/protobuf/wkt";
import { RetryInfoSchema } from "../gen/generated/google/rpc/error_details_pb.js";
import { StatusSchema } from "../gen/generated/google/rpc/status_pb.js";
import { decodeStatusDetails, encodeStatusDetails } from "./error-details.js";

/** google.rpc.Code values (core has no gRPC library). */
const RESOURCE_EXHAUSTED = 8;
const INTERNAL = 13;

const details = {
  retryAfterMs: 1_200_000,
  quota: [{ subject: "csi", description: "3 codes per number per hour" }],
  fields: [{ field: "csi", description: "not E.164" }],
  reason: "CODE_LIMIT_CSI_HOUR",
  metadata: { budget: "3 codes per number per hour" },
};

test("details travel as a google.rpc.Status any client decodes, and come back whole", () => {
  const bytes = encodeStatusDetails(RESOURCE_EXHAUSTED, "spent", details);
  const status = fromBinary(StatusSchema, bytes);
  assert.equal(status.code, RESOURCE_EXHAUSTED);
  assert.equal(status.message, "spent");
  assert.deepEqual(
    status.details.map((d) => d.typeUrl),
    ["RetryInfo", "QuotaFailure", "BadRequest", "ErrorInfo"].map(
      (n) => `type.googleapis.com/google.rpc.${n}`,
    ),
  );
  const retry = status.details[0] && anyUnpack(status.details[0], RetryInfoSchema);
  assert.equal(retry?.retryDelay?.seconds, 1_200n);
  assert.deepEqual(decodeStatusDetails(bytes), details);
});

test("an absent, malformed or oversized trailer yields no details rather than an error", () => {
  assert.equal(decodeStatusDetails(undefined), undefined);
  assert.equal(decodeStatusDetails(Uint8Array.of(0xff, 0xff, 0xff)), undefined);
  assert.equal(decodeStatusDetails(new Uint8Array(20_000)), undefined);
  const empty = encodeStatusDetails(INTERNAL, "x", {});
  assert.equal(decodeStatusDetails(empty), undefined);
});
