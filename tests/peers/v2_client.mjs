// An hmac-echo protocol v2 client written from docs/PROTOCOL.md §8-§13 with Node.js's node:net and
// node:crypto only: the hello, the server's proof, HKDF-SHA-256 keys, and integrity or AES-256-GCM
// frames; with hello version 03 (§12), a fresh X25519 key exchange per connection that makes the
// frame keys forward-secret. bench/v2_loadgen.mjs drives the same functions as a load generator.
//
// Usage: node v2_client.mjs HOST PORT MESSAGE [DIGEST [MODE [VERSION]]]   (secret: HMAC_ECHO_SECRET)
//        node v2_client.mjs --vectors   (recomputes §13's vectors A and B from docs/PROTOCOL.md)
// DIGEST: sha1, sha256 (default), sha384, sha512. MODE: plain, integrity, encrypt (default).
// VERSION: 02 (default) or 03 (§12; integrity or encrypt only).
// Exit status: 0 success (reply on stdout; --vectors: every value matched), 1 rejected, 4 bad
// server proof (or, 03, a server key share giving an all-zero shared secret), 5 a bad reply frame,
// 6 (--vectors) a value that differs from the document.

import crypto from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import process from "node:process";

const MODES = { plain: 0, integrity: 1, encrypt: 2 };
const STATUS_NAMES = [
  "accepted",
  "wrong-proof",
  "unsupported-digest",
  "mode-refused",
  "malformed-hello",
  "unsupported-version",
  "reflected-challenge",
  "forward-secrecy-required",
  "bad-key-share",
];
export const MAX_PAYLOAD = 65536;

// §12: X25519 keys as node:crypto takes them, from and to the 32 raw bytes of RFC 7748 §5. Public
// keys go through JWK (RFC 8037: `x` is the raw key, base64url), several times cheaper here than
// OpenSSL's DER encoder and decoder; a raw private key (§13's vectors only) follows the fixed PKCS #8
// DER prefix.
const PKCS8_X25519 = Buffer.from("302e020100300506032b656e04220420", "hex");
const JWK = { format: "jwk" };

/**
 * §12: a fresh key pair: the private key, and the public key's 32 raw bytes. The pair comes out of
 * generateKeyPairSync already encoded, and the private key is imported anew: Node.js 20 deadlocks
 * when a KeyObject that generateKeyPairSync returned is exported while a garbage collection
 * finalizes the generating job (both hold the key's mutex), which a load generator hits.
 */
export function x25519KeyPair() {
  const { publicKey, privateKey } = crypto.generateKeyPairSync("x25519", {
    publicKeyEncoding: JWK,
    privateKeyEncoding: JWK,
  });
  return {
    privateKey: crypto.createPrivateKey({ key: privateKey, format: "jwk" }),
    publicBytes: Buffer.from(publicKey.x, "base64url"),
  };
}

/** §12: a private key from its 32 raw bytes (before clamping: X25519 clamps them itself). */
export function x25519PrivateKey(raw) {
  return crypto.createPrivateKey({
    key: Buffer.concat([PKCS8_X25519, raw]),
    format: "der",
    type: "pkcs8",
  });
}

/** §12: the 32-byte public key (little-endian u coordinate) of a KeyObject, public or private. */
export function x25519PublicBytes(key) {
  return Buffer.from(key.export(JWK).x, "base64url");
}

/** §12: Z = X25519(own private key, peer's 32-byte public key); all zeros for a low-order point. */
export function x25519(privateKey, peerPublic) {
  const publicKey = crypto.createPublicKey({
    key: { kty: "OKP", crv: "X25519", x: Buffer.from(peerPublic).toString("base64url") },
    format: "jwk",
  });
  try {
    return crypto.diffieHellman({ privateKey, publicKey });
  } catch {
    // OpenSSL refuses to return an all-zero shared secret; §12 names that case by its zeros.
    return Buffer.alloc(32);
  }
}

/**
 * §9: the hello for server challenge `cs`, and what the rest of the handshake needs. Version 3
 * (§12) adds Pc, from a fresh key pair unless `privateKey` is given (as are `cc`'s fixed bytes,
 * for §13's vectors).
 */
export function makeHello(secret, cs, digest, mode, { version = 2, cc, privateKey } = {}) {
  cc ??= crypto.randomBytes(32);
  const parts = [Buffer.from(`{${digest}}`), Buffer.from([version, MODES[mode]]), cc];
  if (version === 3) {
    if (privateKey) {
      parts.push(x25519PublicBytes(privateKey));
    } else {
      const pair = x25519KeyPair();
      privateKey = pair.privateKey;
      parts.push(pair.publicBytes);
    }
  }
  const head = Buffer.concat(parts);
  const proof = crypto.createHmac(digest, secret)
    .update("hmac-echo v2 client->server").update(cs).update(head).digest();
  return { hello: Buffer.concat([head, proof]), head, cc, proofLength: proof.length, privateKey };
}

