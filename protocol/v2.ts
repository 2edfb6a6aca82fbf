/**
 * The hmac-echo handshake, version 2: the hello, both proofs, the outcome and the session keys
 * (docs/PROTOCOL.md §8-§11). `handshake.ts` hands a connection over here when its first answer
 * byte is `{`; the client calls {@linkcode sendHello} itself.
 *
 * @module
 */

import { type ByteStream, concat, isDisconnect, readFull, writeAll } from "../_io.ts";
import { CHALLENGE_LENGTH, createChallenge } from "./challenge.ts";
import {
  type DigestName,
  DIGESTS,
  equalInConstantTime,
  isDigestName,
  type SecretKeys,
} from "./keys.ts";
import type { AuthenticationPolicy, HandshakeOutcome } from "./outcome.ts";
import type { FrameKeys, FrameMode } from "./frames.ts";
import { FRAME_KEY_LENGTH, FrameKey } from "./frame_key.ts";
import { createKeyShare, KEY_SHARE_LENGTH, type KeyShare, sharedSecret } from "./key_exchange.ts";

/** The first byte of a v2 hello, `{`: never the first byte of a v1 answer (docs/PROTOCOL.md §8). */
export const HELLO_MARKER = 0x7b;

/** Modes by their byte on the wire. */
const MODES: readonly FrameMode[] = ["plain", "integrity", "encrypt"];

/** A reason the server names in its status byte (docs/PROTOCOL.md §9). */
export type HelloRejectionReason =
  | "wrong-proof"
  | "unsupported-digest"
  | "mode-refused"
  | "malformed-hello"
  | "unsupported-version"
  | "reflected-challenge"
  | "forward-secrecy-required"
  | "bad-key-share";

/** Why a server rejected a hello, with the status byte it sends (docs/PROTOCOL.md §9). */
export const REJECTION_STATUS: Readonly<Record<HelloRejectionReason, number>> = {
  "wrong-proof": 0x01,
  "unsupported-digest": 0x02,
  "mode-refused": 0x03,
  "malformed-hello": 0x04,
  "unsupported-version": 0x05,
  "reflected-challenge": 0x06,
  "forward-secrecy-required": 0x07,
  "bad-key-share": 0x08,
};

const STATUS_ACCEPTED = 0x00;
const VERSION_2 = 0x02;
/** Hello version 03: version 2 with an X25519 key share (docs/PROTOCOL.md §12). */
const VERSION_3 = 0x03;
/** `{`, up to 14 name bytes, `}`. */
const MAX_TAG_LENGTH = 16;
const CLOSING_BRACE = 0x7d;

const encoder = new TextEncoder();
const CLIENT_LABEL = encoder.encode("hmac-echo v2 client->server");
const SERVER_LABEL = encoder.encode("hmac-echo v2 server->client");

/** What both sides agreed on, once the hello was accepted. */
export interface V2Session {
  /** The digest of both proofs. */
  digest: DigestName;
  /** How the service bytes travel. */
  mode: FrameMode;
  /** The frame layer's keys, from this side's point of view; none in plain mode. */
  frameKeys?: FrameKeys;
  /** Whether the frame keys came from an ephemeral key exchange (hello version 03, §12). */
  forwardSecret: boolean;
}

/**
 * Every hello byte before the proof (docs/PROTOCOL.md §9): version 02, or 03 when the client's
 * key share `keyShare` (Pc, §12) is given.
 */
export function encodeHelloHead(
  digest: DigestName,
  mode: FrameMode,
  clientChallenge: Uint8Array,
  keyShare?: Uint8Array,
): Uint8Array<ArrayBuffer> {
  const tag = encoder.encode(`{${digest}}`);
  const shareLength = keyShare === undefined ? 0 : KEY_SHARE_LENGTH;
  const head = new Uint8Array(tag.length + 2 + CHALLENGE_LENGTH + shareLength);
  head.set(tag);
  head[tag.length] = keyShare === undefined ? VERSION_2 : VERSION_3;
  head[tag.length + 1] = MODES.indexOf(mode);
  head.set(clientChallenge, tag.length + 2);
  if (keyShare !== undefined) head.set(keyShare, tag.length + 2 + CHALLENGE_LENGTH);
  return head;
}

