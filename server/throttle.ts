/**
 * Failed-authentication throttling per remote address, in a table of bounded size. The rules are
 * functions of one address's {@linkcode FailureRecord}, so that a worker pool's shared table
 * (`shared_limits.ts`) applies the very same ones.
 *
 * @module
 */

/** Options for {@linkcode AuthFailureThrottle}. */
export interface ThrottleOptions {
  /** Failures within `windowMs` that put an address in cool-down; 0 turns throttling off. */
  maxFailures?: number;
  /** How long failures are remembered towards `maxFailures`. */
  windowMs?: number;
  /** The first cool-down; each repeat offence doubles it, up to `maxCooldownMs`. */
  cooldownMs?: number;
  /** The longest cool-down. */
  maxCooldownMs?: number;
  /** Addresses remembered at most; the least recently seen go first. */
  maxEntries?: number;
  /** A monotonic clock in milliseconds; tests pass their own. */
  now?: () => number;
}

/** Default failures before a cool-down. */
export const DEFAULT_THROTTLE_FAILURES = 5;
/** Default window for counting failures. */
export const DEFAULT_THROTTLE_WINDOW_MS = 60_000;
/** Default first cool-down. */
export const DEFAULT_THROTTLE_COOLDOWN_MS = 30_000;
/** Default longest cool-down. */
export const DEFAULT_THROTTLE_MAX_COOLDOWN_MS = 60 * 60_000;
/** Default size of the address table: a few MB at most. */
export const DEFAULT_THROTTLE_ENTRIES = 10_000;

/** What the throttle remembers of one address; the pool's shared table keeps the same fields. */
export interface FailureRecord {
  /** Failures since `windowStart`. */
  failures: number;
  /** When the window those failures count in began. */
  windowStart: number;
  /** When the cool-down ends (in the past when there is none). */
  blockedUntil: number;
  /** Cool-downs served so far; decides the next one's length. */
  offences: number;
  /** When the address last failed. */
  lastSeen: number;
}

/** The throttle's numbers, resolved: {@linkcode ThrottleOptions} without the clock and the table. */
export interface ThrottleRules {
  /** Failures within `windowMs` that start a cool-down; 0: never. */
  maxFailures: number;
  /** How long failures count. */
  windowMs: number;
  /** The first cool-down. */
  cooldownMs: number;
  /** The longest cool-down (at least `cooldownMs`). */
  maxCooldownMs: number;
}

/** {@linkcode ThrottleOptions} with the defaults filled in. */
export function throttleRules(options: ThrottleOptions = {}): ThrottleRules {
  const cooldownMs = options.cooldownMs ?? DEFAULT_THROTTLE_COOLDOWN_MS;
  return {
    maxFailures: options.maxFailures ?? DEFAULT_THROTTLE_FAILURES,
    windowMs: options.windowMs ?? DEFAULT_THROTTLE_WINDOW_MS,
    cooldownMs,
    maxCooldownMs: Math.max(cooldownMs, options.maxCooldownMs ?? DEFAULT_THROTTLE_MAX_COOLDOWN_MS),
  };
}

/** Marks `record` as seen at `now`: quiet for a whole longest cool-down, its offences are forgiven. */
export function markSeen(record: FailureRecord, now: number, rules: ThrottleRules): void {
  if (now - record.lastSeen > rules.maxCooldownMs && now >= record.blockedUntil) {
    record.offences = 0;
  }
  record.lastSeen = now;
}

/**
 * Counts one failure in `record` (already marked seen).
 *
 * @returns the cool-down it starts, in milliseconds, or 0.
 */
export function countFailure(record: FailureRecord, now: number, rules: ThrottleRules): number {
  // Connections admitted before the cool-down began may still fail during it: that is the
  // same offence, not a repeat, so it neither counts nor lengthens the cool-down.
  if (now < record.blockedUntil) return 0;
  if (now - record.windowStart > rules.windowMs) {
    record.failures = 0;
    record.windowStart = now;
  }
  record.failures++;
  if (record.failures < rules.maxFailures) return 0;
  const cooldown = Math.min(rules.maxCooldownMs, rules.cooldownMs * 2 ** record.offences);
  record.offences++;
  record.failures = 0;
  record.windowStart = now;
  record.blockedUntil = now + cooldown;
  return cooldown;
}

