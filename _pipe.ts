/**
 * Internal: two byte streams joined both ways, for the server's forwarder and the client's tunnel.
 * Each direction writes a chunk before it reads the next (a slow reader holds the fast writer back
 * through TCP flow control), a half-close is passed on as a half-close, and the first failure on
 * either end stops both directions: the caller's `abort` closes both ends.
 *
 * @module
 */

import { type ByteStream, isDisconnect, writeAll } from "./_io.ts";
import { ReadBuffers } from "./_read_buffers.ts";

/** One end of a pipe: a byte stream that can also say it will send nothing more. */
export interface PipeEnd extends ByteStream {
  /** Sends this end's half-close: a TCP FIN, or a v2 end frame. */
  closeWrite(): Promise<void>;
}

/** Which end: the first stream given to {@linkcode pipeBoth} or the second. */
export type PipeSide = "a" | "b";

/** What stopped a pipe: the end whose operation failed, the operation, and its error. */
export interface PipeFailure {
  side: PipeSide;
  op: "read" | "write" | "closeWrite";
  error: unknown;
}

/** What {@linkcode pipeBoth} did. */
export interface PipeResult {
  /** Bytes read from `a` and written to `b`. */
  aToB: number;
  /** Bytes read from `b` and written to `a`. */
  bToA: number;
  /** The first failure, if one stopped the pipe; undefined when both directions ended cleanly. */
  failure?: PipeFailure;
}

/** Options for {@linkcode pipeBoth}. */
export interface PipeOptions {
  /**
   * Called once, at the first failure: it must close both ends, which ends the direction still
   * running (a reset on one side becomes a close on the other).
   */
  abort: (failure: PipeFailure) => void;
  /** Told of every chunk once it is written; `from` is the end it was read from. */
  onChunk?: (from: PipeSide, bytes: number) => void;
  /** The most bytes read at a time, per direction. Default 64 KiB: one full v2 frame. */
  bufferSize?: number;
}

const DEFAULT_BUFFER_SIZE = 64 * 1024;

/**
 * Copies `a` to `b` and `b` to `a` at once. When one end's read returns `null` (its half-close),
 * the other end is half-closed in turn and the opposite direction goes on. At the first failure
 * `options.abort` closes both ends. Resolves when both directions have ended, with nothing of
 * the pipe left running; it never rejects.
 *
 * A write that fails because its end has already half-closed and then gone away (a server that
 * answers a request and closes) ends that direction without a failure: nothing was lost that the
 * end wanted to read. The other end's remaining bytes are then read and discarded up to its
 * half-close, so that the connection closes without a reset.
 */
export function pipeBoth(a: PipeEnd, b: PipeEnd, options: PipeOptions): Promise<PipeResult> {
  const maxBuffer = options.bufferSize ?? DEFAULT_BUFFER_SIZE;
  const result: PipeResult = { aToB: 0, bToA: 0 };
  /** Which ends have half-closed: their read returned null. */
  const ended: Record<PipeSide, boolean> = { a: false, b: false };
  let stopped = false;
  let running = 2;
  let finish!: () => void;
  const finished = new Promise<void>((resolve) => finish = resolve);

  const pump = async (from: PipeSide, source: PipeEnd, sink: PipeEnd): Promise<void> => {
    const to: PipeSide = from === "a" ? "b" : "a";
    // Small while the peer is idle (an idle pool of database connections pins no more than
    // 1 KiB per direction), growing while it sends more than each read takes.
    const reads = new ReadBuffers(maxBuffer);
    let side: PipeSide = from;
    let op: PipeFailure["op"] = "read";
    try {
      while (true) {
        side = from;
        op = "read";
        const n = await source.read(reads.buffer);
        if (stopped) return;
        if (n === null) break;
        side = to;
        op = "write";
        await writeAll(sink, reads.took(n));
        if (from === "a") result.aToB += n;
        else result.bToA += n;
        options.onChunk?.(from, n);
        if (stopped) return;
      }
      ended[from] = true;
      side = to;
      op = "closeWrite";
      await sink.closeWrite();
    } catch (error) {
      if (stopped) return;
      if (op !== "read" && ended[to] && isDisconnect(error)) {
        // The sink had half-closed and has now closed: it is done with this stream, not failed.
        // What the source still sends has nowhere to go; read it to its end all the same, since
        // closing a connection with unread bytes resets it, and a reset can destroy the sink's
        // last replies on their way to the source.
        await drain(source, reads.buffer).catch(() => {});
        return;
      }
      result.failure = { side, op, error };
      stopped = true;
      options.abort(result.failure);
    } finally {
      if (--running === 0) finish();
    }
  };

  pump("a", a, b);
  pump("b", b, a);
  return finished.then(() => result);
}

/** Reads `source` to its end, discarding what it says. */
async function drain(source: PipeEnd, buffer: Uint8Array): Promise<void> {
  while (await source.read(buffer) !== null) { /* discarded */ }
}
