/**
 * The server's challenge: the first step of both protocol versions (docs/PROTOCOL.md §1), and the
 * client's own challenge in a v2 hello (§9).
 *
 * @module
 */

import { type ByteStream, readFull } from "../_io.ts";
import { HmacEchoError } from "../errors.ts";

/** Length in bytes of a challenge, the server's (docs/PROTOCOL.md §1) and the client's (§9). */
export const CHALLENGE_LENGTH = 32;

/** Draws a fresh random challenge (docs/PROTOCOL.md §1, §9). */
export function createChallenge(): Uint8Array<ArrayBuffer> {
  return crypto.getRandomValues(new Uint8Array(CHALLENGE_LENGTH));
}

/**
 * The server ended the connection before sending a whole challenge: it is not serving us. Reason
 * `no-challenge`.
 */
export class ChallengeError extends HmacEchoError {
  /** How many challenge bytes arrived before the connection ended. */
  readonly received: number;

  /** Builds the error; `received` is how many challenge bytes arrived. */
  constructor(received: number, options?: ErrorOptions) {
    super(
      "no-challenge",
      received === 0
        ? "The server closed the connection before the challenge: it is full, or is throttling " +
          "this address after failed handshakes (see its log), or it is not an hmac-echo server"
        : `The server closed the connection after ${received} of ${CHALLENGE_LENGTH} challenge ` +
          "bytes: it is not an hmac-echo server",
      options,
    );
    this.received = received;
  }
}

/**
 * Reads the server's challenge (docs/PROTOCOL.md §1).
 *
 * @throws {ChallengeError} if the connection ends before the whole challenge has arrived.
 */
export async function readChallenge(stream: ByteStream): Promise<Uint8Array<ArrayBuffer>> {
  const challenge = new Uint8Array(CHALLENGE_LENGTH);
  const received = await readFull(stream, challenge);
  if (received < CHALLENGE_LENGTH) throw new ChallengeError(received);
  return challenge;
}
