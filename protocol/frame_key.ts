/**
 * One direction's session key, and the sealing and opening of one frame under it
 * (docs/PROTOCOL.md §11). `integrity` frames and small `encrypt` frames are sealed with
 * `node:crypto`'s synchronous calls; large `encrypt` frames with WebCrypto, whose work runs on
 * another thread.
 *
 * @module
 */

import { createCipheriv, createDecipheriv, createHmac, timingSafeEqual } from "node:crypto";

/** Bytes of a frame's header: the length and the sequence number (docs/PROTOCOL.md §11). */
export const HEADER_LENGTH = 12;
/** Bytes of a session key: HMAC-SHA-256 or AES-256-GCM (docs/PROTOCOL.md §11). */
export const FRAME_KEY_LENGTH = 32;

const HMAC_TAG_LENGTH = 32;
const GCM_TAG_LENGTH = 16;
/** The longer of the two tags: what a receive buffer must hold beyond the largest payload. */
export const MAX_TAG_LENGTH = HMAC_TAG_LENGTH;

/**
 * `encrypt` payloads up to this size are sealed and opened synchronously. A WebCrypto call hands
 * its work to another thread and back, which costs more than the crypto on a small frame: on one
 * core, 32 B cost 14.0 µs to seal with WebCrypto's AES-256-GCM against 5.7 µs with `node:crypto`'s;
 * at 16 KiB, 107 against 88 µs. At 64 KiB WebCrypto's AES-GCM is the faster (276 against 387 µs),
 * and its work can overlap the connection's I/O on a second core (`bench/crypto_speed.ts`, its
 * "small frames" lines, under `taskset -c 1`). `integrity` frames are always synchronous:
 * `node:crypto`'s HMAC-SHA-256 is the cheaper at every size (32 B: 9.0 against 13.1 µs; 64 KiB: 48.6
 * against 62.9), and server CPU per MB echoed fell from 3.10–3.21 to 2.95–3.08 ms (three alternating
 * bulk runs of `bench/v2_loadgen.mjs`, server pinned).
 */
export const SYNCHRONOUS_LIMIT = 16_384;

/** The session mode a frame key serves: `integrity` (HMAC-SHA-256) or `encrypt` (AES-256-GCM). */
export type FramedMode = "integrity" | "encrypt";

/**
 * One direction's session key, from HKDF (docs/PROTOCOL.md §11): seals the frames one side sends,
 * or opens those it receives. The key's bytes are a private field, handed to `node:crypto` per frame
 * (a `KeyObject` cost more: each call exported it again); an `encrypt` key's WebCrypto twin is
 * imported the first time a large frame needs it, so a connection that never carries one never holds
 * one.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { FrameKey, HEADER_LENGTH } from "./frame_key.ts";
 * const key = new FrameKey("encrypt", crypto.getRandomValues(new Uint8Array(32)));
 * const payload = new TextEncoder().encode("hello");
 * const frame = new Uint8Array(HEADER_LENGTH + payload.length + key.tagLength);
 * await key.seal(frame, payload, 0);
 * assert.deepEqual(await key.open(frame, 0), payload);
 * ```
 */
export class FrameKey {
  /** The mode this key serves. */
  readonly mode: FramedMode;
  /** Bytes of the tag after each payload: 32 (HMAC-SHA-256) or 16 (AES-GCM). */
  readonly tagLength: number;
  readonly #key: Uint8Array<ArrayBuffer>;
  #webCrypto: Promise<CryptoKey> | undefined;

  /** Holds a copy of `bytes` (32) as the key for `mode`; the caller should then overwrite its own. */
  constructor(mode: FramedMode, bytes: Uint8Array) {
    if (bytes.length !== FRAME_KEY_LENGTH) {
      throw new RangeError(`A frame key is ${FRAME_KEY_LENGTH} bytes, not ${bytes.length}`);
    }
    this.mode = mode;
    this.tagLength = mode === "integrity" ? HMAC_TAG_LENGTH : GCM_TAG_LENGTH;
    this.#key = new Uint8Array(bytes);
  }