/** §10 (§12: over head || Ps): whether the server's proof is right, compared in constant time. */
export function serverProofOk(secret, digest, cs, head, proof, ps = Buffer.alloc(0)) {
  const expected = crypto.createHmac(digest, secret)
    .update("hmac-echo v2 server->client").update(cs).update(head).update(ps).digest();
  return proof.length === expected.length && crypto.timingSafeEqual(proof, expected);
}

/** §11: this client's keys, one per direction. */
export function sessionKeys(secret, mode, cs, cc) {
  const key = (direction) =>
    Buffer.from(
      crypto.hkdfSync(
        "sha256",
        secret,
        Buffer.concat([cs, cc]),
        `hmac-echo v2 ${mode} ${direction}`,
        32,
      ),
    );
  return { mode, send: key("client->server"), receive: key("server->client") };
}

/** §12: this client's forward-secret keys, from Z and the secret together, bound to head and Ps. */
export function sessionKeysV3(secret, mode, cs, cc, z, head, ps) {
  const key = (direction) =>
    Buffer.from(
      crypto.hkdfSync(
        "sha256",
        Buffer.concat([z, secret]),
        Buffer.concat([cs, cc]),
        Buffer.concat([Buffer.from(`hmac-echo v3 ${mode} ${direction}`), head, ps]),
        32,
      ),
    );
  return { mode, send: key("client->server"), receive: key("server->client") };
}

function header(length, seq) {
  const bytes = Buffer.alloc(12);
  bytes.writeUInt32BE(length, 0);
  bytes.writeBigUInt64BE(BigInt(seq), 4);
  return bytes;
}

function nonce(seq) {
  const iv = Buffer.alloc(12);
  iv.writeBigUInt64BE(BigInt(seq), 4);
  return iv;
}

/** §11: one frame carrying `payload` (empty: the end frame). */
export function seal(keys, seq, payload) {
  const head = header(payload.length, seq);
  if (keys.mode === "integrity") {
    const tag = crypto.createHmac("sha256", keys.send).update(head).update(payload).digest();
    return Buffer.concat([head, payload, tag]);
  }
  const cipher = crypto.createCipheriv("aes-256-gcm", keys.send, nonce(seq));
  cipher.setAAD(head);
  const body = Buffer.concat([cipher.update(payload), cipher.final()]);
  return Buffer.concat([head, body, cipher.getAuthTag()]);
}

/** §11: opens the frame at the start of `buffer`: null if incomplete, else its payload and size. */
export function open(keys, expectedSeq, buffer) {
  if (buffer.length < 12) return null;
  const length = buffer.readUInt32BE(0);
  const seq = Number(buffer.readBigUInt64BE(4));
  if (length > MAX_PAYLOAD) throw new Error("oversized-frame");
  const tagLength = keys.mode === "integrity" ? 32 : 16;
  const size = 12 + length + tagLength;
  if (buffer.length < size) return null;
  const head = buffer.subarray(0, 12);
  const body = buffer.subarray(12, 12 + length);
  const tag = buffer.subarray(12 + length, size);
  let payload;
  if (keys.mode === "integrity") {
    const good = crypto.createHmac("sha256", keys.receive).update(head).update(body).digest();
    if (!crypto.timingSafeEqual(tag, good)) throw new Error("tampered-frame");
    payload = Buffer.from(body);
  } else {
    const decipher = crypto.createDecipheriv("aes-256-gcm", keys.receive, nonce(seq));
    decipher.setAAD(head);
    decipher.setAuthTag(tag);
    try {
      payload = Buffer.concat([decipher.update(body), decipher.final()]);
    } catch {
      throw new Error("tampered-frame");
    }
  }
  if (seq !== expectedSeq) {
    throw new Error(seq < expectedSeq ? "replayed-frame" : "out-of-order-frame");
  }
  return { payload, size };
}

/** A socket read as "give me n bytes". */
export class Reader {
  #buffered = Buffer.alloc(0);
  #waiting = null;
  #ended = false;

  constructor(socket) {
    socket.on("data", (chunk) => {
      this.#buffered = Buffer.concat([this.#buffered, chunk]);
      this.#wake();
    });
    socket.on("end", () => {
      this.#ended = true;
      this.#wake();
    });
    socket.on("error", () => {
      this.#ended = true;
      this.#wake();
    });
  }

