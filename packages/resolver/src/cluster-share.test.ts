import assert from "node:assert/strict";
import { test } from "node:test";
import { createLogger, DEFAULT_ENUMERATION_POLICY, type EnumerationPolicy } from "@mimi/core";
import type { ClusterLink } from "@mimi/host";
import { clusterPrimary, shareWithCluster } from "./cluster-share.js";
import { DEFAULT_QUOTA_POLICY } from "./quotas.js";

const NOW = 1_800_000_000_000;
const enumeration: EnumerationPolicy = { ...DEFAULT_ENUMERATION_POLICY, mode: "enforce", minDistinct: 4 };
// 10 lookups a minute at most (a floor of 10, burst 1 of a day's 100).
const quotas = { ...DEFAULT_QUOTA_POLICY, perMinuteFloor: 10, burstFactor: 1 };
const config = { quotas, enumeration, workers: 2 };

/**
 * Workers and a primary in one process, connected as host cluster.ts connects them (messages
 * cloned on the way, as IPC does): what a worker shares goes to the primary's part, what the
 * primary broadcasts to every worker.
 */
function cluster() {
  const handlers = new Map<number, (body: unknown) => void>();
  const logged: string[] = [];
  let clock = NOW;
  const primary = clusterPrimary(
    {
      config,
      log: createLogger({ name: "test", level: "silent", pid: 0 }),
      clock: () => clock,
      broadcast: (body) => {
        for (const h of handlers.values()) h(structuredClone(body));
      },
    },
    (_log, d) => logged.push(`detected ${d.subject} ${d.scope}`),
  );
  const link = (n: number): ClusterLink => ({
    worker: n,
    workers: 2,
    share: (body) => void primary.onShare(structuredClone(body), n),
    onShare: (h) => void handlers.set(n, h),
  });
  const started: ReturnType<typeof shareWithCluster>[] = [];
  const worker = (n: number) => {
    const w = shareWithCluster(link(n), config, () => clock);
    started.push(w);
    const welcome = primary.welcome?.(n);
    if (welcome) handlers.get(n)?.(structuredClone(welcome));
    return w;
  };
  /** Both workers' batches to the primary, and its batch to them. */
  const flush = () => {
    for (const w of started) w.flush();
    primary.flush();
  };
  const close = () => {
    for (const w of started) w.close();
    primary.close?.();
  };
  return { worker, flush, close, logged, advance: (ms: number) => (clock += ms), now: () => clock };
}

test("a charge at one worker is spent at the other after a flush; a refund comes back", () => {
  const c = cluster();
  try {
    const a = c.worker(1);
    const b = c.worker(2);
    const left = () => b.quotas.report("msp", ["eu"], c.now()).perMinuteRemaining;
    assert.equal(left(), 10);
    for (let i = 0; i < 4; i++) a.quotas.charge("msp", "eu", c.now());
    assert.equal(left(), 10, "not before the flush");
    c.flush();
    assert.equal(left(), 6);
    a.quotas.refund("msp", "eu", c.now());
    c.flush();
    assert.equal(left(), 7);
    // The other worker's grants count against its own: past the minute's 10 it refuses.
    for (let i = 0; i < 7; i++) b.quotas.charge("msp", "eu", c.now());
    assert.throws(() => b.quotas.charge("msp", "eu", c.now()), /spent its budget/);
    // A worker's own refusals are its own to count.
    assert.equal(b.quotas.refused, 1);
    assert.equal(a.quotas.refused, 0);
  } finally {
    c.close();
  }
});

test("a burst granted by both workers at once is owed as debt: together they refill one budget, not two", () => {
  const c = cluster();
  try {
    const a = c.worker(1);
    const b = c.worker(2);
    for (let i = 0; i < 10; i++) a.quotas.charge("msp", "eu", c.now());
    for (let i = 0; i < 10; i++) b.quotas.charge("msp", "eu", c.now());
    c.flush();
    // 20 granted of a budget of 10: each owes the other's 10, a minute of refill.
    for (const w of [a, b]) {
      assert.equal(w.quotas.report("msp", ["eu"], c.now()).perMinuteRemaining, 0);
      assert.throws(() => w.quotas.charge("msp", "eu", c.now()), /spent its budget/);
    }
    c.advance(60_000);
    assert.throws(() => a.quotas.charge("msp", "eu", c.now()), /spent its budget/);
    // Half a minute later 5 units have come back, for both workers together.
    c.advance(30_000);
    let granted = 0;
    for (let i = 0; i < 10; i++) {
      for (const w of [a, b]) {
        try {
          w.quotas.charge("msp", "eu", c.now());
          granted++;
        } catch {
          // refused
        }
        c.flush();
      }
    }
    assert.equal(granted, 5);
  } finally {
    c.close();
  }
});

test("a worker that starts late gets the budgets spent and the blocks in force", () => {
  const c = cluster();
  try {
    const a = c.worker(1);
    for (let i = 0; i < 10; i++) a.quotas.charge("msp", "eu", c.now());
    for (let i = 0; i < 4; i++)
      a.enumeration.observe("crawler", `tel:+4477003${String(i).padStart(5, "0")}`, true, c.now());
    c.flush();
    const late = c.worker(2);
    assert.throws(() => late.quotas.charge("msp", "eu", c.now()), /spent its budget/);
    assert.equal(
      late.enumeration.blocked("crawler", "tel:+447700309999", c.now(), false)?.scope,
      "tel:+44770030",
    );
    assert.equal(late.enumeration.counts.refused, 0, "a look counts no refusal");
    assert.equal(late.enumeration.blocked("crawler", "tel:+447700309999", c.now())?.scope, "tel:+44770030");
    assert.equal(late.enumeration.counts.refused, 1);
  } finally {
    c.close();
  }
});

test("one detector in the primary sees both workers' observations, logs once, and blocks at both", () => {
  const c = cluster();
  try {
    const a = c.worker(1);
    const b = c.worker(2);
    const csi = (i: number) => `tel:+4477003${String(i).padStart(5, "0")}`;
    // Two distinct numbers at each worker: neither alone reaches minDistinct 4.
    for (let i = 0; i < 2; i++) assert.deepEqual(a.enumeration.observe("msp", csi(i), true, c.now()), []);
    a.flush();
    assert.equal(a.enumeration.blocked("msp", csi(9), c.now()), undefined);
    for (let i = 2; i < 4; i++) assert.deepEqual(b.enumeration.observe("msp", csi(i), true, c.now()), []);
    b.flush();
    assert.deepEqual(c.logged.sort(), ["detected msp all", "detected msp tel:+44770030"]);
    for (const w of [a, b]) {
      const block = w.enumeration.blocked("msp", csi(9), c.now());
      assert.equal(block?.scope, "tel:+44770030");
      assert.equal(w.enumeration.blocked("other", csi(9), c.now()), undefined);
      assert.equal(w.enumeration.blocked("msp", csi(9), (block?.blockedUntilMs ?? 0) + 1), undefined);
      assert.equal(w.enumeration.recent().length, 2);
    }
    // Counted by the worker whose observation tripped them (b's), so the workers' sums are right.
    assert.equal(a.enumeration.counts.detections, 0);
    assert.equal(b.enumeration.counts.detections, 2);
  } finally {
    c.close();
  }
});
