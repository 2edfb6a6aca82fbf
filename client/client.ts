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
} from "../_io.ts";
import { HmacEchoError } from "../errors.ts";
import { ChallengeError, readChallenge } from "../protocol/challenge.ts";
import { computeAnswer, computeSha1PrefixAnswer } from "../protocol/v1.ts";
import { type HelloRejectionReason, sendHello } from "../protocol/v2.ts";
import { FramedConnection, type FrameMode } from "../protocol/frames.ts";
import { type DigestName, isDigestName, type SecretKeys, secretKeys } from "../protocol/keys.ts";

/** Options for {@linkcode connect}. */
export interface ConnectOptions {
  /** The shared secret's bytes, or keys from `SecretKeys.import`. */
  secret: Uint8Array | SecretKeys;
  /**
   * The protocol version (docs/PROTOCOL.md §8). Default 2, which never falls back to 1: a
   * downgrade must be asked for.
   */
  protocol?: 1 | 2;
  /**
   * v2: the HMAC digest the hello names. Default `sha256`. v1: `sha1-prefix` answers with the
   * tutorial's `sha1(secret + challenge)` instead of HMAC-SHA1 (§3.1), for a server that accepts
   * it; v1's default is HMAC-SHA1.
   */
  digest?: DigestName | "sha1-prefix";
  /**
   * v2: plain service bytes, or frames with integrity or encryption (§11). Default `encrypt`: the
   * safe default; `plain` is for servers that only echo, `integrity` for traffic that may be read.
   */
  mode?: FrameMode;
  /**
   * v2 framed modes: an ephemeral X25519 key exchange (hello version 03, §12), so a recorded
   * session stays secret even if the secret leaks later. Default true; plain mode has none. False
   * speaks hello version 02, for servers older than the exchange: never chosen on its own.
   */
  forwardSecrecy?: boolean;
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
  /**
   * The longest one attempt may take, from dialling to a settled handshake; a slower one is
   * abandoned as `Deno.errors.TimedOut`, which `retries` may retry. Default: no limit.
   */
  timeoutMs?: number;
  /** Aborts the dial, the handshake and any retry wait: `connect` rejects with the reason. */
  signal?: AbortSignal;
  /** TCP keepalive probes on the connection, so a dead peer is noticed. Default true. */
  keepAlive?: boolean;
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

/** What a rejection said: a v2 status byte's reason, or `rejected` for v1's silent close. */
export type RejectionReason = HelloRejectionReason | `status ${number}` | "rejected";

/**
 * The server rejected this client: in v2 with a stated reason (docs/PROTOCOL.md §10); in v1 by
 * closing the connection before replying to anything (§3), reason `rejected`.
 */
export class HandshakeRejectedError extends HmacEchoError {
  /** The v2 reason, or `rejected` when a v1 server closed without one. */
  declare readonly reason: RejectionReason;

