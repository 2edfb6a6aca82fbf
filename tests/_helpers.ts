/** Shared test helpers: a logger tests can wait on, raw protocol clients, process helpers. */

import { type ByteStream, closeQuietly, concat, readFull, writeAll } from "../_io.ts";
import { CHALLENGE_LENGTH } from "../protocol/challenge.ts";
import { SecretKeys } from "../protocol/keys.ts";
import { computeAnswer } from "../protocol/v1.ts";
import type { LogFields, Logger, LogLevel } from "../log.ts";
import type { ServeOptions } from "../server/config.ts";
import { type RunningServer, serve } from "../server/server.ts";

export const encoder = new TextEncoder();
export const decoder = new TextDecoder();
export const SECRET = encoder.encode("test secret: correct horse battery staple");

/** Longest a test waits for an event before it fails with a message saying which. */
const EVENT_TIMEOUT_MS = 20_000;

export interface LogEntry {
  level: LogLevel;
  event: string;
  fields: LogFields;
}

/** A logger that keeps every event and lets a test wait for one, instead of sleeping. */
export class RecordingLogger implements Logger {
  readonly entries: LogEntry[] = [];
  #waiters: { match: (entry: LogEntry) => boolean; resolve: (entry: LogEntry) => void }[] = [];

  log(level: LogLevel, event: string, fields: LogFields = {}): void {
    const entry = { level, event, fields };
    this.entries.push(entry);
    this.#waiters = this.#waiters.filter((waiter) => {
      if (!waiter.match(entry)) return true;
      waiter.resolve(entry);
      return false;
    });
  }

  /** Events named `event` whose fields include `fields`. */
  find(event: string, fields: LogFields = {}): LogEntry[] {
    return this.entries.filter((entry) => matches(entry, event, fields));
  }

  /** Resolves with the first event named `event` whose fields include `fields`, past or future. */
  waitFor(event: string, fields: LogFields = {}): Promise<LogEntry> {
    const seen = this.find(event, fields)[0];
    if (seen) return Promise.resolve(seen);
    return withTimeout(
      new Promise((resolve) => {
        this.#waiters.push({ match: (entry) => matches(entry, event, fields), resolve });
      }),
      `log event "${event}" ${JSON.stringify(fields)}`,
    );
  }

  /** Resolves once `count` events named one of `events` have been logged, past ones included. */
  waitForCount(events: string[], count: number): Promise<void> {
    const counted = (entry: LogEntry) => events.includes(entry.event);
    let seen = this.entries.filter(counted).length;
    if (seen >= count) return Promise.resolve();
    return withTimeout(
      new Promise<void>((resolve) => {
        this.#waiters.push({
          match: (entry) => counted(entry) && ++seen >= count,
          resolve: () => resolve(),
        });
      }),
      `${count} log events ${events.join("/")} (saw ${seen})`,
    );
  }
}

function matches(entry: LogEntry, event: string, fields: LogFields): boolean {
  return entry.event === event &&
    Object.entries(fields).every(([key, value]) => entry.fields[key] === value);
}

/** Bounds a wait so a broken server fails the test with a message instead of hanging it. */
export async function withTimeout<T>(promise: Promise<T>, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`Timed out after ${EVENT_TIMEOUT_MS} ms waiting for ${what}`)),
      EVENT_TIMEOUT_MS,
    );
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** A server from {@linkcode startServer}; `await using` closes it. */
export interface StartedServer extends AsyncDisposable {
  server: RunningServer;
  logger: RecordingLogger;
  port: number;
}

/** Starts a server on 127.0.0.1, port 0, with a recording logger. */
export async function startServer(options: Partial<ServeOptions> = {}): Promise<StartedServer> {
  const logger = new RecordingLogger();
  const server = await serve({
    secret: SECRET,
    hostname: "127.0.0.1",
    port: 0,
    logger,
    ...options,
  });
  return {
    server,
    logger,
    port: server.addr.port,
    [Symbol.asyncDispose]: () => server.close(),
  };
}

