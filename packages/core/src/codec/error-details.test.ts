import assert from "node:assert/strict";
import { test } from "node:test";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { type Any, AnySchema, anyPack, anyUnpack, durationFromMs } from "@bufbuild/protobuf/wkt";
import type { ErrorDetails } from "../domain/errors.js";
import {
  BadRequestSchema,
  ErrorInfoSchema,
  QuotaFailureSchema,
  RetryInfoSchema,
} from "../gen/generated/google/rpc/error_details_pb.js";
import { StatusSchema } from "../gen/generated/google/rpc/status_pb.js";
import { decodeStatusDetails, ERROR_DOMAIN, encodeStatusDetails } from "./error-details.js";

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

/** The same Status built by protobuf-es's reflection (create, anyPack, toBinary). */
function reflected(code: number, message: string, d: ErrorDetails): Uint8Array {
  const details: Any[] = [];
  if (d.retryAfterMs !== undefined) {
    const retryDelay = durationFromMs(Math.max(0, Math.ceil(d.retryAfterMs)));
    details.push(anyPack(RetryInfoSchema, create(RetryInfoSchema, { retryDelay })));
  }
  if (d.quota?.length) {
    details.push(anyPack(QuotaFailureSchema, create(QuotaFailureSchema, { violations: [...d.quota] })));
  }
  if (d.fields?.length) {
    details.push(anyPack(BadRequestSchema, create(BadRequestSchema, { fieldViolations: [...d.fields] })));
  }
  if (d.reason) {
    const info = { reason: d.reason, domain: ERROR_DOMAIN, metadata: { ...d.metadata } };
    details.push(anyPack(ErrorInfoSchema, create(ErrorInfoSchema, info)));
  }
  if (d.explanation) {
    details.push(
      create(AnySchema, {
        typeUrl: "type.googleapis.com/mimi.discovery.v1.Explanation",
        value: d.explanation,
      }),
    );
  }
  return toBinary(StatusSchema, create(StatusSchema, { code, message, details }));
}

test("the written Status is byte for byte what protobuf-es's reflection writes", () => {
  const cases: [number, string, ErrorDetails][] = [
    [RESOURCE_EXHAUSTED, "spent", details],
    [RESOURCE_EXHAUSTED, "saturated", { retryAfterMs: 1_234.5, reason: "UPSTREAM_SATURATED" }],
    // Whole seconds (no nanos), under a second (no seconds), none at all (an empty Duration).
    [RESOURCE_EXHAUSTED, "", { retryAfterMs: 2_000 }],
    [RESOURCE_EXHAUSTED, "x", { retryAfterMs: 999 }],
    [RESOURCE_EXHAUSTED, "x", { retryAfterMs: 0 }],
    [RESOURCE_EXHAUSTED, "x", { retryAfterMs: -5 }],
    // A retry-after past 2^31 seconds, and one of days.
    [RESOURCE_EXHAUSTED, "x", { retryAfterMs: 2 ** 31 * 1_000 + 1 }],
    [RESOURCE_EXHAUSTED, "x", { retryAfterMs: 86_400_000 * 3 }],
    // Empty strings inside a violation, a map entry with an empty value, several entries.
    [
      3,
      "bad",
      {
        fields: [
          { field: "", description: "d" },
          { field: "f", description: "" },
        ],
      },
    ],
    [
      8,
      "q",
      {
        quota: [
          { subject: "s", description: "" },
          { subject: "", description: "" },
        ],
      },
    ],
    [9, "m", { reason: "R", metadata: { a: "", "": "b", ü: "ünïcode", long: "y".repeat(300) } }],
    [14, "é".repeat(200), { reason: "R", metadata: {} }],
    [14, "x", { explanation: Uint8Array.of(1, 2, 3) }],
    [14, "x", { explanation: new Uint8Array(0) }],
    [INTERNAL, "no details", {}],
  ];
  for (const [code, message, d] of cases) {
    assert.deepEqual(encodeStatusDetails(code, message, d), reflected(code, message, d), JSON.stringify(d));
  }
});
