/**
 * The hmac-echo client: dials a server, answers its challenge, and exchanges service bytes.
 *
 * @module
 */

import { closeQuietly, concat, formatAddr, isDisconnect, writeAll } from "./_io.ts";
import { answerChallenge, ChallengeError, secretKey } from "./handshake.ts";

/** Options for {@linkcode connect}. */
export interface ConnectOptions {
  /** The shared secret's bytes, or a key from `importSecretKey`. */
  secret: Uint8Array | CryptoKey;
  /** Server address. Default `127.0.0.1`. */
  hostname?: string;
  /** Server port. Default 4444. */
  port?: number;
  /**
   * Attempts after the first when the connection itself fails: refused, reset, unreachable,
   * timed out, or closed before the challenge (a full or throttling server). Never after a
   * rejected answer. Default 0.
   */
  retries?: number;
  /** The first retry's delay; each one doubles, up to 5 s, with jitter. Default 100 ms. */
  retryDelayMs?: number;
  /** Told before each retry, for logging. */
  onRetry?: (retry: { attempt: number; of: number; delayMs: number; error: unknown }) => void;
}

const MAX_RETRY_DELAY_MS = 5_000;

/** Connection failures worth another attempt; a rejection is never one of them. */
function isRetryable(error: unknown): boolean {
  return error instanceof Deno.errors.ConnectionRefused ||
    error instanceof Deno.errors.ConnectionReset ||
    error instanceof Deno.errors.ConnectionAborted ||
    error instanceof Deno.errors.TimedOut ||
    error instanceof Deno.errors.NetworkUnreachable ||
    error instanceof Deno.errors.NotConnected ||
    error instanceof ChallengeError;
}

/**
 * The server closed the connection before replying to anything: in protocol v1 that is how a
 * rejected answer shows (docs/PROTOCOL.md §3).
 */
export class HandshakeRejectedError extends Error {
  /** Builds the error for the server at `server` (`host:port`). */
  constructor(server: string, options?: ErrorOptions) {
    super(`authentication rejected by ${server}: check the secret`, options);
    this.name = "HandshakeRejectedError";
  }
}

const READ_BUFFER_SIZE = 16 * 1024;

/**
 * A connection that has answered the server's challenge. Reads and writes turn the v1 sign of a
 * rejection (the server hanging up before its first reply byte) into a
 * {@linkcode HandshakeRejectedError}.
 */
export class Client {
  /** The server, as `host:port`. */
  readonly server: string;
  #conn: Deno.TcpConn;
  #sent = 0;
  #received = 0;

  /** Wraps a connection whose challenge was answered; most callers want {@linkcode connect}. */
  constructor(conn: Deno.TcpConn, server: string) {
    this.#conn = conn;
    this.server = server;
  }

  /** This end of the connection: what a server logs as the client (or a PROXY header names). */
  get localAddr(): Deno.NetAddr {
    return this.#conn.localAddr;
  }

  /** Reply bytes received so far. */
  get bytesReceived(): number {
    return this.#received;
  }

