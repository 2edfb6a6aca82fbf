/** The streaming upper-caser against docs/PROTOCOL.md §4. */

import assert from "node:assert/strict";
import { writeAll } from "../_io.ts";
import { upperCaseEcho, UpperCaseTransformer } from "../server/upper_case_echo.ts";
import { concat, decoder, encoder, readExactly, ReadRecorder, tcpPair } from "./_helpers.ts";

/** Runs `chunks` through a fresh transformer, copying each (transform may work in place). */
function transformAll(chunks: Uint8Array[]): Uint8Array {
  const upper = new UpperCaseTransformer();
  const out: Uint8Array[] = chunks.map((chunk) => upper.transform(chunk.slice()).slice());
  out.push(upper.flush());
  return concat(out);
}

/** What the whole input must become: WHATWG decoding (U+FFFD), then full Unicode upper-casing. */
function expected(bytes: Uint8Array): string {
  return new TextDecoder().decode(bytes).toUpperCase();
}

const MIXED = "aß€😀z ǆ ﬁ İ ﬀ ŉ ΐ é";

Deno.test("UpperCaseTransformer upper-cases with full Unicode case mapping", () => {
  const cases: [string, string][] = [
    ["hello, world", "HELLO, WORLD"],
    ["straße", "STRASSE"],
    ["ﬁne", "FINE"],
    ["ǆ", "Ǆ"],
    ["ŉ", "ʼN"],
    ["αβγ", "ΑΒΓ"],
    ["😀 emoji stay", "😀 EMOJI STAY"],
    ["", ""],
  ];
  for (const [input, output] of cases) {
    assert.equal(decoder.decode(transformAll([encoder.encode(input)])), output, input);
  }
});

Deno.test("UpperCaseTransformer keeps a character whole when split at any byte boundary", () => {
  const bytes = encoder.encode(MIXED);
  for (let i = 0; i <= bytes.length; i++) {
    const output = transformAll([bytes.subarray(0, i), bytes.subarray(i)]);
    assert.equal(decoder.decode(output), MIXED.toUpperCase(), `split at ${i}`);
  }
});

Deno.test("UpperCaseTransformer keeps characters whole when split at every pair of boundaries", () => {
  const text = "xß€😀y";
  const bytes = encoder.encode(text);
  for (let i = 0; i <= bytes.length; i++) {
    for (let j = i; j <= bytes.length; j++) {
      const output = transformAll([bytes.subarray(0, i), bytes.subarray(i, j), bytes.subarray(j)]);
      assert.equal(decoder.decode(output), text.toUpperCase(), `split at ${i} and ${j}`);
    }
  }
});

Deno.test("UpperCaseTransformer remembers a partial character begun chunks earlier", () => {
  // EF 92 is an incomplete three-byte sequence whose lead arrived in an earlier chunk; the ASCII
  // chunk after it must still go through the decoder, which replaces EF 92 first.
  const chunks = [[0x61, 0xef], [0x92], [0x61, 0x62]].map((bytes) => new Uint8Array(bytes));
  assert.equal(decoder.decode(transformAll(chunks)), "A\uFFFDAB");
  assert.equal(decoder.decode(transformAll(chunks)), expected(concat(chunks)));
});

Deno.test("UpperCaseTransformer handles one byte per chunk", () => {
  const bytes = encoder.encode(MIXED);
  const chunks = Array.from(bytes, (byte) => new Uint8Array([byte]));
  assert.equal(decoder.decode(transformAll(chunks)), MIXED.toUpperCase());
});

Deno.test("UpperCaseTransformer turns invalid UTF-8 into U+FFFD as WHATWG decoding does", () => {
  const samples = [
    [0xff],
    [0x61, 0x80, 0x62],
    [0xc3],
    [0xe2, 0x82],
    [0xf0, 0x9f, 0x98],
    [0xe0, 0x80, 0x61],
    [0xed, 0xa0, 0x80],
    [0xf4, 0x90, 0x80, 0x80],
    [0xc0, 0xaf, 0x7a],
    // A truncated character followed by plain ASCII: the ASCII chunk must not skip the decoder.
    [0xc3, 0x61],
    [0x61, 0xe2, 0x82, 0x61, 0x62],
    [0xf0, 0x9f, 0x98, 0x41],
  ].map((sample) => new Uint8Array(sample));
  for (const sample of samples) {
    for (let i = 0; i <= sample.length; i++) {
      const output = transformAll([sample.subarray(0, i), sample.subarray(i)]);
      assert.equal(decoder.decode(output), expected(sample), `[${sample}] split at ${i}`);
    }
  }
});