/** A pool of `workers` server threads (no logger: it cannot cross threads); `await using` closes it. */
export async function startWorkers(
  workers: number,
  options: Partial<ServeOptions> = {},
): Promise<AsyncDisposable & { server: RunningServer; port: number }> {
  const server = await serve({
    secret: SECRET,
    hostname: "127.0.0.1",
    port: 0,
    workers,
    ...options,
  });
  return { server, port: server.addr.port, [Symbol.asyncDispose]: () => server.close() };
}

/** A connection that has read its challenge and speaks the protocol by hand. */
export interface RawClient {
  conn: Deno.TcpConn;
  challenge: Uint8Array;
  /** `127.0.0.1:port` as the server logs this client. */
  remote: string;
}

/** Connects and reads the 32-byte challenge, nothing more. */
export async function openRaw(port: number): Promise<RawClient> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const challenge = new Uint8Array(CHALLENGE_LENGTH);
  const n = await readFull(conn, challenge);
  if (n !== CHALLENGE_LENGTH) {
    conn.close();
    throw new Error(`expected a ${CHALLENGE_LENGTH}-byte challenge, got ${n} bytes`);
  }
  return { conn, challenge, remote: `127.0.0.1:${conn.localAddr.port}` };
}

/**
 * Connects, reads the challenge, sends what `answer` makes of it, and half-closes, so that a
 * server that wrongly accepted ends the session instead of waiting. Returns all the server sent
 * after the challenge, and this client's address, to find its log lines by.
 */
export async function answerRaw(
  port: number,
  answer: (challenge: Uint8Array) => Uint8Array | Promise<Uint8Array>,
): Promise<{ reply: Uint8Array; remote: string }> {
  const raw = await openRaw(port);
  try {
    await writeAll(raw.conn, await answer(raw.challenge));
    await raw.conn.closeWrite();
    return { reply: await readToEnd(raw.conn), remote: raw.remote };
  } finally {
    raw.conn.close();
  }
}

/** Connects and answers correctly with `secret`. */
export async function openAuthenticated(port: number, secret = SECRET): Promise<RawClient> {
  const raw = await openRaw(port);
  const answer = computeAnswer(await SecretKeys.import(secret), raw.challenge);
  await writeAll(raw.conn, answer);
  return raw;
}

/** Reads until the peer closes; a reset counts as the end. */
export async function readToEnd(conn: Pick<ByteStream, "read">): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  const buffer = new Uint8Array(64 * 1024);
  try {
    while (true) {
      const n = await conn.read(buffer);
      if (n === null) break;
      chunks.push(buffer.slice(0, n));
    }
  } catch (error) {
    if (!(error instanceof Deno.errors.ConnectionReset)) throw error;
  }
  return concat(chunks);
}

/** Reads until exactly `length` bytes have arrived. */
export async function readExactly(
  conn: Pick<ByteStream, "read">,
  length: number,
): Promise<Uint8Array> {
  const buffer = new Uint8Array(length);
  const n = await readFull(conn, buffer);
  if (n !== length) throw new Error(`expected ${length} bytes, the connection ended after ${n}`);
  return buffer;
}

export { concat };

/** The upper-cased UTF-8 of `text`: what the service must send back (docs/PROTOCOL.md §4). */
export function upper(text: string): Uint8Array {
  return encoder.encode(text.toUpperCase());
}

/**
 * One short session from a chosen loopback source address (Deno.connect cannot bind one;
 * node:net can): reads the challenge, sends `answer(challenge)` and half-closes if an answer is
 * given, and resolves with every byte the server sent once it closes. A refused connection
 * resolves with no bytes.
 */
