/**
 * The server's side of the handshake, whichever the version: sends the challenge, reads the first
 * 40 answer bytes, and hands a v1 answer to `v1.ts` or a v2 hello (first byte `{`) to `v2.ts`
 * (docs/PROTOCOL.md §1, §8).
 *
 * @module
 */

import { type ByteStream, readFull, writeAll } from "../_io.ts";
import { createChallenge } from "./challenge.ts";
import type { AuthenticationPolicy, HandshakeOutcome } from "./outcome.ts";
import { ANSWER_LENGTH, decodeAnswer, verifyAnswerUnderPolicy } from "./v1.ts";
import { HELLO_MARKER, verifyHello } from "./v2.ts";

/**
 * Runs the server's side of the handshake: sends a challenge, reads the 40-byte v1 answer or the
 * v2 hello (never more), and checks it, against the previous secret too while a secret is being
 * rotated. A v2 client is told the outcome. Deadlines are the caller's: close the stream to
 * abandon a handshake.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { authenticateClient } from "./handshake.ts";
 * import { SecretKeys } from "./keys.ts";
 * const keys = await SecretKeys.import(new TextEncoder().encode("correct horse battery staple"));
 * // A stream that ends at once: the client hung up without answering.
 * const hungUp = { read: () => Promise.resolve(null), write: (b: Uint8Array) => Promise.resolve(b.length) };
 * const outcome = await authenticateClient(hungUp, { keys });
 * assert.ok(!outcome.authenticated && outcome.reason === "incomplete-answer");
 * ```
 */
export async function authenticateClient(
  stream: ByteStream,
  policy: AuthenticationPolicy,
): Promise<HandshakeOutcome> {
  const challenge = createChallenge();
  await writeAll(stream, challenge);
  const answer = new Uint8Array(ANSWER_LENGTH);
  const received = await readFull(stream, answer);
  if (received > 0 && answer[0] === HELLO_MARKER) {
    if (received < ANSWER_LENGTH) {
      return {
        authenticated: false,
        reason: "incomplete-hello",
        detail: `the connection ended after ${received} hello bytes`,
        answer: answer.subarray(0, received),
      };
    }
    return verifyHello(stream, challenge, answer, policy);
  }
  // Only a well-formed v1 answer is "v1": a hang-up or garbage gets the reason it would anyway.
  const refusal = v1Refusal(policy);
  if (refusal !== undefined && decodeAnswer(answer.subarray(0, received)) !== null) {
    return {
      authenticated: false,
      reason: "v1-refused",
      detail: `a v1 answer, but ${refusal}`,
      answer: answer.subarray(0, received),
    };
  }
  return verifyAnswerUnderPolicy(policy, challenge, answer.subarray(0, received));
}

/** Why the policy refuses v1 answers, if it does (docs/PROTOCOL.md §3, §8, §12). */
function v1Refusal(policy: AuthenticationPolicy): string | undefined {
  if (policy.require !== undefined) {
    return `this server requires ${policy.require === "v2" ? "protocol v2" : policy.require}`;
  }
  if (policy.requireForwardSecrecy) return "this server requires forward secrecy";
  // A v1 answer is HMAC-SHA1: a digest list without sha1 forbids it too.
  if (policy.digests !== undefined && !policy.digests.includes("sha1")) {
    return "this server's digests leave out sha1, which v1 answers use";
  }
  return undefined;
}
