/** The handshake module against docs/PROTOCOL.md §1-§3 and RFC 2202. */

import assert from "node:assert/strict";
import { authenticateClient } from "../protocol/handshake.ts";
import {
  CHALLENGE_LENGTH,
  ChallengeError,
  createChallenge,
  readChallenge,
} from "../protocol/challenge.ts";
import { ANSWER_LENGTH, computeAnswer, decodeAnswer, verifyAnswer } from "../protocol/v1.ts";
import { SecretKeys } from "../protocol/keys.ts";
import { type ByteStream, writeAll } from "../_io.ts";
import { decoder, encoder } from "./_helpers.ts";

function hex(text: string): Uint8Array {
  return new Uint8Array(text.match(/../g)!.map((pair) => parseInt(pair, 16)));
}

// RFC 2202 §3, HMAC-SHA1 test cases 1 and 2.
const RFC_2202 = [
  {
    name: "test case 1",
    key: new Uint8Array(20).fill(0x0b),
    data: encoder.encode("Hi There"),
    digest: "b617318655057264e28bc0b6fb378c8ef146be00",
  },
  {
    name: "test case 2",
    key: encoder.encode("Jefe"),
    data: encoder.encode("what do ya want for nothing?"),
    digest: "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79",
  },
];

for (const vector of RFC_2202) {
  Deno.test(`computeAnswer() gives the RFC 2202 HMAC-SHA1 digest, ${vector.name}`, async () => {
    const keys = await SecretKeys.import(vector.key);
    const answer = computeAnswer(keys, vector.data);
    assert.equal(decoder.decode(answer), vector.digest);
  });

  Deno.test(`verifyAnswer() accepts the RFC 2202 digest, ${vector.name}`, async () => {
    const keys = await SecretKeys.import(vector.key);
    const outcome = verifyAnswer(keys, vector.data, encoder.encode(vector.digest));
    assert.deepEqual(outcome, { authenticated: true, protocol: 1 });
  });
}

Deno.test("computeAnswer() is 40 lowercase hex ASCII bytes (PROTOCOL.md §2)", async () => {
  const keys = await SecretKeys.import(encoder.encode("k"));
  for (let i = 0; i < 50; i++) {
    const answer = computeAnswer(keys, createChallenge());
    assert.equal(answer.length, ANSWER_LENGTH);
    assert.match(decoder.decode(answer), /^[0-9a-f]{40}$/);
  }
});

Deno.test("createChallenge() draws 32 fresh bytes each time (PROTOCOL.md §1)", () => {
  const seen = new Set<string>();
  for (let i = 0; i < 100; i++) {
    const challenge = createChallenge();
    assert.equal(challenge.length, CHALLENGE_LENGTH);
    seen.add(challenge.join(","));
  }
  assert.equal(seen.size, 100);
});

Deno.test("verifyAnswer() accepts uppercase and mixed-case hex (PROTOCOL.md §2)", async () => {
  const [vector] = RFC_2202;
  const keys = await SecretKeys.import(vector.key);
  const mixed = [...vector.digest].map((c, i) => i % 2 ? c.toUpperCase() : c).join("");
  for (const answer of [vector.digest.toUpperCase(), mixed]) {
    assert.deepEqual(verifyAnswer(keys, vector.data, encoder.encode(answer)), {
      protocol: 1,
      authenticated: true,
    });
  }
});

Deno.test("verifyAnswer() rejects with a specific reason (PROTOCOL.md §3)", async (t) => {
  const [vector] = RFC_2202;
  const keys = await SecretKeys.import(vector.key);
  const check = (answer: string) => verifyAnswer(keys, vector.data, encoder.encode(answer));

  await t.step("too short: incomplete-answer", async () => {
    const outcome = await check(vector.digest.slice(0, 39));
    assert.equal(outcome.authenticated, false);
    assert.equal(!outcome.authenticated && outcome.reason, "incomplete-answer");
  });
  await t.step("empty: incomplete-answer", async () => {
    const outcome = await check("");
    assert.equal(!outcome.authenticated && outcome.reason, "incomplete-answer");
  });
  await t.step("non-hex characters: malformed-answer", async () => {
    for (const bad of ["g", "G", " ", "-", "\n", "\0", ":", "@", "`", "/"]) {
      const outcome = await check(bad + vector.digest.slice(1));
      assert.equal(!outcome.authenticated && outcome.reason, "malformed-answer", `byte ${bad}`);
    }
  });
  await t.step("a different digest: wrong-digest", async () => {
    const flipped = (vector.digest[0] === "0" ? "1" : "0") + vector.digest.slice(1);
    const outcome = await check(flipped);
    assert.equal(!outcome.authenticated && outcome.reason, "wrong-digest");
  });
  await t.step("the right digest of another key: wrong-digest", async () => {
    const other = computeAnswer(await SecretKeys.import(encoder.encode("x")), vector.data);
    const outcome = verifyAnswer(keys, vector.data, other);
    assert.equal(!outcome.authenticated && outcome.reason, "wrong-digest");
  });
});