/**
 * The proof one side sends: HMAC over its direction's label, Cs and the hello head (§9), and for
 * the server of a version 03 hello its key share Ps (§12).
 */
export function computeProof(
  keys: SecretKeys,
  digest: DigestName,
  from: "client" | "server",
  serverChallenge: Uint8Array,
  head: Uint8Array,
  serverShare?: Uint8Array,
): Uint8Array<ArrayBuffer> {
  return keys.mac(digest, proofMessage(from, serverChallenge, head, serverShare));
}

/** Checks a proof in constant time. */
function verifyProof(
  keys: SecretKeys,
  digest: DigestName,
  from: "client" | "server",
  serverChallenge: Uint8Array,
  head: Uint8Array,
  proof: Uint8Array,
  serverShare?: Uint8Array,
): boolean {
  const message = proofMessage(from, serverChallenge, head, serverShare);
  return equalInConstantTime(keys.mac(digest, message), proof);
}

function proofMessage(
  from: "client" | "server",
  serverChallenge: Uint8Array,
  head: Uint8Array,
  serverShare: Uint8Array = new Uint8Array(0),
): Uint8Array<ArrayBuffer> {
  const label = from === "client" ? CLIENT_LABEL : SERVER_LABEL;
  return concat([label, serverChallenge, head, serverShare]);
}

/** What a version 03 key exchange adds to the frame keys' derivation (docs/PROTOCOL.md §12). */
export interface KeyExchangeResult {
  /** Z = X25519(own private key, peer's public key). */
  z: Uint8Array;
  /** The hello head, Pc included. */
  head: Uint8Array;
  /** The server's key share, Ps. */
  serverShare: Uint8Array;
}

/**
 * The frame keys for one side: HKDF-SHA-256 of the secret, salted with both challenges, one key
 * per direction (docs/PROTOCOL.md §11); with a key exchange, of Z || secret, with the transcript in
 * the info (§12).
 */
export function deriveFrameKeys(
  keys: SecretKeys,
  mode: "integrity" | "encrypt",
  serverChallenge: Uint8Array,
  clientChallenge: Uint8Array,
  side: "client" | "server",
  exchange?: KeyExchangeResult,
): FrameKeys {
  const salt = concat([serverChallenge, clientChallenge]);
  const version = exchange === undefined ? "v2" : "v3";
  const transcript = exchange === undefined
    ? new Uint8Array(0)
    : concat([exchange.head, exchange.serverShare]);
  const derive = (direction: string) => {
    const info = concat([encoder.encode(`hmac-echo ${version} ${mode} ${direction}`), transcript]);
    const bytes = keys.deriveBytes(exchange?.z ?? new Uint8Array(0), salt, info, FRAME_KEY_LENGTH);
    const key = new FrameKey(mode, bytes);
    bytes.fill(0);
    return key;
  };
  const toServer = derive("client->server");
  const toClient = derive("server->client");
  return side === "client"
    ? { mode, send: toServer, receive: toClient }
    : { mode, send: toClient, receive: toServer };
}

/** How strong a mode is, for comparing it with what a server requires. */
function modeStrength(mode: FrameMode): number {
  return MODES.indexOf(mode);
}

/**
 * The server's side of a v2 handshake, from the first 40 bytes (`first`, beginning with `{`) to the
 * outcome it sends (docs/PROTOCOL.md §9, §10). Reads exactly the rest of the hello, never more.
 */
