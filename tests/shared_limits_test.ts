/** A worker pool's shared limits: every view of one buffer counts the same connections. */

import assert from "node:assert/strict";
import type { LimitsConfig } from "../server/limits.ts";
import { SharedLimits } from "../server/shared_limits.ts";
import { withTimeout } from "./_helpers.ts";

function config(overrides: Partial<LimitsConfig> = {}): LimitsConfig {
  return {
    maxConnections: 100,
    maxConnectionsPerAddress: 2,
    ...overrides,
    throttle: {
      maxFailures: 3,
      windowMs: 60_000,
      cooldownMs: 60_000,
      maxCooldownMs: 3_600_000,
      maxEntries: 100,
      ...overrides.throttle,
    },
  };
}

/** Two views of one set of limits, as two worker threads have. */
function twoViews(overrides: Partial<LimitsConfig> = {}): [SharedLimits, SharedLimits] {
  const first = new SharedLimits(config(overrides));
  return [first, new SharedLimits(config(overrides), { buffer: first.buffer })];
}

Deno.test("SharedLimits counts one address's connections in every view", () => {
  const [a, b] = twoViews({ maxConnectionsPerAddress: 2 });
  assert.equal(a.connect("192.0.2.1"), undefined);
  assert.equal(b.connect("192.0.2.1"), undefined);
  assert.equal(a.connect("192.0.2.1"), "address-limit");
  assert.equal(b.connect("192.0.2.2"), undefined, "another address has its own count");
  b.disconnect("192.0.2.1");
  assert.equal(
    a.connect("192.0.2.1"),
    undefined,
    "the place given back in one view is free in all",
  );
  // Behind a proxy: the connection first, its address once the header names it.
  assert.equal(b.connect(undefined), undefined);
  assert.equal(b.identify("192.0.2.1"), "address-limit");
  assert.equal(b.identify("192.0.2.3"), undefined);
});

Deno.test("SharedLimits holds the connection cap over every view", () => {
  const [a, b] = twoViews({ maxConnections: 3 });
  assert.equal(a.connect("192.0.2.1"), undefined);
  assert.equal(b.connect(undefined), undefined);
  assert.equal(b.connect("192.0.2.2"), undefined);
  assert.equal(a.connect("192.0.2.3"), "connection-limit");
  assert.equal(b.connect(undefined), "connection-limit");
  a.disconnect(undefined);
  assert.equal(b.connect("192.0.2.3"), undefined);
});

Deno.test("SharedLimits: a cool-down begun in one view turns the address away in every view", () => {
  const [a, b] = twoViews();
  for (let i = 0; i < 2; i++) assert.equal(a.recordFailure("192.0.2.9"), 0);
  assert.equal(b.recordFailure("192.0.2.9"), 60_000, "the third failure, counted in another view");
  assert.ok(a.blockedFor("192.0.2.9") > 59_000);
  assert.equal(a.connect("192.0.2.9"), "throttled");
  assert.equal(a.connect("192.0.2.10"), undefined);
});

Deno.test("SharedLimits agrees with a plain count over many addresses coming and going", () => {
  // A small table, many addresses, random order: entries are made, freed and moved in the
  // hash table all the time, and every answer must still match a Map's.
  const maxConnections = 64;
  const maxPerAddress = 3;
  const limits = new SharedLimits(
    config({ maxConnections, maxConnectionsPerAddress: maxPerAddress }),
  );
  const open = new Map<string, number>();
  const held: string[] = [];
  let seed = 42;
  const random = () => (seed = Math.imul(seed ^ (seed >>> 15), 0x2c1b3c6d) >>> 0) / 2 ** 32;
  for (let step = 0; step < 50_000; step++) {
    if (held.length > 0 && random() < 0.5) {
      const [address] = held.splice(Math.floor(random() * held.length), 1);
      limits.disconnect(address);
      open.set(address, open.get(address)! - 1);
      continue;
    }
    const address = `10.0.${Math.floor(random() * 4)}.${Math.floor(random() * 50)}`;
    const expected = held.length >= maxConnections
      ? "connection-limit"
      : (open.get(address) ?? 0) >= maxPerAddress
      ? "address-limit"
      : undefined;
    assert.equal(limits.connect(address), expected, `step ${step}, ${address}`);
    if (expected === undefined) {
      held.push(address);
      open.set(address, (open.get(address) ?? 0) + 1);
    }
  }
  for (const address of held) limits.disconnect(address);
  // Everything given back: as many distinct addresses as the cap allows fit again.
  for (let i = 0; i < maxConnections; i++) assert.equal(limits.connect(`10.1.0.${i}`), undefined);
});

Deno.test("SharedLimits keeps threads racing for one place from both holding it", async () => {
  const limitsConfig = config({ maxConnectionsPerAddress: 1 });
  const limits = new SharedLimits(limitsConfig);
  const inside = new SharedArrayBuffer(8);
  const url = new URL("./fixtures/limits_worker.ts", import.meta.url).href;
  const workers = [0, 1].map(() => new Worker(url, { type: "module" }));
  try {
    // Without the lock the table would be corrupt, and a thread might spin forever: bounded.
    const reports = await withTimeout(
      Promise.all(workers.map((worker) => {
        const report = new Promise<{ admitted: number; overlaps: number }>((resolve, reject) => {
          worker.onmessage = (event) => resolve(event.data);
          worker.onerror = (event) => reject(new Error(event.message));
        });
        const { buffer } = limits;
        worker.postMessage({ config: limitsConfig, buffer, inside, threads: 2, rounds: 100_000 });
        return report;
      })),
      "two threads racing",
    );
    assert.deepEqual(reports.map((report) => report.overlaps), [0, 0]);
    assert.ok(reports[0].admitted + reports[1].admitted > 0);
    // All given back: the place is free.
    assert.equal(limits.connect("192.0.2.1"), undefined);
    assert.equal(limits.connect("192.0.2.1"), "address-limit");
  } finally {
    for (const worker of workers) worker.terminate();
  }
});

Deno.test("SharedLimits refuses a buffer made for another configuration", () => {
  const limits = new SharedLimits(config({ maxConnections: 10 }));
  assert.throws(
    () => new SharedLimits(config({ maxConnections: 20 }), { buffer: limits.buffer }),
    RangeError,
  );
});
