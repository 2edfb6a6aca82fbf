/**
 * The hmac-echo client: dials a server, answers its challenge, and exchanges service bytes.
 *
 * @module
 */

import {
  type ByteStream,
  closeQuietly,
  concat,
  formatAddr,
  isDisconnect,
  writeAll,
} from "./_io.ts";
import { ChallengeError, computeAnswer, computeLegacyAnswer, readChallenge } from "./handshake.ts";
import { type FrameMode, type HelloRejectionReason, sendHello } from "./handshake_v2.ts";
import { FramedConnection } from "./frames.ts";
import { type DigestName, isDigestName, type SecretKeys, secretKeys } from "./keys.ts";

/** Options for {@linkcode connect}. */
export interface ConnectOptions {
  /** The shared secret's bytes, or keys from `SecretKeys.import`. */
  secret: Uint8Array | SecretKeys;
  /**
   * The protocol version (docs/PROTOCOL.md §8). Default 2, which never falls back to 1: a
   * downgrade must be asked for.
   */
  protocol?: 1 | 2;
  /** v2: the HMAC digest the hello names. Default `sha256`. */
  digest?: DigestName;
  /** v2: plain service bytes, or frames with integrity or encryption (§11). Default `plain`. */
  mode?: FrameMode;
  /**
   * v1: answer with the tutorial's `sha1(secret + challenge)` instead of HMAC-SHA1 (§3.1), for a
   * server started with `--digest sha1-prefix`. Default false.
   */
  legacyDigest?: boolean;
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
 * The server rejected this client: in v2 with a stated reason (docs/PROTOCOL.md §10); in v1 by
 * closing the connection before replying to anything (§3).
 */
export class HandshakeRejectedError extends Error {
  /** The v2 reason, when the server gave one. */
  readonly reason?: HelloRejectionReason | `status ${number}`;

  /** Builds the error for the server at `server` (`host:port`). */
  constructor(
    server: string,
    options?: ErrorOptions & { reason?: HelloRejectionReason | `status ${number}` },
  ) {
    super(rejectionMessage(server, options?.reason), options);
    this.name = "HandshakeRejectedError";
    this.reason = options?.reason;
  }
}

function rejectionMessage(server: string, reason?: string): string {
  switch (reason) {
    case undefined: // v1: the server closed without a word, whatever its reason
      return `authentication rejected by ${server}: check the secret (with --protocol 1, a ` +
        "server that requires protocol 2 rejects the same way)";
    case "wrong-proof":
      return `authentication rejected by ${server}: check the secret`;
    case "unsupported-digest":
      return `${server} does not accept this digest (unsupported-digest): choose another with --digest`;
    case "mode-refused":
      return `${server} requires frames this client did not ask for (mode-refused): add --integrity or --encrypt`;
    default:
      return `${server} rejected the hello (${reason}): are the client and the server versions compatible?`;
  }
}

/**
 * The server said "accepted" but could not prove that it knows the secret (docs/PROTOCOL.md §10):
 * it is not the server it claims to be. Nothing was sent to it.
 */
export class ServerAuthenticationError extends Error {
  /** Builds the error for the server at `server`; `detail` says what was wrong with its proof. */
  constructor(server: string, detail: string) {
    super(
      `${server} could not prove it knows the secret (${detail}): it is an impostor, a relay that ` +
        "altered the handshake, or a server with another secret. Nothing was sent to it",
    );
    this.name = "ServerAuthenticationError";
  }
}

/**
 * The server closed the connection instead of answering a v2 hello: a v1-only server does that.
 * The client does not fall back to v1 on its own (docs/PROTOCOL.md §8).
 */
export class ProtocolMismatchError extends Error {
  /** Builds the error for the server at `server`. */
  constructor(server: string) {
    super(
      `${server} closed the connection without answering the protocol v2 hello: it may be an ` +
        "older, v1-only server. To use v1 anyway, which does not authenticate the server, ask " +
        "for it with --protocol 1",
    );
    this.name = "ProtocolMismatchError";
  }
}

const READ_BUFFER_SIZE = 16 * 1024;

/**
 * A connection that has answered the server's challenge. In v1, reads and writes turn the sign of
 * a rejection (the server hanging up before its first reply byte) into a
 * {@linkcode HandshakeRejectedError}; in v2 the handshake has settled that already.
 */
export class Client {
  /** The server, as `host:port`. */
  readonly server: string;
  /** The protocol version spoken. */
  readonly protocol: 1 | 2;
  #conn: Deno.TcpConn;
  /** The service stream: the connection itself, or the frame layer over it. */
  #stream: ByteStream;
  #framed?: FramedConnection;
  #sent = 0;
  #received = 0;

