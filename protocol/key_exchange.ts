/**
 * The ephemeral X25519 key exchange of hello version 03, which makes the frame keys forward-secret
 * (docs/PROTOCOL.md §12): a fresh key pair per connection, its private half never leaving WebCrypto.
 *
 * @module
 */

/** Bytes of an X25519 public key on the wire (RFC 7748 §5). */
export const KEY_SHARE_LENGTH = 32;

/** One side's ephemeral key pair, with its public key as the bytes it sends. */
export interface KeyShare {
  /** The private key: not extractable, and dropped with the connection. */
  privateKey: CryptoKey;
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
 * const share = await createKeyShare();
 * assert.equal(share.publicKey.length, KEY_SHARE_LENGTH);
 * ```
 */
export async function createKeyShare(): Promise<KeyShare> {
  const pair = await crypto.subtle.generateKey({ name: "X25519" }, false, [
    "deriveBits",
  ]) as CryptoKeyPair;
  return { privateKey: pair.privateKey, publicKey: await publicBytes(pair.publicKey) };
}

/**
 * A key pair from fixed private key bytes (RFC 7748 §5, before clamping): for test vectors only,
 * never for a real connection.
 */
export async function keyShareFromPrivateBytes(privateKey: Uint8Array): Promise<KeyShare> {
  if (privateKey.length !== KEY_SHARE_LENGTH) {
    throw new RangeError(`an X25519 private key is ${KEY_SHARE_LENGTH} bytes`);
  }
  // PKCS #8 around the raw key (RFC 8410): WebCrypto imports X25519 private keys no other way.
  const pkcs8 = new Uint8Array([...PKCS8_X25519_PREFIX, ...privateKey]);
  const key = await crypto.subtle.importKey("pkcs8", pkcs8, { name: "X25519" }, true, [
    "deriveBits",
  ]);
  const jwk = await crypto.subtle.exportKey("jwk", key);
  const publicKey = Uint8Array.from(
    atob(jwk.x!.replace(/-/g, "+").replace(/_/g, "/")),
    (c) => c.charCodeAt(0),
  );
  return { privateKey: key, publicKey };
}

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

/**
 * Z = X25519(own private key, peer's public key), 32 bytes.
 *
 * @returns null if the peer's key is not a usable X25519 point: one of low order gives an all-zero
 * Z, which WebCrypto refuses (docs/PROTOCOL.md §12, `bad-key-share`).
 */
export async function sharedSecret(
  own: KeyShare,
  peerPublicKey: Uint8Array,
): Promise<Uint8Array<ArrayBuffer> | null> {
  try {
    const peer = await crypto.subtle.importKey(
      "raw",
      new Uint8Array(peerPublicKey),
      { name: "X25519" },
      false,
      [],
    );
    const bits = await crypto.subtle.deriveBits(
      { name: "X25519", public: peer },
      own.privateKey,
      8 * KEY_SHARE_LENGTH,
    );
    const z = new Uint8Array(bits);
    return z.some((byte) => byte !== 0) ? z : null;
  } catch {
    return null;
  }
}

async function publicBytes(key: CryptoKey): Promise<Uint8Array<ArrayBuffer>> {
  return new Uint8Array(await crypto.subtle.exportKey("raw", key));
}