export async function verifyHello(
  stream: ByteStream,
  serverChallenge: Uint8Array,
  first: Uint8Array,
  policy: AuthenticationPolicy,
): Promise<HandshakeOutcome> {
  const reject = async (reason: HelloRejectionReason, detail: string) => {
    await writeAll(stream, Uint8Array.of(REJECTION_STATUS[reason]));
    return { authenticated: false as const, reason, detail, answer: first };
  };
  const close = first.subarray(1, MAX_TAG_LENGTH).indexOf(CLOSING_BRACE);
  if (close < 0) return reject("malformed-hello", "no digest tag {name} at the start of the hello");
  const tagLength = close + 2;
  const name = printable(first.subarray(1, tagLength - 1));
  const allowed = policy.digests ?? ALL_DIGESTS;
  if (!isDigestName(name) || !allowed.includes(name)) {
    return reject(
      "unsupported-digest",
      `digest "${name}" is not allowed here (allowed: ${allowed.join(", ")})`,
    );
  }
  const version = first[tagLength];
  if (version !== VERSION_2 && version !== VERSION_3) {
    return reject("unsupported-version", `version byte ${version}, expected 2 or 3`);
  }
  const exchange = version === VERSION_3;
  const modeByte = first[tagLength + 1];
  if (modeByte >= MODES.length || (exchange && modeByte === 0)) {
    return reject(
      "malformed-hello",
      exchange
        ? `mode byte ${modeByte} with version 3: 1 or 2`
        : `mode byte ${modeByte}: 0, 1 or 2`,
    );
  }
  const mode = MODES[modeByte];
  const required = policy.require === "v2" ? undefined : policy.require;
  if (required !== undefined && modeStrength(mode) < modeStrength(required)) {
    return reject("mode-refused", `mode ${mode}, but this server requires ${required}`);
  }
  if (policy.requireForwardSecrecy && !exchange) {
    return reject(
      "forward-secrecy-required",
      "a version 2 hello without a key share, but this server requires forward secrecy",
    );
  }
  const digest = name;
  const headLength = tagLength + 2 + CHALLENGE_LENGTH + (exchange ? KEY_SHARE_LENGTH : 0);
  const hello = new Uint8Array(headLength + DIGESTS[digest].length);
  hello.set(first);
  const received = first.length + await readFull(stream, hello.subarray(first.length));
  if (received < hello.length) {
    return {
      authenticated: false,
      reason: "incomplete-hello",
      detail: `the connection ended after ${received} of ${hello.length} hello bytes`,
      answer: first,
    };
  }
  const head = hello.subarray(0, headLength);
  const clientChallenge = head.subarray(tagLength + 2, tagLength + 2 + CHALLENGE_LENGTH);
  if (equalBytes(clientChallenge, serverChallenge)) {
    return reject("reflected-challenge", "the client's challenge is the server's own");
  }
  const proof = hello.subarray(headLength);
  let keys: SecretKeys | undefined = policy.keys;
  let previousSecret = false;
  if (!verifyProof(keys, digest, "client", serverChallenge, head, proof)) {
    // During a rotation, a second and equally constant-time check under the previous secret.
    const previous = policy.previousKeys;
    const valid = previous !== undefined &&
      verifyProof(previous, digest, "client", serverChallenge, head, proof);
    keys = valid ? previous : undefined;
    previousSecret = valid;
  }
  if (policy.afterCheck && !policy.afterCheck(keys !== undefined)) {
    return {
      authenticated: false,
      reason: "throttled",
      detail: "this address is cooling down: the proof's verdict is withheld",
      answer: first,
    };
  }
  if (keys === undefined) {
    return reject(
      "wrong-proof",
      `the proof is not the HMAC-${digest} of the hello under this server's secret`,
    );
  }
  let result: KeyExchangeResult | undefined;
  if (exchange) {
    const share = createKeyShare();
    const z = sharedSecret(share, head.subarray(headLength - KEY_SHARE_LENGTH));
    if (z === null) {
      return reject("bad-key-share", "the client's key share gives an all-zero X25519 secret");
    }
    result = { z, head, serverShare: share.publicKey };
  }
  const serverShare = result?.serverShare ?? new Uint8Array(0);
  const serverProof = computeProof(
    keys,
    digest,
    "server",
    serverChallenge,
    head,
    serverShare,
  );
  await writeAll(stream, concat([Uint8Array.of(STATUS_ACCEPTED), serverShare, serverProof]));
  const frameKeys = mode === "plain"
    ? undefined
    : deriveFrameKeys(keys, mode, serverChallenge, clientChallenge, "server", result);
  result?.z.fill(0); // Z is needed for nothing else: a later leak of memory must not find it
  return {
    authenticated: true,
    protocol: 2,
    digest,
    mode,
    frameKeys,
    ...(previousSecret ? { previousSecret: true } : {}),
    ...(exchange ? { forwardSecret: true } : {}),
  };
}