  /** Wraps a connection whose challenge was answered; most callers want {@linkcode connect}. */
  constructor(
    conn: Deno.TcpConn,
    server: string,
    options: { protocol?: 1 | 2; framed?: FramedConnection } = {},
  ) {
    this.#conn = conn;
    this.server = server;
    this.protocol = options.protocol ?? 1;
    this.#framed = options.framed;
    this.#stream = options.framed ?? conn;
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
      n = await this.#stream.read(buffer);
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
      const n = await this.#stream.write(data);
      this.#sent += n;
      return n;
    } catch (error) {
      if (isDisconnect(error) && this.protocol === 1 && this.#received === 0) {
        throw new HandshakeRejectedError(this.server, { cause: error });
      }
      throw error;
    }
  }

  /** Tells the server this side has nothing more to send; it then flushes and closes. */
  async closeWrite(): Promise<void> {
    await this.#framed?.closeWrite(); // the end frame, which a FIN alone cannot prove
    await this.#conn.closeWrite();
  }

  /** Closes the connection. Safe to call more than once. */
  close(): void {
    closeQuietly(this.#conn);
  }

  /** Sent something, heard nothing: the only v1 sign of a rejection. */
  #nothingReceivedYet(): boolean {
    return this.protocol === 1 && this.#sent > 0 && this.#received === 0;
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
  const handshake = handshakeChoice(options);
  const keys = await secretKeys(options.secret, { legacy: handshake.legacyDigest });
  const retries = options.retries ?? 0;
  for (let attempt = 1;; attempt++) {
    try {
      return await connectOnce(
        options.hostname ?? "127.0.0.1",
        options.port ?? 4444,
        keys,
        handshake,
      );
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

type HandshakeChoice = Required<
  Pick<ConnectOptions, "protocol" | "digest" | "mode" | "legacyDigest">
>;

/** The options' handshake, with defaults, checked for combinations that cannot work. */
function handshakeChoice(options: ConnectOptions): HandshakeChoice {
  const choice: HandshakeChoice = {
    protocol: options.protocol ?? 2,
    digest: options.digest ?? "sha256",
    mode: options.mode ?? "plain",
    legacyDigest: options.legacyDigest ?? false,
  };
  if (choice.protocol !== 1 && choice.protocol !== 2) {
    throw new RangeError(`protocol must be 1 or 2, got ${choice.protocol}`);
  }
  if (!isDigestName(choice.digest)) {
    throw new RangeError(
      `unknown digest "${choice.digest}": use sha1, sha256, sha384 or sha512`,
    );
  }
  if (!["plain", "integrity", "encrypt"].includes(choice.mode)) {
    throw new RangeError(`mode must be plain, integrity or encrypt, got "${choice.mode}"`);
  }
  if (choice.protocol === 1 && choice.mode !== "plain") {
    throw new RangeError(`protocol 1 has no frames: ${choice.mode} needs protocol 2`);
  }
  if (choice.protocol === 1 && options.digest !== undefined) {
    throw new RangeError("protocol 1 always uses HMAC-SHA1 (or the legacy digest): drop digest");
  }
  if (choice.protocol === 2 && choice.legacyDigest) {
    throw new RangeError("the legacy sha1-prefix digest is a protocol 1 answer: use protocol 1");
  }
  return choice;
}

async function connectOnce(
  hostname: string,
  port: number,
  keys: SecretKeys,
  handshake: HandshakeChoice,
): Promise<Client> {
  const server = formatAddr({ transport: "tcp", hostname, port });
  const conn = await Deno.connect({ hostname, port, transport: "tcp" });
  try {
    conn.setNoDelay(true);
    const challenge = await readChallenge(conn);
    if (handshake.protocol === 1) {
      const answer = handshake.legacyDigest
        ? await computeLegacyAnswer(keys, challenge)
        : await computeAnswer(keys.hmac("sha1"), challenge);
      await writeAll(conn, answer);
      return new Client(conn, server, { protocol: 1 });
    }
    const result = await sendHello(conn, keys, challenge, handshake);
    switch (result.outcome) {
      case "accepted": {
        const { frameKeys } = result.session;
        const framed = frameKeys ? new FramedConnection(conn, frameKeys) : undefined;
        return new Client(conn, server, { protocol: 2, framed });
      }
      case "rejected":
        throw new HandshakeRejectedError(server, {
          reason: result.reason ?? `status ${result.status}`,
        });
      case "no-answer":
        throw new ProtocolMismatchError(server);
      case "bad-server-proof":
        throw new ServerAuthenticationError(server, result.detail);
    }
  } catch (error) {
    closeQuietly(conn);
    throw error;
  }
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
  // In v1 a rejection shows only here; a v2 client learned the outcome in the handshake.
  const nothingBack = client.protocol === 1 && client.bytesReceived === 0;
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
