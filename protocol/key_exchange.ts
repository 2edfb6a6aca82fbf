/**
 * The ephemeral X25519 key exchange of hello version 03, which makes the frame keys forward-secret
 * (docs/PROTOCOL.md §12): a fresh key pair per connection, its private half held by `node:crypto`
 * and dropped with the connection.
 *
 * `node:crypto`'s synchronous calls, not WebCrypto's: one side's share of the exchange (a key pair,
 * its public bytes, the peer's key, Z) costs 99 µs of CPU that way against 204 µs through
 * WebCrypto, which hands every call to another thread and back (`bench/crypto_speed.ts`, one core).
 *
 * @module
 */

import { Buffer } from "node:buffer";
import {
  createPrivateKey,
  createPublicKey,
  diffieHellman,
  generateKeyPairSync,
  type KeyObject,
} from "node:crypto";

/** Bytes of an X25519 public key on the wire (RFC 7748 §5). */
export const KEY_SHARE_LENGTH = 32;

/** One side's ephemeral key pair, with its public key as the bytes it sends. */
export interface KeyShare {
  /** The private key: never exported, and dropped with the connection. */
  privateKey: KeyObject;
  /** The public key, as sent in the hello (Pc) or the outcome (Ps). */
  publicKey: Uint8Array<ArrayBuffer>;
}

/**
 * A fresh key pair for one connection.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { createKeyShare, KEY_SHARE_LENGTH } from "./key_exchange.ts";
 * const share = createKeyShare();
 * assert.equal(share.publicKey.length, KEY_SHARE_LENGTH);
 * ```
 */
export function createKeyShare(): KeyShare {
  const pair = generateKeyPairSync("x25519");
  return { privateKey: pair.privateKey, publicKey: publicBytes(pair.publicKey) };
}

/**
 * A key pair from fixed private key bytes (RFC 7748 §5, before clamping): for test vectors only,
 * never for a real connection.
 */
export function keyShareFromPrivateBytes(privateKey: Uint8Array): KeyShare {
  if (privateKey.length !== KEY_SHARE_LENGTH) {
    throw new RangeError(`an X25519 private key is ${KEY_SHARE_LENGTH} bytes`);
  }
  const key = createPrivateKey({
    key: Buffer.from([...PKCS8_X25519_PREFIX, ...privateKey]),
    format: "der",
    type: "pkcs8",
  });
  return { privateKey: key, publicKey: publicBytes(createPublicKey(key)) };
}

/** DER before the 32 raw bytes of an X25519 private key in PKCS #8 (RFC 8410 §7). */
const PKCS8_X25519_PREFIX = [
  0x30,
  0x2e,
  0x02,
  0x01,
  0x00,
  0x30,
  0x05,
  0x06,
  0x03,
  0x2b,
  0x65,
  0x6e,
  0x04,
  0x22,
  0x04,
  0x20,
];
/** DER before the 32 raw bytes of an X25519 public key in SubjectPublicKeyInfo (RFC 8410 §4). */
const SPKI_X25519_PREFIX = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x03, 0x21, 0x00];

/**
 * Z = X25519(own private key, peer's public key), 32 bytes.
 *
 * @returns null if the peer's key is not a usable X25519 point: one of low order gives an all-zero
 * Z (docs/PROTOCOL.md §12, `bad-key-share`).
 */
export function sharedSecret(
  own: KeyShare,
  peerPublicKey: Uint8Array,
): Uint8Array<ArrayBuffer> | null {
  if (peerPublicKey.length !== KEY_SHARE_LENGTH) return null;
  try {
    const peer = createPublicKey({
      key: Buffer.from([...SPKI_X25519_PREFIX, ...peerPublicKey]),
      format: "der",
      type: "spki",
    });
    const computed = diffieHellman({ privateKey: own.privateKey, publicKey: peer });
    const z = new Uint8Array(computed);
    computed.fill(0); // one copy of Z, which the caller overwrites once the frame keys are made
    return z.length === KEY_SHARE_LENGTH && z.some((byte) => byte !== 0) ? z : null;
  } catch {
    return null;
  }
}

/** The raw 32 bytes of a public key: the end of its SubjectPublicKeyInfo. */
function publicBytes(key: KeyObject): Uint8Array<ArrayBuffer> {
  const spki = key.export({ format: "der", type: "spki" });
  return new Uint8Array(spki.subarray(spki.length - KEY_SHARE_LENGTH));
}