  /** Builds the error for the server at `server` (`host:port`). */
  constructor(server: string, options?: ErrorOptions & { reason?: RejectionReason }) {
    const reason = options?.reason ?? "rejected";
    super(reason, rejectionMessage(server, reason), options);
  }
}

/**
 * What the server answered, said as its answer: a status byte is not authenticated (anyone on the
 * path can send one), so no message offers a weaker protocol, digest or mode as the remedy.
 */
function rejectionMessage(server: string, reason: RejectionReason): string {
  const unauthenticated = `(${reason}, an unauthenticated answer)`;
  switch (reason) {
    case "rejected": // v1: the server closed without a word, whatever its reason
      return `Authentication rejected by ${server} (an unauthenticated close): check the ` +
        "secret (a server that requires protocol 2 rejects a protocol 1 answer the same way, and " +
        "one throttling this address after failed handshakes closes without checking)";
    case "wrong-proof":
      return `Authentication rejected by ${server} ${unauthenticated}: check the secret`;
    case "unsupported-digest":
      return `${server} does not accept this digest ${unauthenticated}`;
    case "mode-refused":
      return `${server} refuses the frame mode this client asked for ${unauthenticated}`;
    case "forward-secrecy-required":
      return `${server} requires forward secrecy ${unauthenticated}`;
    case "unsupported-version":
      return `${server} does not know this hello version ${unauthenticated}`;
    default:
      return `${server} rejected the hello ${unauthenticated}`;
  }
}

/**
 * The server said "accepted" but could not prove that it knows the secret (docs/PROTOCOL.md §10):
 * it is not the server it claims to be. Nothing was sent to it. Reason `bad-server-proof`.
 */
export class ServerAuthenticationError extends HmacEchoError {
  /** Builds the error for the server at `server`; `detail` says what was wrong with its proof. */
  constructor(server: string, detail: string) {
    super(
      "bad-server-proof",
      `${server} could not prove it knows the secret (${detail}): it is an impostor, a relay that ` +
        "altered the handshake, or a server with another secret. Nothing was sent to it",
    );
  }
}

/**
 * The server closed the connection instead of answering a v2 hello: a v1-only server does that,
 * and so does one throttling this address. The client never falls back to v1 on its own
 * (docs/PROTOCOL.md §8): a close proves nothing about the server. Reason `no-hello-answer`.
 */
export class ProtocolMismatchError extends HmacEchoError {
  /** Builds the error for the server at `server`. */
  constructor(server: string) {
    super(
      "no-hello-answer",
      `${server} closed the connection without answering the protocol v2 hello (an ` +
        "unauthenticated close): it is throttling this address after failed handshakes, or it " +
        "does not speak protocol 2; see its log",
    );
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
  /** Whether the session keys came from an ephemeral key exchange (docs/PROTOCOL.md §12). */
  readonly forwardSecret: boolean;
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
    options: { protocol?: 1 | 2; framed?: FramedConnection; forwardSecret?: boolean } = {},
  ) {
    this.#conn = conn;
    this.server = server;
    this.protocol = options.protocol ?? 1;
    this.forwardSecret = options.forwardSecret ?? false;
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
 * ```ts
 * import { connect } from "./client.ts";
 * import { serve } from "../server/server.ts";
 * const secret = new TextEncoder().encode("a shared secret");
 * await using server = await serve({ secret, port: 0 });
 * const client = await connect({ secret, port: server.addr.port, mode: "encrypt" });
 * try {
 *   await client.write(new TextEncoder().encode("hello"));
 *   await client.closeWrite();
 *   const reply = new Uint8Array(5);
 *   await client.read(reply);
 * } finally {
 *   client.close();
 * }
 * ```
 * @throws {Deno.errors.ConnectionRefused} and other `Deno.errors` when the server cannot be reached.
 * @throws {ChallengeError} when the peer does not send a whole challenge.
 */
export async function connect(options: ConnectOptions): Promise<Client> {
  const handshake = handshakeChoice(options);
  const keys = await secretKeys(options.secret, {
    sha1Prefix: handshake.digest === "sha1-prefix",
  });
  const retries = options.retries ?? 0;
  const { signal } = options;
  for (let attempt = 1;; attempt++) {
    signal?.throwIfAborted();
    try {
      return await connectOnce(
        options.hostname ?? "127.0.0.1",
        options.port ?? 4444,
        keys,
        handshake,
        options,
      );
    } catch (error) {
      if (signal?.aborted) throw signal.reason;
      if (attempt > retries || !isRetryable(error)) throw error;
      // Exponential backoff with jitter, so clients cut off together do not return together.
      const ceiling = Math.min(
        MAX_RETRY_DELAY_MS,
        (options.retryDelayMs ?? 100) * 2 ** (attempt - 1),
      );
      const delayMs = Math.round(ceiling * (0.5 + Math.random() / 2));
      options.onRetry?.({ attempt, of: retries, delayMs, error });
      await pause(delayMs, signal);
    }
  }
}

/** The handshake `connect` speaks: v1 with its answer, or v2 with a digest and a mode. */
type HandshakeChoice =
  | { protocol: 1; digest: "hmac-sha1" | "sha1-prefix" }
  | { protocol: 2; digest: DigestName; mode: FrameMode; forwardSecrecy: boolean };

/** The options' handshake, with defaults, checked for combinations that cannot work. */
function handshakeChoice(options: ConnectOptions): HandshakeChoice {
  const { protocol = 2, digest, mode, forwardSecrecy } = options;
  if (protocol !== 1 && protocol !== 2) {
    throw new RangeError(`protocol must be 1 or 2, got ${protocol}`);
  }
  if (mode !== undefined && !["plain", "integrity", "encrypt"].includes(mode)) {
    throw new RangeError(`mode must be plain, integrity or encrypt, got "${mode}"`);
  }
  if (protocol === 1) {
    if (mode !== undefined && mode !== "plain") {
      throw new RangeError(`protocol 1 has no frames: ${mode} needs protocol 2`);
    }
    if (digest !== undefined && digest !== "sha1-prefix") {
      throw new RangeError(
        "protocol 1 always uses HMAC-SHA1 (or the sha1-prefix answer): drop digest",
      );
    }
    if (forwardSecrecy) throw new RangeError("protocol 1 has no key exchange: drop forwardSecrecy");
    return { protocol, digest: digest ?? "hmac-sha1" };
  }
  if (digest === "sha1-prefix") {
    throw new RangeError("the sha1-prefix digest is a protocol 1 answer: use protocol 1");
  }
  if (digest !== undefined && !isDigestName(digest)) {
    throw new RangeError(`unknown digest "${digest}": use sha1, sha256, sha384 or sha512`);
  }
  const chosenMode = mode ?? "encrypt";
  if (chosenMode === "plain" && forwardSecrecy) {
    throw new RangeError(
      "plain mode has no key exchange (it protects nothing after the handshake)",
    );
  }
  return {
    protocol,
    digest: digest ?? "sha256",
    mode: chosenMode,
    forwardSecrecy: chosenMode !== "plain" && (forwardSecrecy ?? true),
  };
}

/** Resolves after `ms`, or at once when `signal` aborts, leaving no timer behind. */
function pause(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
  });
}

async function connectOnce(
  hostname: string,
  port: number,
  keys: SecretKeys,
  handshake: HandshakeChoice,
  options: Pick<ConnectOptions, "timeoutMs" | "signal" | "keepAlive">,
): Promise<Client> {
  const server = formatAddr({ transport: "tcp", hostname, port });
  // One signal for the caller's abort and this attempt's deadline: it cancels the dial, and
  // closes the connection under a handshake that is still waiting for the server.
  const deadline = new AbortController();
  const timer = options.timeoutMs === undefined
    ? undefined
    : setTimeout(() => deadline.abort(), options.timeoutMs);
  const signal = options.signal
    ? AbortSignal.any([options.signal, deadline.signal])
    : deadline.signal;
  const timedOut = () =>
    new Deno.errors.TimedOut(
      `${server} did not complete the handshake within ${options.timeoutMs} ms`,
    );
  let conn: Deno.TcpConn;
  try {
    conn = await Deno.connect({ hostname, port, transport: "tcp", signal });
  } catch (error) {
    clearTimeout(timer);
    throw deadline.signal.aborted ? timedOut() : error;
  }
  const abandon = () => closeQuietly(conn);
  signal.addEventListener("abort", abandon, { once: true });
  try {
    conn.setNoDelay(true);
    conn.setKeepAlive(options.keepAlive ?? true);
    const challenge = await readChallenge(conn);
    if (handshake.protocol === 1) {
      const answer = handshake.digest === "sha1-prefix"
        ? computeSha1PrefixAnswer(keys, challenge)
        : computeAnswer(keys, challenge);
      await writeAll(conn, answer);
      return new Client(conn, server, { protocol: 1 });
    }
    const result = await sendHello(conn, keys, challenge, handshake);
    switch (result.outcome) {
      case "accepted": {
        const { frameKeys, forwardSecret } = result.session;
        const framed = frameKeys ? new FramedConnection(conn, frameKeys) : undefined;
        return new Client(conn, server, { protocol: 2, framed, forwardSecret });
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
    throw deadline.signal.aborted ? timedOut() : error;
  } finally {
    clearTimeout(timer);
    signal.removeEventListener("abort", abandon);
  }
}

/** The server closed the connection while this client was still sending. Reason `hung-up`. */
export class ServerHungUpError extends HmacEchoError {
  /** Builds the error for the server at `server` (`host:port`). */
  constructor(server: string, options?: ErrorOptions) {
    super(
      "hung-up",
      `${server} closed the connection before the input was all sent; replies may be missing`,
      options,
    );
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
 * ```ts
 * import assert from "node:assert/strict";
 * import { exchange } from "./client.ts";
 * import { serve } from "../server/server.ts";
 * const secret = new TextEncoder().encode("a shared secret");
 * await using server = await serve({ secret, port: 0 });
 * const reply = await exchange({ secret, port: server.addr.port, message: new TextEncoder().encode("hi") });
 * assert.ok(new TextDecoder().decode(reply) === "HI");
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
