/**
 * The hmac-echo server: owns the listener and every connection's lifetime. Each connection runs in
 * its own task; the accept loop never waits for a handshake.
 *
 * @module
 */

import { closeQuietly, formatAddr, isDisconnect } from "./_io.ts";

export { formatAddr };
import {
  ANSWER_LENGTH,
  authenticateClient,
  type AuthenticationPolicy,
  type HandshakeOutcome,
  type Requirement,
} from "./handshake.ts";
import { type DigestName, isDigestName, type SecretKeys, secretKeys } from "./keys.ts";
import { FramedConnection, FrameError } from "./frames.ts";
import { type Logger, silentLogger } from "./log.ts";
import { AuthFailureThrottle, type ThrottleOptions } from "./throttle.ts";
import {
  looksLikeProxyHeader,
  ProxyHeaderError,
  readProxyHeader,
  type TrustedProxies,
} from "./proxy_protocol.ts";
import {
  type ServiceConnection,
  type ServiceHandler,
  type TrafficCounters,
  upperCaseEcho,
} from "./upper_case_echo.ts";

/** Default TCP port, the tutorial's. */
export const DEFAULT_PORT = 4444;
/** Default listening address: loopback, so a first run exposes nothing. */
export const DEFAULT_HOSTNAME = "127.0.0.1";
/** Default time a client has to answer the challenge. */
export const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000;
/** Default cap on concurrent connections. */
export const DEFAULT_MAX_CONNECTIONS = 10_000;
/** Default time active sessions get to finish when the server closes. */
export const DEFAULT_GRACE_PERIOD_MS = 5_000;

/** Default cap on concurrent connections from one address; generous for clients behind NAT. */
export const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS = 1_000;
/**
 * Default listen queue. Deno's own default, 511, overflows when thousands of clients reconnect at
 * once after a restart; the kernel caps it at net.core.somaxconn (4096 on current Linux).
 */
export const DEFAULT_BACKLOG = 4_096;

/** How long the accept loop pauses when it runs out of descriptors or memory, so some free up. */
const ACCEPT_BACKOFF_MS = 50;

/** Accept errors that mean "out of a resource": pausing helps. Anything else: just go on. */
const EXHAUSTION_CODES = new Set(["EMFILE", "ENFILE", "ENOBUFS", "ENOMEM"]);

/** Options for {@linkcode serve}. */
export interface ServeOptions {
  /** The shared secret's bytes, or keys from `SecretKeys.import` (imported once per server). */
  secret: Uint8Array | SecretKeys;
  /** A previous secret still accepted while clients move to the new one (a rotation). */
  previousSecret?: Uint8Array | SecretKeys;
  /**
   * Refuse v1 clients (`"v2"`), and v2 clients without integrity frames (`"integrity"`) or without
   * encryption (`"encrypt"`) (docs/PROTOCOL.md §8). Default: v1 and every v2 mode are served.
   */
  require?: Requirement;
  /** The digests a v2 client may name; leave `"sha1"` out to forbid SHA-1. Default: all four. */
  digests?: readonly DigestName[];
  /**
   * Also accept the tutorial's `sha1(secret + challenge)` v1 answers, for migrating its clients
   * (docs/PROTOCOL.md §3.1). Default: false. Needs the secret as bytes, not as `SecretKeys`.
   */
  legacyDigest?: boolean;
  /** Address to listen on. Default `127.0.0.1`. */
  hostname?: string;
  /** Port to listen on; 0 picks a free one (read it back from `server.addr`). Default 4444. */
  port?: number;
  /** Time a client has to answer the challenge before it is closed. Default 10 000 ms. */
  handshakeTimeoutMs?: number;
  /** Connections beyond this many at once are closed at once. Default 10 000. */
  maxConnections?: number;
  /** Connections beyond this many at once from one address are closed at once; 0: no cap. Default 1 000. */
  maxConnectionsPerAddress?: number;
  /** Close an authenticated connection when no byte has moved either way for this long; 0: never (default). */
  idleTimeoutMs?: number;
  /** Failed-authentication throttling per address; `false` turns it off. Default: on, see `throttle.ts`. */
  throttle?: ThrottleOptions | false;
  /** Listen queue length (`tcpBacklog`). Default 4 096. */
  backlog?: number;
  /** Share the port with other listeners (`SO_REUSEPORT`): how `--workers` spreads connections. */
  reusePort?: boolean;
  /**
   * Accept a PROXY protocol header (v1 or v2) from these peers, a load balancer's addresses: logs,
   * per-address caps and throttling then see the real client. Default: none.
   */
  trustedProxies?: TrustedProxies;
  /** Serves each authenticated connection. Default: {@linkcode upperCaseEcho}. */
  handler?: ServiceHandler;
  /** Receives connection events. Default: none are logged. */
  logger?: Logger;
}

