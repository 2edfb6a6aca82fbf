/**
 * The client's end of a tunnel (`connect --listen`): a local listener, on loopback or a Unix
 * socket, whose every connection becomes its own authenticated, encrypted, forward-secret session
 * to an hmac-echo server (one started with `forward`, which passes it on to the real service).
 * An unmodified program talks to the local address as if it were the service.
 *
 * @module
 */

import { closeQuietly, formatAddr } from "../_io.ts";
import { pipeBoth } from "../_pipe.ts";
import { HmacEchoError } from "../errors.ts";
import { type Logger, silentLogger } from "../log.ts";
import { type DigestName, type SecretKeys, secretKeys } from "../protocol/keys.ts";
import { type Client, connect } from "./client.ts";

/** Where a tunnel listens: a TCP address (loopback unless you say otherwise) or a Unix socket. */
export type ListenAddress = { hostname: string; port: number } | { path: string };

/** Options for {@linkcode startTunnel}. */
export interface TunnelOptions {
  /** The shared secret's bytes, or keys from `SecretKeys.import`. */
  secret: Uint8Array | SecretKeys;
  /** Where to listen for local programs; port 0 picks a free one (read it from `addr`). */
  listen: ListenAddress;
  /** The hmac-echo server. Default `127.0.0.1`. */
  hostname?: string;
  /** The server's port. Default 4444. */
  port?: number;
  /** The v2 digest of each hello. Default `sha256`. */
  digest?: DigestName;
  /** Retries of each local connection's dial, as `connect`'s `retries`. Default 0. */
  retries?: number;
  /** The first retry's delay, as `connect`'s. Default 100 ms. */
  retryDelayMs?: number;
  /** Time each dial and handshake may take before the local connection is given up. Default 10 s. */
  handshakeTimeoutMs?: number;
  /** Local connections served at once; one more is closed at once. Default 1 000. */
  maxConnections?: number;
  /** TCP keepalive probes on both legs: local TCP connections and the server's. Default true. */
  keepAlive?: boolean;
  /** Receives the tunnel's events. Default: none. */
  logger?: Logger;
}

/** Default time a dial and its handshake may take. */
export const DEFAULT_TUNNEL_HANDSHAKE_TIMEOUT_MS = 10_000;
/** Default cap on local connections served at once. */
export const DEFAULT_TUNNEL_MAX_CONNECTIONS = 1_000;

/** A tunnel's counters since it started. */
export interface TunnelStats {
  /** Local connections accepted, refused ones included. */
  accepted: number;
  /** Local connections closed at once: the tunnel was at `maxConnections`. */
  refused: number;
  /** Sessions that passed the handshake. */
  authenticated: number;
  /** Local connections closed because their session could not be opened, by reason. */
  dialFailures: Record<string, number>;
  /** Sessions that ended with a failure on either side, by where: `local` or `server`. */
  sessionFailures: Record<string, number>;
  /** Local connections open now. */
  active: number;
  /** Bytes from local programs to the server (payload, before framing). */
  bytesToServer: number;
  /** Bytes from the server to local programs. */
  bytesFromServer: number;
}

/** One local connection and its session. */
interface TunnelSession {
  readonly id: number;
  readonly local: Deno.Conn;
  client?: Client;
  task?: Promise<void>;
}

/**
 * Starts a tunnel: listens, and for each local connection dials the server, authenticates with
 * protocol v2, encrypted frames and a forward-secret key exchange (nothing weaker), and joins
 * the two both ways until both are done. A half-close passes through as a half-close, a reset as
 * a close; each direction writes a chunk before it reads the next, so a slow reader holds a fast
 * writer back instead of growing memory.
 *
 * A local connection whose session cannot be opened (the server unreachable, the secret
 * rejected, an impostor) is closed, and the reason logged once per cause until a session opens
 * again (`dial-failed`, then `dial-recovered`), not once per connection.
 *
 * A Unix socket is created with mode 0600 in a private directory and moved into place, so no
 * other user can connect to it, even for a moment; a stale socket left at the path is replaced,
 * a live one or any other file is not. It is removed when the tunnel closes.
 *
 * @example
 * ```ts
 * import { startTunnel } from "./tunnel.ts";
 * const secret = new TextEncoder().encode("a shared secret of at least 16 bytes");
 * await using tunnel = await startTunnel({
 *   secret,
 *   listen: { hostname: "127.0.0.1", port: 0 },
 *   hostname: "127.0.0.1",
 *   port: 4444,
 * });
 * // Point a program at tunnel.addr: each connection is a session to 127.0.0.1:4444.
 * ```
 * @throws {Deno.errors.AddrInUse} if the address is taken, or a live socket is at the path.
 * @throws {Deno.errors.AlreadyExists} if a file that is not a socket is at the path.
 */
export async function startTunnel(options: TunnelOptions): Promise<Tunnel> {
  const keys = await secretKeys(options.secret, { sha1Prefix: false });
  const listen = options.listen;
  if ("path" in listen) {
    const { listener, inode } = await listenUnix(listen.path);
    return new Tunnel(listener, { ...options, secret: keys }, { path: listen.path, inode });
  }
  const listener = Deno.listen({ hostname: listen.hostname, port: listen.port, transport: "tcp" });
  return new Tunnel(listener, { ...options, secret: keys });
}