  #wake() {
    const waiting = this.#waiting;
    this.#waiting = null;
    waiting?.();
  }

  get buffered() {
    return this.#buffered;
  }

  consume(n) {
    this.#buffered = this.#buffered.subarray(n);
  }

  /** Resolves once n bytes are buffered (true) or the socket has ended first (false). */
  async need(n) {
    while (this.#buffered.length < n) {
      if (this.#ended) return false;
      await new Promise((resolve) => (this.#waiting = resolve));
    }
    return true;
  }

  async take(n) {
    if (!await this.need(n)) return this.#buffered.subarray(0, 0);
    const bytes = this.#buffered.subarray(0, n);
    this.consume(n);
    return bytes;
  }

  /** The next frame's payload; throws on a bad frame or an end without an end frame. */
  async nextPayload(keys, expectedSeq) {
    for (;;) {
      const opened = open(keys, expectedSeq, this.#buffered);
      if (opened) {
        this.consume(opened.size);
        return opened.payload;
      }
      if (this.#ended) throw new Error("truncated-stream");
      await new Promise((resolve) => (this.#waiting = resolve));
    }
  }
}

/**
 * Connects and runs the handshake (hello `version` 2, or 3 with §12's key exchange): resolves to
 * the socket, its reader and the frame keys.
 */
export async function handshake({ host, port, secret, digest, mode, version = 2 }) {
  if (version === 3 && !(mode in MODES && mode !== "plain")) {
    throw Object.assign(new Error("version 03 needs mode integrity or encrypt (§9)"), { exit: 2 });
  }
  const socket = net.connect({ host, port, noDelay: true });
  const reader = new Reader(socket);
  await new Promise((resolve, reject) => socket.once("connect", resolve).once("error", reject));
  const cs = await reader.take(32);
  if (cs.length < 32) throw Object.assign(new Error("no challenge"), { exit: 1 });
  const { hello, head, cc, proofLength, privateKey } = makeHello(secret, cs, digest, mode, {
    version,
  });
  socket.write(hello);
  const status = await reader.take(1);
  if (status.length === 0 || status[0] !== 0) {
    socket.destroy();
    throw Object.assign(new Error(`rejected: ${STATUS_NAMES[status[0]] ?? "no answer"}`), {
      exit: 1,
    });
  }
  const ps = version === 3 ? Buffer.from(await reader.take(32)) : undefined;
  if (!serverProofOk(secret, digest, cs, head, await reader.take(proofLength), ps)) {
    socket.destroy();
    throw Object.assign(new Error("the server could not prove it knows the secret"), { exit: 4 });
  }
  if (version === 3) {
    // §12: the proof first, then Z; an all-zero Z is a server that could not prove itself.
    const z = x25519(privateKey, ps);
    if (z.every((byte) => byte === 0)) {
      socket.destroy();
      throw Object.assign(new Error("bad-server-key-share: an all-zero shared secret"), {
        exit: 4,
      });
    }
    return { socket, reader, keys: sessionKeysV3(secret, mode, cs, cc, z, head, ps) };
  }
  const keys = mode === "plain" ? null : sessionKeys(secret, mode, cs, cc);
  return { socket, reader, keys };
}

/**
 * §13: recomputes vectors A and B from their inputs and compares every value the document gives,
 * read from docs/PROTOCOL.md itself. Prints one line per value; exit 6 if any differs.
 */
function checkVectors() {
  const doc = fs.readFileSync(new URL("../../docs/PROTOCOL.md", import.meta.url), "utf8");
  const section = doc.slice(doc.indexOf("## 13. Test vectors"));
  /** `name = hex` lines of one code block, each value joined over its continuation lines. */
  const values = (block) => {
    const found = {};
    let last;
    for (const line of block.split("\n")) {
      const named = line.match(/^(\S.*?)\s+=\s+([0-9a-f]+)$/);
      if (named) found[last = named[1]] = named[2];
      else if (last && /^\s+[0-9a-f]+$/.test(line)) found[last] += line.trim();
    }
    return found;
  };
  const blocks = [...section.matchAll(/```\n([\s\S]*?)```/g)].map((match) => match[1]);
  const inputs = values(blocks[0]);
  const hex = (name) => Buffer.from(inputs[name], "hex");
  const vectors = [
    { name: "A", digest: "sha256", mode: "encrypt", expected: values(blocks[1]) },
    { name: "B", digest: "sha512", mode: "integrity", expected: values(blocks[2]) },
  ];
  let failures = 0;
  for (const { name, digest, mode, expected } of vectors) {
    const secret = hex("secret");
    const cs = hex("Cs");
    const cc = hex("Cc");
    const serverPrivate = x25519PrivateKey(hex("server private"));
    const { hello, head, privateKey } = makeHello(secret, cs, digest, mode, {
      version: 3,
      cc,
      privateKey: x25519PrivateKey(hex("client private")),
    });
    const pc = x25519PublicBytes(privateKey);
    const ps = x25519PublicBytes(serverPrivate);
    const z = x25519(privateKey, ps);
    const serverProof = crypto.createHmac(digest, secret)
      .update("hmac-echo v2 server->client").update(cs).update(head).update(ps).digest();
    const client = sessionKeysV3(secret, mode, cs, cc, z, head, ps);
    // The server's side, as the server computes it: its own Z, and its keys the other way round.
    const serverZ = x25519(serverPrivate, pc);
    const derived = sessionKeysV3(secret, mode, cs, cc, serverZ, head, ps);
    const server = { mode, send: derived.receive, receive: derived.send };
    const clientFrame = seal(client, 0, Buffer.from("hello"));
    const serverFrame = seal(server, 0, Buffer.from("HELLO"));
    const endFrame = seal(client, 1, Buffer.alloc(0));
    const computed = {
      "Pc": pc,
      "Ps": ps,
      "head": head,
      "client_proof": hello.subarray(head.length),
      "hello": hello,
      "Z": z,
      "server_proof": serverProof,
      "outcome": Buffer.concat([Buffer.from([0]), ps, serverProof]),
      "key c->s": client.send,
      "key s->c": client.receive,
      "c->s frame 0": clientFrame,
      "s->c frame 0": serverFrame,
      "c->s end frame 1": endFrame,
    };
    const checks = Object.entries(computed).map(([key, value]) => [key, value.toString("hex")]);
    // And the other way: each side opens what the other sealed, and both sides agree on Z.
    const opens = (keys, seq, frame, payload) => {
      try {
        return open(keys, seq, frame)?.payload.toString() === payload;
      } catch {
        return false;
      }
    };
    const roundTrips = [
      ["server's Z", serverZ.equals(z)],
      ["server opens c->s frame 0", opens(server, 0, clientFrame, "hello")],
      ["client opens s->c frame 0", opens(client, 0, serverFrame, "HELLO")],
      ["server opens c->s end frame 1", opens(server, 1, endFrame, "")],
      ["server's proof verifies", serverProofOk(secret, digest, cs, head, serverProof, ps)],
    ];
    for (const [key, value] of checks) {
      const ok = expected[key] === value;
      if (!ok) failures++;
      console.log(`vector ${name} ${key.padEnd(16)} ${ok ? "ok" : `DIFFERS: ${value}`}`);
    }
    for (const [what, ok] of roundTrips) {
      if (!ok) failures++;
      console.log(`vector ${name} ${what} ${ok ? "ok" : "FAILED"}`);
    }
    const unchecked = Object.keys(expected).filter((key) => !(key in computed));
    if (unchecked.length) {
      failures++;
      console.log(`vector ${name}: values in the document not checked: ${unchecked.join(", ")}`);
    }
  }
  console.log(failures ? `${failures} failed` : "every value matched");
  if (failures) process.exitCode = 6;
}

async function main() {
  if (process.argv[2] === "--vectors") return checkVectors();
  const [host, port, message, digest = "sha256", mode = "encrypt", version = "02"] = process.argv
    .slice(2);
  if (version !== "02" && version !== "03") {
    throw Object.assign(new Error(`version ${version}: 02 or 03`), { exit: 2 });
  }
  const secret = Buffer.from(process.env.HMAC_ECHO_SECRET ?? "", "utf8");
  const { socket, reader, keys } = await handshake({
    host,
    port: Number(port),
    secret,
    digest,
    mode,
    version: Number(version),
  });
  const input = Buffer.from(message, "utf8");
  if (!keys) {
    socket.end(input);
    const chunks = [];
    while (await reader.need(1)) chunks.push(await reader.take(reader.buffered.length));
    process.stdout.write(Buffer.concat(chunks));
    return;
  }
  let seq = 0;
  for (let offset = 0; offset < input.length; offset += MAX_PAYLOAD) {
    socket.write(seal(keys, seq++, input.subarray(offset, offset + MAX_PAYLOAD)));
  }
  socket.end(seal(keys, seq, Buffer.alloc(0)));
  const reply = [];
  for (let expected = 0;; expected++) {
    let payload;
    try {
      payload = await reader.nextPayload(keys, expected);
    } catch (error) {
      throw Object.assign(error, { exit: 5 });
    }
    if (payload.length === 0) break;
    reply.push(payload);
  }
  socket.destroy();
  process.stdout.write(Buffer.concat(reply));
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().catch((error) => {
    process.stderr.write(`${error.message}\n`);
    process.exitCode = error.exit ?? 2;
  });
}
