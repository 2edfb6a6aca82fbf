/**
 * Protocol v1, the Python tutorial's: the client answers the challenge with the hex HMAC-SHA1 of
 * it under the secret (docs/PROTOCOL.md §2, §3), or, while a server migrates the tutorial's own
 * clients, with `sha1-prefix`, the hex SHA-1 of the secret and the challenge (§3.1).
 *
 * @module
 */

import { equalInConstantTime, type SecretKeys } from "./keys.ts";
import type { AuthenticationPolicy, HandshakeOutcome } from "./outcome.ts";

/** Length in bytes of the client's answer: 40 hex characters (docs/PROTOCOL.md §2). */
export const ANSWER_LENGTH = 40;

const DIGEST_LENGTH = 20;

/**
 * Computes the client's answer to a challenge: the lowercase hex of HMAC-SHA1 (docs/PROTOCOL.md §2).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { computeAnswer } from "./v1.ts";
 * import { SecretKeys } from "./keys.ts";
 * const keys = await SecretKeys.import(new TextEncoder().encode("correct horse battery staple"));
 * const answer = computeAnswer(keys, new Uint8Array(32));
 * assert.ok(answer.length === 40);
 * ```
 * @returns 40 ASCII bytes, ready to send.
 */
export function computeAnswer(keys: SecretKeys, challenge: Uint8Array): Uint8Array<ArrayBuffer> {
  return encodeHex(keys.mac("sha1", challenge));
}

/**
 * The tutorial's answer, `hex(sha1(secret + challenge))`, for clients being migrated (§3.1).
 * The keys must have been imported with `{ sha1Prefix: true }`.
 */
export function computeSha1PrefixAnswer(
  keys: SecretKeys,
  challenge: Uint8Array,
): Uint8Array<ArrayBuffer> {
  return encodeHex(keys.sha1PrefixDigest(challenge));
}

/** A 20-byte digest as 40 lowercase hex characters (docs/PROTOCOL.md §2). */
function encodeHex(digest: Uint8Array): Uint8Array<ArrayBuffer> {
  const answer = new Uint8Array(ANSWER_LENGTH);
  for (let i = 0; i < DIGEST_LENGTH; i++) {
    answer[2 * i] = HEX_DIGITS[digest[i] >> 4];
    answer[2 * i + 1] = HEX_DIGITS[digest[i] & 0x0f];
  }
  return answer;
}

const HEX_DIGITS = new TextEncoder().encode("0123456789abcdef");

/** Value of an ASCII hex digit, upper or lower case; -1 for any other byte. */
function hexValue(byte: number): number {
  if (byte >= 0x30 && byte <= 0x39) return byte - 0x30; // 0-9
  const lower = byte | 0x20; // folds A-F onto a-f and leaves no other byte in a-f
  if (lower >= 0x61 && lower <= 0x66) return lower - 0x61 + 10;
  return -1;
}

/**
 * Decodes a 40-character hex answer into the 20-byte digest it claims.
 *
 * @returns the digest, or `null` when `answer` is not exactly 40 hex characters.
 */
export function decodeAnswer(answer: Uint8Array): Uint8Array<ArrayBuffer> | null {
  if (answer.length !== ANSWER_LENGTH) return null;
  const digest = new Uint8Array(DIGEST_LENGTH);
  for (let i = 0; i < DIGEST_LENGTH; i++) {
    const high = hexValue(answer[2 * i]);
    const low = hexValue(answer[2 * i + 1]);
    if (high < 0 || low < 0) return null;
    digest[i] = (high << 4) | low;
  }
  return digest;
}

/**
 * Checks a client's answer against the challenge it was given under one secret, in constant time.
 *
 * @returns the outcome, with the reason for a rejection (docs/PROTOCOL.md §3).
 */
export function verifyAnswer(
  keys: SecretKeys,
  challenge: Uint8Array,
  answer: Uint8Array,
): HandshakeOutcome {
  if (answer.length < ANSWER_LENGTH) {
    return {
      authenticated: false,
      reason: "incomplete-answer",
      detail: `the connection ended after ${answer.length} of ${ANSWER_LENGTH} answer bytes`,
      answer,
    };
  }
  const digest = decodeAnswer(answer);
  if (digest === null) {
    return {
      authenticated: false,
      reason: "malformed-answer",
      detail: `the answer is not ${ANSWER_LENGTH} hexadecimal characters`,
      answer,
    };
  }
  // A hand-written comparison would leak, through its timing, how much of the answer is right.
  const valid = equalInConstantTime(keys.mac("sha1", challenge), digest);
  return valid ? { authenticated: true, protocol: 1 } : {
    authenticated: false,
    reason: "wrong-digest",
    detail: "the answer is not the HMAC of the challenge under this server's secret",
    answer,
  };
}

/** Checks a v1 answer under each secret the policy accepts, then as `sha1-prefix` if allowed. */
export function verifyAnswerUnderPolicy(
  policy: AuthenticationPolicy,
  challenge: Uint8Array,
  answer: Uint8Array,
): HandshakeOutcome {
  const outcome = checkUnderPolicy(policy, challenge, answer);
  const checked = outcome.authenticated || outcome.reason === "wrong-digest";
  if (checked && policy.afterCheck && !policy.afterCheck(outcome.authenticated)) {
    return {
      authenticated: false,
      reason: "throttled",
      detail: "this address is cooling down: the answer's verdict is withheld",
      answer,
    };
  }
  return outcome;
}

function checkUnderPolicy(
  policy: AuthenticationPolicy,
  challenge: Uint8Array,
  answer: Uint8Array,
): HandshakeOutcome {
  const outcome = verifyAnswer(policy.keys, challenge, answer);
  if (outcome.authenticated || outcome.reason !== "wrong-digest") return outcome;
  // During a rotation, and for sha1-prefix clients, further checks, each as constant-time as the first.
  if (policy.previousKeys) {
    const previous = verifyAnswer(policy.previousKeys, challenge, answer);
    if (previous.authenticated) return { authenticated: true, protocol: 1, previousSecret: true };
  }
  if (policy.sha1Prefix) {
    const digest = decodeAnswer(answer)!; // verifyAnswer found it well-formed
    for (const keys of [policy.keys, policy.previousKeys]) {
      if (!keys?.hasSha1Prefix) continue;
      if (equalInConstantTime(keys.sha1PrefixDigest(challenge), digest)) {
        return {
          authenticated: true,
          protocol: 1,
          sha1Prefix: true,
          ...(keys === policy.keys ? {} : { previousSecret: true as const }),
        };
      }
    }
  }
  return outcome;
}
