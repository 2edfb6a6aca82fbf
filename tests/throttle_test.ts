/** The failed-authentication throttle, on a clock the test controls. */

import assert from "node:assert/strict";
import { AuthFailureThrottle, type ThrottleOptions } from "../server/throttle.ts";

function throttleWithClock(options: ThrottleOptions = {}) {
  const clock = { now: 0 };
  const throttle = new AuthFailureThrottle({ now: () => clock.now, ...options });
  return { throttle, clock };
}

Deno.test("AuthFailureThrottle blocks an address after maxFailures within the window", () => {
  const { throttle } = throttleWithClock({ maxFailures: 3, cooldownMs: 1_000 });
  assert.equal(throttle.recordFailure("a"), 0);
  assert.equal(throttle.recordFailure("a"), 0);
  assert.equal(throttle.blockedFor("a"), 0);
  assert.equal(throttle.recordFailure("a"), 1_000);
  assert.equal(throttle.blockedFor("a"), 1_000);
  assert.equal(throttle.blockedFor("b"), 0, "other addresses are not affected");
});

Deno.test("AuthFailureThrottle lets the cool-down run out", () => {
  const { throttle, clock } = throttleWithClock({ maxFailures: 1, cooldownMs: 1_000 });
  throttle.recordFailure("a");
  clock.now = 999;
  assert.equal(throttle.blockedFor("a"), 1);
  clock.now = 1_000;
  assert.equal(throttle.blockedFor("a"), 0);
});

Deno.test("AuthFailureThrottle forgets failures older than the window", () => {
  const { throttle, clock } = throttleWithClock({ maxFailures: 2, windowMs: 10_000 });
  throttle.recordFailure("a");
  clock.now = 10_001;
  assert.equal(throttle.recordFailure("a"), 0, "the first failure fell out of the window");
  assert.ok(throttle.recordFailure("a") > 0);
});

Deno.test("AuthFailureThrottle doubles the cool-down on each repeat offence, up to the maximum", () => {
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

Deno.test("AuthFailureThrottle ignores failures during a cool-down (connections from before it)", () => {
  const { throttle, clock } = throttleWithClock({ maxFailures: 2, cooldownMs: 1_000 });
  throttle.recordFailure("a");
  assert.equal(throttle.recordFailure("a"), 1_000);
  for (let i = 0; i < 10; i++) assert.equal(throttle.recordFailure("a"), 0);
  assert.equal(throttle.blockedFor("a"), 1_000, "not lengthened");
  clock.now = 1_000;
  throttle.recordFailure("a");
  assert.equal(throttle.recordFailure("a"), 2_000, "the next offence after it is the second");
});

Deno.test("AuthFailureThrottle starts over for an address quiet for a whole maximum cool-down", () => {
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

Deno.test("AuthFailureThrottle stays within maxEntries under a flood of distinct addresses", () => {
  const { throttle, clock } = throttleWithClock({ maxFailures: 2, maxEntries: 1_000 });
  for (let i = 0; i < 100_000; i++) {
    clock.now++;
    throttle.recordFailure(`10.${i >> 16 & 255}.${i >> 8 & 255}.${i & 255}`);
    assert.ok(throttle.size <= 1_000);
  }
  assert.equal(throttle.size, 1_000);
});

Deno.test("AuthFailureThrottle keeps the most recently seen addresses when it must forget", () => {
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

Deno.test("AuthFailureThrottle with maxFailures 0 never blocks and remembers nothing", () => {
  const { throttle } = throttleWithClock({ maxFailures: 0 });
  for (let i = 0; i < 100; i++) assert.equal(throttle.recordFailure("a"), 0);
  assert.equal(throttle.blockedFor("a"), 0);
  assert.equal(throttle.size, 0);
  assert.equal(throttle.enabled, false);
});
