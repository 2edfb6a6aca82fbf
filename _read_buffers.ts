/**
 * Internal: which buffer each read of a byte stream goes into, for the echo and the pipe.
 *
 * A read may wait as long as the peer is idle, and a waiting read pins its buffer (10 000 idle
 * clients × 64 KiB would be 640 MB), so a read gets a small buffer unless the read before it
 * filled its own, which shows that more is waiting. Then it gets a bulk buffer, twice as big for
 * each read in a row that fills it, up to a maximum that suits bulk transfers.
 *
 * @module
 */

/** The buffer a read that may wait gets. */
export const SMALL_READ_BUFFER = 1024;

/**
 * Chooses each read's buffer: read into `buffer`, then hand the count to `took`, which returns
 * the bytes read and picks the next read's buffer.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ReadBuffers } from "./_read_buffers.ts";
 *
 * const reads = new ReadBuffers(64 * 1024);
 * reads.took(1024); // a read filled the 1 KiB buffer: more is waiting
 * assert.equal(reads.buffer.length, 2048);
 * reads.took(10); // a short read: the next one may wait
 * assert.equal(reads.buffer.length, 1024);
 * ```
 */
export class ReadBuffers {
  readonly #max: number;
  #small = new Uint8Array(SMALL_READ_BUFFER);
  /** The first bulk buffer's size once the small one fills. */
  #bulkSize = 2 * SMALL_READ_BUFFER;
  /** Bytes read since the last short read: the burst so far. */
  #burst = 0;
  /** The buffer for the next read. */
  buffer: Uint8Array = this.#small;

  /** `max` is the largest buffer a burst grows to (at least the small buffer). */
  constructor(max: number) {
    this.#max = Math.max(SMALL_READ_BUFFER, max);
  }

  /** The bytes the read put into `buffer`; picks the next read's buffer. */
  took(n: number): Uint8Array {
    const buffer = this.buffer;
    this.#burst += n;
    if (n < buffer.length) {
      // The burst is over. The next one starts with a bulk buffer that would have held this one,
      // so bursts of one size take two reads each, and a peer whose bursts shrink (or whose
      // message exactly fills the small buffer) leaves no bigger read waiting than they need.
      const fits = 2 ** Math.ceil(Math.log2(Math.max(1, this.#burst)));
      this.#bulkSize = Math.min(this.#max, Math.max(2 * SMALL_READ_BUFFER, fits));
      this.#burst = 0;
      this.buffer = this.#small; // the bulk buffer, if any, is let go with the chunk
    } else if (buffer === this.#small) {
      if (this.#max > SMALL_READ_BUFFER) this.buffer = new Uint8Array(this.#bulkSize);
    } else if (buffer.length < this.#max) {
      this.buffer = new Uint8Array(Math.min(2 * buffer.length, this.#max));
    } // else the largest buffer, filled again: it serves the next read too
    return buffer.subarray(0, n);
  }
}
