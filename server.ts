/**
 * The hmac-echo server: owns the listener and every connection's lifetime. Each connection runs in
 * its own task; the accept loop never waits for a handshake.
 *
 * @module
 */

import { closeQuietly, isClosedUnder, isDisconnect } from "./_io.ts";
import { authenticateClient, importSecretKey } from "./handshake.ts";
import { type Logger, silentLogger } from "./log.ts";
import { type ServiceConnection, type ServiceHandler, upperCaseEcho } from "./upper_case_echo.ts";

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

/** How long the accept loop pauses after an accept error (say, out of file descriptors). */
const ACCEPT_BACKOFF_MS = 100;

/** Options for {@linkcode serve}. */
export interface ServeOptions {
  /** The shared secret's bytes, or a key from `importSecretKey` (imported once per server). */
  secret: Uint8Array | CryptoKey;
  /** Address to listen on. Default `127.0.0.1`. */
  hostname?: string;
  /** Port to listen on; 0 picks a free one (read it back from `server.addr`). Default 4444. */
  port?: number;
  /** Time a client has to answer the challenge before it is closed. Default 10 000 ms. */
  handshakeTimeoutMs?: number;
  /** Connections beyond this many at once are closed at once. Default 10 000. */
  maxConnections?: number;
  /** Serves each authenticated connection. Default: {@linkcode upperCaseEcho}. */
  handler?: ServiceHandler;
  /** Receives connection events. Default: none are logged. */
  logger?: Logger;
}

/** Counters since the server started. */
export interface ServerStats {
  /** Connections the listener accepted, refused ones included. */
  accepted: number;
  /** Connections closed at once because `maxConnections` were open. */
  refused: number;
  /** Clients that passed the handshake. */
  authenticated: number;
  /** Clients that failed it, by reason (docs/PROTOCOL.md §3). */
  rejected: Record<string, number>;
  /** Connections open now. */
  active: number;
}

/** One connection and what the server knows about it. */
interface Session {
  readonly id: number;
  readonly conn: MeteredConnection;
  readonly remote: string;
  readonly startedAt: number;
  task?: Promise<void>;
  /** Set when the server closed the connection itself, so the resulting read error is expected. */
  closedByServer?: "handshake-timeout" | "shutdown";
}

/** A TCP connection that counts the bytes through it, for the `closed` log line. */
class MeteredConnection implements ServiceConnection {
  bytesIn = 0;
  bytesOut = 0;

  constructor(readonly tcp: Deno.TcpConn) {}

  async read(buffer: Uint8Array): Promise<number | null> {
    const n = await this.tcp.read(buffer);
    if (n !== null) this.bytesIn += n;
    return n;
  }

