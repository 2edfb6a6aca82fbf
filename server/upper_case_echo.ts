/**
 * The default service: every byte the client sends comes back upper-cased (docs/PROTOCOL.md §4).
 *
 * @module
 */

import { type ByteStream, writeAll } from "../_io.ts";
import { ReadBuffers } from "../_read_buffers.ts";
import { FramedConnection } from "../protocol/frames.ts";
import type { TrafficCounters } from "./service.ts";

/** The largest buffer the echo's reads grow to in a bulk transfer (see `_read_buffers.ts`). */
const MAX_READ_BUFFER = 256 * 1024;

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
  /** Created at the first non-ASCII byte: most connections never need one, and it costs memory. */
  #decoder?: TextDecoder;
  /**
   * The stream's last (up to) three bytes seen by the decoder, packed into one number (the most
   * recent in the low byte): a partial character may have begun several chunks ago, and a UTF-8
   * sequence's lead byte is never more than three bytes back.
   */
  #tail = 0;
  #tailLength = 0;

  /**
   * Upper-cases the next chunk. ASCII chunks are changed in place and returned as they are, so
   * pass a chunk you do not need afterwards.
   */
  transform(chunk: Uint8Array): Uint8Array {
    if (!this.#mayHoldPartial() && upperCaseAsciiInPlace(chunk)) return chunk;
    // Upper-casing the ASCII prefix in place above does not change what the decoder sees as text.
    this.#decoder ??= new TextDecoder("utf-8", { fatal: false, ignoreBOM: true });
    const text = this.#decoder.decode(chunk, { stream: true });
    this.#remember(chunk);
    return encoder.encode(text.toUpperCase());
  }

  /** Ends the stream: an incomplete character left over becomes U+FFFD. */
  flush(): Uint8Array {
    this.#tailLength = 0;
    if (this.#decoder === undefined) return new Uint8Array(0);
    return encoder.encode(this.#decoder.decode().toUpperCase());
  }

  #remember(chunk: Uint8Array): void {
    for (let i = Math.max(0, chunk.length - 3); i < chunk.length; i++) {
      this.#tail = ((this.#tail << 8) | chunk[i]) & 0xffffff;
    }
    this.#tailLength = Math.min(3, this.#tailLength + chunk.length);
  }

  /**
   * Whether the decoder may hold the first bytes of a character. It may answer true for invalid
   * bytes the decoder has already replaced; that only sends the next chunk through the decoder,
   * which is always correct.
   */
  #mayHoldPartial(): boolean {
    for (let back = 1; back <= this.#tailLength; back++) {
      const byte = (this.#tail >>> (8 * (back - 1))) & 0xff;
      if ((byte & 0xc0) === 0x80) continue; // continuation byte: keep looking for the lead byte
      const length = byte >= 0xf0 ? 4 : byte >= 0xe0 ? 3 : byte >= 0xc0 ? 2 : 1;
      return length > back;
    }
    return false;
  }
}

const encoder = new TextEncoder();

/** Chunks shorter than this are not worth a word view. */
const WORD_LOOP_MIN = 64;

/**
 * Upper-cases ASCII letters in place while every byte is ASCII.
 *
 * @returns true if the whole chunk was ASCII (and is now upper-cased); false at the first byte
 * ≥ 0x80, with the ASCII bytes before it already upper-cased.
 */
function upperCaseAsciiInPlace(chunk: Uint8Array): boolean {
  let i = 0;
  if (chunk.length >= WORD_LOOP_MIN) {
    // Bytes up to a 4-byte boundary, then four at a time: bulk echo spends most of its time here.
    while ((chunk.byteOffset + i) % 4 !== 0) {
      if (!upperCaseByte(chunk, i)) return false;
      i++;
    }
    const words = new Uint32Array(chunk.buffer, chunk.byteOffset + i, (chunk.length - i) >> 2);
    for (let w = 0; w < words.length; w++) {
      const word = words[w];
      if (word & 0x80808080) return upperCaseBytes(chunk, i + w * 4);
      // Per byte b < 0x80: b + 0x1F has its high bit set iff b >= "a"; b + 0x05 iff b > "z".
      // Neither sum carries into the next byte, so all four bytes are tested at once.
      const lowercase = (word + 0x1f1f1f1f) & ~(word + 0x05050505) & 0x80808080;
      words[w] = word ^ (lowercase >>> 2); // 0x80 >>> 2 is 0x20, the case bit
    }
    i += words.length * 4;
  }
  return upperCaseBytes(chunk, i);
}

/** The byte loop, from `start` on. */
function upperCaseBytes(chunk: Uint8Array, start: number): boolean {
  for (let i = start; i < chunk.length; i++) {
    if (!upperCaseByte(chunk, i)) return false;
  }
  return true;
}

/** Upper-cases one ASCII byte in place; false if the byte is not ASCII. */
function upperCaseByte(chunk: Uint8Array, i: number): boolean {
  const byte = chunk[i];
  if (byte >= 0x80) return false;
  if (byte >= 0x61 && byte <= 0x7a) chunk[i] = byte - 0x20;
  return true;
}

/**
 * The default service handler: echoes the client's bytes upper-cased until it half-closes.
 *
 * Each chunk is written before the next is read, so a client that does not read its replies is
 * held back by TCP flow control instead of filling the server's memory. When `counters` are
 * given, it keeps them up to date itself; the server uses that to serve its default service on
 * the bare connection, without a wrapper around every read and write.
 */
export async function upperCaseEcho(
  conn: ByteStream,
  counters?: TrafficCounters,
): Promise<void> {
  const upper = new UpperCaseTransformer();
  const tally = counters ?? { bytesIn: 0, bytesOut: 0, activity: 0 };
  let reads: ReadBuffers | undefined;
  while (true) {
    let chunk: Uint8Array | null;
    if (conn instanceof FramedConnection) {
      // Each payload is upper-cased where it was decrypted or verified: no buffer of the echo's
      // own waits for the next frame, and each payload goes back as one frame. Read into
      // ReadBuffers, a 64 KiB payload went back as two (the small read's 1 KiB, then the rest),
      // at 13-29% more CPU per MB (in-process, median of 60 paired runs).
      chunk = await conn.readChunk();
    } else {
      reads ??= new ReadBuffers(MAX_READ_BUFFER);
      const n = await conn.read(reads.buffer);
      chunk = n === null ? null : reads.took(n);
    }
    tally.activity++;
    if (chunk === null) break;
    tally.bytesIn += chunk.length;
    const out = upper.transform(chunk);
    // Inline rather than writeAll(): this loop is the server's hot path, and one async layer
    // less per chunk is measurable (bench/).
    let written = await conn.write(out);
    while (written < out.length) written += await conn.write(out.subarray(written));
    tally.bytesOut += out.length;
    tally.activity++;
  }
  const rest = upper.flush();
  if (rest.length > 0) {
    await writeAll(conn, rest);
    tally.bytesOut += rest.length;
  }
}
