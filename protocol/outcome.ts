/**
 * What a server accepts and what it learns from a handshake: the types the version choice
 * (`handshake.ts`), v1 (`v1.ts`) and v2 (`v2.ts`) share.
 *
 * @module
 */

import type { DigestName, SecretKeys } from "./keys.ts";
import type { FrameKeys, FrameMode } from "./frames.ts";

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
  | "wrong-proof"
  | "forward-secrecy-required"
  | "bad-key-share"
  | "throttled";

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
  /** Accept the tutorial's `sha1-prefix` v1 answers too (docs/PROTOCOL.md §3.1). */
  sha1Prefix?: boolean;
  /** Refuse sessions without an ephemeral key exchange: v1, and v2 hellos of version 02 (§12). */
  requireForwardSecrecy?: boolean;
  /**
   * Told whether a well-formed answer or hello proof was right, before the client can learn it;
   * returning false withholds the verdict: the handshake ends as `throttled`, right or wrong
   * (docs/PROTOCOL.md §3). The server counts wrong answers here and withholds every verdict from
   * an address in a cool-down, so guesses sent in parallel reveal no more than sequential ones.
   */
  afterCheck?: (valid: boolean) => boolean;
}

/** What the server learned from a handshake. */
export type HandshakeOutcome =
  | {
    authenticated: true;
    protocol: 1;
    /** Set when the answer matched the previous secret of a rotation. */
    previousSecret?: true;
    /** Set when the answer was the tutorial's `sha1-prefix` digest (docs/PROTOCOL.md §3.1). */
    sha1Prefix?: true;
  }
  | {
    authenticated: true;
    protocol: 2;
    previousSecret?: true;
    digest: DigestName;
    mode: FrameMode;
    /** The frame layer's keys, from the server's side; none in plain mode. */
    frameKeys?: FrameKeys;
    /** Set when the frame keys came from an ephemeral key exchange (hello version 03, §12). */
    forwardSecret?: true;
  }
  | {
    authenticated: false;
    reason: RejectionReason;
    detail: string;
    /** The first bytes received in place of an answer (at most 40), for a caller's diagnosis. */
    answer: Uint8Array;
  };

/** A handshake that failed, with its reason. */
export type Rejection = Extract<HandshakeOutcome, { authenticated: false }>;
