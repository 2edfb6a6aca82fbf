/**
 * The default service: every byte the client sends comes back upper-cased (docs/PROTOCOL.md §4).
 *
 * @module
 */

import { writeAll } from "./_io.ts";

/** An authenticated connection as a service handler sees it. */
export interface ServiceConnection {
  /** Reads up to `buffer.length` bytes from the client; `null` once it has half-closed. */
  read(buffer: Uint8Array): Promise<number | null>;
  /** Writes some of `data` to the client, returning how many bytes were written. */
  write(data: Uint8Array): Promise<number>;
}

/** Serves one authenticated connection; the server closes the connection when it resolves. */
export type ServiceHandler = (conn: ServiceConnection) => Promise<void>;

/** Bytes read per call: large enough for bulk transfers, small enough to hold many connections. */
const READ_BUFFER_SIZE = 16 * 1024;

/**
 * Upper-cases a UTF-8 byte stream chunk by chunk, keeping characters split across chunks whole.
 *
 * @example
 * ```ts
 * import { UpperCaseTransformer } from "./upper_case_echo.ts";
 * const upper = new UpperCaseTransformer();
 * const bytes = new TextEncoder().encode("straße");
 * const out = [upper.transform(bytes.slice(0, 5)), upper.transform(bytes.slice(5)), upper.flush()];
 * // out decodes to "STRA" + "SSE" + ""
 * ```
 */
export class UpperCaseTransformer {
  #decoder = new TextDecoder("utf-8", { fatal: false, ignoreBOM: true });
  #encoder = new TextEncoder();
  /**
   * The stream's last (up to) three bytes seen by the decoder: a partial character may have begun
   * several chunks ago, and a UTF-8 sequence's lead byte is never more than three bytes back.
   */
  #tail = new Uint8Array(3);
  #tailLength = 0;

  /**
   * Upper-cases the next chunk. ASCII chunks are changed in place and returned as they are, so
   * pass a chunk you do not need afterwards.
   */
  transform(chunk: Uint8Array): Uint8Array {
    if (!this.#mayHoldPartial() && upperCaseAsciiInPlace(chunk)) return chunk;
    // Upper-casing the ASCII prefix in place above does not change what the decoder sees as text.
    const text = this.#decoder.decode(chunk, { stream: true });
    this.#remember(chunk);
    return this.#encoder.encode(text.toUpperCase());
  }

  /** Ends the stream: an incomplete character left over becomes U+FFFD. */
  flush(): Uint8Array {
    this.#tailLength = 0;
    return this.#encoder.encode(this.#decoder.decode().toUpperCase());
  }

  #remember(chunk: Uint8Array): void {
    const keep = Math.min(this.#tail.length, this.#tailLength + chunk.length);
    const fromChunk = Math.min(keep, chunk.length);
    const fromTail = keep - fromChunk;
    this.#tail.copyWithin(0, this.#tailLength - fromTail, this.#tailLength);
    this.#tail.set(chunk.subarray(chunk.length - fromChunk), fromTail);
    this.#tailLength = keep;
  }

  /**
   * Whether the decoder may hold the first bytes of a character. It may answer true for invalid
   * bytes the decoder has already replaced; that only sends the next chunk through the decoder,
   * which is always correct.
   */
  #mayHoldPartial(): boolean {
    const tail = this.#tail;
    for (let back = 1; back <= this.#tailLength; back++) {
      const byte = tail[this.#tailLength - back];
      if ((byte & 0xc0) === 0x80) continue; // continuation byte: keep looking for the lead byte
      const length = byte >= 0xf0 ? 4 : byte >= 0xe0 ? 3 : byte >= 0xc0 ? 2 : 1;
      return length > back;
    }
    return false;
  }
}

/**
 * Upper-cases ASCII letters in place while every byte is ASCII.
 *
 * @returns true if the whole chunk was ASCII (and is now upper-cased); false at the first byte
 * ≥ 0x80, with the ASCII bytes before it already upper-cased.
 */
function upperCaseAsciiInPlace(chunk: Uint8Array): boolean {
  for (let i = 0; i < chunk.length; i++) {
    const byte = chunk[i];
    if (byte >= 0x80) return false;
    if (byte >= 0x61 && byte <= 0x7a) chunk[i] = byte - 0x20;
  }
  return true;
}

/**
 * The default service handler: echoes the client's bytes upper-cased until it half-closes.
 *
 * Each chunk is written before the next is read, so a client that does not read its replies is
 * held back by TCP flow control instead of filling the server's memory.
 */
export async function upperCaseEcho(conn: ServiceConnection): Promise<void> {
  const buffer = new Uint8Array(READ_BUFFER_SIZE);
  const upper = new UpperCaseTransformer();
  while (true) {
    const n = await conn.read(buffer);
    if (n === null) break;
    await writeAll(conn, upper.transform(buffer.subarray(0, n)));
  }
  const rest = upper.flush();
  if (rest.length > 0) await writeAll(conn, rest);
}