/** The failures of `record` that still count towards a cool-down at `now`. */
export function failuresInWindow(record: FailureRecord, now: number, rules: ThrottleRules): number {
  return now - record.windowStart > rules.windowMs ? 0 : record.failures;
}

/** Not blocked, no failures in the window, and quiet for a longest cool-down: forgettable. */
export function isForgettable(record: FailureRecord, now: number, rules: ThrottleRules): boolean {
  return now >= record.blockedUntil && now - record.windowStart > rules.windowMs &&
    now - record.lastSeen > rules.maxCooldownMs;
}

/**
 * Counts failed handshakes per address and, past a threshold, turns the address away for a
 * cool-down that doubles with every repeat offence.
 *
 * Memory stays bounded whatever the traffic: entries expire once they hold nothing worth
 * remembering, and past `maxEntries` the least recently seen address is forgotten, so a flood of
 * distinct addresses costs at most `maxEntries` entries.
 *
 * @example
 * ```ts
 * import { AuthFailureThrottle } from "./throttle.ts";
 * const throttle = new AuthFailureThrottle({ maxFailures: 3 });
 * for (let i = 0; i < 3; i++) throttle.recordFailure("192.0.2.1");
 * throttle.blockedFor("192.0.2.1"); // > 0: turn this address away
 * ```
 */
export class AuthFailureThrottle {
  #rules: ThrottleRules;
  #maxEntries: number;
  #now: () => number;
  /** Insertion order is recency order: every touch re-inserts. */
  #entries = new Map<string, FailureRecord>();

  /** Builds a throttle; see {@linkcode ThrottleOptions} for the defaults. */
  constructor(options: ThrottleOptions = {}) {
    this.#rules = throttleRules(options);
    this.#maxEntries = Math.max(1, options.maxEntries ?? DEFAULT_THROTTLE_ENTRIES);
    this.#now = options.now ?? (() => performance.now());
  }

  /** Whether throttling is on at all. */
  get enabled(): boolean {
    return this.#rules.maxFailures > 0;
  }

  /** Addresses remembered now (never more than `maxEntries`). */
  get size(): number {
    return this.#entries.size;
  }

  /** Milliseconds `address` must still wait, or 0 if it may connect. */
  blockedFor(address: string): number {
    const entry = this.#entries.get(address);
    if (entry === undefined) return 0;
    return Math.max(0, entry.blockedUntil - this.#now());
  }

  /**
   * Counts one failed handshake from `address`.
   *
   * @returns the cool-down it starts, in milliseconds, or 0 if the address may go on trying.
   */
  recordFailure(address: string): number {
    if (!this.enabled) return 0;
    const now = this.#now();
    return countFailure(this.#touch(address, now), now, this.#rules);
  }

  /** Re-inserts `address` as the most recent, creating it (and making room) if needed. */
  #touch(address: string, now: number): FailureRecord {
    let entry = this.#entries.get(address);
    if (entry) {
      this.#entries.delete(address);
    } else {
      entry = { failures: 0, windowStart: now, blockedUntil: 0, offences: 0, lastSeen: now };
      this.#makeRoom(now);
    }
    markSeen(entry, now, this.#rules);
    this.#entries.set(address, entry);
    return entry;
  }

  #makeRoom(now: number): void {
    if (this.#entries.size < this.#maxEntries) return;
    // Oldest first: drop entries with nothing left to remember; if none, the least recent one.
    for (const [address, entry] of this.#entries) {
      if (this.#entries.size < this.#maxEntries) return;
      if (isForgettable(entry, now, this.#rules)) this.#entries.delete(address);
      else break;
    }
    if (this.#entries.size >= this.#maxEntries) {
      const oldest = this.#entries.keys().next().value!;
      this.#entries.delete(oldest);
    }
  }
}
