/**
 * The chaos suite's clients: honest ones that verify every byte, and the hostile ones of issue 4
 * and issue 15. Each keeps a tally of what it saw, so the suite can check the server's counters
 * against it.
 */

import net from "node:net";
import { type ByteStream, concat, writeAll } from "../_io.ts";
import { ChallengeError, createChallenge, readChallenge } from "../protocol/challenge.ts";
import { computeAnswer } from "../protocol/v1.ts";
import { computeProof, encodeHelloHead, sendHello } from "../protocol/v2.ts";
import { FramedConnection, type FrameMode } from "../protocol/frames.ts";
import { exchange } from "../client/client.ts";
import { SecretKeys } from "../protocol/keys.ts";

/** What one kind of client did, as the client saw it. */
export interface Tally {
  name: string;
  /** TCP connections made. */
  connections: number;
  /** Connections that got a challenge and then passed the handshake. */
  authenticated: number;
  /** Connections that got a challenge and were then closed without passing. */
  rejected: number;
  /** Connections closed by the server before any challenge: refused (cap, throttle). */
  refused: number;
  /** For honest clients: sessions whose echo was wrong or that failed. Must stay 0. */
  failures: number;
  /** Authenticated v2 connections the server closed for a bad frame. */
  frameErrors: number;
  notes: string[];
}

export function newTally(name: string): Tally {
  return {
    name,
    connections: 0,
    authenticated: 0,
    rejected: 0,
    refused: 0,
    failures: 0,
    frameErrors: 0,
    notes: [],
  };
}

/** Shared by every client: the target, the key, the stop signal. */
export interface Target {
  port: number;
  key: SecretKeys;
  secret: Uint8Array;
  /** Aborted when the attack phase ends; loops stop starting new connections. */
  stop: AbortSignal;
}

const encoder = new TextEncoder();

/**
 * A raw connection from a chosen source address, event-driven underneath, awaitable on top.
 * Deno.connect cannot bind a source address; node:net can, and the throttle counts addresses.
 */
class RawSocket {
  #socket: net.Socket;
  #buffered: Uint8Array[] = [];
  #bufferedLength = 0;
  #ended = false;
  #wake?: () => void;
  readonly closed: Promise<void>;
  received = 0;

