/**
 * The server's counters: one shape for a server, a worker pool's sum, the metrics endpoint and
 * the `stopped` log line. Plain data, so a worker thread can post its stats as they are.
 *
 * @module
 */

/** Why the server closed a connection at once, before any handshake. */
export type RefusalReason = "connection-limit" | "address-limit" | "throttled";

/** Counts of observations per bucket (not cumulative), with their sum and count. */
export interface Histogram {
  /** Upper bounds of the buckets, ascending; one more bucket counts everything above the last. */
  bounds: number[];
  /** `bounds.length + 1` counts. */
  counts: number[];
  /** The sum of all observations. */
  sum: number;
  /** How many observations. */
  count: number;
}

/** Counters since the server started. */
export interface ServerStats {
  /** Connections the listener accepted, refused ones included. */
  accepted: number;
  /** Connections closed at once, by reason. */
  refused: Partial<Record<RefusalReason, number>>;
  /** Clients that passed the handshake. */
  authenticated: number;
  /** Of those, clients that answered with the previous secret of a rotation. */
  authenticatedWithPrevious: number;
  /** Of the authenticated, clients that answered with the tutorial's `sha1-prefix` digest. */
  authenticatedSha1Prefix: number;
  /** Of the authenticated, clients that spoke protocol v2. */
  authenticatedV2: number;
  /** Of those, sessions whose keys came from an ephemeral key exchange (hello version 03). */
  authenticatedForwardSecret: number;
  /** Clients that failed it, by reason (docs/PROTOCOL.md §3, §9). */
  rejected: Record<string, number>;
  /** Authenticated connections closed because a frame failed a check, by reason (§11). */
  frameErrors: Record<string, number>;
  /** Authenticated connections closed for idling past `idleTimeoutMs`. */
  idleClosed: number;
  /** Addresses put into an authentication cool-down. */
  throttled: number;
  /** Accepts that failed, by error code (`EMFILE`: out of descriptors; `ECONNABORTED`, …). */
  acceptFailures: Record<string, number>;
  /** Log lines that could not be written (a broken log pipe, a closed stderr). */
  logLinesDropped: number;
  /** Secrets reloaded on SIGHUP: `serve` counts them, a library server leaves 0. */
  secretReloads: number;
  /** SIGHUP reloads that failed and kept the secrets in use: `serve` counts them. */
  secretReloadFailures: number;
  /** Connections open now. */
  active: number;
  /** Bytes received from all clients, handshakes included. */
  bytesIn: number;
  /** Bytes sent to all clients, challenges included. */
  bytesOut: number;
  /** Time from accept to a passed handshake, as a histogram. */
  handshakeSeconds: Histogram;
  /** Sessions forwarded (`forward`): the target's connection was opened. */
  forwarded: number;
  /**
   * Forwarded sessions ended by their target, by reason: it could not be reached (`refused`,
   * `timeout`, `unreachable`, `not-found`, `denied`, `failed`) or it reset mid-stream (`reset`).
   */
  targetErrors: Record<string, number>;
  /** Bytes forwarded from clients to the target. */
  forwardedToTargetBytes: number;
  /** Bytes forwarded from the target to clients. */
  forwardedFromTargetBytes: number;
  /** How long forwarded sessions lasted, from the target's connection to its close. */
  forwardSeconds: Histogram;
}

/** Handshake latency buckets, in seconds: from loopback speeds to a slow client near the deadline. */
const HANDSHAKE_BOUNDS = [
  0.0005,
  0.001,
  0.0025,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
];

/** Forwarded session lengths, in seconds: a single request to a connection pool's lifetime. */
const FORWARD_BOUNDS = [0.01, 0.1, 1, 10, 60, 600, 3600];

function emptyHistogram(bounds: readonly number[]): Histogram {
  return { bounds: [...bounds], counts: new Array(bounds.length + 1).fill(0), sum: 0, count: 0 };
}

/** Counters at zero. */
export function emptyStats(): ServerStats {
  return {
    accepted: 0,
    refused: {},
    authenticated: 0,
    authenticatedWithPrevious: 0,
    authenticatedSha1Prefix: 0,
    authenticatedV2: 0,
    authenticatedForwardSecret: 0,
    rejected: {},
    frameErrors: {},
    idleClosed: 0,
    throttled: 0,
    acceptFailures: {},
    logLinesDropped: 0,
    secretReloads: 0,
    secretReloadFailures: 0,
    active: 0,
    bytesIn: 0,
    bytesOut: 0,
    handshakeSeconds: emptyHistogram(HANDSHAKE_BOUNDS),
    forwarded: 0,
    targetErrors: {},
    forwardedToTargetBytes: 0,
    forwardedFromTargetBytes: 0,
    forwardSeconds: emptyHistogram(FORWARD_BOUNDS),
  };
}

/** An independent copy of `stats`, safe to hand out while the original keeps counting. */
export function copyStats(stats: ServerStats): ServerStats {
  return addStats(emptyStats(), stats);
}

/** Adds every counter of `more` into `total` (a worker pool's sum) and returns `total`. */
export function addStats(total: ServerStats, more: ServerStats): ServerStats {
  for (const key of NUMBER_FIELDS) total[key] += more[key];
  for (const key of REASON_FIELDS) {
    const into = total[key] as Record<string, number>;
    for (const [reason, n] of Object.entries(more[key])) into[reason] = (into[reason] ?? 0) + n!;
  }
  for (const key of HISTOGRAM_FIELDS) {
    const sum = total[key];
    more[key].counts.forEach((n, i) => sum.counts[i] += n);
    sum.sum += more[key].sum;
    sum.count += more[key].count;
  }
  return total;
}

const NUMBER_FIELDS = [
  "accepted",
  "authenticated",
  "authenticatedWithPrevious",
  "authenticatedSha1Prefix",
  "authenticatedV2",
  "authenticatedForwardSecret",
  "idleClosed",
  "throttled",
  "logLinesDropped",
  "secretReloads",
  "secretReloadFailures",
  "active",
  "bytesIn",
  "bytesOut",
  "forwarded",
  "forwardedToTargetBytes",
  "forwardedFromTargetBytes",
] as const satisfies readonly (keyof ServerStats)[];

const REASON_FIELDS = [
  "refused",
  "rejected",
  "frameErrors",
  "acceptFailures",
  "targetErrors",
] as const;

const HISTOGRAM_FIELDS = ["handshakeSeconds", "forwardSeconds"] as const;

/** Counts one observation in its bucket. */
export function observe(histogram: Histogram, value: number): void {
  let bucket = 0;
  while (bucket < histogram.bounds.length && value > histogram.bounds[bucket]) bucket++;
  histogram.counts[bucket]++;
  histogram.sum += value;
  histogram.count++;
}

/** Adds one to the count for `key`. */
export function increment<K extends string>(counts: Partial<Record<K, number>>, key: K): void {
  counts[key] = (counts[key] ?? 0) + 1;
}
