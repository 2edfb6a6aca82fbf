import { createHash, createHmac, hkdfSync, timingSafeEqual } from "node:crypto";

/**
 * The shared secret as keys, imported once: the crypto that protocol v1 (`v1.ts`) and
 * v2 (`v2.ts`) share.
 *
 * @module
 */

/** The HMAC digests protocol v2 can name (docs/PROTOCOL.md §9). v1 always uses SHA-1. */
export type DigestName = "sha1" | "sha256" | "sha384" | "sha512";

/** Every v2 digest, weakest first, with its output length in bytes (its `node:crypto` name is the
 * `DigestName` itself). */
export const DIGESTS: Readonly<Record<DigestName, { length: number }>> = {
  sha1: { length: 20 },
  sha256: { length: 32 },
  sha384: { length: 48 },
  sha512: { length: 64 },
};

/** Whether `name` is one of the v2 digests. */
export function isDigestName(name: string): name is DigestName {
  return Object.hasOwn(DIGESTS, name);
}

/**
 * The shared secret, imported once as the key every protocol needs: HMAC under any digest, HKDF for
 * v2's session keys (with Z || secret for the forward-secret key exchange, docs/PROTOCOL.md §11,
 * §12) and the tutorial's `sha1-prefix` answer. The secret's bytes are a private field, given to
 * `node:crypto`'s synchronous calls (a `KeyObject` would be exported again in each, as the frame
 * keys found: `protocol/frame_key.ts`): an HMAC of a challenge costs less than one hand-off to WebCrypto's thread
 * (`bench/crypto_speed.ts`); with the session keys' HKDF and the small frames also moved, a v2
 * `encrypt` session costs the server 50-90 µs less CPU (BENCHMARKS.md, "The second pass").
 *
 * @example
 * ```ts
 * import { SecretKeys } from "./keys.ts";
 * const keys = await SecretKeys.import(new TextEncoder().encode("correct horse battery staple"));
 * ```
 */
export class SecretKeys {
  readonly #secret: Uint8Array<ArrayBuffer>;
  readonly #sha1Prefix: boolean;

  private constructor(secret: Uint8Array<ArrayBuffer>, sha1Prefix: boolean) {
    this.#secret = secret;
    this.#sha1Prefix = sha1Prefix;
  }

  /**
   * Imports `secret` as all the keys. Pass `{ sha1Prefix: true }` only for a server that accepts,
   * or a client that sends, the tutorial's `sha1(secret + challenge)` answer (docs/PROTOCOL.md §3.1).
   *
   * @throws {RangeError} if the secret is empty: an empty key protects nothing.
   */
  static import(
    secret: Uint8Array,
    options: { sha1Prefix?: boolean } = {},
  ): Promise<SecretKeys> {
    if (secret.length === 0) {
      return Promise.reject(
        new RangeError(
          "The secret is empty: give it at least one byte (32 random bytes is better)",
        ),
      );
    }
    return Promise.resolve(new SecretKeys(new Uint8Array(secret), options.sha1Prefix ?? false));
  }

  /** HMAC-`digest` of `data` under the secret. */
  mac(digest: DigestName, data: Uint8Array): Uint8Array<ArrayBuffer> {
    const mac = createHmac(digest, this.#secret).update(data).digest();
    return new Uint8Array(mac.buffer, mac.byteOffset, mac.length) as Uint8Array<ArrayBuffer>;
  }

  /**
   * `length` bytes of HKDF-SHA-256 (RFC 5869) with input keying material `prefix || secret`:
   * the secret alone for v2's session keys, Z || secret for hello version 03's (docs/PROTOCOL.md
   * §11, §12). Synchronous: it costs less than one hand-off to WebCrypto's thread.
   */
  deriveBytes(
    prefix: Uint8Array,
    salt: Uint8Array,
    info: Uint8Array,
    length: number,
  ): Uint8Array<ArrayBuffer> {
    const ikm = new Uint8Array(prefix.length + this.#secret.length);
    ikm.set(prefix);
    ikm.set(this.#secret, prefix.length);
    try {
      return new Uint8Array(hkdfSync("sha256", ikm, salt, info, length));
    } finally {
      ikm.fill(0);
    }
  }

  /** Whether these keys can compute the tutorial's `sha1-prefix` answer. */
  get hasSha1Prefix(): boolean {
    return this.#sha1Prefix;
  }

  /**
   * SHA-1(secret || challenge): the tutorial's `sha1-prefix` answer (docs/PROTOCOL.md §3.1).
   *
   * @throws {TypeError} unless the keys were imported with `{ sha1Prefix: true }`.
   */
  sha1PrefixDigest(challenge: Uint8Array): Uint8Array<ArrayBuffer> {
    if (!this.#sha1Prefix) {
      throw new TypeError("These keys were imported without { sha1Prefix: true }");
    }
    return new Uint8Array(createHash("sha1").update(this.#secret).update(challenge).digest());
  }
}

/** The secret as keys: imported from its bytes, or used as given if already imported. */
export async function secretKeys(
  secret: Uint8Array | SecretKeys,
  options: { sha1Prefix?: boolean } = {},
): Promise<SecretKeys> {
  return secret instanceof SecretKeys ? secret : await SecretKeys.import(secret, options);
}

/**
 * Whether `a` and `b` are equal, in time that does not depend on where they differ
 * (`timingSafeEqual`); their lengths are not secret.
 */
export function equalInConstantTime(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}
