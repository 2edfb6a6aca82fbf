/**
 * The hmac-echo handshake: version 1's bytes and crypto (docs/PROTOCOL.md §1-§3), and the server's
 * entry point, which reads the first 40 answer bytes and hands a v2 hello (§8) to
 * `handshake_v2.ts`. Shared by the server and the client.
 *
 * @module
 */

import { type ByteStream, readFull, writeAll } from "./_io.ts";
import {
  CHALLENGE_LENGTH,
  createChallenge,
  type DigestName,
  equalInConstantTime,
  type SecretKeys,
} from "./keys.ts";
import { type FrameMode, HELLO_MARKER, verifyHello } from "./handshake_v2.ts";
import type { FrameKeys } from "./frames.ts";

export { CHALLENGE_LENGTH, createChallenge };

/** Length in bytes of the client's answer: 40 hex characters (docs/PROTOCOL.md §2). */
export const ANSWER_LENGTH = 40;

const DIGEST_LENGTH = 20;

/** Why the server rejected a client's answer or hello (docs/PROTOCOL.md §3, §9). */
export type RejectionReason =
  | "incomplete-answer"
  | "malformed-answer"
  | "wrong-digest"
  | "v1-refused"
  | "incomplete-hello"
  | "malformed-hello"
  | "unsupported-digest"
  | "unsupported-version"
  | "mode-refused"
  | "reflected-challenge"
  | "wrong-proof";

/** What a server requires beyond a v1 answer; undefined accepts v1 (docs/PROTOCOL.md §8). */
export type Requirement = "v2" | "integrity" | "encrypt";

/** What the server accepts. */
export interface AuthenticationPolicy {
  /** The secret's keys. */
  keys: SecretKeys;
  /** A previous secret still accepted during a rotation. */
  previousKeys?: SecretKeys;
  /** The digests a v2 hello may name. Default: all four. */
  digests?: readonly DigestName[];
  /** Refuse v1 answers, and with `integrity` or `encrypt` weaker v2 modes too. Default: none. */
  require?: Requirement;
  /** Accept the tutorial's `sha1(secret + challenge)` v1 answers too (docs/PROTOCOL.md §3.1). */
  legacy?: boolean;
}

/** What the server learned from a handshake. */
export type HandshakeOutcome =
  | {
    authenticated: true;
    protocol: 1;
    /** Set when the answer matched the previous secret of a rotation. */
    previousSecret?: true;
    /** Set when the answer was the legacy `sha1-prefix` digest (docs/PROTOCOL.md §3.1). */
    legacy?: true;
  }
  | {
    authenticated: true;
    protocol: 2;
    previousSecret?: true;
    digest: DigestName;
    mode: FrameMode;
    /** The frame layer's keys, from the server's side; none in plain mode. */
    frameKeys?: FrameKeys;
  }
  | {
    authenticated: false;
    reason: RejectionReason;
    detail: string;
    /** The first bytes received in place of an answer (at most 40), for a caller's diagnosis. */
    answer: Uint8Array;
  };

/** The server ended the connection before sending a whole challenge: it is not serving us. */
export class ChallengeError extends Error {
  /** Builds the error; `received` is how many challenge bytes arrived. */
  constructor(received: number, options?: ErrorOptions) {
    super(
      `The server closed the connection after ${received} of ${CHALLENGE_LENGTH} challenge bytes: ` +
        "it is not an hmac-echo server, or it refused the connection (at its connection limit, or " +
        "throttling this address after failed handshakes: check the secret and try again later)",
      options,
    );
    this.name = "ChallengeError";
  }
}

/**
 * Imports the shared secret as a non-extractable HMAC-SHA1 key.
 *
 * Import it once and reuse it: the server checks every connection against the same key.
 *
 * @example
 * ```ts
 * import { importSecretKey } from "./handshake.ts";
 * const key = await importSecretKey(new TextEncoder().encode("correct horse battery staple"));
 * ```
 * @throws {RangeError} if the secret is empty: an empty HMAC key protects nothing.
 */
export function importSecretKey(secret: Uint8Array): Promise<CryptoKey> {
  if (secret.length === 0) {
    throw new RangeError(
      "The secret is empty: give it at least one byte (32 random bytes is better)",
    );
  }
  return crypto.subtle.importKey(
    "raw",
    new Uint8Array(secret),
    { name: "HMAC", hash: "SHA-1" },
    false,
    ["sign", "verify"],
  );
}

/**
 * Computes the client's answer to a challenge: the lowercase hex of HMAC-SHA1 (docs/PROTOCOL.md §2).
 *
 * @returns 40 ASCII bytes, ready to send.
 */