/**
 * A running tunnel. Start one with {@linkcode startTunnel}; stop it with `close()`, or let
 * `await using` do it.
 */
export class Tunnel implements AsyncDisposable {
  /** The local address: the real port when 0 was asked for, or the socket's path. */
  readonly addr: Deno.NetAddr | Deno.UnixAddr;
  #listener: Deno.Listener;
  #options: TunnelOptions & { secret: SecretKeys };
  #socket?: { path: string; inode: number | null };
  #logger: Logger;
  #server: string;
  #sessions = new Set<TunnelSession>();
  #nextId = 1;
  #stats: TunnelStats = {
    accepted: 0,
    refused: 0,
    authenticated: 0,
    dialFailures: {},
    sessionFailures: {},
    active: 0,
    bytesToServer: 0,
    bytesFromServer: 0,
  };
  /** Dial failures reported since the last session that opened, by cause, with their counts. */
  #reported = new Map<string, number>();
  #stopping = new AbortController();
  #acceptLoop: Promise<void>;
  #closed?: Promise<void>;

  /** Serves an open listener; most callers want {@linkcode startTunnel}. */
  constructor(
    listener: Deno.Listener,
    options: TunnelOptions & { secret: SecretKeys },
    socket?: { path: string; inode: number | null },
  ) {
    this.#listener = listener;
    this.#options = options;
    this.#socket = socket;
    this.addr = socket ? { transport: "unix", path: socket.path } : listener.addr as Deno.NetAddr;
    this.#logger = options.logger ?? silentLogger;
    this.#server = formatAddr({
      transport: "tcp",
      hostname: options.hostname ?? "127.0.0.1",
      port: options.port ?? 4444,
    });
    this.#acceptLoop = this.#acceptConnections();
  }

  /** A snapshot of the tunnel's counters. */
  stats(): TunnelStats {
    return {
      ...this.#stats,
      dialFailures: { ...this.#stats.dialFailures },
      sessionFailures: { ...this.#stats.sessionFailures },
      active: this.#sessions.size,
    };
  }

  /**
   * Stops listening, closes every local connection and its session (a dial in progress is
   * abandoned), removes a Unix socket it created, and resolves when every task has ended.
   * Calling it again returns the same promise.
   */
  close(): Promise<void> {
    this.#closed ??= this.#shutDown();
    return this.#closed;
  }

  /** Closes the tunnel as `close()` does. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  async #shutDown(): Promise<void> {
    this.#stopping.abort(new Deno.errors.Interrupted("the tunnel is closing"));
    closeQuietly(this.#listener);
    await this.#acceptLoop;
    for (const session of this.#sessions) {
      closeQuietly(session.local);
      session.client?.close();
    }
    await Promise.all([...this.#sessions].map((session) => session.task));
    if (this.#socket) await removeOwnSocket(this.#socket);
  }

  async #acceptConnections(): Promise<void> {
    const cap = this.#options.maxConnections ?? DEFAULT_TUNNEL_MAX_CONNECTIONS;
    while (!this.#stopping.signal.aborted) {
      let local: Deno.Conn;
      try {
        local = await this.#listener.accept();
      } catch (error) {
        if (this.#stopping.signal.aborted || error instanceof Deno.errors.BadResource) return;
        // Out of descriptors, a connection aborted before accept: log, breathe, go on.
        this.#logger.log("error", "accept-failed", { error: describe(error) });
        await new Promise((resolve) => setTimeout(resolve, 50));
        continue;
      }
      this.#stats.accepted++;
      if (this.#sessions.size >= cap) {
        this.#stats.refused++;
        this.#logger.log("warn", "refused", { reason: "connection-limit", limit: cap });
        closeQuietly(local);
        continue;
      }
      const session: TunnelSession = { id: this.#nextId++, local };
      this.#sessions.add(session);
      session.task = this.#serveSession(session);
    }
  }

  /** One local connection from accept to close. Never rejects: every outcome is logged here. */
  async #serveSession(session: TunnelSession): Promise<void> {
    const { id, local } = session;
    const startedAt = performance.now();
    const remote = local.remoteAddr.transport === "tcp" ? formatAddr(local.remoteAddr) : "unix";
    let toServer = 0;
    let fromServer = 0;
    let failure: string | undefined;
    try {
      if (local.remoteAddr.transport === "tcp") {
        const tcp = local as Deno.TcpConn;
        tcp.setNoDelay(true);
        tcp.setKeepAlive(this.#options.keepAlive ?? true);
      }
      this.#logger.log("info", "accepted", { id, remote });
      const client = await this.#dial();
      if (client === undefined) {
        failure = "dial";
        return;
      }
      session.client = client;
      const result = await pipeBoth(local, client, {
        onChunk: (from, n) => {
          if (from === "a") this.#stats.bytesToServer += n;
          else this.#stats.bytesFromServer += n;
        },
        // A failure on either side closes both: a reset passes on as a close.
        abort: () => {
          closeQuietly(local);
          client.close();
        },
      });
      toServer = result.aToB;
      fromServer = result.bToA;
      if (result.failure && !this.#stopping.signal.aborted) {
        const where = result.failure.side === "a" ? "local" : "server";
        this.#stats.sessionFailures[where] = (this.#stats.sessionFailures[where] ?? 0) + 1;
        failure = `${where}: ${reasonOf(result.failure.error)}`;
      }
    } finally {
      closeQuietly(local);
      session.client?.close();
      this.#sessions.delete(session);
      this.#logger.log(failure && failure !== "dial" ? "warn" : "info", "closed", {
        id,
        remote,
        toServer,
        fromServer,
        durationMs: Math.round(performance.now() - startedAt),
        failure,
      });
    }
  }

  /** Opens a session to the server, or reports why not (once per cause) and returns undefined. */
  async #dial(): Promise<Client | undefined> {
    const options = this.#options;
    try {
      const client = await connect({
        secret: options.secret,
        hostname: options.hostname,
        port: options.port,
        protocol: 2,
        digest: options.digest,
        mode: "encrypt",
        forwardSecrecy: true,
        retries: options.retries,
        retryDelayMs: options.retryDelayMs,
        timeoutMs: options.handshakeTimeoutMs ?? DEFAULT_TUNNEL_HANDSHAKE_TIMEOUT_MS,
        keepAlive: options.keepAlive,
        signal: this.#stopping.signal,
        onRetry: ({ attempt, of, delayMs, error }) =>
          this.#logger.log("info", "dial-retry", {
            server: this.#server,
            attempt,
            of,
            delayMs,
            reason: reasonOf(error),
          }),
      });
      this.#stats.authenticated++;
      if (this.#reported.size > 0) {
        const failures = [...this.#reported.values()].reduce((sum, n) => sum + n, 0);
        this.#logger.log("notice", "dial-recovered", { server: this.#server, failures });
        this.#reported.clear();
      }
      return client;
    } catch (error) {
      if (this.#stopping.signal.aborted) return undefined;
      const reason = reasonOf(error);
      this.#stats.dialFailures[reason] = (this.#stats.dialFailures[reason] ?? 0) + 1;
      const seen = this.#reported.get(reason);
      this.#reported.set(reason, (seen ?? 0) + 1);
      if (seen === undefined) {
        this.#logger.log("warn", "dial-failed", {
          server: this.#server,
          reason,
          error: error instanceof Error ? error.message : String(error),
          note: "local connections are closed; the same failure is not logged again until a " +
            "session opens",
        });
      }
      return undefined;
    }
  }
}