  async write(data: Uint8Array): Promise<number> {
    const n = await this.tcp.write(data);
    this.bytesOut += n;
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
  #key: CryptoKey;
  #handler: ServiceHandler;
  #logger: Logger;
  #handshakeTimeoutMs: number;
  #maxConnections: number;
  #sessions = new Set<Session>();
  #nextId = 1;
  #stats = { accepted: 0, refused: 0, authenticated: 0, rejected: {} as Record<string, number> };
  #stopping = new AbortController();
  #acceptLoop: Promise<void>;
  #closed?: Promise<void>;

  /** Starts serving on an open listener; most callers want {@linkcode serve} instead. */
  constructor(
    listener: Deno.TcpListener,
    key: CryptoKey,
    options: Omit<ServeOptions, "secret" | "hostname" | "port"> = {},
  ) {
    this.#listener = listener;
    this.addr = listener.addr;
    this.#key = key;
    this.#handler = options.handler ?? upperCaseEcho;
    this.#logger = options.logger ?? silentLogger;
    this.#handshakeTimeoutMs = positive(
      "handshakeTimeoutMs",
      options.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS,
    );
    this.#maxConnections = positive(
      "maxConnections",
      options.maxConnections ?? DEFAULT_MAX_CONNECTIONS,
    );
    this.#acceptLoop = this.#acceptConnections();
  }

  /** A snapshot of the server's counters. */
  get stats(): ServerStats {
    return {
      ...this.#stats,
      rejected: { ...this.#stats.rejected },
      active: this.#sessions.size,
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
    if (this.#sessions.size === 0) return;
    this.#logger.log("info", "draining", { sessions: this.#sessions.size, gracePeriodMs });
    const finished = await settlesWithin(this.#allTasks(), gracePeriodMs);
    if (!finished) {
      this.#logger.log("warn", "grace-period-over", { closing: this.#sessions.size });
      for (const session of this.#sessions) {
        session.closedByServer = "shutdown";
        closeQuietly(session.conn.tcp);
      }
    }
    await this.#allTasks();
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
        // EMFILE and friends: the server must outlive them. Pausing lets connections close.
        this.#logger.log("error", "accept-failed", { error: describeError(error) });
        await pause(ACCEPT_BACKOFF_MS, stopping);
        continue;
      }
      this.#stats.accepted++;
      if (this.#sessions.size >= this.#maxConnections) {
        this.#stats.refused++;
        this.#logger.log("warn", "refused", {
          remote: formatAddr(tcp.remoteAddr),
          reason: "connection-limit",
          limit: this.#maxConnections,
        });
        closeQuietly(tcp);
        continue;
      }
      const session: Session = {
        id: this.#nextId++,
        conn: new MeteredConnection(tcp),
        remote: formatAddr(tcp.remoteAddr),
        startedAt: performance.now(),
      };
      this.#sessions.add(session);
      session.task = this.#serveSession(session);
    }
  }

  /** One connection from accept to close. Never rejects: every outcome is logged here. */
  async #serveSession(session: Session): Promise<void> {
    const { id, conn, remote } = session;
    const logger = this.#logger;
    logger.log("info", "accepted", { id, remote });
    const deadline = setTimeout(() => {
      session.closedByServer = "handshake-timeout";
      closeQuietly(conn.tcp);
    }, this.#handshakeTimeoutMs);
    try {
      conn.tcp.setNoDelay(true);
      const outcome = await authenticateClient(conn, this.#key);
      clearTimeout(deadline);
      if (!outcome.authenticated) {
        this.#countRejection(outcome.reason);
        logger.log("warn", "rejected", {
          id,
          remote,
          reason: outcome.reason,
          detail: outcome.detail,
        });
        return;
      }
      this.#stats.authenticated++;
      logger.log("info", "authenticated", { id, remote });
      await this.#handler(conn);
    } catch (error) {
      if (session.closedByServer === "handshake-timeout") {
        this.#countRejection("handshake-timeout");
        logger.log("warn", "rejected", {
          id,
          remote,
          reason: "handshake-timeout",
          detail: `no answer within ${this.#handshakeTimeoutMs} ms`,
        });
      } else if (session.closedByServer === "shutdown" && isClosedUnder(error)) {
        // Logged once for all such sessions by #shutDown.
      } else if (isDisconnect(error)) {
        logger.log("info", "disconnected", { id, remote, error: describeError(error) });
      } else {
        logger.log("error", "session-failed", { id, remote, error: describeError(error) });
      }
    } finally {
      clearTimeout(deadline);
      closeQuietly(conn.tcp);
      this.#sessions.delete(session);
      logger.log("info", "closed", {
        id,
        remote,
        bytesIn: conn.bytesIn,
        bytesOut: conn.bytesOut,
        durationMs: Math.round(performance.now() - session.startedAt),
      });
    }
  }

  #countRejection(reason: string): void {
    this.#stats.rejected[reason] = (this.#stats.rejected[reason] ?? 0) + 1;
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
  const key = options.secret instanceof CryptoKey
    ? options.secret
    : await importSecretKey(options.secret);
  const listener = Deno.listen({
    hostname: options.hostname ?? DEFAULT_HOSTNAME,
    port: options.port ?? DEFAULT_PORT,
    transport: "tcp",
  });
  return new Server(listener, key, options);
}

/** `host:port`, with brackets around IPv6 hosts. */
export function formatAddr(addr: Deno.Addr): string {
  if (addr.transport !== "tcp" && addr.transport !== "udp") return addr.transport;
  const host = addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname;
  return `${host}:${addr.port}`;
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
