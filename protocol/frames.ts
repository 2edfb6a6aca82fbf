/**
 * Protocol v2's frame layer: after a handshake in mode `integrity` or `encrypt`, every service
 * byte travels in a frame with a length, a sequence number and a tag under a session key
 * (docs/PROTOCOL.md §11). {@linkcode FramedConnection} turns frames back into a byte stream, so
 * the echo service runs on it unchanged.
 *
 * @module
 */

import { type ByteStream, writeAll } from "../_io.ts";
import { HmacEchoError } from "../errors.ts";
import { type FrameKey, HEADER_LENGTH, MAX_TAG_LENGTH } from "./frame_key.ts";

/** The largest payload one frame may carry; a longer one is refused before its body is read. */
export const MAX_FRAME_PAYLOAD = 65_536;

/** Frames one direction may carry, end frame included (docs/PROTOCOL.md §11): 256 TiB of data. */
const MAX_FRAMES = 2 ** 32;
/**
 * The receive buffer is small whenever it is empty, because the read that then waits for the next
 * frame pins it for as long as the peer is idle; a frame that does not fit moves it into a bulk
 * buffer, which holds any frame. (Kept until the close, the bulk buffer and the last payload, with
 * the echo's own read buffer, made the +204 KiB that each of 5 000 idle `encrypt` connections held
 * after one 64 KiB echo, against +15 KiB before it: issue 15, `deno task memory`.)
 */
const SMALL_INBOX = 1024;
const BULK_INBOX = HEADER_LENGTH + MAX_FRAME_PAYLOAD + MAX_TAG_LENGTH;

/**
 * Bulk receive buffers not in use, shared by this thread's connections. In a bulk transfer the
 * inbox empties at most frame boundaries, and a new 64 KiB buffer for each frame cost 4-12% more
 * CPU per MB than taking one from here (the echo over frames in-process, `integrity` and
 * `encrypt`, median of 250 paired runs). Up to 16 (1 MiB) are kept.
 */
const spareInboxes: Uint8Array<ArrayBuffer>[] = [];
const MAX_SPARE_INBOXES = 16;
const NO_PAYLOAD = new Uint8Array(0);

/** How the service bytes travel after a v2 handshake (docs/PROTOCOL.md §11). */
export type FrameMode = "plain" | "integrity" | "encrypt";

/** The session keys of one side, from `deriveFrameKeys` (docs/PROTOCOL.md §11). */
export interface FrameKeys {
  /** `integrity`: HMAC-SHA-256 keys; `encrypt`: AES-256-GCM keys. */
  mode: "integrity" | "encrypt";
  /** The key for the frames this side sends. */
  send: FrameKey;
  /** The key for the frames this side receives. */
  receive: FrameKey;
}

/** Why a frame was refused (docs/PROTOCOL.md §11). */
export type FrameErrorReason =
  | "oversized-frame"
  | "tampered-frame"
  | "replayed-frame"
  | "out-of-order-frame"
  | "truncated-frame"
  | "truncated-stream"
  | "data-after-end"
  | "sequence-exhausted";

/** A received frame failed a check: the connection must be closed, and nothing of it used. */
export class FrameError extends HmacEchoError {
  /** Why the frame was refused. */
  declare readonly reason: FrameErrorReason;

  /** Builds the error; `reason` is the name logged, `detail` what exactly was wrong. */
  constructor(reason: FrameErrorReason, readonly detail: string) {
    super(
      reason,
      reason === "sequence-exhausted"
        ? `All the frames one key may protect are used (${detail}); reconnect`
        : `The peer's frames failed a check (${reason}: ${detail}); the connection was closed, ` +
          "as the bytes may have been altered on the way",
    );
  }
}

/**
 * A byte stream over frames. `read` returns only payload bytes that passed every check; `write`
 * sends its data as frames; `closeWrite` sends the end frame.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { FramedConnection, type FrameKeys } from "./frames.ts";
 * import { FrameKey } from "./frame_key.ts";
 * const key = () => new FrameKey("encrypt", crypto.getRandomValues(new Uint8Array(32)));
 * const keys: FrameKeys = { mode: "encrypt", send: key(), receive: key() };
 * const wire: Uint8Array[] = [];
 * const stream = { read: () => Promise.resolve(null), write: (b: Uint8Array) => (wire.push(b.slice()), Promise.resolve(b.length)) };
 * const framed = new FramedConnection(stream, keys);
 * await framed.write(new TextEncoder().encode("hello"));
 * await framed.closeWrite(); // the end frame
 * assert.ok(wire.length === 2);
 * ```
 */