  /**
   * Reads reply bytes; `null` once the server has closed after the last reply.
   *
   * @throws {HandshakeRejectedError} if the server hangs up after this client has sent bytes but
   * before any reply. (A hang-up before this client sends anything looks like a plain `null`;
   * {@linkcode relay} settles that case once its input is sent.)
   */
  async read(buffer: Uint8Array): Promise<number | null> {
    let n: number | null;
    try {
      n = await this.#conn.read(buffer);
    } catch (error) {
      if (isDisconnect(error) && this.#nothingReceivedYet()) {
        throw new HandshakeRejectedError(this.server, { cause: error });
      }
      throw error;
    }
    if (n === null) {
      if (this.#nothingReceivedYet()) throw new HandshakeRejectedError(this.server);
      return null;
    }
    this.#received += n;
    return n;
  }

  /** Writes some of `data`, returning how many bytes were written. */
  async write(data: Uint8Array): Promise<number> {
    try {
      const n = await this.#conn.write(data);
      this.#sent += n;
      return n;
    } catch (error) {
      if (isDisconnect(error) && this.#received === 0) {
        throw new HandshakeRejectedError(this.server, { cause: error });
      }
      throw error;
    }
  }

  /** Tells the server this side has nothing more to send; it then flushes and closes. */
  closeWrite(): Promise<void> {
    return this.#conn.closeWrite();
  }

  /** Closes the connection. Safe to call more than once. */
  close(): void {
    closeQuietly(this.#conn);
  }

  /** Sent something, heard nothing: the only v1 sign of a rejection. */
  #nothingReceivedYet(): boolean {
    return this.#sent > 0 && this.#received === 0;
  }
}

/**
 * Dials a server and answers its challenge.
 *
 * @example
 * ```ts ignore
 * import { connect } from "./client.ts";
 * const client = await connect({ secret: new TextEncoder().encode("s3cret"), port: 4444 });
 * try {
 *   await client.write(new TextEncoder().encode("hello"));
 * } finally {
 *   client.close();
 * }
 * ```
 * @throws {Deno.errors.ConnectionRefused} and other `Deno.errors` when the server cannot be reached.
 * @throws {ChallengeError} when the peer does not send a whole challenge.
 */
export async function connect(options: ConnectOptions): Promise<Client> {
  const key = await secretKey(options.secret);
  const retries = options.retries ?? 0;
  for (let attempt = 1;; attempt++) {
    try {
      return await connectOnce(options.hostname ?? "127.0.0.1", options.port ?? 4444, key);
    } catch (error) {
      if (attempt > retries || !isRetryable(error)) throw error;
      // Exponential backoff with jitter, so clients cut off together do not return together.
      const ceiling = Math.min(
        MAX_RETRY_DELAY_MS,
        (options.retryDelayMs ?? 100) * 2 ** (attempt - 1),
      );
      const delayMs = Math.round(ceiling * (0.5 + Math.random() / 2));
      options.onRetry?.({ attempt, of: retries, delayMs, error });
      await new Promise((resolve) => setTimeout(resolve, delayMs));
    }
  }
}

async function connectOnce(hostname: string, port: number, key: CryptoKey): Promise<Client> {
  const conn = await Deno.connect({ hostname, port, transport: "tcp" });
  try {
    conn.setNoDelay(true);
    await answerChallenge(conn, key);
  } catch (error) {
    closeQuietly(conn);
    throw error;
  }
  return new Client(conn, formatAddr({ transport: "tcp", hostname, port }));
}

/** The server closed the connection while this client was still sending. */
export class ServerHungUpError extends Error {
  /** Builds the error for the server at `server` (`host:port`). */
  constructor(server: string, options?: ErrorOptions) {
    super(
      `${server} closed the connection before the input was all sent; replies may be missing`,
      options,
    );
    this.name = "ServerHungUpError";
  }
}

/**
 * Sends `input` to the server while passing every reply chunk to `onReply`, until the server
 * closes. When `input` ends, the client half-closes so the server flushes and closes. Closes
 * `client` before it returns.
 *
 * Sending and receiving run at once, so a large input cannot deadlock against its own echo.
 *
 * @throws {HandshakeRejectedError} when the server rejected the answer (docs/PROTOCOL.md §3).
 * @throws {ServerHungUpError} when the server closed early after replying to part of the input.
 */
export async function relay(
  client: Client,
  input: ReadableStream<Uint8Array>,
  onReply: (chunk: Uint8Array) => void | Promise<void>,
): Promise<void> {
  const reader = input.getReader();
  let sendError: unknown;
  let offered = 0;
  // Set before the half-close starts: a v1 server closes on its own before then only to reject.
  let halfClosing = false;
  const sending = (async () => {
    try {
      while (true) {
        const { done, value } = await reader.read();
        if (done) break;
        offered += value.length;
        await writeAll(client, value);
      }
      halfClosing = true;
      await client.closeWrite();
    } catch (error) {
      sendError = error;
    }
  })();
  let serverClosedFirst = false;
  let receivedAll = false;
  try {
    const buffer = new Uint8Array(READ_BUFFER_SIZE);
    while (true) {
      const n = await client.read(buffer);
      if (n === null) break;
      await onReply(buffer.subarray(0, n));
    }
    serverClosedFirst = !halfClosing;
    receivedAll = true;
  } finally {
    // After a failure, closing first ends a write that may be stuck; its error is moot then.
    if (!receivedAll) client.close();
    // Input still open (a terminal, say) has nowhere to go once the server has closed.
    await reader.cancel().catch(() => {});
    await sending;
    reader.releaseLock();
    client.close();
  }
  const nothingBack = client.bytesReceived === 0;
  if (nothingBack && (serverClosedFirst || offered > 0)) {
    throw new HandshakeRejectedError(client.server, { cause: sendError });
  }
  if (serverClosedFirst) throw new ServerHungUpError(client.server, { cause: sendError });
  // A write that failed because the server hung up after replying to everything is no error.
  if (sendError !== undefined && !isDisconnect(sendError)) throw sendError;
}

/**
 * Connects, sends `message`, half-closes, and returns the whole reply.
 *
 * @example
 * ```ts ignore
 * import { exchange } from "./client.ts";
 * const reply = await exchange({ secret, port: 4444, message: new TextEncoder().encode("hi") });
 * // new TextDecoder().decode(reply) === "HI"
 * ```
 * @throws {HandshakeRejectedError} when the server rejects the secret.
 */
export async function exchange(
  options: ConnectOptions & { message: Uint8Array },
): Promise<Uint8Array> {
  const client = await connect(options);
  const chunks: Uint8Array[] = [];
  await relay(client, ReadableStream.from([options.message]), (chunk) => {
    chunks.push(chunk.slice());
  });
  return concat(chunks);
}
