/**
 * A worker pool's limits, shared by all its threads, so that each holds for the server as a whole:
 * the connection cap, each address's connections and its cool-down. It all lives in one
 * `SharedArrayBuffer` that every thread maps: a fixed-size hash table of addresses, guarded by a
 * lock of a few hundred nanoseconds (Atomics).
 *
 * @module
 */

import type { AddressRefusal, Limits, LimitsConfig } from "./limits.ts";
import type { RefusalReason } from "./stats.ts";
import {
  countFailure,
  type FailureRecord,
  isForgettable,
  markSeen,
  type ThrottleRules,
  throttleRules,
} from "./throttle.ts";

/**
 * The longest address kept whole. IP text is at most 45 characters, 61 with an interface name;
 * a longer one (only a trusted proxy's odd PROXY v1 text could be) shares the entry of the
 * addresses it begins like, which can only make the limits stricter for them.
 */
const KEY_BYTES = 64;

// The header, in Int32s.
/** 0: free; 1: held; 2: held, and a thread may be asleep waiting for it. */
const LOCK = 0;
/** Open connections, for the connection cap. */
const CONNECTIONS = 1;
/** The hash seed, drawn when the buffer is made, so no one can aim at one bucket. */
const SEED = 2;
/** How many entries are on the free stack. */
const FREE = 3;
/** Entries that hold a throttle record: at most `throttle.maxEntries`. */
const REMEMBERED = 4;
/** The least and the most recently seen of those, or -1: the ends of a doubly linked list. */
const OLDEST = 5;
const NEWEST = 6;
const HEADER_INTS = 8;

// Each entry's Int32s: its key, what is open, and its throttle record.
const KEY_LENGTH = 0;
const HASH = 1;
/** Connections counted against the per-address cap. */
const OPEN = 2;
/** 1 while the entry holds a throttle record and is in the recency list. */
const LISTED = 3;
const OLDER = 4;
const NEWER = 5;
const FAILURES = 6;
const OFFENCES = 7;
const INTS = 8;
// Each entry's Float64s: the throttle record's times, on a clock all threads share.
const WINDOW_START = 0;
const BLOCKED_UNTIL = 1;
const LAST_SEEN = 2;
const FLOATS = 3;

/** Where each region of the buffer starts, for a table of `capacity` entries. */
function layout(capacity: number) {
  // At most half full, so probe sequences stay short.
  const buckets = 2 ** Math.ceil(Math.log2(2 * capacity));
  const header = 0;
  const index = header + HEADER_INTS * 4;
  const free = index + buckets * 4;
  const ints = free + capacity * 4;
  const floats = Math.ceil((ints + capacity * INTS * 4) / 8) * 8;
  const keys = floats + capacity * FLOATS * 8;
  return {
    buckets,
    header,
    index,
    free,
    ints,
    floats,
    keys,
    bytes: keys + capacity * KEY_BYTES,
  };
}

/** The table's size: every address with a connection, plus every throttle record. */
function capacityFor(config: LimitsConfig, rules: ThrottleRules): number {
  const throttling = rules.maxFailures > 0;
  if (!throttling && config.maxConnectionsPerAddress === 0) return 1; // nothing per address
  return config.maxConnections + (throttling ? config.throttle.maxEntries : 0);
}

/** Options for {@linkcode SharedLimits}. */
export interface SharedLimitsOptions {
  /** Another thread's limits to join (its `buffer`); default: new limits, all at zero. */
  buffer?: SharedArrayBuffer;
  /** Milliseconds on a clock every thread shares; tests pass their own. */
  now?: () => number;
}

/**
 * Limits kept in shared memory: build one in the pool's thread, post its `buffer` to each worker,
 * and build one there on the same buffer. Memory is fixed when it is made: one entry per possible
 * connection plus `throttle.maxEntries` throttle records (the least recently seen forgotten first,
 * as `AuthFailureThrottle` does), about 150 bytes each.
 */
export class SharedLimits implements Limits {
  /** The memory the threads share: post it to a worker to build its view. */
  readonly buffer: SharedArrayBuffer;
  #maxConnections: number;
  #maxPerAddress: number;
  #maxEntries: number;
  #rules: ThrottleRules;
  #now: () => number;
  #header: Int32Array;
  #index: Int32Array;
  #free: Int32Array;
  #ints: Int32Array;
  #floats: Float64Array;
  #keys: Uint8Array;
  /** This thread's copy of the address being looked up, with its length and hash. */
  #key = new Uint8Array(KEY_BYTES);
  #keyLength = 0;
  #hash = 0;
  #record: EntryRecord;