Deno.test("UpperCaseTransformer matches whole-input decoding over random byte streams", () => {
  for (let round = 0; round < 2_000; round++) {
    // Mostly text with some raw bytes: exercises the ASCII fast path, the decoder and the switch.
    const parts: Uint8Array[] = [];
    for (let k = 0; k < 8; k++) {
      const roll = Math.random();
      if (roll < 0.4) parts.push(encoder.encode("abc xyz"));
      else if (roll < 0.8) parts.push(encoder.encode("ß€😀é"));
      else parts.push(crypto.getRandomValues(new Uint8Array(1 + Math.floor(Math.random() * 4))));
    }
    const bytes = concat(parts);
    const chunks: Uint8Array[] = [];
    for (let at = 0; at < bytes.length;) {
      const size = 1 + Math.floor(Math.random() * 6);
      chunks.push(bytes.subarray(at, at + size));
      at += size;
    }
    assert.equal(decoder.decode(transformAll(chunks)), expected(bytes), `input [${bytes}]`);
  }
});

Deno.test("UpperCaseTransformer upper-cases an ASCII chunk in place and returns it", () => {
  const chunk = encoder.encode("abc-XYZ");
  const output = new UpperCaseTransformer().transform(chunk);
  assert.equal(output, chunk);
  assert.equal(decoder.decode(chunk), "ABC-XYZ");
});

Deno.test("UpperCaseTransformer's word-at-a-time ASCII path agrees with toUpperCase", () => {
  // Every ASCII byte value, at every alignment and length around the word loop's threshold.
  const all = Uint8Array.from({ length: 128 * 4 }, (_, i) => i % 128);
  for (let offset = 0; offset < 4; offset++) {
    for (const length of [63, 64, 65, 67, 128, 511]) {
      const backing = new Uint8Array(offset + length);
      backing.set(all.subarray(0, length), offset);
      const chunk = backing.subarray(offset);
      const expected = decoder.decode(chunk).toUpperCase();
      const output = new UpperCaseTransformer().transform(chunk);
      assert.equal(decoder.decode(output), expected, `offset ${offset}, length ${length}`);
    }
  }
  // A non-ASCII byte deep in a long chunk: the word loop hands over to the decoder correctly.
  for (let at = 60; at < 80; at++) {
    const bytes = new Uint8Array(200).fill(0x71); // "q"
    bytes.set(encoder.encode("é"), at);
    assert.equal(decoder.decode(transformAll([bytes])), expected(bytes), `é at ${at}`);
  }
});

Deno.test("UpperCaseTransformer gives back text, not bytes: the README's examples, byte for byte", () => {
  const hex = (bytes: Uint8Array) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0"));
  const cases: [number[], string[]][] = [
    // ASCII one for one: only a-z change, control bytes and NUL pass.
    [[0x61, 0x7a, 0x41, 0x30, 0x00, 0x0a, 0x7f], ["41", "5a", "41", "30", "00", "0a", "7f"]],
    // Latin-1 "café": E9 is not UTF-8 and comes back as U+FFFD, two bytes longer.
    [[0x63, 0x61, 0x66, 0xe9], ["43", "41", "46", "ef", "bf", "bd"]],
    // "ß" (C3 9F) becomes "SS"; a lone C3 at the end of the stream becomes U+FFFD.
    [[0xc3, 0x9f], ["53", "53"]],
    [[0x61, 0xc3], ["41", "ef", "bf", "bd"]],
  ];
  for (const [input, output] of cases) {
    assert.deepEqual(
      hex(transformAll([new Uint8Array(input)])),
      output,
      `[${hex(new Uint8Array(input))}]`,
    );
  }
});

Deno.test("upperCaseEcho waits with a 1 KiB buffer once a burst has been echoed (real socket)", async () => {
  using pair = await tcpPair();
  const server = new ReadRecorder(pair.server);
  const echoing = upperCaseEcho(server);
  let total = 0;
  for (const size of [64 * 1024, 1024 * 1024 + 3, 3_000]) {
    const burst = new Uint8Array(size).fill(0x61);
    const [, echoed] = await Promise.all([
      writeAll(pair.client, burst),
      readExactly(pair.client, size),
    ]);
    assert.ok(
      echoed.every((byte) => byte === 0x41),
      `the ${size}-byte burst came back upper-cased`,
    );
    // A read that exactly fills its buffer is taken as a sign that more is waiting, and how TCP
    // splits a burst varies: one more byte ends each burst with a short read, as a pause does.
    await writeAll(pair.client, encoder.encode("x"));
    assert.equal(decoder.decode(await readExactly(pair.client, 1)), "X");
    total += size + 1;
    assert.equal(await server.readAfter(total), 1024, `the read waiting after ${size} bytes`);
  }
  assert.ok(server.reads.some((read) => read.size === 256 * 1024), "the bulk used 256 KiB reads");
  await pair.client.closeWrite();
  await echoing;
});