export async function sessionFrom(
  localAddress: string,
  port: number,
  answer?: (challenge: Uint8Array) => Promise<Uint8Array>,
): Promise<Uint8Array> {
  const { default: net } = await import("node:net");
  const socket = net.connect({ host: "127.0.0.1", port, localAddress });
  const chunks: Uint8Array[] = [];
  let received = 0;
  let answered = false;
  return await new Promise((resolve, reject) => {
    socket.on("data", async (chunk: Uint8Array) => {
      chunks.push(new Uint8Array(chunk));
      received += chunk.length;
      if (answer && !answered && received >= CHALLENGE_LENGTH) {
        answered = true;
        // Answer, then half-close: an accepted session then ends as soon as it is served.
        socket.end(await answer(concat(chunks).subarray(0, CHALLENGE_LENGTH)));
      }
    });
    socket.on("error", (error: NodeJS.ErrnoException) => {
      // A reset is how some closes arrive; anything else is a real failure.
      if (error.code !== "ECONNRESET") reject(error);
    });
    socket.on("close", () => resolve(concat(chunks)));
  });
}

/** An answer computed with `secret`: for `sessionFrom`. */
export function answerWith(secret: Uint8Array) {
  return async (challenge: Uint8Array) => computeAnswer(await SecretKeys.import(secret), challenge);
}

/** A connection from {@linkcode holdFrom}: admitted (it got its challenge) or refused. */
export interface HeldConnection {
  /** Whether the server sent the 32-byte challenge; false when it closed without it. */
  admitted: boolean;
  /** Closes the connection and resolves once it is closed. */
  close(): Promise<void>;
}

/**
 * Connects from a chosen loopback source address and resolves as soon as the server decided:
 * with the whole challenge (admitted, and the connection stays open) or with a close (refused).
 */
export async function holdFrom(localAddress: string, port: number): Promise<HeldConnection> {
  const { default: net } = await import("node:net");
  const socket = net.connect({ host: "127.0.0.1", port, localAddress });
  const closed = new Promise<void>((resolve) => socket.on("close", () => resolve()));
  let received = 0;
  const admitted = await new Promise<boolean>((resolve, reject) => {
    socket.on("data", (chunk: Uint8Array) => {
      received += chunk.length;
      if (received >= CHALLENGE_LENGTH) resolve(true);
    });
    socket.on("error", (error: NodeJS.ErrnoException) => {
      if (error.code !== "ECONNRESET") reject(error);
    });
    closed.then(() => resolve(false));
  });
  return {
    admitted,
    close: () => {
      socket.destroy();
      return closed;
    },
  };
}

/** Both ends of one TCP connection on 127.0.0.1 (port 0); `using` closes both. */
export async function tcpPair(): Promise<
  { client: Deno.TcpConn; server: Deno.TcpConn } & Disposable
> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    const [server, client] = await Promise.all([
      listener.accept(),
      Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port }),
    ]);
    return {
      client,
      server,
      [Symbol.dispose]() {
        closeQuietly(client);
        closeQuietly(server);
      },
    };
  } finally {
    listener.close();
  }
}

/**
 * A stream that notes the buffer size of every read asked of it, and how many bytes had been read
 * before it: what a test needs to see which buffer a read that waits for the peer pins.
 */
export class ReadRecorder implements ByteStream {
  /** Each read asked for: the bytes read before it, and its buffer's size. */
  readonly reads: { after: number; size: number }[] = [];
  #bytesRead = 0;
  #waiters: { after: number; resolve: (size: number) => void }[] = [];

  constructor(readonly inner: ByteStream) {}