const ALL_DIGESTS = Object.keys(DIGESTS) as DigestName[];

/** What a client learned from its hello. */
export type HelloResult =
  | { outcome: "accepted"; session: V2Session }
  /** The server named a reason; `reason` is undefined for a status byte this client does not know. */
  | { outcome: "rejected"; status: number; reason?: HelloRejectionReason }
  /** The connection ended where the status byte belongs: not a v2 server, or it refused us. */
  | { outcome: "no-answer" }
  /** "Accepted", but without a valid proof: the peer does not know the secret. */
  | { outcome: "bad-server-proof"; detail: string };

/**
 * The client's side of a v2 handshake, after it has read the server's challenge: sends the hello,
 * reads the outcome and checks the server's proof (docs/PROTOCOL.md §9, §10).
 */
export async function sendHello(
  stream: ByteStream,
  keys: SecretKeys,
  serverChallenge: Uint8Array,
  options: { digest: DigestName; mode: FrameMode; forwardSecrecy?: boolean },
): Promise<HelloResult> {
  const { digest, mode } = options;
  const share: KeyShare | undefined = options.forwardSecrecy ? createKeyShare() : undefined;
  const clientChallenge = createChallenge();
  const head = encodeHelloHead(digest, mode, clientChallenge, share?.publicKey);
  const proof = computeProof(keys, digest, "client", serverChallenge, head);
  const hello = new Uint8Array(head.length + proof.length);
  hello.set(head);
  hello.set(proof, head.length);
  await writeAll(stream, hello);

  const status = new Uint8Array(1);
  try {
    if (await readFull(stream, status) === 0) return { outcome: "no-answer" };
  } catch (error) {
    // A v1 server closes with the unread end of the hello still queued: a reset, not a FIN.
    if (isDisconnect(error)) return { outcome: "no-answer" };
    throw error;
  }
  if (status[0] !== STATUS_ACCEPTED) {
    const reason = (Object.keys(REJECTION_STATUS) as HelloRejectionReason[])
      .find((name) => REJECTION_STATUS[name] === status[0]);
    return { outcome: "rejected", status: status[0], reason };
  }
  // Version 03: Ps, then the proof that covers it (§12).
  const accepted = new Uint8Array((share ? KEY_SHARE_LENGTH : 0) + DIGESTS[digest].length);
  const received = await readFull(stream, accepted);
  if (received < accepted.length) {
    return {
      outcome: "bad-server-proof",
      detail: `the connection ended after ${received} of ${accepted.length} bytes of its answer`,
    };
  }
  const serverShare = accepted.subarray(0, share ? KEY_SHARE_LENGTH : 0);
  const serverProof = accepted.subarray(serverShare.length);
  if (!verifyProof(keys, digest, "server", serverChallenge, head, serverProof, serverShare)) {
    return { outcome: "bad-server-proof", detail: `its HMAC-${digest} proof does not verify` };
  }
  let exchange: KeyExchangeResult | undefined;
  if (share) {
    const z = sharedSecret(share, serverShare);
    if (z === null) {
      return { outcome: "bad-server-proof", detail: "its key share is not a usable X25519 point" };
    }
    exchange = { z, head, serverShare };
  }
  const frameKeys = mode === "plain"
    ? undefined
    : deriveFrameKeys(keys, mode, serverChallenge, clientChallenge, "client", exchange);
  exchange?.z.fill(0); // as on the server: Z is needed for nothing else
  return {
    outcome: "accepted",
    session: {
      digest,
      mode,
      frameKeys,
      forwardSecret: share !== undefined,
    },
  };
}

/** Not secret: comparing two public challenges may take any time. */
function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((byte, i) => byte === b[i]);
}

/** A name from the wire, safe to log: non-printable bytes as `\xNN`. */
function printable(bytes: Uint8Array): string {
  return Array.from(
    bytes,
    (byte) =>
      byte >= 0x20 && byte < 0x7f && byte !== 0x22 && byte !== 0x5c
        ? String.fromCharCode(byte)
        : `\\x${byte.toString(16).padStart(2, "0")}`,
  ).join("");
}
