/**
 * The hmac-echo server: owns the listener and every connection's lifetime. Each connection runs in
 * its own task; the accept loop never waits for a handshake. {@linkcode serve} starts one in this
 * thread, or a pool of worker threads (`workers.ts`) with the same shape.
 *
 * @module
 */

import { closeQuietly, formatAddr, isDisconnect } from "../_io.ts";
import { createLogger, type Logger } from "../log.ts";
import { authenticateClient } from "../protocol/handshake.ts";
import type { AuthenticationPolicy, HandshakeOutcome } from "../protocol/outcome.ts";
import { ANSWER_LENGTH } from "../protocol/v1.ts";
import { SecretKeys } from "../protocol/keys.ts";
import { FramedConnection, FrameError } from "../protocol/frames.ts";
import {
  looksLikeProxyHeader,
  ProxyHeaderError,
  readProxyHeader,
} from "../protocol/proxy_protocol.ts";
import { ConfigError } from "../errors.ts";
import {
  DEFAULT_GRACE_PERIOD_MS,
  resolveConfig,
  type ResolvedConfig,
  type ServeOptions,
} from "./config.ts";
import {
  copyStats,
  emptyStats,
  increment,
  observe,
  type RefusalReason,
  type ServerStats,
} from "./stats.ts";
import { type Limits, ThreadLimits } from "./limits.ts";
import {
  ServiceError,
  type ServiceHandler,
  type ServiceSession,
  type ServiceStream,
  type TrafficCounters,
} from "./service.ts";
import { upperCaseEcho } from "./upper_case_echo.ts";
import { configuredService } from "./forward.ts";
import { startWorkerPool } from "./workers.ts";
import { CollectAfterCloses } from "./collect_garbage.ts";
import type { RunningServer, Secrets } from "./running.ts";

export type { RunningServer, Secrets };

/** How long the accept loop pauses when it runs out of descriptors or memory, so some free up. */
const ACCEPT_BACKOFF_MS = 50;

/** Accept errors that mean "out of a resource": pausing helps. Anything else: just go on. */
const EXHAUSTION_CODES = new Set(["EMFILE", "ENFILE", "ENOBUFS", "ENOMEM"]);

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
  /** Whether the connection is counted against its address's limits (under `address`). */
  counted: boolean;
  readonly startedAt: number;
  task?: Promise<void>;
  authenticated?: boolean;
  /** Set once its wrong answer has been counted towards the throttle (at the check itself). */
  failureCounted?: boolean;
  /** Set when the server closed the connection itself, so the resulting read error is expected. */
  closedByServer?: "handshake-timeout" | "idle-timeout" | "shutdown";
  /** The idle sweeper's bookmark: `conn.activity` when last seen changing, and when. */
  seenActivity?: number;
  quietSince?: number;
}

/** A TCP connection that counts the bytes through it, for the `closed` log line. */
class MeteredConnection implements TrafficCounters, ServiceStream {
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

  closeWrite(): Promise<void> {
    return this.tcp.closeWrite();
  }
}

/** What a {@linkcode Server} is built from: a resolved configuration and the in-thread hooks. */
export interface ServerSettings {
  config: ResolvedConfig;
  /** The secrets as keys, and what the handshake accepts. */
  policy: AuthenticationPolicy;
  /**
   * The caller's handler; undefined for the configured service: the forwarder with `forward`, or
   * the default echo, which counts its own traffic.
   */
  handler?: ServiceHandler;
  logger: Logger;
  /** The first connection id; a worker pool gives each thread its own. */
  firstId?: number;
  /** Added to the id for each new connection; a pool of N threads counts in steps of N. */
  idStep?: number;
  /** The limits to count against; a pool's threads share one. Default: this server's own. */
  limits?: Limits;
}

/**
 * A listening hmac-echo server in this thread. Start one with {@linkcode serve}; stop it with
 * `close()`, or let `await using` do it.
 */