  read(buffer: Uint8Array): Promise<number | null> {
    const after = this.#bytesRead;
    this.reads.push({ after, size: buffer.length });
    this.#waiters = this.#waiters.filter((waiter) => {
      if (waiter.after !== after) return true;
      waiter.resolve(buffer.length);
      return false;
    });
    return this.inner.read(buffer).then((n) => {
      if (n !== null) this.#bytesRead += n;
      return n;
    });
  }

  write(data: Uint8Array): Promise<number> {
    return this.inner.write(data);
  }

  /** Resolves with the buffer size of the first read asked for once `bytes` had been read. */
  readAfter(bytes: number): Promise<number> {
    const seen = this.reads.find((read) => read.after === bytes);
    if (seen) return Promise.resolve(seen.size);
    return withTimeout(
      new Promise((resolve) => this.#waiters.push({ after: bytes, resolve })),
      `a read after ${bytes} bytes`,
    );
  }
}

/** A v2 hello taken apart by docs/PROTOCOL.md §9 and §12 alone, as a fake server or an eavesdropper does. */
export interface ParsedHello {
  /** The whole hello: head, then proof. */
  bytes: Uint8Array;
  /** The name between the braces of the tag. */
  digest: string;
  /** The version byte: 2, or 3 with a key share. */
  version: number;
  /** The mode byte: 0 plain, 1 integrity, 2 encrypt. */
  mode: number;
  /** Every byte before the proof. */
  head: Uint8Array;
  /** Cc. */
  clientChallenge: Uint8Array;
  /** Pc with version 03; empty with 02. */
  keyShare: Uint8Array;
  /** client_proof. */
  proof: Uint8Array;
}

/** client_proof's length by digest name (docs/PROTOCOL.md §9). */
const PROOF_LENGTHS: Readonly<Record<string, number>> = {
  sha1: 20,
  sha256: 32,
  sha384: 48,
  sha512: 64,
};

/**
 * How long the hello that begins with `first` (at least its tag, version and mode) is, by §9 and
 * §12: the tag, version, mode, Cc (32), Pc (32, version 03 only) and the digest's proof. Throws
 * for a hello no honest client sends, so that a fake server fails instead of waiting for bytes
 * that never come.
 */
export function helloLength(first: Uint8Array): number {
  const close = first.subarray(0, 16).indexOf(0x7d); // "}"
  if (first[0] !== 0x7b || close < 0) throw new Error("not a hello: no {digest} tag");
  const digest = decoder.decode(first.subarray(1, close));
  const version = first[close + 1];
  const proof = PROOF_LENGTHS[digest];
  if (proof === undefined) throw new Error(`a hello naming an unknown digest "${digest}"`);
  if (version !== 2 && version !== 3) throw new Error(`a hello of version ${version}`);
  return close + 1 + 2 + CHALLENGE_LENGTH + (version === 3 ? 32 : 0) + proof;
}

/** The hello at the start of `bytes` (a recording, say), taken apart; `bytes` may go on past it. */
export function parseHello(bytes: Uint8Array): ParsedHello {
  const length = helloLength(bytes);
  if (bytes.length < length) throw new Error(`${bytes.length} bytes of a ${length}-byte hello`);
  const hello = bytes.subarray(0, length);
  const tag = hello.indexOf(0x7d) + 1;
  const version = hello[tag];
  const headLength = tag + 2 + CHALLENGE_LENGTH + (version === 3 ? 32 : 0);
  return {
    bytes: hello,
    digest: decoder.decode(hello.subarray(1, tag - 1)),
    version,
    mode: hello[tag + 1],
    head: hello.subarray(0, headLength),
    clientChallenge: hello.subarray(tag + 2, tag + 2 + CHALLENGE_LENGTH),
    keyShare: hello.subarray(tag + 2 + CHALLENGE_LENGTH, headLength),
    proof: hello.subarray(headLength),
  };
}

/**
 * Reads exactly one hello from `conn`, sized by its own first bytes (§9, §12): never more, and it
 * throws if the connection ends first. Every hello is at least 60 bytes, so 40 may be read blind.
 */
export async function readHello(conn: Pick<ByteStream, "read">): Promise<ParsedHello> {
  const first = await readExactly(conn, 40);
  const rest = await readExactly(conn, helloLength(first) - first.length);
  return parseHello(concat([first, rest]));
}
