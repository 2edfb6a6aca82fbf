// ReadBuffers (_read_buffers.ts): the echo's and the pipe's choice of each read's buffer.

import assert from "node:assert/strict";
import { ReadBuffers } from "../_read_buffers.ts";

/** Hands `n` bytes (or a full buffer) to `reads`, and returns the next read's buffer size. */
function afterRead(reads: ReadBuffers, n: number | "full"): number {
  reads.took(n === "full" ? reads.buffer.length : n);
  return reads.buffer.length;
}

Deno.test("ReadBuffers grows while reads fill their buffer, to 256 KiB, and then reuses it", () => {
  const reads = new ReadBuffers(256 * 1024);
  assert.equal(reads.buffer.length, 1024);
  const sizes = Array.from({ length: 9 }, () => afterRead(reads, "full"));
  assert.deepEqual(sizes, [2, 4, 8, 16, 32, 64, 128, 256, 256].map((kib) => kib * 1024));
  const largest = reads.buffer;
  reads.took(largest.length);
  assert.equal(reads.buffer, largest, "a full largest buffer serves the next read too");
});

Deno.test("ReadBuffers waits with 1 KiB after a short read, whatever the burst before it", () => {
  const reads = new ReadBuffers(256 * 1024);
  for (let i = 0; i < 9; i++) afterRead(reads, "full"); // a bulk transfer, at 256 KiB
  assert.equal(afterRead(reads, 200_000), 1024, "the read that may wait gets the small buffer");
  // The next burst is back at 256 KiB after one small read: its rest would have needed that much.
  assert.equal(afterRead(reads, "full"), 256 * 1024);
  assert.equal(afterRead(reads, 1), 1024);
});

Deno.test("ReadBuffers sizes the next burst's bulk buffer to hold the last burst", () => {
  const reads = new ReadBuffers(256 * 1024);
  // A 64 KiB burst, the first: 1, 2, 4, … 32 KiB reads fill, the 64 KiB one takes the last 1 KiB.
  for (let i = 0; i < 6; i++) afterRead(reads, "full");
  assert.equal(afterRead(reads, 1024), 1024);
  // Every 64 KiB burst after it takes two reads: 1 KiB, then 63 KiB into a 64 KiB buffer.
  for (let burst = 0; burst < 3; burst++) {
    assert.equal(afterRead(reads, "full"), 64 * 1024);
    assert.equal(afterRead(reads, 63 * 1024), 1024);
  }
  // A bulk transfer: 256 KiB reads. Then messages of exactly 1 KiB, which fill the small buffer,
  // so a bigger read waits after each: once one has come back short, that read is sized to them.
  for (let i = 0; i < 4; i++) afterRead(reads, "full");
  assert.equal(afterRead(reads, 100), 1024);
  assert.equal(afterRead(reads, "full"), 256 * 1024, "the first message after the bulk");
  assert.equal(afterRead(reads, 1024), 1024, "the second message");
  assert.equal(afterRead(reads, "full"), 2 * 1024, "the bulk buffer now fits the messages");
});

Deno.test("ReadBuffers grows to the maximum it was given, the pipe's 64 KiB", () => {
  const reads = new ReadBuffers(64 * 1024);
  const sizes = Array.from({ length: 8 }, () => afterRead(reads, "full"));
  assert.deepEqual(sizes, [2, 4, 8, 16, 32, 64, 64, 64].map((kib) => kib * 1024));
  assert.equal(afterRead(reads, 10), 1024);
  assert.equal(afterRead(reads, "full"), 64 * 1024, "the next burst's buffer stays within it");
});

Deno.test("ReadBuffers with a maximum of 1 KiB never grows", () => {
  const reads = new ReadBuffers(1024);
  assert.equal(afterRead(reads, "full"), 1024);
  assert.equal(afterRead(reads, 1), 1024);
  assert.equal(afterRead(reads, "full"), 1024);
});