  /**
   * The same key in WebCrypto: for large `encrypt` frames, and for tests that check a frame
   * independently.
   */
  webCryptoKey(): Promise<CryptoKey> {
    this.#webCrypto ??= crypto.subtle.importKey(
      "raw",
      this.#key,
      this.mode === "integrity" ? { name: "HMAC", hash: "SHA-256" } : "AES-GCM",
      false,
      this.mode === "integrity" ? ["sign", "verify"] : ["encrypt", "decrypt"],
    );
    return this.#webCrypto;
  }

  /**
   * Fills `frame` (its header already written, `HEADER_LENGTH + payload.length + tagLength` bytes)
   * with the payload, in clear or encrypted, and the tag for frame number `seq`.
   */
  async seal(frame: Uint8Array<ArrayBuffer>, payload: Uint8Array, seq: number): Promise<void> {
    const n = payload.length;
    const header = frame.subarray(0, HEADER_LENGTH);
    if (this.mode === "integrity") {
      frame.set(payload, HEADER_LENGTH);
      const covered = frame.subarray(0, HEADER_LENGTH + n);
      frame.set(createHmac("sha256", this.#key).update(covered).digest(), HEADER_LENGTH + n);
    } else if (n <= SYNCHRONOUS_LIMIT) {
      const cipher = createCipheriv("aes-256-gcm", this.#key, nonce(seq));
      cipher.setAAD(header);
      frame.set(cipher.update(payload), HEADER_LENGTH);
      cipher.final();
      frame.set(cipher.getAuthTag(), HEADER_LENGTH + n);
    } else {
      const sealed = await crypto.subtle.encrypt(
        { name: "AES-GCM", iv: nonce(seq), additionalData: header },
        await this.webCryptoKey(),
        payload as Uint8Array<ArrayBuffer>, // WebCrypto copies its input: no copy of our own
      );
      frame.set(new Uint8Array(sealed), HEADER_LENGTH);
    }
  }

  /**
   * The payload of `frame` (header, body and tag, exactly) if its tag verifies as frame number
   * `seq`, else null. An `integrity` payload is a view into `frame`; an `encrypt` one is new memory.
   */
  async open(frame: Uint8Array<ArrayBuffer>, seq: number): Promise<Uint8Array | null> {
    const n = frame.length - HEADER_LENGTH - this.tagLength;
    if (n < 0) return null; // shorter than a header and a tag: no frame at all
    const header = frame.subarray(0, HEADER_LENGTH);
    const tag = frame.subarray(HEADER_LENGTH + n);
    if (this.mode === "integrity") {
      const covered = frame.subarray(0, HEADER_LENGTH + n);
      const expected = createHmac("sha256", this.#key).update(covered).digest();
      return timingSafeEqual(expected, tag)
        ? frame.subarray(HEADER_LENGTH, HEADER_LENGTH + n)
        : null;
    }
    try {
      if (n <= SYNCHRONOUS_LIMIT) {
        const decipher = createDecipheriv("aes-256-gcm", this.#key, nonce(seq));
        decipher.setAAD(header);
        decipher.setAuthTag(tag);
        const payload = decipher.update(frame.subarray(HEADER_LENGTH, HEADER_LENGTH + n));
        decipher.final(); // throws unless the tag verifies: the payload is not used before
        // A plain Uint8Array over the same memory: a Buffer's slice() would not copy.
        return new Uint8Array(payload.buffer, payload.byteOffset, payload.length);
      }
      return new Uint8Array(
        await crypto.subtle.decrypt(
          { name: "AES-GCM", iv: nonce(seq), additionalData: header },
          await this.webCryptoKey(),
          frame.subarray(HEADER_LENGTH),
        ),
      );
    } catch {
      return null;
    }
  }
}

/** The GCM nonce for `seq`: four zero bytes, then seq (docs/PROTOCOL.md §11). */
function nonce(seq: number): Uint8Array<ArrayBuffer> {
  const iv = new Uint8Array(12);
  const view = new DataView(iv.buffer);
  view.setUint32(4, Math.floor(seq / 2 ** 32));
  view.setUint32(8, seq >>> 0);
  return iv;
}
