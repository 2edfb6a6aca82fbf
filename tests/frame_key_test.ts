/**
 * One frame's seal and open (docs/PROTOCOL.md §11), on both sides of the size at which an `encrypt`
 * key changes engines (`integrity` is always `node:crypto`'s): every frame is checked against
 * WebCrypto called directly, so a nonce, AAD or tag mistake in either path fails here, and a
 * tampered frame is refused by both.
 */

import assert from "node:assert/strict";
import { FrameKey, HEADER_LENGTH, SYNCHRONOUS_LIMIT } from "../protocol/frame_key.ts";

const SIZES = [0, 1, 1_000, SYNCHRONOUS_LIMIT, SYNCHRONOUS_LIMIT + 1, 65_536];

/** A frame of `payload` sealed as frame number `seq` under `key`, with its §11 header. */
async function sealed(key: FrameKey, payload: Uint8Array, seq: number) {
  const frame = new Uint8Array(HEADER_LENGTH + payload.length + key.tagLength);
  const view = new DataView(frame.buffer);
  view.setUint32(0, payload.length);
  view.setUint32(4, Math.floor(seq / 2 ** 32));
  view.setUint32(8, seq >>> 0);
  await key.seal(frame, payload, seq);
  return frame;
}

/** The payload of `frame` as WebCrypto alone opens it, without the frame key's own code. */
async function openedByWebCrypto(
  mode: "integrity" | "encrypt",
  raw: Uint8Array<ArrayBuffer>,
  frame: Uint8Array<ArrayBuffer>,
): Promise<Uint8Array> {
  const header = frame.subarray(0, HEADER_LENGTH);
  if (mode === "integrity") {
    const key = await crypto.subtle.importKey(
      "raw",
      raw,
      { name: "HMAC", hash: "SHA-256" },
      false,
      [
        "verify",
      ],
    );
    const covered = frame.subarray(0, frame.length - 32);
    assert.ok(await crypto.subtle.verify("HMAC", key, frame.subarray(frame.length - 32), covered));
    return covered.subarray(HEADER_LENGTH);
  }
  const key = await crypto.subtle.importKey("raw", raw, "AES-GCM", false, ["decrypt"]);
  const iv = new Uint8Array(12);
  iv.set(header.subarray(4), 4); // the nonce is four zero bytes, then the sequence number
  return new Uint8Array(
    await crypto.subtle.decrypt(
      { name: "AES-GCM", iv, additionalData: header },
      key,
      frame.subarray(HEADER_LENGTH),
    ),
  );
}

for (const mode of ["integrity", "encrypt"] as const) {
  Deno.test(`${mode}: each size seals as WebCrypto opens it, and opens what it sealed`, async () => {
    const raw = crypto.getRandomValues(new Uint8Array(32));
    const key = new FrameKey(mode, raw);
    for (const [index, size] of SIZES.entries()) {
      const seq = 2 ** 32 + index; // a sequence number that needs both halves of the nonce
      const payload = crypto.getRandomValues(new Uint8Array(size));
      const frame = await sealed(key, payload, seq);
      if (mode === "encrypt" && size > 0) {
        assert.notDeepEqual(frame.subarray(HEADER_LENGTH, HEADER_LENGTH + size), payload);
      }
      assert.deepEqual(await openedByWebCrypto(mode, raw, frame), payload, `${size} bytes`);
      assert.deepEqual(await key.open(frame, seq), payload, `${size} bytes`);
    }
  });

  Deno.test(`${mode}: a flipped bit or another sequence number is refused at each size`, async () => {
    const key = new FrameKey(mode, crypto.getRandomValues(new Uint8Array(32)));
    for (const size of SIZES) {
      const frame = await sealed(key, new Uint8Array(size).fill(0x61), 7);
      for (const index of [0, 11, HEADER_LENGTH + Math.floor(size / 2), frame.length - 1]) {
        const tampered = frame.slice();
        tampered[index] ^= 0x01;
        assert.equal(await key.open(tampered, 7), null, `${size} bytes, bit flipped at ${index}`);
      }
      if (mode === "encrypt") {
        // The nonce comes from the sequence number it is opened as: frame 7 opened as frame 8.
        assert.equal(await key.open(frame, 8), null, `${size} bytes as another frame`);
      }
    }
  });
}

Deno.test("a frame shorter than a header and a tag is refused, not thrown on", async () => {
  for (const mode of ["integrity", "encrypt"] as const) {
    const key = new FrameKey(mode, crypto.getRandomValues(new Uint8Array(32)));
    for (const length of [0, 10, HEADER_LENGTH + key.tagLength - 1]) {
      assert.equal(await key.open(new Uint8Array(length), 0), null, `${mode}, ${length} bytes`);
    }
  }
});

Deno.test("a frame key is 32 bytes", () => {
  assert.throws(() => new FrameKey("encrypt", new Uint8Array(16)), /32 bytes, not 16/);
});