export class FramedConnection implements ByteStream {
  #stream: ByteStream;
  #keys: FrameKeys;
  #tagLength: number;
  #sendSeq = 0;
  #receiveSeq = 0;
  /** Received bytes not yet parsed: `#inbox[#start, #end)`, in `#smallInbox` or a bulk buffer. */
  #smallInbox = new Uint8Array(SMALL_INBOX);
  #inbox: Uint8Array<ArrayBuffer> = this.#smallInbox;
  #start = 0;
  #end = 0;
  /**
   * The current frame's payload not yet read: `#payload[#payloadOffset, …)`. Let go of as soon
   * as it has all been read: a decrypted 64 KiB payload must not outlive its use on an idle
   * connection.
   */
  #payload: Uint8Array = NO_PAYLOAD;
  #payloadOffset = 0;
  #receivedEnd = false;
  #sentEnd = false;

  /**
   * Frames `stream` with the session keys of one side. `firstSequence` is for tests only: both
   * directions' numbering starts there instead of at 0, so the 2^32 limit can be reached.
   */
  constructor(stream: ByteStream, keys: FrameKeys, options: { firstSequence?: number } = {}) {
    this.#stream = stream;
    this.#keys = keys;
    this.#tagLength = keys.send.tagLength;
    this.#sendSeq = this.#receiveSeq = options.firstSequence ?? 0;
  }