export class Server implements RunningServer {
  /** The address the server listens on, with the real port when 0 was asked for. */
  readonly addr: Deno.NetAddr;
  #listener: Deno.TcpListener;
  #config: ResolvedConfig;
  #policy: AuthenticationPolicy;
  #handler?: ServiceHandler;
  #logger: Logger;
  #limits: Limits;
  #sessions = new Set<Session>();
  #nextId: number;
  #idStep: number;
  /** This server's counters; the bytes of open connections are added when a snapshot is taken. */
  #stats = emptyStats();
  #sweeper: ReturnType<typeof setInterval>;
  #collector?: CollectAfterCloses;
  #stopping = new AbortController();
  #acceptLoop: Promise<void>;
  #closed?: Promise<void>;

  /** Starts serving on an open listener; most callers want {@linkcode serve} instead. */
  constructor(listener: Deno.TcpListener, settings: ServerSettings) {
    this.#listener = listener;
    this.addr = listener.addr;
    this.#config = settings.config;
    this.#policy = settings.policy;
    this.#logger = settings.logger;
    this.#handler = settings.handler ??
      configuredService(this.#config, { logger: this.#logger, stats: this.#stats });
    this.#nextId = settings.firstId ?? 1;
    this.#idStep = settings.idStep ?? 1;
    this.#limits = settings.limits ?? new ThreadLimits(this.#config);
    if (this.#config.collectAfterCloses) this.#collector = new CollectAfterCloses();
    // One sweep over all sessions instead of a timer per connection for the handshake deadline,
    // or one reset on every read for the idle timeout: the hot path only bumps a counter, and a
    // connection is closed between one and 1.25 of either timeout. Dropping the per-connection
    // setTimeout/clearTimeout saved ~7% of the server's CPU per v1 session (median of 11 runs).
    const { handshakeTimeoutMs, idleTimeoutMs } = this.#config;
    const shortest = idleTimeoutMs > 0
      ? Math.min(handshakeTimeoutMs, idleTimeoutMs)
      : handshakeTimeoutMs;
    const every = Math.max(10, Math.min(1_000, shortest / 4));
    this.#sweeper = setInterval(() => this.#sweep(), every);
    this.#acceptLoop = this.#acceptConnections();
  }

  /** A snapshot of the server's counters. */
  stats(): Promise<ServerStats> {
    const snapshot = copyStats(this.#stats);
    for (const { conn } of this.#sessions) {
      snapshot.bytesIn += conn.bytesIn;
      snapshot.bytesOut += conn.bytesOut;
    }
    snapshot.active = this.#sessions.size;
    snapshot.logLinesDropped += this.#logger.droppedLines ?? 0;
    return Promise.resolve(snapshot);
  }

  /** Closes the server as `close()` does, with the default grace period. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /** Checks handshakes against new secrets from now on; authenticated sessions go on. */
  async replaceSecrets(secrets: Secrets): Promise<void> {
    const keys = await importKeys(secrets, this.#config.sha1Prefix);
    this.#policy = { ...this.#policy, ...keys };
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
    clearInterval(this.#sweeper);
    this.#logger.flush?.();
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
        const code = (error as { code?: string }).code;
        increment(this.#stats.acceptFailures, code ?? (error as Error).name ?? "unknown");
        const exhausted = EXHAUSTION_CODES.has(code ?? "");
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
      const viaProxy = this.#config.trustedProxies?.trusts(address) ?? false;
      const refusal = this.#limits.connect(viaProxy ? undefined : address);
      if (refusal !== undefined) {
        this.#refuse(tcp, address, formatAddr(tcp.remoteAddr), refusal);
        continue;
      }
      const session: Session = {
        id: this.#nextId,
        conn: new MeteredConnection(tcp),
        address,
        remote: formatAddr(tcp.remoteAddr),
        viaProxy,
        counted: !viaProxy,
        startedAt: performance.now(),
      };
      this.#nextId += this.#idStep;
      this.#sessions.add(session);
      session.task = this.#serveSession(session);
    }
  }

  #refuse(tcp: Deno.TcpConn, address: string, remote: string, reason: RefusalReason): void {
    increment(this.#stats.refused, reason);
    const limit = reason === "connection-limit"
      ? this.#config.maxConnections
      : reason === "address-limit"
      ? this.#config.maxConnectionsPerAddress
      : undefined;
    const retryInMs = reason === "throttled"
      ? Math.ceil(this.#limits.blockedFor(address))
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
    const { conn } = session;
    try {
      this.#logger.log("info", "accepted", { id: session.id, remote: session.remote });
      conn.tcp.setNoDelay(true);
      conn.tcp.setKeepAlive(this.#config.keepAlive);
      if (session.viaProxy && !await this.#admitProxied(session)) return;
      const outcome = await authenticateClient(conn, this.#policyFor(session));
      // The handshake deadline (#sweep) ends here: a rejection returns without another await.
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
      await this.#runService(conn, outcome, {
        id: session.id,
        remote: session.remote,
        abort: () => closeQuietly(conn.tcp),
      });
    } catch (error) {
      this.#recordFailure(session, error);
    } finally {
      this.#release(session);
    }
  }

  /**
   * The policy for one session: with the throttle on, a wrong answer counts the moment it is
   * checked, and no verdict reaches an address in a cool-down (docs/PROTOCOL.md §3). Guesses sent
   * on hundreds of connections at once are checked at once, but at most the threshold less one
   * wrong ones are revealed per cool-down cycle: the wrong answer that reaches the threshold starts
   * the cool-down here, before its own verdict is decided. Honest clients are never made to wait.
   */
  #policyFor(session: Session): AuthenticationPolicy {
    if (!this.#limits.throttling) return this.#policy;
    return {
      ...this.#policy,
      afterCheck: (valid) => {
        if (!valid && this.#countsTowardsThrottle(session)) {
          session.failureCounted = true;
          this.#countFailure(session.address);
        }
        return this.#limits.blockedFor(session.address) === 0;
      },
    };
  }

  /** Counts a failed handshake from `address`, and logs the cool-down it may start. */
  #countFailure(address: string): void {
    const cooldownMs = this.#limits.recordFailure(address);
    if (cooldownMs > 0) {
      this.#stats.throttled++;
      this.#logger.log("warn", "throttling", { address, cooldownMs });
    }
  }

  /** Before its PROXY header, a proxied connection's address is the balancer's, not the client's. */
  #countsTowardsThrottle(session: Session): boolean {
    return !(session.viaProxy && !session.counted);
  }

  /** Counts and logs why a session's task failed: the server closed it, or the client or its frames. */
  #recordFailure(session: Session, error: unknown): void {
    // session.remote changes when a PROXY header names the real client: always read it fresh.
    const { id, remote } = session;
    switch (session.closedByServer) {
      case "handshake-timeout":
        this.#recordRejection(
          session,
          "handshake-timeout",
          `no answer within ${this.#config.handshakeTimeoutMs} ms`,
        );
        return;
      case "idle-timeout":
        this.#stats.idleClosed++;
        this.#logger.log("info", "idle-timeout", {
          id,
          remote,
          idleTimeoutMs: this.#config.idleTimeoutMs,
        });
        return;
      case "shutdown":
        return; // logged once for all such sessions by #shutDown
    }
    if (error instanceof ServiceError) return; // the service has logged and counted it
    if (error instanceof FrameError) {
      increment(this.#stats.frameErrors, error.reason);
      this.#logger.log("warn", "frame-rejected", {
        id,
        remote,
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
        `the connection was reset after ${session.conn.bytesIn} of ${ANSWER_LENGTH} answer bytes`,
      );
    } else {
      const disconnected = isDisconnect(error);
      this.#logger.log(
        disconnected ? "info" : "error",
        disconnected ? "disconnected" : "session-failed",
        {
          id,
          remote,
          error: describeError(error),
        },
      );
    }
  }