/** A failure's cause, as a stable name: an hmac-echo reason, or the error's class. */
function reasonOf(error: unknown): string {
  if (error instanceof HmacEchoError) return error.reason;
  if (error instanceof Error) return error.name;
  return "unknown";
}

function describe(error: unknown): string {
  return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
}

/**
 * Listens on a Unix socket at `path` that only this user can connect to: created in a private
 * (0700) directory next to `path`, set to 0600, then renamed into place, which also replaces a
 * stale socket atomically. Binding at `path` directly would leave a moment in which the socket
 * has the umask's mode.
 */
async function listenUnix(
  path: string,
): Promise<{ listener: Deno.UnixListener; inode: number | null }> {
  await checkSocketPath(path);
  const slash = path.lastIndexOf("/");
  const dir = slash < 0 ? "." : slash === 0 ? "/" : path.slice(0, slash);
  const privateDir = await Deno.makeTempDir({ dir, prefix: ".hmac-echo-" });
  try {
    const temporary = `${privateDir}/socket`;
    const listener = Deno.listen({ transport: "unix", path: temporary });
    try {
      await Deno.chmod(temporary, 0o600);
      await Deno.rename(temporary, path);
      return { listener, inode: (await Deno.lstat(path)).ino };
    } catch (error) {
      listener.close();
      throw error;
    }
  } finally {
    await Deno.remove(privateDir, { recursive: true });
  }
}

/** Refuses a path held by a live socket or by anything but a socket; a stale socket may go. */
async function checkSocketPath(path: string): Promise<void> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.lstat(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return;
    throw error;
  }
  if (!info.isSocket) {
    throw new Deno.errors.AlreadyExists(
      `${path} exists and is not a socket: remove it, or choose another path`,
    );
  }
  try {
    const conn = await Deno.connect({ transport: "unix", path });
    conn.close();
  } catch (error) {
    if (error instanceof Deno.errors.ConnectionRefused) return; // stale: nothing listens
    throw error;
  }
  throw new Deno.errors.AddrInUse(`${path} is a socket another program is listening on`);
}

/** Removes the tunnel's socket file, unless another has replaced it meanwhile. */
async function removeOwnSocket(socket: { path: string; inode: number | null }): Promise<void> {
  try {
    const info = await Deno.lstat(socket.path);
    if (info.isSocket && info.ino === socket.inode) await Deno.remove(socket.path);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
}
