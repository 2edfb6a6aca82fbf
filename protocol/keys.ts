import { hkdfSync } from "node:crypto";

/**
 * The shared secret as WebCrypto keys, imported once: the crypto that protocol v1 (`v1.ts`) and
 * v2 (`v2.ts`) share.
 *
 * @module
 */

/** The HMAC digests protocol v2 can name (docs/PROTOCOL.md §9). v1 always uses SHA-1. */
export type DigestName = "sha1" | "sha256" | "sha384" | "sha512";

/** Every v2 digest, weakest first, with its WebCrypto name and output length in bytes. */
export const DIGESTS: Readonly<Record<DigestName, { webCrypto: string; length: number }>> = {
  sha1: { webCrypto: "SHA-1", length: 20 },
  sha256: { webCrypto: "SHA-256", length: 32 },
  sha384: { webCrypto: "SHA-384", length: 48 },
  sha512: { webCrypto: "SHA-512", length: 64 },
};

/** Whether `name` is one of the v2 digests. */
export function isDigestName(name: string): name is DigestName {
  return Object.hasOwn(DIGESTS, name);
}

/**
 * The shared secret, imported once as every key the protocols need: an HMAC key per digest, not
 * extractable. The secret's bytes stay in a private field, for v2's session keys (HKDF, with Z ||
 * secret for the forward-secret key exchange, docs/PROTOCOL.md §11, §12) and the tutorial's
 * `sha1-prefix` answer.
 *
 * @example
 * ```ts
 * import { SecretKeys } from "./keys.ts";
 * const keys = await SecretKeys.import(new TextEncoder().encode("correct horse battery staple"));
 * ```
 */
export class SecretKeys {
  readonly #hmac: Record<DigestName, CryptoKey>;
  readonly #secret: Uint8Array<ArrayBuffer>;
  readonly #sha1Prefix: boolean;

  private constructor(
    hmac: Record<DigestName, CryptoKey>,
    secret: Uint8Array<ArrayBuffer>,
    sha1Prefix: boolean,
  ) {
    this.#hmac = hmac;
    this.#secret = secret;
    this.#sha1Prefix = sha1Prefix;
  }

  /**
   * Imports `secret` as all the keys. Pass `{ sha1Prefix: true }` only for a server that accepts,
   * or a client that sends, the tutorial's `sha1(secret + challenge)` answer (docs/PROTOCOL.md §3.1).
   *
   * @throws {RangeError} if the secret is empty: an empty key protects nothing.
   */
  static async import(
    secret: Uint8Array,
    options: { sha1Prefix?: boolean } = {},
  ): Promise<SecretKeys> {
    if (secret.length === 0) {
      throw new RangeError(
        "The secret is empty: give it at least one byte (32 random bytes is better)",
      );
    }
    const raw = new Uint8Array(secret);
    const hmac = {} as Record<DigestName, CryptoKey>;
    for (const [name, { webCrypto }] of Object.entries(DIGESTS)) {
      hmac[name as DigestName] = await crypto.subtle.importKey(
        "raw",
        raw,
        { name: "HMAC", hash: webCrypto },
        false,
        ["sign", "verify"],
      );
    }
    return new SecretKeys(hmac, raw, options.sha1Prefix ?? false);
  }

  /** The HMAC key for `digest`. */
  hmac(digest: DigestName): CryptoKey {
    return this.#hmac[digest];
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
  async sha1PrefixDigest(challenge: Uint8Array): Promise<Uint8Array<ArrayBuffer>> {
    if (!this.#sha1Prefix) {
      throw new TypeError("These keys were imported without { sha1Prefix: true }");
    }
    const input = new Uint8Array(this.#secret.length + challenge.length);
    input.set(this.#secret);
    input.set(challenge, this.#secret.length);
    return new Uint8Array(await crypto.subtle.digest("SHA-1", input));
  }
}

/** The secret as keys: imported from its bytes, or used as given if already imported. */
export async function secretKeys(
  secret: Uint8Array | SecretKeys,
  options: { sha1Prefix?: boolean } = {},
): Promise<SecretKeys> {
  return secret instanceof SecretKeys ? secret : await SecretKeys.import(secret, options);
}

/** A key only this process knows, for comparing two digests in constant time; made when first needed. */
let comparisonKey: Promise<CryptoKey> | undefined;

/**
 * Whether `a` and `b` are equal, in time that does not depend on where they differ: both are
 * MACed under a random key and WebCrypto's `verify` compares the MACs (the "double HMAC" pattern).
 */
export async function equalInConstantTime(a: Uint8Array, b: Uint8Array): Promise<boolean> {
  comparisonKey ??= crypto.subtle.generateKey(
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign", "verify"],
  ) as Promise<CryptoKey>;
  const key = await comparisonKey;
  const mac = await crypto.subtle.sign("HMAC", key, new Uint8Array(a));
  return await crypto.subtle.verify("HMAC", key, mac, new Uint8Array(b));
}
