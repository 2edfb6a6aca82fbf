/**
 * The hmac-echo handshake, version 1: the protocol bytes and the crypto, shared by the server and
 * the client. docs/PROTOCOL.md §1-§3 describes the bytes; this module is the one implementation.
 *
 * @module
 */

import { type ByteStream, readFull, writeAll } from "./_io.ts";

/** Length in bytes of the server's challenge (docs/PROTOCOL.md §1). */
export const CHALLENGE_LENGTH = 32;

/** Length in bytes of the client's answer: 40 hex characters (docs/PROTOCOL.md §2). */
export const ANSWER_LENGTH = 40;

const DIGEST_LENGTH = 20;

/** Why the server rejected a client's answer (docs/PROTOCOL.md §3). */
export type RejectionReason =
  | "incomplete-answer"
  | "malformed-answer"
  | "wrong-digest";

/** What the server learned from a handshake. */
export type HandshakeOutcome =
  /** `previousSecret` is set when the answer matched the previous secret of a rotation. */
  | { authenticated: true; previousSecret?: true }
  | {
    authenticated: false;
    reason: RejectionReason;
    detail: string;
    /** The bytes received in place of an answer (at most 40), for a caller's diagnosis. */
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

/** The secret as a key: imported once from its bytes, or used as given if already a key. */
export async function secretKey(secret: Uint8Array | CryptoKey): Promise<CryptoKey> {
  return secret instanceof CryptoKey ? secret : await importSecretKey(secret);
}

/** Draws a fresh random challenge (docs/PROTOCOL.md §1). */
export function createChallenge(): Uint8Array<ArrayBuffer> {
  return crypto.getRandomValues(new Uint8Array(CHALLENGE_LENGTH));
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
  const digest = new Uint8Array(
    await crypto.subtle.sign("HMAC", key, new Uint8Array(challenge)),
  );
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
  return valid ? { authenticated: true } : {
    authenticated: false,
    reason: "wrong-digest",
    detail: "the answer is not the HMAC of the challenge under this server's secret",
    answer,
  };
}

/**
 * Runs the server's side of the handshake: sends a challenge, reads the 40-byte answer (never more)
 * and checks it, against `previousKey` too while a secret is being rotated. Deadlines are the
 * caller's: close the stream to abandon a handshake.
 *
 * @example
 * ```ts ignore
 * const outcome = await authenticateClient(conn, key);
 * if (!outcome.authenticated) conn.close();
 * ```
 */
export async function authenticateClient(
  stream: ByteStream,
  key: CryptoKey,
  previousKey?: CryptoKey,
): Promise<HandshakeOutcome> {
  const challenge = createChallenge();
  await writeAll(stream, challenge);
  const answer = new Uint8Array(ANSWER_LENGTH);
  const received = await readFull(stream, answer);
  const outcome = await verifyAnswer(key, challenge, answer.subarray(0, received));
  // During a rotation, a wrong digest under the current secret gets a second, equally
  // constant-time check under the previous one.
  if (previousKey && !outcome.authenticated && outcome.reason === "wrong-digest") {
    const previous = await verifyAnswer(previousKey, challenge, answer.subarray(0, received));
    if (previous.authenticated) return { authenticated: true, previousSecret: true };
  }
  return outcome;
}

/**
 * Runs the client's side of the handshake: reads the challenge and sends the answer.
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
  const challenge = new Uint8Array(CHALLENGE_LENGTH);
  const received = await readFull(stream, challenge);
  if (received < CHALLENGE_LENGTH) throw new ChallengeError(received);
  await writeAll(stream, await computeAnswer(key, challenge));
}