export async function computeAnswer(
  key: CryptoKey,
  challenge: Uint8Array,
): Promise<Uint8Array<ArrayBuffer>> {
  return encodeHex(
    new Uint8Array(await crypto.subtle.sign("HMAC", key, new Uint8Array(challenge))),
  );
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
 * Checks a client's answer against the challenge it was given, in constant time.
 *
 * @returns the outcome, with the reason for a rejection (docs/PROTOCOL.md §3).
 */
export async function verifyAnswer(
  key: CryptoKey,
  challenge: Uint8Array,
  answer: Uint8Array,
): Promise<HandshakeOutcome> {
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
  // WebCrypto's verify compares in constant time; a hand-written comparison would leak timing.
  const valid = await crypto.subtle.verify("HMAC", key, digest, new Uint8Array(challenge));
  return valid ? { authenticated: true, protocol: 1 } : {
    authenticated: false,
    reason: "wrong-digest",
    detail: "the answer is not the HMAC of the challenge under this server's secret",
    answer,
  };
}

/**
 * Runs the server's side of the handshake: sends a challenge, reads the 40-byte v1 answer or the
 * v2 hello (never more), and checks it, against the previous secret too while a secret is being
 * rotated. A v2 client is told the outcome. Deadlines are the caller's: close the stream to
 * abandon a handshake.
 *
 * @example
 * ```ts ignore
 * const outcome = await authenticateClient(conn, { keys });
 * if (!outcome.authenticated) conn.close();
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
  if (policy.require !== undefined && decodeAnswer(answer.subarray(0, received)) !== null) {
    return {
      authenticated: false,
      reason: "v1-refused",
      detail: `a v1 answer, but this server requires ${
        policy.require === "v2" ? "protocol v2" : policy.require
      }`,
      answer: answer.subarray(0, received),
    };
  }
  return verifyV1Answer(policy, challenge, answer.subarray(0, received));
}

/** Checks a v1 answer under each accepted secret, then as the legacy digest if allowed. */
async function verifyV1Answer(
  policy: AuthenticationPolicy,
  challenge: Uint8Array,
  answer: Uint8Array,
): Promise<HandshakeOutcome> {
  const outcome = await verifyAnswer(policy.keys.hmac("sha1"), challenge, answer);
  if (outcome.authenticated || outcome.reason !== "wrong-digest") return outcome;
  // During a rotation, and for legacy clients, further checks, each as constant-time as the first.
  if (policy.previousKeys) {
    const previous = await verifyAnswer(policy.previousKeys.hmac("sha1"), challenge, answer);
    if (previous.authenticated) return { authenticated: true, protocol: 1, previousSecret: true };
  }
  if (policy.legacy) {
    const digest = decodeAnswer(answer)!; // verifyAnswer found it well-formed
    for (const keys of [policy.keys, policy.previousKeys]) {
      if (!keys?.acceptsLegacy) continue;
      if (await equalInConstantTime(await keys.legacyDigest(challenge), digest)) {
        return {
          authenticated: true,
          protocol: 1,
          legacy: true,
          ...(keys === policy.keys ? {} : { previousSecret: true as const }),
        };
      }
    }
  }
  return outcome;
}

/**
 * Reads the server's challenge: the first step of both protocol versions (docs/PROTOCOL.md §1).
 *
 * @throws {ChallengeError} if the connection ends before the whole challenge has arrived.
 */
export async function readChallenge(stream: ByteStream): Promise<Uint8Array<ArrayBuffer>> {
  const challenge = new Uint8Array(CHALLENGE_LENGTH);
  const received = await readFull(stream, challenge);
  if (received < CHALLENGE_LENGTH) throw new ChallengeError(received);
  return challenge;
}

/** The tutorial's answer, `hex(sha1(secret + challenge))`, for clients being migrated (§3.1). */
export async function computeLegacyAnswer(
  keys: SecretKeys,
  challenge: Uint8Array,
): Promise<Uint8Array<ArrayBuffer>> {
  return encodeHex(await keys.legacyDigest(challenge));
}

/**
 * Runs the client's side of a v1 handshake: reads the challenge and sends the answer.
 *
 * In protocol v1 the server says nothing on success, so this cannot tell whether the answer was
 * accepted; the first read after it can (docs/PROTOCOL.md §3).
 *
 * @throws {ChallengeError} if the connection ends before the whole challenge has arrived.
 */
export async function answerChallenge(
  stream: ByteStream,
  key: CryptoKey,
): Promise<void> {
  const challenge = await readChallenge(stream);
  await writeAll(stream, await computeAnswer(key, challenge));
}
