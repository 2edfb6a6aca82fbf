/**
 * The failed-authentication throttle, on a clock the test controls: each behaviour for a server in
 * one thread (`AuthFailureThrottle`) and for a worker pool's shared table (`SharedLimits`).
 */

import assert from "node:assert/strict";
import { SharedLimits } from "../server/shared_limits.ts";
import {
  AuthFailureThrottle,
  DEFAULT_THROTTLE_COOLDOWN_MS,
  DEFAULT_THROTTLE_ENTRIES,
  DEFAULT_THROTTLE_FAILURES,
  DEFAULT_THROTTLE_MAX_COOLDOWN_MS,
  DEFAULT_THROTTLE_WINDOW_MS,
  type ThrottleOptions,
} from "../server/throttle.ts";

/** What both implementations answer to. */
type Throttle = Pick<
  AuthFailureThrottle,
  "recordFailure" | "blockedFor" | "size"
>;

const IMPLEMENTATIONS = {
  AuthFailureThrottle: (options: ThrottleOptions): Throttle => new AuthFailureThrottle(options),
  SharedLimits: ({ now, ...options }: ThrottleOptions): Throttle =>
    new SharedLimits({
      maxConnections: 16,
      maxConnectionsPerAddress: 0,
      throttle: {
        maxFailures: options.maxFailures ?? DEFAULT_THROTTLE_FAILURES,
        windowMs: options.windowMs ?? DEFAULT_THROTTLE_WINDOW_MS,
        cooldownMs: options.cooldownMs ?? DEFAULT_THROTTLE_COOLDOWN_MS,
        maxCooldownMs: options.maxCooldownMs ?? DEFAULT_THROTTLE_MAX_COOLDOWN_MS,
        maxEntries: options.maxEntries ?? DEFAULT_THROTTLE_ENTRIES,
      },
    }, { now }),
};

/** A throttle of each kind on a clock the test moves by hand. */
type WithClock = (options?: ThrottleOptions) => { throttle: Throttle; clock: { now: number } };

/** Defines the test once per implementation, named after it. */
function test(name: string, fn: (throttleWithClock: WithClock) => void | Promise<void>) {
  for (const [kind, build] of Object.entries(IMPLEMENTATIONS)) {
    Deno.test(`${kind} ${name}`, () =>
      fn((options = {}) => {
        const clock = { now: 0 };
        return { throttle: build({ now: () => clock.now, ...options }), clock };
      }));
  }
}

test("blocks an address after maxFailures within the window", (throttleWithClock) => {
  const { throttle } = throttleWithClock({ maxFailures: 3, cooldownMs: 1_000 });
  assert.equal(throttle.recordFailure("a"), 0);
  assert.equal(throttle.recordFailure("a"), 0);
  assert.equal(throttle.blockedFor("a"), 0);
  assert.equal(throttle.recordFailure("a"), 1_000);
  assert.equal(throttle.blockedFor("a"), 1_000);
  assert.equal(throttle.blockedFor("b"), 0, "other addresses are not affected");
});

test("lets the cool-down run out", (throttleWithClock) => {
  const { throttle, clock } = throttleWithClock({ maxFailures: 1, cooldownMs: 1_000 });
  throttle.recordFailure("a");
  clock.now = 999;
  assert.equal(throttle.blockedFor("a"), 1);
  clock.now = 1_000;
  assert.equal(throttle.blockedFor("a"), 0);
});

test("forgets failures older than the window", (throttleWithClock) => {
  const { throttle, clock } = throttleWithClock({ maxFailures: 2, windowMs: 10_000 });
  throttle.recordFailure("a");
  clock.now = 10_001;
  assert.equal(throttle.recordFailure("a"), 0, "the first failure fell out of the window");
  assert.ok(throttle.recordFailure("a") > 0);
});

test("doubles the cool-down on each repeat offence, up to the maximum", (throttleWithClock) => {
  const { throttle, clock } = throttleWithClock({
    maxFailures: 1,
    cooldownMs: 1_000,
    maxCooldownMs: 5_000,
  });
  const cooldowns = [];
  for (let i = 0; i < 5; i++) {
    const cooldown = throttle.recordFailure("a");
    cooldowns.push(cooldown);
    clock.now += cooldown; // serve it out, then offend again
  }
  assert.deepEqual(cooldowns, [1_000, 2_000, 4_000, 5_000, 5_000]);
});

test("ignores failures during a cool-down (connections from before it)", (throttleWithClock) => {
  const { throttle, clock } = throttleWithClock({ maxFailures: 2, cooldownMs: 1_000 });
  throttle.recordFailure("a");
  assert.equal(throttle.recordFailure("a"), 1_000);
  for (let i = 0; i < 10; i++) assert.equal(throttle.recordFailure("a"), 0);
  assert.equal(throttle.blockedFor("a"), 1_000, "not lengthened");
  clock.now = 1_000;
  throttle.recordFailure("a");
  assert.equal(throttle.recordFailure("a"), 2_000, "the next offence after it is the second");
});

test("starts over for an address quiet for a whole maximum cool-down", (throttleWithClock) => {
  const { throttle, clock } = throttleWithClock({
    maxFailures: 1,
    cooldownMs: 1_000,
    maxCooldownMs: 10_000,
  });
  throttle.recordFailure("a");
  clock.now += 1_000;
  assert.equal(throttle.recordFailure("a"), 2_000);
  clock.now += 2_000 + 10_001;
  assert.equal(throttle.recordFailure("a"), 1_000);
});

test("stays within maxEntries under a flood of distinct addresses", (throttleWithClock) => {
  const { throttle, clock } = throttleWithClock({ maxFailures: 2, maxEntries: 1_000 });
  for (let i = 0; i < 100_000; i++) {
    clock.now++;
    throttle.recordFailure(`10.${i >> 16 & 255}.${i >> 8 & 255}.${i & 255}`);
    assert.ok(throttle.size <= 1_000);
  }
  assert.equal(throttle.size, 1_000);
});

test("keeps the most recently seen addresses when it must forget", (throttleWithClock) => {
  const { throttle, clock } = throttleWithClock({ maxFailures: 2, maxEntries: 2 });
  throttle.recordFailure("old");
  clock.now++;
  throttle.recordFailure("recent");
  clock.now++;
  throttle.recordFailure("recent"); // now blocked, and the most recent
  clock.now++;
  throttle.recordFailure("new"); // evicts "old", the least recently seen
  assert.ok(throttle.blockedFor("recent") > 0);
  assert.equal(throttle.recordFailure("old"), 0, "old's earlier failure was forgotten");
});

test("with maxFailures 0 never blocks and remembers nothing", (throttleWithClock) => {
  const { throttle } = throttleWithClock({ maxFailures: 0 });
  for (let i = 0; i < 100; i++) assert.equal(throttle.recordFailure("a"), 0);
  assert.equal(throttle.blockedFor("a"), 0);
  assert.equal(throttle.size, 0);
  const enabled = throttle instanceof SharedLimits
    ? throttle.throttling
    : (throttle as AuthFailureThrottle).enabled;
  assert.equal(enabled, false);
});