  /** Limits as `config` sets them: new ones, or another thread's when `options.buffer` is given. */
  constructor(config: LimitsConfig, options: SharedLimitsOptions = {}) {
    this.#maxConnections = config.maxConnections;
    this.#maxPerAddress = config.maxConnectionsPerAddress;
    this.#maxEntries = Math.max(1, config.throttle.maxEntries);
    this.#rules = throttleRules(config.throttle);
    this.#now = options.now ?? (() => performance.timeOrigin + performance.now());
    const capacity = capacityFor(config, this.#rules);
    const at = layout(capacity);
    this.buffer = options.buffer ?? new SharedArrayBuffer(at.bytes);
    if (this.buffer.byteLength !== at.bytes) {
      throw new RangeError("The shared limits' buffer was made for another configuration");
    }
    this.#header = new Int32Array(this.buffer, at.header, HEADER_INTS);
    this.#index = new Int32Array(this.buffer, at.index, at.buckets);
    this.#free = new Int32Array(this.buffer, at.free, capacity);
    this.#ints = new Int32Array(this.buffer, at.ints, capacity * INTS);
    this.#floats = new Float64Array(this.buffer, at.floats, capacity * FLOATS);
    this.#keys = new Uint8Array(this.buffer, at.keys, capacity * KEY_BYTES);
    this.#record = new EntryRecord(this.#ints, this.#floats);
    if (options.buffer === undefined) {
      this.#header[SEED] = crypto.getRandomValues(new Int32Array(1))[0];
      this.#header[OLDEST] = this.#header[NEWEST] = -1;
      // Popped from the top: entry 0 first, so memory is touched only as far as it is used.
      for (let i = 0; i < capacity; i++) this.#free[i] = capacity - 1 - i;
      this.#header[FREE] = capacity;
    }
  }

  get throttling(): boolean {
    return this.#rules.maxFailures > 0;
  }

  /** Throttle records kept now (never more than `throttle.maxEntries`). */
  get size(): number {
    return Atomics.load(this.#header, REMEMBERED);
  }

  connect(address: string | undefined): RefusalReason | undefined {
    this.#lock();
    try {
      if (this.#header[CONNECTIONS] >= this.#maxConnections) return "connection-limit";
      const refusal = address === undefined ? undefined : this.#identify(address);
      if (refusal === undefined) this.#header[CONNECTIONS]++;
      return refusal;
    } finally {
      this.#unlock();
    }
  }

  identify(address: string): AddressRefusal | undefined {
    this.#lock();
    try {
      return this.#identify(address);
    } finally {
      this.#unlock();
    }
  }

  #identify(address: string): AddressRefusal | undefined {
    if (!this.throttling && this.#maxPerAddress === 0) return undefined;
    this.#setKey(address);
    let entry = this.#find();
    if (entry >= 0 && this.#blockedFor(entry) > 0) return "throttled";
    if (this.#maxPerAddress === 0) return undefined; // nothing to count
    if (entry < 0) entry = this.#add();
    // A full table cannot happen (one entry per possible connection): if it did, refuse.
    if (entry < 0 || this.#ints[entry * INTS + OPEN] >= this.#maxPerAddress) {
      return "address-limit";
    }
    this.#ints[entry * INTS + OPEN]++;
    return undefined;
  }

  disconnect(address: string | undefined): void {
    this.#lock();
    try {
      this.#header[CONNECTIONS]--;
      if (address === undefined || this.#maxPerAddress === 0) return;
      this.#setKey(address);
      const entry = this.#find();
      if (entry < 0) return;
      this.#ints[entry * INTS + OPEN]--;
      this.#freeIfUnused(entry);
    } finally {
      this.#unlock();
    }
  }

  blockedFor(address: string): number {
    if (!this.throttling) return 0;
    this.#lock();
    try {
      this.#setKey(address);
      const entry = this.#find();
      return entry < 0 ? 0 : this.#blockedFor(entry);
    } finally {
      this.#unlock();
    }
  }

  recordFailure(address: string): number {
    if (!this.throttling) return 0;
    this.#lock();
    try {
      this.#setKey(address);
      return this.#countFailure(this.#find())[1];
    } finally {
      this.#unlock();
    }
  }
  /** Counts a failure for the key: the entry (made if need be) and the cool-down it starts. */
  #countFailure(entry: number): [entry: number, cooldown: number] {
    const now = this.#now();
    entry = this.#remember(entry, now);
    if (entry < 0) return [entry, 0]; // a full table cannot happen (see #identify)
    return [entry, countFailure(this.#recordOf(entry), now, this.#rules)];
  }

  #blockedFor(entry: number): number {
    if (this.#ints[entry * INTS + LISTED] === 0) return 0;
    return Math.max(0, this.#floats[entry * FLOATS + BLOCKED_UNTIL] - this.#now());
  }

  #recordOf(entry: number): EntryRecord {
    this.#record.entry = entry;
    return this.#record;
  }

  // --- the recency list of throttle records, as AuthFailureThrottle's Map keeps its order ---

  /** Makes the key's entry (or `entry`) the most recently seen record, creating what is missing. */
  #remember(entry: number, now: number): number {
    const listed = entry >= 0 && this.#ints[entry * INTS + LISTED] === 1;
    if (listed) {
      this.#unlink(entry);
    } else {
      this.#makeRoom(now);
      if (entry < 0) entry = this.#add();
      if (entry < 0) return entry;
      const record = this.#recordOf(entry);
      record.failures = record.offences = record.blockedUntil = 0;
      record.windowStart = record.lastSeen = now;
      this.#ints[entry * INTS + LISTED] = 1;
      this.#header[REMEMBERED]++;
    }
    this.#append(entry);
    markSeen(this.#recordOf(entry), now, this.#rules);
    return entry;
  }

  #makeRoom(now: number): void {
    const header = this.#header;
    // Oldest first: forget records with nothing left to remember; if none, the least recent one.
    while (header[REMEMBERED] >= this.#maxEntries && header[OLDEST] >= 0) {
      const oldest = header[OLDEST];
      if (!isForgettable(this.#recordOf(oldest), now, this.#rules)) break;
      this.#forget(oldest);
    }
    if (header[REMEMBERED] >= this.#maxEntries) this.#forget(header[OLDEST]);
  }

  #forget(entry: number): void {
    this.#unlink(entry);
    this.#ints[entry * INTS + LISTED] = 0;
    this.#header[REMEMBERED]--;
    this.#freeIfUnused(entry);
  }

  #append(entry: number): void {
    const header = this.#header;
    const newest = header[NEWEST];
    this.#ints[entry * INTS + OLDER] = newest;
    this.#ints[entry * INTS + NEWER] = -1;
    if (newest >= 0) this.#ints[newest * INTS + NEWER] = entry;
    else header[OLDEST] = entry;
    header[NEWEST] = entry;
  }

  #unlink(entry: number): void {
    const older = this.#ints[entry * INTS + OLDER];
    const newer = this.#ints[entry * INTS + NEWER];
    if (older >= 0) this.#ints[older * INTS + NEWER] = newer;
    else this.#header[OLDEST] = newer;
    if (newer >= 0) this.#ints[newer * INTS + OLDER] = older;
    else this.#header[NEWEST] = older;
  }

  // --- the hash table: open addressing, linear probing, entries at fixed places ---

  /** Copies `address` into this thread's key and returns its hash (seeded FNV-1a, then mixed). */
  #setKey(address: string): number {
    const length = Math.min(address.length, KEY_BYTES);
    let hash = this.#header[SEED];
    for (let i = 0; i < length; i++) {
      const byte = address.charCodeAt(i) & 0xff; // IP text is ASCII
      this.#key[i] = byte;
      hash = Math.imul(hash ^ byte, 0x01000193);
    }
    hash ^= hash >>> 16;
    hash = Math.imul(hash, 0x85ebca6b);
    hash ^= hash >>> 13;
    hash = Math.imul(hash, 0xc2b2ae35);
    hash ^= hash >>> 16;
    this.#keyLength = length;
    this.#hash = hash;
    return hash;
  }

  /** The key's entry, or -1. */
  #find(): number {
    const mask = this.#index.length - 1;
    for (let bucket = this.#hash & mask;; bucket = (bucket + 1) & mask) {
      const slot = this.#index[bucket];
      if (slot === 0) return -1;
      if (this.#ints[(slot - 1) * INTS + HASH] === this.#hash && this.#isKey(slot - 1)) {
        return slot - 1;
      }
    }
  }

  #isKey(entry: number): boolean {
    if (this.#ints[entry * INTS + KEY_LENGTH] !== this.#keyLength) return false;
    const at = entry * KEY_BYTES;
    for (let i = 0; i < this.#keyLength; i++) {
      if (this.#keys[at + i] !== this.#key[i]) return false;
    }
    return true;
  }

  /** A new, empty entry for the key (not yet there), or -1 if the table is full. */
  #add(): number {
    if (this.#header[FREE] === 0) return -1;
    const entry = this.#free[--this.#header[FREE]];
    const base = entry * INTS;
    this.#ints.fill(0, base, base + INTS);
    this.#ints[base + KEY_LENGTH] = this.#keyLength;
    this.#ints[base + HASH] = this.#hash;
    this.#keys.set(this.#key.subarray(0, this.#keyLength), entry * KEY_BYTES);
    const mask = this.#index.length - 1;
    let bucket = this.#hash & mask;
    while (this.#index[bucket] !== 0) bucket = (bucket + 1) & mask;
    this.#index[bucket] = entry + 1;
    return entry;
  }

  /** Frees an entry with nothing open and no throttle record. */
  #freeIfUnused(entry: number): void {
    const base = entry * INTS;
    if (this.#ints[base + OPEN] > 0) return;
    if (this.#ints[base + LISTED] === 1) return;
    const index = this.#index;
    const mask = index.length - 1;
    let hole = this.#ints[base + HASH] & mask;
    while (index[hole] !== entry + 1) hole = (hole + 1) & mask;
    // Backward shift: move later entries of the run into the hole, unless that would put one
    // before its home bucket, so that no search stops early at the hole.
    for (let next = (hole + 1) & mask; index[next] !== 0; next = (next + 1) & mask) {
      const home = this.#ints[(index[next] - 1) * INTS + HASH] & mask;
      const staysPut = hole <= next ? hole < home && home <= next : hole < home || home <= next;
      if (!staysPut) {
        index[hole] = index[next];
        hole = next;
      }
    }
    index[hole] = 0;
    this.#free[this.#header[FREE]++] = entry;
  }

  // --- the lock: held for a lookup and a few writes, never across an await ---

  #lock(): void {
    const header = this.#header;
    if (Atomics.compareExchange(header, LOCK, 0, 1) === 0) return;
    // Another thread holds it for a moment: spin briefly, then sleep until it is handed back.
    for (let spin = 0; spin < 100; spin++) {
      if (Atomics.load(header, LOCK) === 0 && Atomics.compareExchange(header, LOCK, 0, 1) === 0) {
        return;
      }
    }
    while (Atomics.exchange(header, LOCK, 2) !== 0) Atomics.wait(header, LOCK, 2);
  }

  #unlock(): void {
    if (Atomics.sub(this.#header, LOCK, 1) === 1) return;
    Atomics.store(this.#header, LOCK, 0);
    Atomics.notify(this.#header, LOCK, 1);
  }
}

/** One entry's throttle record, read and written in place: the rules in `throttle.ts` apply it. */
class EntryRecord implements FailureRecord {
  /** The entry this view shows; set under the lock before use. */
  entry = 0;
  #ints: Int32Array;
  #floats: Float64Array;

  constructor(ints: Int32Array, floats: Float64Array) {
    this.#ints = ints;
    this.#floats = floats;
  }

  get failures(): number {
    return this.#ints[this.entry * INTS + FAILURES];
  }
  set failures(value: number) {
    this.#ints[this.entry * INTS + FAILURES] = value;
  }
  get offences(): number {
    return this.#ints[this.entry * INTS + OFFENCES];
  }
  set offences(value: number) {
    this.#ints[this.entry * INTS + OFFENCES] = value;
  }
  get windowStart(): number {
    return this.#floats[this.entry * FLOATS + WINDOW_START];
  }
  set windowStart(value: number) {
    this.#floats[this.entry * FLOATS + WINDOW_START] = value;
  }
  get blockedUntil(): number {
    return this.#floats[this.entry * FLOATS + BLOCKED_UNTIL];
  }
  set blockedUntil(value: number) {
    this.#floats[this.entry * FLOATS + BLOCKED_UNTIL] = value;
  }
  get lastSeen(): number {
    return this.#floats[this.entry * FLOATS + LAST_SEEN];
  }
  set lastSeen(value: number) {
    this.#floats[this.entry * FLOATS + LAST_SEEN] = value;
  }
}