/** Why the server closed a connection at once, before any handshake. */
export type RefusalReason = "connection-limit" | "address-limit" | "throttled";

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
  /** Clients that failed it, by reason (docs/PROTOCOL.md §3, §9). */
  rejected: Record<string, number>;
  /** Of the authenticated, clients that answered with the legacy `sha1-prefix` digest. */
  authenticatedLegacy: number;
  /** Of the authenticated, clients that spoke protocol v2. */
  authenticatedV2: number;
  /** Authenticated connections closed because a frame failed a check, by reason (§11). */
  frameErrors: Record<string, number>;
  /** Authenticated connections closed for idling past `idleTimeoutMs`. */
  idleClosed: number;
  /** Addresses put into an authentication cool-down. */
  throttled: number;
  /** Connections open now. */
  active: number;
  /** Bytes received from all clients, handshakes included. */
  bytesIn: number;
  /** Bytes sent to all clients, challenges included. */
  bytesOut: number;
  /** Time from accept to a passed handshake, as a histogram. */
  handshakeSeconds: Histogram;
}

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

function observe(histogram: Histogram, value: number): void {
  let bucket = 0;
  while (bucket < histogram.bounds.length && value > histogram.bounds[bucket]) bucket++;
  histogram.counts[bucket]++;
  histogram.sum += value;
  histogram.count++;
}

/** A handshake that passed. */
type AuthenticatedOutcome = Extract<HandshakeOutcome, { authenticated: true }>;

/** One connection and what the server knows about it. */
interface Session {
  readonly id: number;
  readonly conn: MeteredConnection;
  /** The client's IP address (from the PROXY header when proxied): what limits and throttling count. */
  address: string;
  /** The client as `address:port`, for the log. */
  remote: string;
  /** Set for a connection from a trusted proxy: a PROXY header comes first. */
  viaProxy: boolean;
  /** Whether the connection is counted in the per-address table (under `address`). */
  counted: boolean;
  readonly startedAt: number;
  task?: Promise<void>;
  authenticated?: boolean;
  /** Set when the server closed the connection itself, so the resulting read error is expected. */
  closedByServer?: "handshake-timeout" | "idle-timeout" | "shutdown";
  /** The idle sweeper's bookmark: `conn.activity` when last seen changing, and when. */
  seenActivity?: number;
  quietSince?: number;
}

/** A TCP connection that counts the bytes through it, for the `closed` log line. */
class MeteredConnection implements ServiceConnection, TrafficCounters {
  bytesIn = 0;
  bytesOut = 0;
  /** Bumped whenever a read or write completes: a clock-free sign of life for the idle sweeper. */
  activity = 0;

  constructor(readonly tcp: Deno.TcpConn) {}

  async read(buffer: Uint8Array): Promise<number | null> {
    const n = await this.tcp.read(buffer);
    if (n !== null) this.bytesIn += n;
    this.activity++;
    return n;
  }

  async write(data: Uint8Array): Promise<number> {
    const n = await this.tcp.write(data);
    this.bytesOut += n;
    this.activity++;
    return n;
  }
}

/**
 * A listening hmac-echo server. Create one with {@linkcode serve}; stop it with `close()`.
 */