  constructor(port: number, localAddress: string) {
    this.#socket = net.connect({ host: "127.0.0.1", port, localAddress });
    this.#socket.on("data", (chunk: Uint8Array) => {
      this.#buffered.push(new Uint8Array(chunk));
      this.#bufferedLength += chunk.length;
      this.received += chunk.length;
      this.#wake?.();
    });
    this.#socket.on("error", () => {}); // resets are expected; "close" follows
    this.closed = new Promise((resolve) => {
      this.#socket.on("close", () => {
        this.#ended = true;
        this.#wake?.();
        resolve();
      });
    });
  }

  /** Resolves with `count` bytes, or null if the connection ends first. */
  async readExactly(count: number): Promise<Uint8Array | null> {
    while (this.#bufferedLength < count && !this.#ended) {
      await new Promise<void>((resolve) => this.#wake = resolve);
      this.#wake = undefined;
    }
    if (this.#bufferedLength < count) return null;
    const all = concat(this.#buffered);
    this.#buffered = [all.subarray(count)];
    this.#bufferedLength -= count;
    return all.subarray(0, count);
  }

  /** Writes, resolving when the data is handed to the kernel (backpressure respected). */
  write(data: Uint8Array): Promise<void> {
    if (this.#ended) return Promise.resolve();
    return new Promise((resolve) => {
      if (this.#socket.write(data)) resolve();
      else {
        const done = () => {
          this.#socket.off("drain", done);
          this.#socket.off("close", done);
          resolve();
        };
        this.#socket.on("drain", done);
        this.#socket.on("close", done);
      }
    });
  }

  /** A ByteStream over this socket, for the protocol code: reads what has arrived. */
  stream(): ByteStream {
    return {
      read: async (buffer) => {
        while (this.#bufferedLength === 0 && !this.#ended) {
          await new Promise<void>((resolve) => this.#wake = resolve);
          this.#wake = undefined;
        }
        if (this.#bufferedLength === 0) return null;
        const bytes = await this.readExactly(Math.min(buffer.length, this.#bufferedLength));
        buffer.set(bytes!);
        return bytes!.length;
      },
      write: async (data) => (await this.write(data), data.length),
    };
  }

  get ended(): boolean {
    return this.#ended;
  }

  /** Stops reading: the kernel buffers fill and the peer's writes block. */
  pause(): void {
    this.#socket.pause();
  }

  end(): void {
    this.#socket.end();
  }

  reset(): void {
    this.#socket.resetAndDestroy();
  }

  destroy(): void {
    this.#socket.destroy();
  }
}

/** Opens a connection and reads the challenge; records a refusal when none comes. */
async function openChallenged(
  target: Target,
  from: string,
  tally: Tally,
): Promise<{ socket: RawSocket; challenge: Uint8Array } | null> {
  const socket = new RawSocket(target.port, from);
  tally.connections++;
  const challenge = await socket.readExactly(32);
  if (challenge === null) {
    tally.refused++;
    await socket.closed;
    return null;
  }
  return { socket, challenge };
}

/**
 * Waits for the server to close a connection it has rejected, and counts it. A rejection is the
 * challenge and nothing more (v1), or one non-zero status byte after it, for an answer that began
 * like a v2 hello (docs/PROTOCOL.md §10); "accepted" would be status 0 and a proof.
 */
async function expectRejection(socket: RawSocket, tally: Tally): Promise<void> {
  await socket.closed;
  const status = socket.received === 33 ? (await socket.readExactly(1))?.[0] : undefined;
  if (socket.received > 32 && !(status !== undefined && status !== 0)) {
    tally.authenticated++;
    tally.notes.push("a hostile answer was accepted!");
  } else {
    tally.rejected++;
  }
}

/** Waits `ms`, or less if `until` settles first (the timer is cleared either way). */
function sleep(ms: number, until: Promise<unknown>): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    until.then(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/** What honest workers speak, in turn: every protocol and mode is served under attack. */
const HONEST_VARIANTS = [
  { protocol: 1 },
  { protocol: 2, mode: "plain" },
  { protocol: 2, mode: "integrity", digest: "sha512" },
  { protocol: 2, mode: "encrypt" },
] as const;

const ALPHABET = ["a", "b", "z", " ", "ß", "é", "€", "😀", "ﬁ", "\n", "Q", "7"];

/**
 * Honest clients in a loop from 127.0.0.1, each echo checked byte for byte. With `retryRefused`
 * they dial as `connect --retry` does and try again when the server closes before the challenge
 * (full): each refusal is counted, not failed. Any other error is a failure, retried or not.
 */
export async function honest(
  target: Target,
  workers: number,
  options: { name?: string; retryRefused?: boolean } = {},
): Promise<Tally> {
  const tally = newTally(options.name ?? "honest clients");
  await Promise.all(Array.from({ length: workers }, async (_, worker) => {
    const variant = HONEST_VARIANTS[worker % HONEST_VARIANTS.length];
    while (!target.stop.aborted) {
      await honestSession(target, variant, tally, options.retryRefused ?? false);
    }
  }));
  return tally;
}

/** One honest session (v2, encrypted), retrying while the server turns it away, in a tally `name`. */
export async function honestOnce(target: Target, name: string): Promise<Tally> {
  const tally = newTally(name);
  await honestSession(target, HONEST_VARIANTS[3], tally, true);
  return tally;
}

/** One exchange of a random message, its echo checked, counted in `tally`. */
async function honestSession(
  target: Target,
  variant: typeof HONEST_VARIANTS[number],
  tally: Tally,
  retryRefused: boolean,
): Promise<void> {
  const countRefusal = (error: unknown) => {
    const refused = error instanceof ChallengeError && error.received === 0;
    if (refused) tally.refused++;
    return refused;
  };
  const retry = retryRefused
    ? {
      retries: 20, // 50 ms doubling to 5 s, jittered: over half a minute, past any flood's hold
      retryDelayMs: 50,
      onRetry: ({ error }: { error: unknown }) => {
        if (!countRefusal(error)) {
          tally.failures++;
          if (tally.notes.length < 5) tally.notes.push(`retried after: ${error}`);
        }
        tally.connections++; // the attempt that follows: without a signal, it always happens
      },
    }
    : {};
  let text = "";
  const length = 1 + Math.floor(Math.random() * 2_000);
  for (let i = 0; i < length; i++) text += ALPHABET[Math.floor(Math.random() * ALPHABET.length)];
  tally.connections++;
  try {
    const reply = await exchange({
      secret: target.key,
      port: target.port,
      message: encoder.encode(text),
      ...variant,
      ...retry,
    });
    const expected = encoder.encode(text.toUpperCase());
    if (reply.length !== expected.length || reply.some((byte, i) => byte !== expected[i])) {
      tally.failures++;
      tally.notes.push(`wrong echo for a ${length}-character message`);
    } else {
      tally.authenticated++;
    }
  } catch (error) {
    countRefusal(error); // the server counted it so; it is a failure all the same
    tally.failures++;
    if (tally.notes.length < 5) tally.notes.push(String(error));
  }
}

/**
 * Slowloris, stalling at every byte position: client k sends the first k bytes of a valid answer
 * at once, then one more byte per interval, until the handshake deadline closes it.
 */
export async function slowloris(target: Target, from: string, intervalMs: number): Promise<Tally> {
  const tally = newTally("slowloris");
  await Promise.all(Array.from({ length: 40 }, async (_, position) => {
    const opened = await openChallenged(target, from, tally);
    if (!opened) return;
    const answer = computeAnswer(target.key, opened.challenge);
    await opened.socket.write(answer.subarray(0, position));
    // Stop one byte short of a whole answer: the point is to hold the slot, never to finish.
    for (let i = position; i < 39 && !opened.socket.ended; i++) {
      await sleep(intervalMs, opened.socket.closed);
      if (!opened.socket.ended) await opened.socket.write(answer.subarray(i, i + 1));
    }
    await expectRejection(opened.socket, tally); // the handshake deadline must close it
  }));
  return tally;
}

/** Garbage and random bytes, from many addresses, so thousands reach the answer parser. */
export async function garbage(target: Target, count: number, round: number): Promise<Tally> {
  const tally = newTally("garbage and random bytes");
  let next = 0;
  await Promise.all(Array.from({ length: 32 }, async () => {
    while (next < count && !target.stop.aborted) {
      const i = next++;
      // Four attempts per address: under the throttle's threshold, so the parser sees them all.
      const host = i >> 2; // the same address for four consecutive attempts
      const from = `127.${round}.${Math.floor(host / 254) % 256}.${(host % 254) + 1}`;
      const opened = await openChallenged(target, from, tally);
      if (!opened) continue;
      const junk = crypto.getRandomValues(new Uint8Array(1 + Math.floor(Math.random() * 200)));
      await opened.socket.write(junk);
      if (junk.length < 40) opened.socket.end(); // a short answer: end it, or the deadline would
      await expectRejection(opened.socket, tally);
    }
  }));
  return tally;
}

/** Oversized answers: 1 MiB of hex digits; the server must decide on 40 bytes. */
export async function oversized(target: Target, from: string, count: number): Promise<Tally> {
  const tally = newTally("oversized answers");
  const huge = new Uint8Array(1024 * 1024).fill("f".charCodeAt(0));
  for (let i = 0; i < count && !target.stop.aborted; i++) {
    const opened = await openChallenged(target, from, tally);
    if (!opened) continue;
    void opened.socket.write(huge);
    await expectRejection(opened.socket, tally);
  }
  return tally;
}

/** Wrong digests in bulk from one address: the throttle should turn it away. */
/** Well-formed answers and v2 hellos under a wrong secret, alternately: guesses, in bulk. */
export async function wrongDigests(target: Target, from: string, count: number): Promise<Tally> {
  const tally = newTally("wrong digests and proofs in bulk");
  const wrongKeys = await SecretKeys.import(encoder.encode("a wrong guess"));
  for (let i = 0; i < count && !target.stop.aborted; i++) {
    const opened = await openChallenged(target, from, tally);
    if (!opened) continue;
    if (i % 2 === 0) {
      await opened.socket.write(computeAnswer(wrongKeys, opened.challenge));
    } else {
      const head = encodeHelloHead("sha256", "integrity", createChallenge());
      const proof = computeProof(wrongKeys, "sha256", "client", opened.challenge, head);
      await opened.socket.write(concat([head, proof]));
    }
    await expectRejection(opened.socket, tally);
  }
  return tally;
}

/**
 * Guesses in parallel bursts from one address: v2 hellos under a wrong secret, `burst` at a time.
 * Only a status byte `01` tells the attacker a guess was wrong; a close without one is a withheld
 * verdict (docs/PROTOCOL.md §3). `revealed` counts the former: it must stay under the throttle's
 * threshold per cool-down, however large the bursts.
 */
export async function parallelGuesser(
  target: Target,
  from: string,
  bursts: number,
  burst: number,
): Promise<Tally & { revealed: number }> {
  const tally = { ...newTally("wrong proofs in parallel bursts"), revealed: 0 };
  const wrongKeys = await SecretKeys.import(encoder.encode("a wrong guess, sent in parallel"));
  for (let b = 0; b < bursts && !target.stop.aborted; b++) {
    await Promise.all(Array.from({ length: burst }, async () => {
      const opened = await openChallenged(target, from, tally);
      if (!opened) return;
      const head = encodeHelloHead("sha256", "integrity", createChallenge());
      const proof = computeProof(wrongKeys, "sha256", "client", opened.challenge, head);
      await opened.socket.write(concat([head, proof]));
      await expectRejection(opened.socket, tally);
      if (opened.socket.received === 33) tally.revealed++;
    }));
  }
  return tally;
}

/**
 * An attacker on the path of authenticated v2 sessions: each session's first frame arrives with
 * one bit flipped. The server must close it without echoing a byte (docs/PROTOCOL.md §11).
 */
export async function tamperedFrames(target: Target, count: number): Promise<Tally> {
  const tally = newTally("v2 frames tampered on the way");
  for (let i = 0; i < count && !target.stop.aborted; i++) {
    const mode: FrameMode = i % 2 === 0 ? "integrity" : "encrypt";
    tally.connections++;
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: target.port });
    try {
      const challenge = await readChallenge(conn);
      const hello = await sendHello(conn, target.key, challenge, { digest: "sha256", mode });
      if (hello.outcome !== "accepted") {
        tally.failures++;
        tally.notes.push(`an honest hello was not accepted: ${hello.outcome}`);
        continue;
      }
      tally.authenticated++;
      const sealed: Uint8Array[] = [];
      const sealer = new FramedConnection({
        read: () => Promise.resolve(null),
        write: (data) => (sealed.push(data.slice()), Promise.resolve(data.length)),
      }, hello.session.frameKeys!);
      await sealer.write(encoder.encode("pay 10 to alice"));
      const frame = sealed[0];
      frame[frame.length - 20] ^= 0x04; // in the payload's tag
      await writeAll(conn, frame);
      const reply = new Uint8Array(64);
      if (await conn.read(reply) === null) tally.frameErrors++;
      else tally.notes.push("a tampered frame was echoed: accepted!");
    } catch (error) {
      // A reset after the server's close is the expected end too.
      if (error instanceof Deno.errors.ConnectionReset) tally.frameErrors++;
      else throw error;
    } finally {
      conn.close();
    }
  }
  return tally;
}

/** Connect-and-close floods. */
export async function connectFlood(target: Target, from: string, count: number): Promise<Tally> {
  const tally = newTally("connect-and-close flood");
  let next = 0;
  await Promise.all(Array.from({ length: 16 }, async () => {
    while (next++ < count && !target.stop.aborted) {
      const socket = new RawSocket(target.port, from);
      tally.connections++;
      // Close as soon as anything (or nothing) arrives: no answer is ever sent.
      const challenge = await socket.readExactly(1);
      socket.destroy();
      await socket.closed;
      if (challenge === null) tally.refused++;
      else tally.rejected++;
    }
  }));
  return tally;
}

/**
 * Opens a connection, answers correctly and proves the session with a one-byte echo. Counts the
 * outcome; returns the socket of an authenticated session, or null.
 */
async function openConfirmed(
  target: Target,
  from: string,
  tally: Tally,
): Promise<RawSocket | null> {
  const opened = await openChallenged(target, from, tally);
  if (!opened) return null;
  await opened.socket.write(computeAnswer(target.key, opened.challenge));
  await opened.socket.write(encoder.encode("x"));
  if ((await opened.socket.readExactly(1)) === null) {
    tally.rejected++;
    return null;
  }
  tally.authenticated++;
  return opened.socket;
}

/** Authenticated clients that reset the connection in the middle of a stream. */
export async function midStreamResets(target: Target, from: string, count: number): Promise<Tally> {
  const tally = newTally("resets mid-stream");
  for (let i = 0; i < count && !target.stop.aborted; i++) {
    const socket = await openConfirmed(target, from, tally);
    if (!socket) continue;
    await socket.write(new Uint8Array(64 * 1024).fill(0x62));
    socket.reset();
    await socket.closed;
  }
  return tally;
}

/** Half-open: authenticated, then silent forever; the idle timeout must free them. */
export async function halfOpen(target: Target, from: string, count: number): Promise<Tally> {
  const tally = newTally("half-open (silent after auth)");
  await Promise.all(Array.from({ length: count }, async () => {
    const socket = await openConfirmed(target, from, tally);
    if (socket) await socket.closed; // the server's idle timeout ends it
  }));
  return tally;
}

/** One idle holder: its socket, and the stream its echo speaks (framed for v2). */
interface Holder {
  socket: RawSocket;
  stream: ByteStream;
}

/** A holder's burst: ASCII, so its echo is the same bytes upper-cased. */
const BURST = new Uint8Array(64 * 1024).fill(0x64); // "d"

/**
 * Honest sessions held idle, for the suite's per-connection memory check (issue 15): each proves
 * its session with a one-byte echo and waits; `burst()` has each echo 64 KiB once, after which it
 * waits again, until `close()`. They speak in turn v1, v2 plain, v2 integrity (SHA-512) and v2
 * encrypt (forward-secret), as the honest clients do. An idle connection must not keep its burst's
 * buffers: the suite reads the server's RSS before they connect, while they wait, and while they
 * wait after their burst.
 */
export class IdleHolders {
  readonly tally: Tally = newTally("idle holders (a 64 KiB burst each, then idle)");
  #holders: Holder[] = [];

  private constructor() {}

  /** Opens `count` holders; resolves when every one is authenticated and idle (or failed). */
  static async open(target: Target, from: string, count: number): Promise<IdleHolders> {
    const holders = new IdleHolders();
    await Promise.all(Array.from({ length: count }, async (_, i) => {
      const holder = await holders.#openOne(
        target,
        from,
        HONEST_VARIANTS[i % HONEST_VARIANTS.length],
      );
      if (holder) holders.#holders.push(holder);
    }));
    return holders;
  }

  async #openOne(
    target: Target,
    from: string,
    variant: typeof HONEST_VARIANTS[number],
  ): Promise<Holder | null> {
    const tally = this.tally;
    const opened = await openChallenged(target, from, tally);
    if (!opened) {
      tally.failures++;
      tally.notes.push("a holder was refused");
      return null;
    }
    const { socket, challenge } = opened;
    let stream: ByteStream = socket.stream();
    if (variant.protocol === 1) {
      await socket.write(computeAnswer(target.key, challenge));
    } else {
      const hello = await sendHello(stream, target.key, challenge, {
        digest: variant.mode === "integrity" ? variant.digest : "sha256",
        mode: variant.mode,
        forwardSecrecy: variant.mode !== "plain", // as connect() chooses
      });
      if (hello.outcome !== "accepted") {
        tally.failures++;
        tally.notes.push(`an honest hello was not accepted: ${hello.outcome}`);
        socket.destroy();
        return null;
      }
      if (variant.mode !== "plain") stream = new FramedConnection(stream, hello.session.frameKeys!);
    }
    // One byte echoed proves the session: the server is now in its echo, waiting to read.
    const [, echo] = await Promise.all([writeAll(stream, encoder.encode("x")), readAll(stream, 1)]);
    if (echo?.[0] !== 0x58) {
      tally.failures++;
      tally.notes.push("a holder's one-byte echo did not come back");
      socket.destroy();
      return null;
    }
    tally.authenticated++;
    return { socket, stream };
  }

  /** Holders whose connection is still open. */
  get open(): number {
    return this.#holders.filter((holder) => !holder.socket.ended).length;
  }

  /**
   * Has every holder echo one 64 KiB burst, `concurrency` at a time; resolves once each has its
   * whole echo back, checked.
   */
  async burst(concurrency: number): Promise<void> {
    let next = 0;
    await Promise.all(Array.from({ length: concurrency }, async () => {
      while (next < this.#holders.length) {
        const { stream } = this.#holders[next++];
        const [, echo] = await Promise.all([
          writeAll(stream, BURST),
          readAll(stream, BURST.length),
        ]);
        if (!echo?.every((byte) => byte === 0x44)) {
          this.tally.failures++;
          this.tally.notes.push("a burst came back wrong");
        }
      }
    }));
  }

  /** Drops every holder's connection; resolves once all are closed, with the tally. */
  async close(): Promise<Tally> {
    for (const { socket } of this.#holders) socket.destroy();
    await Promise.all(this.#holders.map(({ socket }) => socket.closed));
    return this.tally;
  }
}

/** Reads `length` bytes, or null if the stream ends (or fails) first. */
async function readAll(stream: ByteStream, length: number): Promise<Uint8Array | null> {
  const buffer = new Uint8Array(length);
  try {
    for (let filled = 0; filled < length;) {
      const n = await stream.read(buffer.subarray(filled));
      if (n === null) return null;
      filled += n;
    }
  } catch {
    return null;
  }
  return buffer;
}

/** A client that sends `bytes` without ever reading: backpressure, then the idle timeout. */
export async function neverReads(target: Target, from: string, bytes: number): Promise<Tally> {
  const tally = newTally("never reads, sends a lot");
  const socket = await openConfirmed(target, from, tally);
  if (!socket) return tally;
  socket.pause();
  const chunk = new Uint8Array(1024 * 1024).fill(0x63);
  let sent = 0;
  while (sent < bytes && !socket.ended) {
    await socket.write(chunk);
    sent += chunk.length;
  }
  tally.notes.push(
    `pushed ${(sent / 1024 / 1024).toFixed(0)} MiB of ${
      bytes / 1024 / 1024
    } MiB before the server hung up`,
  );
  socket.destroy();
  await socket.closed;
  return tally;
}

/** A flood of held connections: see {@linkcode descriptorFlood}. */
export interface DescriptorFlood {
  /** Flood connections that got a challenge and are still open. */
  held(): number;
  /** Resolves when the server has closed them all (its handshake deadline). */
  done: Promise<Tally>;
}

/**
 * More connections than the server has descriptors, opened at once and held silent until the
 * handshake deadline closes them. They come from `from` in turn, each address under the
 * per-address cap, so only the connection cap (or, without it, the kernel) can turn them away.
 */
export function descriptorFlood(
  target: Target,
  from: readonly string[],
  count: number,
): DescriptorFlood {
  const tally = newTally(`${count} connections held from ${from.length} addresses`);
  const held: RawSocket[] = [];
  const opening = Promise.all(Array.from({ length: count }, async (_, i) => {
    const opened = await openChallenged(target, from[i % from.length], tally);
    if (opened) held.push(opened.socket);
  }));
  const done = opening.then(async () => {
    tally.notes.push(`${held.length} got a challenge, ${tally.refused} were refused at once`);
    for (const socket of held) await expectRejection(socket, tally);
    return tally;
  });
  return { held: () => held.filter((socket) => !socket.ended).length, done };
}