Deno.test("decodeAnswer() returns null for anything but 40 hex characters", () => {
  assert.deepEqual(
    decodeAnswer(encoder.encode("00ff".repeat(10))),
    hex("00ff".repeat(10)),
  );
  assert.equal(decodeAnswer(encoder.encode("0".repeat(41))), null);
  assert.equal(decodeAnswer(encoder.encode("0".repeat(39) + "\u00e9")), null);
});

Deno.test("decodeAnswer() never throws and accepts exactly the hex strings, over random input", () => {
  const hexByte = (b: number) => /[0-9a-fA-F]/.test(String.fromCharCode(b));
  for (let i = 0; i < 20_000; i++) {
    const length = i % 3 === 0 ? ANSWER_LENGTH : Math.floor(Math.random() * 80);
    const bytes = crypto.getRandomValues(new Uint8Array(length));
    // Bias half the inputs towards hex so both outcomes are exercised.
    if (i % 2 === 0) {
      for (let j = 0; j < length; j++) {
        bytes[j] = "0123456789abcdefABCDEF".charCodeAt(bytes[j] % 22);
      }
      if (length > 0 && i % 4 === 0) bytes[bytes[0] % length] = Math.random() * 256;
    }
    const expected = length === ANSWER_LENGTH && bytes.every(hexByte);
    assert.equal(decodeAnswer(bytes) !== null, expected);
  }
});

Deno.test("SecretKeys.import() refuses an empty secret with a RangeError", async () => {
  await assert.rejects(SecretKeys.import(new Uint8Array(0)), RangeError);
});

/** A stream fed from a fixed input that records what was written and what was consumed. */
class ScriptedStream implements ByteStream {
  written: number[] = [];
  consumed = 0;
  #input: Uint8Array;
  #chunkSize: number;

  /** `chunkSize` caps each read, to model TCP delivering the input in pieces. */
  constructor(input: Uint8Array, chunkSize = Infinity) {
    this.#input = input;
    this.#chunkSize = chunkSize;
  }

  read(buffer: Uint8Array): Promise<number | null> {
    if (this.#input.length === 0) return Promise.resolve(null);
    // Hands over as much as the reader asks for: a reader that asks for too much gets it.
    const n = Math.min(buffer.length, this.#input.length, this.#chunkSize);
    buffer.set(this.#input.subarray(0, n));
    this.#input = this.#input.subarray(n);
    this.consumed += n;
    return Promise.resolve(n);
  }

  write(data: Uint8Array): Promise<number> {
    this.written.push(...data);
    return Promise.resolve(data.length);
  }
}

Deno.test("authenticateClient() reads 40 bytes and no more before deciding (PROTOCOL.md §3)", async () => {
  const keys = await SecretKeys.import(encoder.encode("k"));
  // Far more than 40 bytes are available; the server must take only its 40.
  for (const chunkSize of [1, 7, 40, Infinity]) {
    const stream = new ScriptedStream(new Uint8Array(1000).fill(0x61), chunkSize);
    const outcome = await authenticateClient(stream, { keys });
    assert.equal(stream.consumed, ANSWER_LENGTH, `chunks of ${chunkSize}`);
    assert.equal(stream.written.length, CHALLENGE_LENGTH);
    assert.equal(!outcome.authenticated && outcome.reason, "wrong-digest");
  }
});

Deno.test("readChallenge() then computeAnswer() sends an answer verifyAnswer() accepts", async () => {
  const keys = await SecretKeys.import(encoder.encode("shared"));
  const challenge = createChallenge();
  const client = new ScriptedStream(challenge, 5);
  await writeAll(client, computeAnswer(keys, await readChallenge(client)));
  assert.equal(client.written.length, ANSWER_LENGTH);
  const outcome = verifyAnswer(keys, challenge, new Uint8Array(client.written));
  assert.deepEqual(outcome, { authenticated: true, protocol: 1 });
});

Deno.test("readChallenge() throws ChallengeError on a short challenge", async () => {
  await assert.rejects(
    readChallenge(new ScriptedStream(new Uint8Array(31))),
    (error: unknown) => error instanceof ChallengeError && /after 31 of 32/.test(error.message),
  );
});