export class Server {
  /** The address the server listens on, with the real port when 0 was asked for. */
  readonly addr: Deno.NetAddr;
  #listener: Deno.TcpListener;
  #policy: AuthenticationPolicy;
  /** The caller's handler, or undefined for the default echo, which counts its own traffic. */
  #handler?: ServiceHandler;
  #logger: Logger;
  #handshakeTimeoutMs: number;
  #maxConnections: number;
  #maxPerAddress: number;
  #trustedProxies?: TrustedProxies;
  #idleTimeoutMs: number;
  #throttle: AuthFailureThrottle;
  #sessions = new Set<Session>();
  #perAddress = new Map<string, number>();
  #nextId = 1;
  #stats = {
    accepted: 0,
    refused: {} as Partial<Record<RefusalReason, number>>,
    authenticated: 0,
    authenticatedWithPrevious: 0,
    authenticatedLegacy: 0,
    authenticatedV2: 0,
    rejected: {} as Record<string, number>,
    frameErrors: {} as Record<string, number>,
    idleClosed: 0,
    throttled: 0,
    /** Bytes of connections already closed; open ones are summed live. */
    bytesIn: 0,
    bytesOut: 0,
    handshakeSeconds: {
      bounds: HANDSHAKE_BOUNDS,
      counts: new Array(HANDSHAKE_BOUNDS.length + 1).fill(0),
      sum: 0,
      count: 0,
    } as Histogram,
  };
  #idleSweeper?: ReturnType<typeof setInterval>;
  #stopping = new AbortController();
  #acceptLoop: Promise<void>;
  #closed?: Promise<void>;

  /** Starts serving on an open listener; most callers want {@linkcode serve} instead. */
  constructor(
    listener: Deno.TcpListener,
    policy: AuthenticationPolicy,
    options: Omit<
      ServeOptions,
      | "secret"
      | "previousSecret"
      | "require"
      | "digests"
      | "legacyDigest"
      | "hostname"
      | "port"
      | "backlog"
      | "reusePort"
    > = {},
  ) {
    this.#listener = listener;
    this.addr = listener.addr;
    this.#policy = policy;
    this.#handler = options.handler;
    this.#logger = options.logger ?? silentLogger;
    this.#handshakeTimeoutMs = positive(
      "handshakeTimeoutMs",
      options.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS,
    );
    this.#maxConnections = positive(
      "maxConnections",
      options.maxConnections ?? DEFAULT_MAX_CONNECTIONS,
    );
    this.#maxPerAddress = atLeastZero(
      "maxConnectionsPerAddress",
      options.maxConnectionsPerAddress ?? DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
    );
    this.#idleTimeoutMs = atLeastZero("idleTimeoutMs", options.idleTimeoutMs ?? 0);
    this.#trustedProxies = options.trustedProxies;
    this.#throttle = new AuthFailureThrottle(
      options.throttle === false ? { maxFailures: 0 } : options.throttle,
    );
    if (this.#idleTimeoutMs > 0) {
      // One sweep over all sessions instead of a timer reset on every read: the hot path only
      // bumps a counter. A connection is closed between one and 1.25 idle timeouts.
      const every = Math.max(10, Math.min(1_000, this.#idleTimeoutMs / 4));
      this.#idleSweeper = setInterval(() => this.#closeIdleSessions(), every);
    }
    this.#acceptLoop = this.#acceptConnections();
  }

  /** A snapshot of the server's counters. */
  get stats(): ServerStats {
    let bytesIn = this.#stats.bytesIn;
    let bytesOut = this.#stats.bytesOut;
    for (const { conn } of this.#sessions) {
      bytesIn += conn.bytesIn;
      bytesOut += conn.bytesOut;
    }
    return {
      ...this.#stats,
      refused: { ...this.#stats.refused },
      rejected: { ...this.#stats.rejected },
      frameErrors: { ...this.#stats.frameErrors },
      handshakeSeconds: {
        ...this.#stats.handshakeSeconds,
        counts: [...this.#stats.handshakeSeconds.counts],
      },
      active: this.#sessions.size,
      bytesIn,
      bytesOut,
    };
  }

  /**
   * Stops accepting, gives active sessions `gracePeriodMs` to finish, then closes the rest.
   * Resolves when every connection task has ended. Calling it again returns the same promise.
   */
  close(options: { gracePeriodMs?: number } = {}): Promise<void> {
    this.#closed ??= this.#shutDown(options.gracePeriodMs ?? DEFAULT_GRACE_PERIOD_MS);
    return this.#closed;
  }

  async #shutDown(gracePeriodMs: number): Promise<void> {
    this.#stopping.abort();
    closeQuietly(this.#listener);
    await this.#acceptLoop;
    if (this.#sessions.size > 0) {
      this.#logger.log("info", "draining", { sessions: this.#sessions.size, gracePeriodMs });
      const finished = await settlesWithin(this.#allTasks(), gracePeriodMs);
      if (!finished) {
        this.#logger.log("warn", "grace-period-over", { closing: this.#sessions.size });
        for (const session of this.#sessions) this.#closeSession(session, "shutdown");
      }
      await this.#allTasks();
    }
    clearInterval(this.#idleSweeper);
  }

  #allTasks(): Promise<unknown> {
    return Promise.all([...this.#sessions].map((session) => session.task));
  }

  async #acceptConnections(): Promise<void> {
    const stopping = this.#stopping.signal;
    while (!stopping.aborted) {
      let tcp: Deno.TcpConn;
      try {
        tcp = await this.#listener.accept();
      } catch (error) {
        if (stopping.aborted) break;
        // No accept error may end the server. Out of descriptors or memory: pause so that some
        // free up. Anything else (a peer that reset while queued, say): just take the next one.
        const exhausted = EXHAUSTION_CODES.has((error as { code?: string }).code ?? "");
        this.#logger.log(exhausted ? "error" : "warn", "accept-failed", {
          error: describeError(error),
          pauseMs: exhausted ? ACCEPT_BACKOFF_MS : 0,
        });
        if (exhausted) await pause(ACCEPT_BACKOFF_MS, stopping);
        continue;
      }
      this.#stats.accepted++;
      const address = tcp.remoteAddr.hostname;
      // A proxy's own address says nothing about its clients: per-address limits wait for the
      // PROXY header (#admitProxied); only the global cap applies here.
      const viaProxy = this.#trustedProxies?.trusts(address) ?? false;
      const refusal = viaProxy ? this.#globalRefusal() : this.#refusalFor(address);
      if (refusal !== undefined) {
        this.#refuse(tcp, address, formatAddr(tcp.remoteAddr), refusal);
        continue;
      }
      const session: Session = {
        id: this.#nextId++,
        conn: new MeteredConnection(tcp),
        address,
        remote: formatAddr(tcp.remoteAddr),
        viaProxy,
        counted: !viaProxy,
        startedAt: performance.now(),
      };
      this.#sessions.add(session);
      if (session.counted) this.#countAddress(address, +1);
      session.task = this.#serveSession(session);
    }
  }

  #globalRefusal(): RefusalReason | undefined {
    return this.#sessions.size >= this.#maxConnections ? "connection-limit" : undefined;
  }

  #countAddress(address: string, change: 1 | -1): void {
    const count = (this.#perAddress.get(address) ?? 0) + change;
    if (count === 0) this.#perAddress.delete(address);
    else this.#perAddress.set(address, count);
  }

  /** Why a new connection from `address` may not start, if it may not. */
  #refusalFor(address: string): RefusalReason | undefined {
    return this.#globalRefusal() ?? this.#addressRefusal(address);
  }

  #addressRefusal(address: string): RefusalReason | undefined {
    if (this.#throttle.blockedFor(address) > 0) return "throttled";
    if (this.#maxPerAddress > 0 && (this.#perAddress.get(address) ?? 0) >= this.#maxPerAddress) {
      return "address-limit";
    }
    return undefined;
  }

  #refuse(tcp: Deno.TcpConn, address: string, remote: string, reason: RefusalReason): void {
    increment(this.#stats.refused, reason);
    const limit = reason === "connection-limit"
      ? this.#maxConnections
      : reason === "address-limit"
      ? this.#maxPerAddress
      : undefined;
    const retryInMs = reason === "throttled"
      ? Math.ceil(this.#throttle.blockedFor(address))
      : undefined;
    this.#logger.log("warn", "refused", {
      remote,
      reason,
      limit,
      retryInMs,
    });
    closeQuietly(tcp);
  }

  /** One connection from accept to close. Never rejects: every outcome is logged here. */
  async #serveSession(session: Session): Promise<void> {
    // session.remote changes when a PROXY header names the real client: always read it fresh.
    const { id, conn } = session;
    const logger = this.#logger;
    logger.log("info", "accepted", { id, remote: session.remote });
    const deadline = setTimeout(
      () => this.#closeSession(session, "handshake-timeout"),
      this.#handshakeTimeoutMs,
    );
    try {
      conn.tcp.setNoDelay(true);
      if (session.viaProxy && !await this.#admitProxied(session)) return;
      const outcome = await authenticateClient(conn, this.#policy);
      clearTimeout(deadline);
      if (!outcome.authenticated) {
        if (looksLikeProxyHeader(outcome.answer)) {
          // A balancer not (or not yet) listed in --trusted-proxies: say so plainly.
          this.#recordRejection(
            session,
            "untrusted-proxy-header",
            `a PROXY header from ${session.address}, which is not a trusted proxy`,
          );
        } else {
          this.#recordRejection(session, outcome.reason, outcome.detail);
        }
        return;
      }
      session.authenticated = true;
      this.#recordAuthentication(session, outcome);
      await this.#runService(conn, outcome);
    } catch (error) {
      switch (session.closedByServer) {
        case "handshake-timeout":
          this.#recordRejection(
            session,
            "handshake-timeout",
            `no answer within ${this.#handshakeTimeoutMs} ms`,
          );
          break;
        case "idle-timeout":
          this.#stats.idleClosed++;
          logger.log("info", "idle-timeout", {
            id,
            remote: session.remote,
            idleTimeoutMs: this.#idleTimeoutMs,
          });
          break;
        case "shutdown":
          break; // logged once for all such sessions by #shutDown
        default:
          if (error instanceof FrameError) {
            increment(this.#stats.frameErrors, error.reason);
            logger.log("warn", "frame-rejected", {
              id,
              remote: session.remote,
              reason: error.reason,
              detail: error.detail,
            });
          } else if (error instanceof ProxyHeaderError) {
            this.#recordRejection(session, "malformed-proxy-header", error.message);
          } else if (!session.authenticated && isDisconnect(error)) {
            // A reset is one more way for the connection to end before the answer is complete.
            this.#recordRejection(
              session,
              "incomplete-answer",
              `the connection was reset after ${conn.bytesIn} of ${ANSWER_LENGTH} answer bytes`,
            );
          } else if (isDisconnect(error)) {
            logger.log("info", "disconnected", {
              id,
              remote: session.remote,
              error: describeError(error),
            });
          } else {
            logger.log("error", "session-failed", {
              id,
              remote: session.remote,
              error: describeError(error),
            });
          }
      }
    } finally {
      clearTimeout(deadline);
      closeQuietly(conn.tcp);
      this.#sessions.delete(session);
      if (session.counted) this.#countAddress(session.address, -1);
      this.#stats.bytesIn += conn.bytesIn;
      this.#stats.bytesOut += conn.bytesOut;
      logger.log("info", "closed", {
        id,
        remote: session.remote,
        bytesIn: conn.bytesIn,
        bytesOut: conn.bytesOut,
        durationMs: Math.round(performance.now() - session.startedAt),
      });
    }
  }

  /** Counts and logs a passed handshake: which protocol, digest and mode, and which secret. */
  #recordAuthentication(session: Session, outcome: AuthenticatedOutcome): void {
    const { id, remote } = session;
    this.#stats.authenticated++;
    observe(this.#stats.handshakeSeconds, (performance.now() - session.startedAt) / 1000);
    if (outcome.previousSecret) {
      // Who still uses the old secret is what an operator needs to know to finish a rotation.
      this.#stats.authenticatedWithPrevious++;
      this.#logger.log("warn", "previous-secret-used", { id, remote });
    }
    if (outcome.protocol === 1 && outcome.legacy) {
      this.#stats.authenticatedLegacy++;
      this.#logger.log("warn", "legacy-digest-used", {
        id,
        remote,
        note: "this client answers with sha1(secret + challenge); move it to HMAC",
      });
    }
    if (outcome.protocol === 2) this.#stats.authenticatedV2++;
    this.#logger.log("info", "authenticated", {
      id,
      remote,
      protocol: outcome.protocol,
      digest: outcome.protocol === 2 ? outcome.digest : outcome.legacy ? "sha1-prefix" : "sha1",
      mode: outcome.protocol === 2 ? outcome.mode : "plain",
    });
  }

  /** Serves an authenticated connection: over the frame layer when one was negotiated. */
  async #runService(conn: MeteredConnection, outcome: AuthenticatedOutcome): Promise<void> {
    if (outcome.protocol === 2 && outcome.frameKeys) {
      const framed = new FramedConnection(conn, outcome.frameKeys);
      await (this.#handler ?? upperCaseEcho)(framed);
      await framed.closeWrite(); // the end frame: the client knows it has every reply byte
    } else if (this.#handler) {
      await this.#handler(conn);
    } else {
      await upperCaseEcho(conn.tcp, conn); // the bare connection: no wrapper per read
    }
  }

  /**
   * Reads the PROXY header of a connection from a trusted proxy, takes the real client's address
   * from it, and applies the per-address limits to that address.
   *
   * @returns false if the connection was refused (it has been counted and logged).
   */
  async #admitProxied(session: Session): Promise<boolean> {
    const header = await readProxyHeader(session.conn);
    if (header.command === "proxy") {
      const proxy = session.remote;
      session.address = header.source.hostname;
      session.remote = formatAddr(header.source);
      this.#logger.log("info", "proxied", { id: session.id, remote: session.remote, proxy });
    }
    const refusal = this.#addressRefusal(session.address);
    if (refusal !== undefined) {
      this.#refuse(session.conn.tcp, session.address, session.remote, refusal);
      return false;
    }
    session.counted = true;
    this.#countAddress(session.address, +1);
    return true;
  }

  /** Closes a session from outside its task; the task sees the read fail and logs why. */
  #closeSession(session: Session, reason: NonNullable<Session["closedByServer"]>): void {
    session.closedByServer ??= reason;
    closeQuietly(session.conn.tcp);
  }

  #recordRejection(session: Session, reason: string, detail: string): void {
    increment(this.#stats.rejected, reason);
    this.#logger.log("warn", "rejected", {
      id: session.id,
      remote: session.remote,
      reason,
      detail,
    });
    // Hanging up without sending a byte (a port scan, a TCP health check) guesses nothing:
    // only answers, partial answers and timeouts count towards the throttle.
    if (reason === "incomplete-answer" && session.conn.bytesIn === 0) return;
    // A PROXY header problem is a balancer's misconfiguration, not a guess at the secret; and
    // before its header, a proxied connection's address is the balancer's, not the client's.
    if (reason === "malformed-proxy-header" || reason === "untrusted-proxy-header") return;
    if (session.viaProxy && !session.counted) return;
    const cooldownMs = this.#throttle.recordFailure(session.address);
    if (cooldownMs > 0) {
      this.#stats.throttled++;
      this.#logger.log("warn", "throttling", { address: session.address, cooldownMs });
    }
  }

  #closeIdleSessions(): void {
    const now = performance.now();
    for (const session of this.#sessions) {
      if (!session.authenticated) continue; // the handshake deadline covers the rest
      if (session.conn.activity !== session.seenActivity || session.quietSince === undefined) {
        session.seenActivity = session.conn.activity;
        session.quietSince = now;
      } else if (now - session.quietSince >= this.#idleTimeoutMs) {
        this.#closeSession(session, "idle-timeout");
      }
    }
  }
}

