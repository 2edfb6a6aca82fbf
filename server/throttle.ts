/**
 * Failed-authentication throttling per remote address, in a table of bounded size.
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

interface Entry {
  failures: number;
  windowStart: number;
  blockedUntil: number;
  /** Cool-downs served so far; decides the next one's length. */
  offences: number;
  lastSeen: number;
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
  #maxFailures: number;
  #windowMs: number;
  #cooldownMs: number;
  #maxCooldownMs: number;
  #maxEntries: number;
  #now: () => number;
  /** Insertion order is recency order: every touch re-inserts. */
  #entries = new Map<string, Entry>();

  /** Builds a throttle; see {@linkcode ThrottleOptions} for the defaults. */
  constructor(options: ThrottleOptions = {}) {
    this.#maxFailures = options.maxFailures ?? DEFAULT_THROTTLE_FAILURES;
    this.#windowMs = options.windowMs ?? DEFAULT_THROTTLE_WINDOW_MS;
    this.#cooldownMs = options.cooldownMs ?? DEFAULT_THROTTLE_COOLDOWN_MS;
    this.#maxCooldownMs = Math.max(
      this.#cooldownMs,
      options.maxCooldownMs ?? DEFAULT_THROTTLE_MAX_COOLDOWN_MS,
    );
    this.#maxEntries = Math.max(1, options.maxEntries ?? DEFAULT_THROTTLE_ENTRIES);
    this.#now = options.now ?? (() => performance.now());
  }

  /** Whether throttling is on at all. */
  get enabled(): boolean {
    return this.#maxFailures > 0;
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
    const entry = this.#touch(address, now);
    // Connections admitted before the cool-down began may still fail during it: that is the
    // same offence, not a repeat, so it neither counts nor lengthens the cool-down.
    if (now < entry.blockedUntil) return 0;
    if (now - entry.windowStart > this.#windowMs) {
      entry.failures = 0;
      entry.windowStart = now;
    }
    entry.failures++;
    if (entry.failures < this.#maxFailures) return 0;
    const cooldown = Math.min(this.#maxCooldownMs, this.#cooldownMs * 2 ** entry.offences);
    entry.offences++;
    entry.failures = 0;
    entry.windowStart = now;
    entry.blockedUntil = now + cooldown;
    return cooldown;
  }

  /** Re-inserts `address` as the most recent, creating it (and making room) if needed. */
  #touch(address: string, now: number): Entry {
    let entry = this.#entries.get(address);
    if (entry) {
      this.#entries.delete(address);
      // Quiet for a whole longest cool-down: past offences no longer lengthen the next one.
      if (now - entry.lastSeen > this.#maxCooldownMs && now >= entry.blockedUntil) {
        entry.offences = 0;
      }
    } else {
      entry = { failures: 0, windowStart: now, blockedUntil: 0, offences: 0, lastSeen: now };
      this.#makeRoom(now);
    }
    entry.lastSeen = now;
    this.#entries.set(address, entry);
    return entry;
  }

  #makeRoom(now: number): void {
    if (this.#entries.size < this.#maxEntries) return;
    // Oldest first: drop entries with nothing left to remember; if none, the least recent one.
    for (const [address, entry] of this.#entries) {
      if (this.#entries.size < this.#maxEntries) return;
      if (this.#expired(entry, now)) this.#entries.delete(address);
      else break;
    }
    if (this.#entries.size >= this.#maxEntries) {
      const oldest = this.#entries.keys().next().value!;
      this.#entries.delete(oldest);
    }
  }

  /** Not blocked, no failures in the window, and quiet for a longest cool-down: forgettable. */
  #expired(entry: Entry, now: number): boolean {
    return now >= entry.blockedUntil && now - entry.windowStart > this.#windowMs &&
      now - entry.lastSeen > this.#maxCooldownMs;
  }
}