  /** Closes a session's connection and gives back everything it counted against the limits. */
  #release(session: Session): void {
    const { conn } = session;
    closeQuietly(conn.tcp);
    this.#sessions.delete(session);
    this.#limits.disconnect(session.counted ? session.address : undefined);
    this.#stats.bytesIn += conn.bytesIn;
    this.#stats.bytesOut += conn.bytesOut;
    this.#logger.log("info", "closed", {
      id: session.id,
      remote: session.remote,
      bytesIn: conn.bytesIn,
      bytesOut: conn.bytesOut,
      durationMs: Math.round(performance.now() - session.startedAt),
    });
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
    if (outcome.protocol === 1 && outcome.sha1Prefix) {
      this.#stats.authenticatedSha1Prefix++;
      this.#logger.log("warn", "legacy-digest-used", {
        id,
        remote,
        note: "this client answers with sha1(secret + challenge); move it to HMAC",
      });
    }
    if (outcome.protocol === 2) this.#stats.authenticatedV2++;
    if (outcome.protocol === 2 && outcome.forwardSecret) this.#stats.authenticatedForwardSecret++;
    this.#logger.log("info", "authenticated", {
      id,
      remote,
      protocol: outcome.protocol,
      digest: outcome.protocol === 2 ? outcome.digest : outcome.sha1Prefix ? "sha1-prefix" : "sha1",
      mode: outcome.protocol === 2 ? outcome.mode : "plain",
      forwardSecret: outcome.protocol === 2 && outcome.forwardSecret === true,
    });
  }

  /** Serves an authenticated connection: over the frame layer when one was negotiated. */
  async #runService(
    conn: MeteredConnection,
    outcome: AuthenticatedOutcome,
    session: ServiceSession,
  ): Promise<void> {
    if (outcome.protocol === 2 && outcome.frameKeys) {
      const framed = new FramedConnection(conn, outcome.frameKeys);
      await (this.#handler ? this.#handler(framed, session) : upperCaseEcho(framed));
      await framed.closeWrite(); // the end frame: the client knows it has every reply byte
    } else if (this.#handler) {
      await this.#handler(conn, session);
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
    const refusal = this.#limits.identify(session.address);
    if (refusal !== undefined) {
      this.#refuse(session.conn.tcp, session.address, session.remote, refusal);
      return false;
    }
    session.counted = true;
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
    if (session.failureCounted || !countsAsFailure(session, reason)) return;
    if (this.#countsTowardsThrottle(session)) this.#countFailure(session.address);
  }

  /**
   * Closes the sessions past their handshake deadline, and the authenticated ones left idle; tells
   * the collector how many remain.
   */
  #sweep(): void {
    const now = performance.now();
    this.#collector?.observe(this.#sessions.size, now);
    const { handshakeTimeoutMs, idleTimeoutMs } = this.#config;
    for (const session of this.#sessions) {
      if (!session.authenticated) {
        if (now - session.startedAt >= handshakeTimeoutMs) {
          this.#closeSession(session, "handshake-timeout");
        }
        continue;
      }
      if (idleTimeoutMs <= 0) continue;
      if (session.conn.activity !== session.seenActivity || session.quietSince === undefined) {
        session.seenActivity = session.conn.activity;
        session.quietSince = now;
      } else if (now - session.quietSince >= idleTimeoutMs) {
        this.#closeSession(session, "idle-timeout");
      }
    }
  }
}

/**
 * Starts an hmac-echo server: checks the options, imports the secret once, listens, and serves
 * every connection in its own task; with `workers` above 1, in that many threads sharing the port.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { serve } from "./server.ts";
 * const secret = new TextEncoder().encode("correct horse battery staple");
 * await using server = await serve({ secret, port: 0 });
 * assert.ok(server.addr.port > 0);
 * ```
 * @throws {Deno.errors.AddrInUse} if the port is taken.
 * @throws {ConfigError} (a `RangeError`) naming an option that is out of range.
 */
export async function serve(options: ServeOptions): Promise<RunningServer> {
  const config = resolveConfig(options);
  if (options.handler !== undefined && config.forward !== undefined) {
    throw new ConfigError(
      "handler",
      "absent with forward",
      "a function",
      "handler and forward are two services: give one of them",
    );
  }
  if (config.workers === 1) {
    return await listen(config, { handler: options.handler, logger: options.logger });
  }
  for (const hook of ["handler", "logger"] as const) {
    if (options[hook] !== undefined) {
      throw new ConfigError(
        hook,
        "absent with workers above 1",
        "a function",
        `${hook} runs in the calling thread only: it cannot be combined with workers: ${config.workers}`,
      );
    }
  }
  const { handler: _handler, logger: _logger, ...plain } = options;
  return await startWorkerPool(plain, config);
}

/** What only the calling thread can give {@linkcode listen}. */
export interface ListenHooks {
  handler?: ServiceHandler;
  /** Default: the `log` option's stderr lines, or none. */
  logger?: Logger;
  /** Share the port with the pool's other threads (`SO_REUSEPORT`). */
  reusePort?: boolean;
  firstId?: number;
  idStep?: number;
  limits?: Limits;
}

/**
 * Listens and serves in this thread: what `serve` does with one worker, and each pool thread does.
 * Not part of the public API.
 */
export async function listen(config: ResolvedConfig, hooks: ListenHooks = {}): Promise<Server> {
  const sha1Prefix = config.sha1Prefix;
  const { keys, previousKeys } = await importKeys(config, sha1Prefix);
  const listener = Deno.listen({
    hostname: config.hostname,
    port: config.port,
    transport: "tcp",
    tcpBacklog: config.backlog,
    reusePort: hooks.reusePort ?? false,
  });
  const { require, digests, requireForwardSecrecy } = config;
  return new Server(listener, {
    config,
    policy: { keys, previousKeys, require, digests, sha1Prefix, requireForwardSecrecy },
    handler: hooks.handler,
    logger: hooks.logger ?? createLogger(config.log),
    firstId: hooks.firstId,
    idStep: hooks.idStep,
    limits: hooks.limits,
  });
}

/** Rejections that are an honest client's configuration, never a guess at the secret. */
const MISMATCHES = new Set([
  "v1-refused",
  "unsupported-digest",
  "unsupported-version",
  "mode-refused",
  "forward-secrecy-required",
  // After a valid proof: whoever sent it knows the secret, so it is no guess.
  "bad-key-share",
  // A PROXY header problem is a balancer's misconfiguration.
  "malformed-proxy-header",
  "untrusted-proxy-header",
  // Its verdict withheld: the cool-down is already running.
  "throttled",
]);

/** Whether a rejection counts towards the throttle: wrong answers, garbage, timeouts. */
function countsAsFailure(session: Session, reason: string): boolean {
  if (MISMATCHES.has(reason)) return false;
  // Hanging up without sending a byte (a port scan, a TCP health check) guesses nothing.
  return !(reason === "incomplete-answer" && session.conn.bytesIn === 0);
}

/** The secrets as the keys a policy holds. */
async function importKeys(
  secrets: Secrets,
  sha1Prefix: boolean,
): Promise<{ keys: SecretKeys; previousKeys?: SecretKeys }> {
  const keys = await SecretKeys.import(secrets.secret, { sha1Prefix });
  const previousKeys = secrets.previousSecret === undefined
    ? undefined
    : await SecretKeys.import(secrets.previousSecret, { sha1Prefix });
  return { keys, previousKeys };
}

function describeError(error: unknown): string {
  return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
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