/**
 * Starts an hmac-echo server: imports the secret once, listens, and serves every connection in
 * its own task.
 *
 * @example
 * ```ts ignore
 * import { serve } from "./server.ts";
 * const server = await serve({ secret: new TextEncoder().encode("s3cret"), port: 0 });
 * console.log(`listening on port ${server.addr.port}`);
 * await server.close();
 * ```
 * @throws {Deno.errors.AddrInUse} if the port is taken.
 * @throws {RangeError} if the secret is empty or an option is out of range.
 */
export async function serve(options: ServeOptions): Promise<Server> {
  const legacy = options.legacyDigest ?? false;
  if (legacy && options.require !== undefined) {
    throw new RangeError(
      `legacyDigest accepts v1 answers, but require: "${options.require}" refuses them`,
    );
  }
  for (const digest of options.digests ?? []) {
    if (!isDigestName(digest)) {
      throw new RangeError(`unknown digest "${digest}": use sha1, sha256, sha384 or sha512`);
    }
  }
  const keys = await secretKeys(options.secret, { legacy });
  const previousKeys = options.previousSecret === undefined
    ? undefined
    : await secretKeys(options.previousSecret, { legacy });
  if (legacy && !keys.acceptsLegacy) {
    throw new RangeError("legacyDigest needs the secret as bytes, not as SecretKeys");
  }
  const listener = Deno.listen({
    hostname: options.hostname ?? DEFAULT_HOSTNAME,
    port: options.port ?? DEFAULT_PORT,
    transport: "tcp",
    tcpBacklog: options.backlog ?? DEFAULT_BACKLOG,
    reusePort: options.reusePort ?? false,
  });
  const policy = { keys, previousKeys, require: options.require, digests: options.digests, legacy };
  return new Server(listener, policy, options);
}

function increment<K extends string>(counts: Partial<Record<K, number>>, key: K): void {
  counts[key] = (counts[key] ?? 0) + 1;
}

function describeError(error: unknown): string {
  return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
}

function positive(name: string, value: number): number {
  if (!(value > 0) || !Number.isFinite(value)) {
    throw new RangeError(`${name} must be a positive number, got ${value}`);
  }
  return value;
}

function atLeastZero(name: string, value: number): number {
  if (!(value >= 0) || !Number.isFinite(value)) {
    throw new RangeError(`${name} must be 0 or more, got ${value}`);
  }
  return value;
}

/** Resolves after `ms`, or at once when `signal` aborts, leaving no timer behind. */
function pause(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
    function done() {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
  });
}

/** Whether `promise` settles within `ms`; the timer is cleared either way. */
async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([promise.then(() => true as const), expired]);
  } finally {
    clearTimeout(timer);
  }
}