  /**
   * Reads payload bytes; `null` once the peer's end frame has arrived.
   *
   * @throws {FrameError} when a frame fails a check or the stream ends without an end frame.
   */
  async read(buffer: Uint8Array): Promise<number | null> {
    if (!await this.#havePayload()) return null;
    const n = Math.min(buffer.length, this.#payload.length - this.#payloadOffset);
    buffer.set(this.#payload.subarray(this.#payloadOffset, this.#payloadOffset + n));
    this.#payloadOffset += n;
    if (this.#payloadOffset === this.#payload.length) {
      this.#payload = NO_PAYLOAD;
      this.#payloadOffset = 0;
    }
    return n;
  }

  /**
   * Reads the rest of the current frame's payload (at most {@linkcode MAX_FRAME_PAYLOAD} bytes)
   * without copying it: the view is this connection's own memory, the caller's until its next read,
   * and may be changed in place. `null` once the peer's end frame has arrived. A caller that reads
   * this way needs no buffer of its own while it waits for the next frame.
   *
   * @throws {FrameError} when a frame fails a check or the stream ends without an end frame.
   */
  async readChunk(): Promise<Uint8Array | null> {
    if (!await this.#havePayload()) return null;
    const chunk = this.#payload.subarray(this.#payloadOffset);
    this.#payload = NO_PAYLOAD;
    this.#payloadOffset = 0;
    return chunk;
  }

  /**
   * Bytes of buffer this connection holds for what it receives: its receive buffers and any
   * payload not yet read. What it costs while it waits, beyond its objects; for tests.
   */
  get heldBytes(): number {
    let held = this.#smallInbox.byteLength;
    if (this.#inbox !== this.#smallInbox) held += this.#inbox.byteLength;
    // An `integrity` payload is a view into the inbox; a decrypted one has its own memory.
    if (this.#payload.buffer !== this.#inbox.buffer) held += this.#payload.buffer.byteLength;
    return held;
  }

  /** Receives frames until one has payload left to read; false once the end frame has come. */
  async #havePayload(): Promise<boolean> {
    while (this.#payloadOffset === this.#payload.length) {
      if (this.#receivedEnd) {
        this.#expectNothingAfterEnd();
        return false;
      }
      await this.#receiveFrame();
    }
    return true;
  }

  /**
   * Sends all of `data`, in frames of at most 64 KiB, and returns its length. An empty `data`
   * sends nothing. Await each write before the next: one that does not wait still seals its frames
   * under numbers of their own, but they may reach the wire out of order, which the peer refuses.
   */
  async write(data: Uint8Array): Promise<number> {
    if (this.#sentEnd) throw new Deno.errors.BrokenPipe("write after the end frame");
    for (let offset = 0; offset < data.length; offset += MAX_FRAME_PAYLOAD) {
      await this.#sendFrame(data.subarray(offset, offset + MAX_FRAME_PAYLOAD));
    }
    return data.length;
  }

  /** Sends the end frame: this side will send nothing more (docs/PROTOCOL.md §11). */
  async closeWrite(): Promise<void> {
    if (this.#sentEnd) return;
    await this.#sendFrame(new Uint8Array(0));
    this.#sentEnd = true;
  }

  async #sendFrame(payload: Uint8Array): Promise<void> {
    if (this.#sendSeq >= MAX_FRAMES) {
      // Never a nonce twice under one key (docs/PROTOCOL.md §11): close instead.
      throw new FrameError("sequence-exhausted", `${MAX_FRAMES} frames sent under one key`);
    }
    // The number is taken before any await: a second write that does not wait for the first
    // still gets a number of its own, so a nonce is never sealed twice (the frames may then reach
    // the wire out of order, which the peer refuses: loud, not a leak).
    const seq = this.#sendSeq++;
    const n = payload.length;
    const frame = new Uint8Array(HEADER_LENGTH + n + this.#tagLength);
    writeHeader(frame, n, seq);
    await this.#keys.send.seal(frame, payload, seq);
    await writeAll(this.#stream, frame);
  }

  async #receiveFrame(): Promise<void> {
    await this.#fill(HEADER_LENGTH);
    const view = new DataView(this.#inbox.buffer, this.#start, HEADER_LENGTH);
    const n = view.getUint32(0);
    const seq = view.getUint32(4) * 2 ** 32 + view.getUint32(8);
    if (n > MAX_FRAME_PAYLOAD) {
      throw new FrameError(
        "oversized-frame",
        `a ${n}-byte frame; the limit is ${MAX_FRAME_PAYLOAD}`,
      );
    }
    const frameLength = HEADER_LENGTH + n + this.#tagLength;
    await this.#fill(frameLength);
    const frame = this.#inbox.subarray(this.#start, this.#start + frameLength);
    // An `integrity` payload is a view, not a copy: it is read in full before the next #fill may
    // move the inbox or give it to another connection.
    const payload = await this.#keys.receive.open(frame, seq);
    if (payload === null) {
      throw new FrameError(
        "tampered-frame",
        this.#keys.mode === "integrity"
          ? `frame ${seq}'s MAC does not verify`
          : `frame ${seq} does not decrypt and authenticate`,
      );
    }
    // The sequence number is trusted only now that the tag has vouched for it.
    if (seq >= MAX_FRAMES) {
      // Only a peer that ignored the limit sends this: its nonces may repeat from here on.
      throw new FrameError("sequence-exhausted", `the peer sent frame ${seq}, past ${MAX_FRAMES}`);
    }
    if (seq < this.#receiveSeq) {
      throw new FrameError("replayed-frame", `frame ${seq} again, after ${this.#receiveSeq - 1}`);
    }
    if (seq > this.#receiveSeq) {
      throw new FrameError("out-of-order-frame", `frame ${seq} where ${this.#receiveSeq} was due`);
    }
    this.#receiveSeq++;
    this.#start += frameLength;
    if (n === 0) this.#receivedEnd = true;
    this.#payload = payload;
    this.#payloadOffset = 0;
  }

  /** Reads until the inbox holds `length` unparsed bytes. */
  async #fill(length: number): Promise<void> {
    if (this.#start === this.#end) {
      // Empty: the read below may wait as long as the peer is idle, so it gets the small buffer.
      if (this.#inbox !== this.#smallInbox) {
        if (spareInboxes.length < MAX_SPARE_INBOXES) spareInboxes.push(this.#inbox);
        this.#inbox = this.#smallInbox;
      }
      this.#start = this.#end = 0;
    }
    if (this.#start + length > this.#inbox.length) {
      // Move the unparsed bytes to the front, into a bulk buffer if this frame needs it.
      const unparsed = this.#inbox.subarray(this.#start, this.#end);
      if (length > this.#inbox.length) {
        const bulk = spareInboxes.pop() ?? new Uint8Array(BULK_INBOX);
        bulk.set(unparsed);
        this.#inbox = bulk;
      } else {
        this.#inbox.copyWithin(0, this.#start, this.#end);
      }
      this.#end -= this.#start;
      this.#start = 0;
    }
    while (this.#end - this.#start < length) {
      const n = await this.#stream.read(this.#inbox.subarray(this.#end));
      if (n === null) {
        const have = this.#end - this.#start;
        throw have === 0
          ? new FrameError(
            "truncated-stream",
            this.#receiveSeq === 0
              ? "the connection ended before any frame arrived"
              : `the connection ended after frame ${this.#receiveSeq - 1} without an end frame`,
          )
          : new FrameError(
            "truncated-frame",
            `the connection ended inside frame ${this.#receiveSeq}`,
          );
      }
      this.#end += n;
    }
  }

  /** After the end frame, the peer may only close: bytes already behind it are refused. */
  #expectNothingAfterEnd(): void {
    if (this.#end > this.#start) {
      throw new FrameError(
        "data-after-end",
        `${this.#end - this.#start} bytes after the end frame`,
      );
    }
  }
}

function writeHeader(frame: Uint8Array, n: number, seq: number): void {
  const view = new DataView(frame.buffer, frame.byteOffset, HEADER_LENGTH);
  view.setUint32(0, n);
  view.setUint32(4, Math.floor(seq / 2 ** 32));
  view.setUint32(8, seq >>> 0);
}
